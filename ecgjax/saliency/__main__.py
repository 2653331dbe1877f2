r"""Saliency maps of page image files under a trained run: overlays, per-lead charts and a JSON.

  python -m ecgjax.saliency --workdir=runs/default --method=smoothgrad --out=runs/default/maps \
      --images 'pages/MI(1).jpg' 'pages/Normal(3).jpg'

Each page is cropped to its grid panel (--nocrop_panel for crops) and preprocessed like the run's
data; the predicted class is explained with --method (gradient, smoothgrad, integrated_gradients,
grad_cam). Writes, under --out, an overlay and a per-lead bar chart per page and
saliency_METHOD.json with each lead's share of the attribution. A file that cannot be read is named
on stderr and skipped, the other pages are still explained, and the exit status is then 1; it is 1
too when no page could be read (nothing is written).

A signal run (config.data.input='signals', e.g. configs/signals.py) is explained on the whole page
instead: each page is digitized, the model's (time, 13) input is attributed (--method gradient,
smoothgrad or integrated_gradients, the default there, from flat leads) and the digitized traces are
drawn back onto the page coloured by attribution (`ecgjax.saliency.signals`); --crop_panel and
--layer do not apply. The JSON has the same per-lead fields, the rhythm strip as its own lead.

This module is the command line only, and the text of its --help: the maths is in `attribution`,
the per-lead sums in `leads`, the figures in `figures`, the JSON in `explain`. Its flags are defined
by `run()`, not on import (`ecgjax.main` defines --workdir too).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from absl import app
from absl import flags

from ecgjax.kernels import hugepages
from ecgjax.saliency.attribution import METHODS
from ecgjax.saliency.explain import explain_pages
from ecgjax.saliency.pages import page_from_file

FLAGS = flags.FLAGS


def _define_flags() -> None:
  flags.DEFINE_string("workdir", None, "Run directory (config.json and checkpoints/).")
  flags.DEFINE_multi_string("images", [], "Page image files; more may follow as plain arguments "
                            "(so a shell glob works: --images pages/*.jpg).")
  flags.DEFINE_string("out", None, "Output directory for the PNGs and the JSON.")
  flags.DEFINE_enum("method", "grad_cam", METHODS, "Attribution method (Grad-CAM, as "
                    "config.saliency.method's default; integrated_gradients for a signal run, "
                    "where Grad-CAM does not apply).")
  flags.DEFINE_string("checkpoint", None, "'best', 'latest' or a step number; default: the one "
                      "the run reported (its config.eval.checkpoint).")
  flags.DEFINE_bool("crop_panel", True, "Crop each page to its grid panel first, as the data sets "
                    "do; --nocrop_panel for images already cropped.")
  flags.DEFINE_integer("seed", 0, "PRNG seed of the SmoothGrad noise.")
  flags.DEFINE_integer("num_samples", 50, "SmoothGrad: noisy copies per page.")
  flags.DEFINE_float("noise_scale", 0.15, "SmoothGrad: noise std / the page's value span.")
  flags.DEFINE_integer("steps", 64, "Integrated Gradients: path intervals.")
  flags.DEFINE_integer("contrast_steps", 32, "Each lead's contribution to the predicted class over "
                       "the runner-up, by Integrated Gradients with this many steps; 0: off.")
  flags.DEFINE_string("layer", None, "Grad-CAM: module path (default: the last feature maps, "
                     "after the last convolution's BatchNorm).")
  flags.DEFINE_integer("chunk_size", 16, "Forward-backward passes per step (memory bound).")
  flags.mark_flags_as_required(["workdir", "out"])


def main(argv: Sequence[str]) -> None:
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  from ecgjax.classes import class_index  # pylint: disable=g-import-not-at-top
  from ecgjax.data import ecg_images  # pylint: disable=g-import-not-at-top
  paths = list(FLAGS.images) + list(argv[1:])
  if not paths:
    raise ValueError("No pages: pass --images FILE... .")
  loaded = checkpoints.load_model(FLAGS.workdir, FLAGS.checkpoint)
  if loaded.config.data.get("input", "image") == "signals":
    _explain_signals(loaded, paths)
    return
  if loaded.config.data.get("input", "image") != "image":
    workdirs = ", ".join(f"{k}={v}" for k, v in loaded.config.fusion.workdirs.items())
    sys.exit(f"{FLAGS.workdir} fuses page and signal models (config.data.input="
             f"{loaded.config.data.input!r}): explain each backbone's own run ({workdirs}).")
  if loaded.config.data.get("crop", "panel") != "panel":
    sys.exit(f"{FLAGS.workdir} reads each lead as its own image (config.data.crop="
             f"{loaded.config.data.crop!r}); maps are drawn over whole panels only.")
  pages, failed = [], []
  for path in paths:  # A bad file is named and skipped; the good pages are still explained.
    label = ecg_images.class_of_path(os.path.abspath(path))  # The release's folder names.
    try:
      pages.append(page_from_file(path, loaded.config.data, FLAGS.crop_panel,
                                  None if label is None else class_index(label),
                                  dataset_config=loaded.config.dataset))
    except (OSError, ValueError) as e:
      failed.append(path)
      print(f"error: {e}", file=sys.stderr)
  if not pages:
    sys.exit(f"No page could be read ({len(failed)} failed); nothing written.")
  options = {"gradient": {}, "grad_cam": {"layer": FLAGS.layer},
             "smoothgrad": {"num_samples": FLAGS.num_samples, "noise_scale": FLAGS.noise_scale,
                            "chunk_size": FLAGS.chunk_size},
             "integrated_gradients": {"steps": FLAGS.steps, "chunk_size": FLAGS.chunk_size},
             }[FLAGS.method]
  out = explain_pages(loaded.logit_fn, pages, FLAGS.out, method=FLAGS.method,
                      value_range=loaded.config.data.value_range, seed=FLAGS.seed,
                      contrast_steps=FLAGS.contrast_steps, **options)
  print(f"Wrote {out['json']} and {2 * len(out['pages'])} PNGs under {FLAGS.out} "
        f"({FLAGS.method}, checkpoint step {loaded.step}).")
  if failed:
    sys.exit(f"{len(failed)} of {len(paths)} pages could not be read: {', '.join(failed)}.")


def _explain_signals(loaded, paths: Sequence[str]) -> None:
  """`main` for a signal run: digitize each page, explain the model's input, draw it on the page."""
  from ecgjax.classes import class_index  # pylint: disable=g-import-not-at-top
  from ecgjax.data import ecg_images  # pylint: disable=g-import-not-at-top
  from ecgjax.saliency import signals  # pylint: disable=g-import-not-at-top
  method = FLAGS.method if FLAGS["method"].present else "integrated_gradients"
  if method not in signals.SIGNAL_METHODS:
    sys.exit(f"--method={method} does not apply to a signal run ({FLAGS.workdir}: "
             f"config.data.input='signals'); use one of {', '.join(signals.SIGNAL_METHODS)}.")
  hz = int(loaded.config.data.signal_hz)
  pages, failed = [], []
  for path in paths:  # A bad file is named and skipped; the good pages are still explained.
    label = ecg_images.class_of_path(os.path.abspath(path))
    try:
      pages.append(signals.signal_page_from_file(
          path, hz, None if label is None else class_index(label)))
    except (OSError, ValueError) as e:
      failed.append(path)
      message = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
      message = message.replace("<array>", path)  # The digitizer was given the decoded page.
      print(f"error: {message if path in message else f'{path}: {message}'}", file=sys.stderr)
  if not pages:
    sys.exit(f"No page could be read ({len(failed)} failed); nothing written.")
  options = {"gradient": {},
             "smoothgrad": {"num_samples": FLAGS.num_samples, "noise_scale": FLAGS.noise_scale,
                            "chunk_size": FLAGS.chunk_size},
             "integrated_gradients": {"steps": FLAGS.steps, "chunk_size": FLAGS.chunk_size},
             }[method]
  out = signals.explain_signal_pages(loaded.logit_fn, pages, FLAGS.out, method=method,
                                     seed=FLAGS.seed, contrast_steps=FLAGS.contrast_steps,
                                     **options)
  print(f"Wrote {out['json']} and {2 * len(out['pages'])} PNGs under {FLAGS.out} "
        f"({method} on the digitized signals, checkpoint step {loaded.step}).")
  if failed:
    sys.exit(f"{len(failed)} of {len(paths)} pages could not be read: {', '.join(failed)}.")


def run() -> None:
  hugepages.ensure()
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
