r"""Seconds per training epoch of a real run: `python -m ecgjax.main`, timed from its own log.

  python experiments/benchmark_epoch.py --config=configs/cnn_small.py --epochs=4 \
      --override=dataset.name=ecg_images --override=dataset.config=w1024 \
      --override=dataset.manual_dir=../shared/data/ecg_images_dev

It runs the command users run in a fresh workdir (no saliency maps) and reads the times of the log
lines that end each epoch's validation ("epoch N step S: ..."): an epoch is the time between two of
them, so it counts the steps, the BatchNorm recomputation, validation and the checkpoint, and not
the start-up, the data set build, the first decoding or compilation (epoch 1 is left out). `--repo`
times another checkout of ecgjax the same way (e.g. the previous commit, in a `git worktree`), so
before and after are measured on the same machine. Prints the mean and every epoch.
"""

import datetime
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_EPOCH = re.compile(r"^I(\d{4}) (\d\d:\d\d:\d\d\.\d+) .*\] epoch (\d+) step \d+:")

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_string("config", "configs/cnn_small.py",
                      "The experiment config (configs/NAME.py[:arg]).")
  flags.DEFINE_integer("epochs", 4, "Epochs to run; epoch 1 is left out of the figures.")
  flags.DEFINE_multi_string("override", [], "Config override FIELD=VALUE (repeatable).")
  flags.DEFINE_string("repo", REPO, "The ecgjax checkout to time.")


def epoch_seconds(log: str) -> list[float]:
  """Seconds between consecutive end-of-epoch log lines."""
  times = []
  for line in log.splitlines():
    match = _EPOCH.match(line)
    if match:
      times.append(datetime.datetime.strptime(match.group(2), "%H:%M:%S.%f"))
  return [(b - a).total_seconds() % 86400 for a, b in zip(times, times[1:])]


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  workdir = tempfile.mkdtemp(prefix="ecgjax-epoch-")
  command = [sys.executable, "-m", "ecgjax.main", f"--config={FLAGS.config}",
             f"--workdir={workdir}", f"--config.train.num_epochs={FLAGS.epochs}",
             "--config.saliency.num_pages=0"]
  command += [f"--config.{o}" for o in FLAGS.override]
  env = dict(os.environ, PYTHONPATH=os.path.abspath(FLAGS.repo), TF_CPP_MIN_LOG_LEVEL="2")
  try:
    proc = subprocess.run(command, cwd=FLAGS.repo, env=env, capture_output=True, text=True,
                          check=False)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  if proc.returncode:
    raise SystemExit(f"The run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
  seconds = epoch_seconds(proc.stderr)
  if not seconds:
    raise SystemExit("No two end-of-epoch log lines: is there a validation fold "
                     "(config.data.val_fold) and are there at least 2 epochs?")
  print(f"{FLAGS.repo}: {FLAGS.config} {' '.join(FLAGS.override)}")
  print(f"seconds per epoch (epochs 2..{FLAGS.epochs}): mean {statistics.mean(seconds):.2f}, "
        f"each {', '.join(f'{s:.2f}' for s in seconds)}")


def run() -> None:
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
