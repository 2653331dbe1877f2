r"""Trained runs fused after the fact: their per-page probabilities averaged, with no checkpoints.

  python experiments/fuse.py runs/ablations/page_augmentation/cnn_none \
      runs/ablations/page_augmentation/mobilenet_v2 runs/ablations/page_augmentation/vgg16_none \
      --out=runs/fused/page_models

Each argument is an arm's folder of a sweep (`experiments/sweep.py`), whose runs `seedS_foldF`
each wrote their test fold's per-page probabilities (`RUN/eval/predictions.csv`). For every run
that all the arms have, the page's probabilities are averaged over the arms: what
`configs/fusion.py` with `model.method=mean_probs` computes from the restored backbones, without
them (a GPU loan returns the CSV files, not the checkpoints). Each fused run gets
`OUT/seedS_foldF/eval/{report.json,predictions.csv,confusion_matrix.png}`, the files a run writes,
and a `config.json` naming its runs; `OUT/results.{md,csv,png}` aggregate them as a sweep's table.
Runs that disagree on their pages or a page's label are refused with one line naming them.

  python experiments/fuse.py --seeds runs/ablations/signal_capacity/base --out=runs/fused/seeds

averages one arm's runs over its seeds instead, fold by fold (`OUT/foldF`): an ensemble of the
seeds that every fold has.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import sys
from collections.abc import Sequence

import numpy as np
from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from ecgjax import report as report_lib  # pylint: disable=g-import-not-at-top,wrong-import-position
from ecgjax.classes import CLASS_NAMES  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import ablations  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments import sweep  # pylint: disable=g-import-not-at-top,wrong-import-position

RUN_NAME = re.compile(r"seed(\d+)_fold(\d+)$")


class FuseError(ValueError):
  """Runs that cannot be fused; the message names them."""


def read_predictions(path: str) -> tuple[list[str], list[str], np.ndarray]:
  """A run's predictions.csv -> (pages, true classes, probabilities [pages, classes])."""
  with open(path, newline="") as f:
    rows = list(csv.DictReader(f))
  columns = report_lib.PROBABILITY_COLUMNS
  if not rows or any(c not in rows[0] for c in ("source_path", "true_class", *columns)):
    raise FuseError(f"{path}: expected rows with source_path, true_class and "
                    f"{', '.join(columns)}.")
  return ([r["source_path"] for r in rows], [r["true_class"] for r in rows],
          np.array([[float(r[c]) for c in columns] for r in rows], np.float64))


def run_names(arm_dir: str) -> set[str]:
  """The runs (seedS_foldF) under `arm_dir` that wrote their test predictions."""
  return {os.path.basename(d) for d in glob.glob(os.path.join(arm_dir, "seed*_fold*"))
          if RUN_NAME.match(os.path.basename(d))
          and os.path.exists(os.path.join(d, "eval", "predictions.csv"))}


def fuse_run(run_dirs: Sequence[str], out_dir: str) -> dict:
  """Averages the runs' probabilities page by page; writes the fused run into `out_dir`."""
  paths = [os.path.join(d, "eval", "predictions.csv") for d in run_dirs]
  pages, truth, probs = read_predictions(paths[0])
  order = {p: i for i, p in enumerate(pages)}
  total = probs.copy()
  for path in paths[1:]:
    other_pages, other_truth, other_probs = read_predictions(path)
    if sorted(other_pages) != sorted(pages):
      raise FuseError(f"{path} and {paths[0]} tested different pages: fuse runs of one test fold.")
    idx = np.array([order[p] for p in other_pages])
    if any(truth[i] != t for i, t in zip(idx, other_truth)):
      raise FuseError(f"{path} and {paths[0]} disagree on a page's label.")
    total[idx] += other_probs
  mean = total / len(paths)
  labels = np.array([CLASS_NAMES.index(t) for t in truth])
  # log(mean p) as logits: the report's softmax gives back the averaged probabilities exactly as
  # the fused model's 'mean_probs' (a log-mean-exp of log-softmaxes) does.
  report = report_lib.classification_report(labels, np.log(np.maximum(mean, 1e-30)))
  # The checkpoints the fused runs reported, so that the table's column names them.
  used = set()
  for d in run_dirs:
    run_report = os.path.join(d, "eval", "report.json")
    if os.path.exists(run_report) and os.path.exists(os.path.join(d, "config.json")):
      with open(run_report) as f:
        used.add(sweep.reported_checkpoint(d, json.load(f)))
  if used:
    report["checkpoint"] = "/".join(sorted(used))
  eval_dir = os.path.join(out_dir, "eval")
  os.makedirs(eval_dir, exist_ok=True)
  report_lib.write(report, eval_dir)
  report_lib.write_rows([report_lib.prediction_row(p, t, m) for p, t, m in zip(pages, truth, mean)],
                        os.path.join(eval_dir, "predictions.csv"))
  data = {}
  first_config = os.path.join(run_dirs[0], "config.json")
  if os.path.exists(first_config):
    with open(first_config) as f:
      data = json.load(f).get("data", {})
  with open(os.path.join(out_dir, "config.json"), "w") as f:
    json.dump({"fused_offline": {"method": "mean_probs", "runs": [os.path.abspath(d)
                                                                  for d in run_dirs]},
               "data": data}, f, indent=2)
  return report


def fuse(arm_dirs: Sequence[str], out: str, name: str | None = None) -> list[dict]:
  """Fuses every run all `arm_dirs` have into `out`; returns the aggregate table's rows."""
  if len(arm_dirs) < 2:
    raise FuseError("Give two or more arm folders to fuse.")
  names = [run_names(d) for d in arm_dirs]
  for d, n in zip(arm_dirs, names):
    if not n:
      raise FuseError(f"{d}: no runs with eval/predictions.csv (seedS_foldF folders) in it.")
  common = sorted(set.intersection(*names))
  if not common:
    raise FuseError(f"The folders {list(arm_dirs)} have no run (seedS_foldF) in common.")
  name = name or os.path.basename(os.path.normpath(out))
  arm = ablations.Arm(name)
  runs = []
  for run in common:
    seed, fold = map(int, RUN_NAME.match(run).groups())
    fuse_run([os.path.join(d, run) for d in arm_dirs], os.path.join(out, run))
    runs.append(sweep.Run(arm, seed, fold, os.path.join(out, run)))
  fused = ablations.Ablation(
      name, "Probabilities averaged offline (experiments/fuse.py) over the runs of: "
      + ", ".join(os.path.normpath(d) for d in arm_dirs) + ".", arms=(arm,))
  return sweep.aggregate(fused, runs, out)


def fuse_seeds(arm_dir: str, out: str, name: str | None = None) -> list[dict]:
  """Averages one arm's runs over its seeds, fold by fold (`OUT/foldF`): an ensemble of the seeds
  that every fold of `arm_dir` has; returns the aggregate table's rows."""
  by_fold: dict[int, dict[int, str]] = {}
  for run in run_names(arm_dir):
    seed, fold = map(int, RUN_NAME.match(run).groups())
    by_fold.setdefault(fold, {})[seed] = os.path.join(arm_dir, run)
  seeds = sorted(set.intersection(*(set(s) for s in by_fold.values()))) if by_fold else []
  if len(seeds) < 2:
    raise FuseError(f"{arm_dir}: fewer than two seeds with runs (seedS_foldF, with "
                    f"eval/predictions.csv) in every fold; nothing to average over seeds.")
  name = name or os.path.basename(os.path.normpath(out))
  arm = ablations.Arm(name)
  runs = []
  for fold, seed_runs in sorted(by_fold.items()):
    fuse_run([seed_runs[s] for s in seeds], os.path.join(out, f"fold{fold}"))
    runs.append(sweep.Run(arm, seeds[0], fold, os.path.join(out, f"fold{fold}")))
  fused = ablations.Ablation(
      name, f"Probabilities averaged offline (experiments/fuse.py --seeds) over seeds "
      f"{', '.join(map(str, seeds))} of {os.path.normpath(arm_dir)}, fold by fold.", arms=(arm,))
  return sweep.aggregate(fused, runs, out)


def _define_flags() -> None:
  flags.DEFINE_string("out", None, "Folder for the fused runs and their table.", required=True)
  flags.DEFINE_string("name", None, "The table's arm name (default: --out's folder name).")
  flags.DEFINE_bool("seeds", False, "Average one arm folder's runs over their seeds, fold by fold.")


def main(argv):
  try:
    if flags.FLAGS.seeds:
      if len(argv) != 2:
        raise FuseError(f"--seeds averages one arm folder's seeds; got {len(argv) - 1} folders.")
      fuse_seeds(argv[1], flags.FLAGS.out, flags.FLAGS.name)
      return
    fuse(argv[1:], flags.FLAGS.out, flags.FLAGS.name)
  except FuseError as e:
    print(f"fuse.py: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
