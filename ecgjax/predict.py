r"""Predict the class of new ECG pages with a trained run.

  python -m ecgjax.predict --workdir=runs/default page1.jpg page2.png ...
  python -m ecgjax.predict --workdir=runs/default --json pages/*.jpg > predictions.json

Each page may be any size, JPEG or PNG, RGB, gray or RGBA: the grid panel is found and cropped as in
the data sets, then resized like the run's evaluation data. Prints, per page, the predicted class and
the probability of every class. A file that is not an image (or is too small to be a page) is
reported (on stderr, and as an `error` entry with --json) and the other pages are still predicted;
the exit status is 1 if any page failed. A page on which no grid panel is found (a blank page, a
photo of something else) is predicted whole but marked UNRELIABLE in the table (`reliable: false`
with --json).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from absl import app
from absl import flags

from ecgjax.classes import CLASS_NAMES
from ecgjax.kernels import hugepages

if TYPE_CHECKING:
  from ecgjax import checkpoints

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a command, so importing this module defines no global flags."""
  flags.DEFINE_string("workdir", None, "A trained run's directory.")
  flags.DEFINE_string("checkpoint", None, "'best', 'latest' or a step number; default: the one "
                      "the run reported (its config.eval.checkpoint).")
  flags.DEFINE_bool("json", False, "Print one JSON document instead of a table.")
  flags.DEFINE_bool("crop", True, "Find and crop the grid panel (as the training data were).")
  flags.DEFINE_integer("batch_size", 8, "Pages per forward pass.")


def predict_files(workdir: str, paths: Sequence[str], *, checkpoint: str | int | None = None,
                  crop: bool = True, batch_size: int = 8) -> list[dict[str, Any]]:
  """One result per path, in order: {'path', 'class', 'probabilities', 'note', 'reliable'} or
  {'path', 'error'}; `reliable` is False where no grid panel was found on the page."""
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  loaded = checkpoints.load_model(workdir, checkpoint)
  return predict_pages(loaded, paths, crop=crop, batch_size=batch_size)[0]


def predict_pages(loaded: checkpoints.LoadedModel, paths: Sequence[str], *, crop: bool = True,
                  batch_size: int = 8) -> tuple[list[dict[str, Any]], np.ndarray]:
  """`predict_files` with the model already loaded, and the logits of the pages that loaded: one
  row per result without an 'error', in order, shape (pages, classes)."""
  import jax  # pylint: disable=g-import-not-at-top
  from ecgjax import report  # pylint: disable=g-import-not-at-top
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top

  data_config = loaded.config.data
  value_range = pipeline.input_range(loaded.config)
  # A signal model (config.data.input='signals') reads the whole page's digitized leads, uncropped;
  # a fused page and signal model ('image+signals') both, as a batch {"image", "signals"}.
  kind = data_config.get("input", "image")
  logits_fn = jax.jit(lambda batch: loaded.logit_fn(pipeline.model_inputs(batch, value_range)))

  results: list[dict[str, Any]] = [{"path": p} for p in paths]
  ready = []
  for result in results:
    try:
      inputs = {}
      if kind != "signals":
        inputs["image"], note = pipeline.load_page(result["path"], data_config, crop=crop,
                                                   dataset_config=loaded.config.dataset)
      if kind != "image":
        from ecgjax.data import digitized  # pylint: disable=g-import-not-at-top
        inputs["signals" if "image" in inputs else "image"] = digitized.digitized_view(
            result["path"], data_config.signal_hz)
        note = "whole page digitized" if kind == "signals" else f"{note}; whole page digitized"
    except (OSError, ValueError) as e:
      result["error"] = str(e)
      continue
    result["note"] = note
    # Without the panel the model sees something unlike its training pages: say so beside the class.
    result["reliable"] = not note.startswith(pipeline.NO_PANEL)
    ready.append((result, inputs))
  all_logits = [np.zeros((0, len(CLASS_NAMES)))]
  for start in range(0, len(ready), batch_size):
    chunk = ready[start:start + batch_size]
    # Padded to a whole batch so every call reuses one compiled shape.
    batch = {key: np.stack([inputs[key] for _, inputs in chunk]
                           + [chunk[0][1][key]] * (batch_size - len(chunk)))
             for key in chunk[0][1]}
    logits = np.asarray(logits_fn(batch), np.float64)[:len(chunk)]
    all_logits.append(logits)
    probs = report.softmax(logits, axis=-1)
    for (result, _), p in zip(chunk, probs):
      result["class"] = CLASS_NAMES[int(p.argmax())]
      result["probabilities"] = {name: float(v) for name, v in zip(CLASS_NAMES, p)}
  return results, np.concatenate(all_logits)


def format_table(results: list[dict[str, Any]]) -> str:
  width = max([len(r["path"]) for r in results] + [4])
  header = f"{'page':<{width}}  {'prediction':<18}  " + "  ".join(f"{n:>18}" for n in CLASS_NAMES)
  lines = [header, "-" * len(header)]
  for r in results:
    if "error" in r:
      lines.append(f"{r['path']:<{width}}  ERROR: {r['error']}")
    else:
      probs = "  ".join(f"{r['probabilities'][n]:>18.3f}" for n in CLASS_NAMES)
      flag = "" if r.get("reliable", True) else f"  UNRELIABLE: {r['note']}"
      lines.append(f"{r['path']:<{width}}  {r['class']:<18}  {probs}{flag}")
  return "\n".join(lines)


def main(argv):
  paths = argv[1:]
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required.")
  if not paths:
    raise app.UsageError("Give one or more image files after the flags.")
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  try:
    results = predict_files(FLAGS.workdir, paths, checkpoint=FLAGS.checkpoint, crop=FLAGS.crop,
                            batch_size=FLAGS.batch_size)
  except (FileNotFoundError, checkpoints.CheckpointError,
          checkpoints.CheckpointMismatchError) as e:  # The run, not a page: one line for the user.
    sys.exit(f"ecgjax.predict: {' '.join(str(e).split())}")
  for r in results:
    if "error" in r:
      print(f"error: {r['error']}", file=sys.stderr)
  print(json.dumps(results, indent=2) if FLAGS.json else format_table(results))
  if any("error" in r for r in results):
    sys.exit(1)


def run() -> None:
  hugepages.ensure()
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
