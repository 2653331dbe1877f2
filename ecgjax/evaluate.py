r"""External validation: a trained run evaluated on a folder of pages laid out like the ECG release.

  python -m ecgjax.evaluate --workdir=runs/final --manual_dir=$HOME/other_hospital \
      [--out=DIR] [--checkpoint=best|latest|STEP]

The folder holds the four class folders under any of the names the `ecg_images` builder
recognises (`ecg_images.class_of_path`), anywhere below it, zips included (`ecg_images.list_files`):
a page's true class is its folder's. Each page goes through `ecgjax.predict`'s path, cropped to its
grid panel and preprocessed with the run's own `config.data`, so the model sees it as it saw its
training pages, and is classified by the chosen checkpoint (by default the one the run reported its
test fold with, its `config.eval.checkpoint`). Written into --out (default
WORKDIR/external/<name of the folder>):

  report.json           the fields of the run's own test report (WORKDIR/eval/report.json), with
                        `files_read`, `skipped_files` and `unreliable_pages`
  confusion_matrix.png
  predictions.csv       one row per page: path (below the folder), true and predicted class, the
                        probability of each class, and `reliable` (False where no grid panel was
                        found, so the whole page was used)

Every file is evaluated: copies of a page are not merged as the `ecg_images` builder merges them, so
a folder that repeats pages (the release does) weighs those pages more; `files_read` counts every
image file found. A file that cannot be used (not an image, too small, in no class folder, a zip
that does not open) is named on one line on stderr and skipped; the other pages are still evaluated
and written, and the exit status is 1.

Meant for a final model trained on every fold (`--config.data.test_fold=None`) or any other run;
the held-out fold of a run's own data set is reported by `ecgjax.main` itself. Every process of a
multi-process launch loads the model and evaluates every page; process 0 alone writes.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from absl import app
from absl import flags
from absl import logging

from ecgjax.classes import CLASS_NAMES
from ecgjax.kernels import hugepages

FLAGS = flags.FLAGS


class EvaluationError(ValueError):
  """Nothing to evaluate: no image in a class folder, or none that could be read."""


def _define_flags() -> None:
  """Defined only when run as a command, so importing this module defines no global flags (the
  names are those of `ecgjax.main` and `ecgjax.predict`, which a process may also import)."""
  flags.DEFINE_string("workdir", None, "A trained run's directory.")
  flags.DEFINE_string("manual_dir", None,
                      "A folder laid out like the ECG Images release: the four class folders.")
  flags.DEFINE_string("out", None, "Output directory (default WORKDIR/external/<folder name>).")
  flags.DEFINE_string("checkpoint", None, "'best', 'latest' or a step number; default: the one "
                      "the run reported (its config.eval.checkpoint).")


def default_out(workdir: str, manual_dir: str) -> str:
  name = os.path.basename(os.path.normpath(os.path.abspath(os.path.expanduser(manual_dir))))
  return os.path.join(os.path.expanduser(workdir), "external", name)


def find_pages(manual_dir: str) -> tuple[list[tuple[Any, str]], dict[str, str]]:
  """([(ecg_images.SourceFile, class name)] of every image in a class folder, sorted by path;
  {path: why} for the files that cannot be used). Files an OS or archiver added, and files that
  are not images, are logged and left out."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  from ecgjax.data import ecg_images  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(manual_dir):
    raise FileNotFoundError(f"--manual_dir={manual_dir}: no such folder.")
  skipped: dict[str, str] = {}
  pages, ignored = [], []
  for source in ecg_images.list_files(epath.Path(manual_dir), skipped):
    if not ecg_images.is_image_file(source.path):
      ignored.append(source.path)
    elif (label := ecg_images.class_of_path(source.path)) is None:
      skipped[source.path] = "in no class folder, so its true class is unknown"
    else:
      pages.append((source, label))
  for path, why in skipped.items():
    skipped[path] = f"{os.path.join(manual_dir, path)}: {why}"
  if ignored:
    logging.warning("Ignoring %d files that are not images: %s", len(ignored), ", ".join(ignored))
  if not pages:
    raise EvaluationError(
        f"No image in a class folder below {manual_dir}. Lay it out like the ECG Images release "
        f"(folder names as in ecgjax/data/ecg_images.py FOLDER_NAMES, e.g. "
        f"{', '.join(names[0] for names in ecg_images.FOLDER_NAMES.values())}).")
  return pages, skipped


def evaluate(workdir: str, manual_dir: str, out: str | None = None,
             checkpoint: str | int | None = None) -> dict[str, Any]:
  """Evaluates the run in `workdir` on every page below `manual_dir` and, in process 0, writes
  report.json, confusion_matrix.png and predictions.csv into `out`; returns the report, with the
  paths written under 'outputs' in process 0."""
  import jax  # pylint: disable=g-import-not-at-top
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  from ecgjax import predict  # pylint: disable=g-import-not-at-top
  from ecgjax import report as report_lib  # pylint: disable=g-import-not-at-top

  workdir = os.path.abspath(os.path.expanduser(workdir))
  manual_dir = os.path.abspath(os.path.expanduser(manual_dir))
  out = os.path.abspath(os.path.expanduser(out or default_out(workdir, manual_dir)))
  pages, skipped = find_pages(manual_dir)
  files_read = len(pages) + len(skipped)
  # Every process restores (orbax's restore is collective); each then evaluates on its own device.
  loaded = checkpoints.load_model(workdir, checkpoint)

  with tempfile.TemporaryDirectory(prefix="ecgjax_evaluate_") as unzipped:
    local = []  # A path on disk for each page; a zip's member is written out first.
    for i, (source, _) in enumerate(pages):
      if source.archive is None:
        local.append(os.path.join(manual_dir, source.path))
      else:
        local.append(os.path.join(unzipped, f"{i}{os.path.splitext(source.path)[1]}"))
        with open(local[-1], "wb") as f:
          f.write(source.read())
    batch_size = max(1, min(int(loaded.config.eval.batch_size), len(pages)))
    results, logits = predict.predict_pages(loaded, local, batch_size=batch_size)

  rows, labels = [], []
  for (source, label), path, result in zip(pages, local, results):
    if "error" in result:
      skipped[source.path] = " ".join(
          result["error"].replace(path, os.path.join(manual_dir, source.path)).split())
      continue
    labels.append(CLASS_NAMES.index(label))
    rows.append({"path": source.path, "true_class": label, "predicted_class": result["class"],
                 **{f"p_{name}": result["probabilities"][name] for name in CLASS_NAMES},
                 "reliable": result["reliable"]})
  if not rows:
    raise EvaluationError(f"None of the {len(pages)} images below {manual_dir} could be read; "
                          f"the first: {skipped[pages[0][0].path]}")

  name = os.path.basename(manual_dir)
  rep = report_lib.classification_report(labels, logits)
  rep.update({"checkpoint_step": int(loaded.step), "checkpoint": str(loaded.which),
              "split": "external", "dataset": name, "model": loaded.config.model.name,
              "workdir": workdir, "manual_dir": manual_dir,
              # Copies of a page are evaluated as often as they occur (no merging).
              "files_read": files_read,
              "skipped_files": dict(sorted(skipped.items())),
              "unreliable_pages": sum(not row["reliable"] for row in rows)})
  if jax.process_index() == 0:
    outputs = report_lib.write(rep, out,
                               title=f"{rep['model']} on {name}: macro-F1 {rep['macro_f1']:.3f}")
    outputs["predictions"] = report_lib.write_rows(rows, os.path.join(out, "predictions.csv"))
    rep["outputs"] = outputs
  return rep


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir or not FLAGS.manual_dir:
    raise app.UsageError("--workdir and --manual_dir are required.")
  import jax  # pylint: disable=g-import-not-at-top
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  from ecgjax import mesh  # pylint: disable=g-import-not-at-top
  from ecgjax import quiet  # pylint: disable=g-import-not-at-top
  quiet.hide_library_info()
  mesh.initialize_distributed()
  try:
    rep = evaluate(FLAGS.workdir, FLAGS.manual_dir, FLAGS.out, FLAGS.checkpoint)
  except (OSError, ValueError, checkpoints.CheckpointError) as e:  # For the user: one line.
    sys.exit(f"ecgjax.evaluate: {' '.join(str(e).split())}")
  if jax.process_index() == 0:
    for why in rep["skipped_files"].values():
      print(f"ecgjax.evaluate: skipped {why}", file=sys.stderr)
    n = rep["num_examples"]
    print(f"{rep['model']} (checkpoint {rep['checkpoint']} at step {rep['checkpoint_step']}) on "
          f"{rep['manual_dir']}: {n} pages ({rep['files_read']} files read, "
          f"{len(rep['skipped_files'])} skipped, {rep['unreliable_pages']} without a grid panel):\n"
          f"  accuracy {rep['accuracy']:.3f}  balanced accuracy {rep['balanced_accuracy']:.3f}  "
          f"macro-F1 {rep['macro_f1']:.3f}\nOutputs:")
    for key, path in rep["outputs"].items():
      print(f"  {key:<17} {path}")
  if rep["skipped_files"]:
    sys.exit(1)


def run() -> None:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines, if it is there.
  hugepages.ensure()
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
