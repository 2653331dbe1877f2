r"""Wall time of a run in N processes on this machine against one process with N devices.

  python experiments/benchmark_multihost.py --config=configs/cnn.py:smoke --processes=2

Both are `python -m ecgjax.main` as users launch them: one process with N faked CPU devices
(`--xla_force_host_platform_device_count`), and N processes with one device each, joined through
JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID (gloo on CPU). Each is timed from
launch until every process has exited, in a fresh workdir, and the final test macro-F1 of both is
printed so that the two runs can be seen to agree. The target is N processes within the one-process
time plus 30 s. `--override FIELD=VALUE` (repeatable) changes the config of both.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_string("config", "configs/cnn.py:smoke",
                      "The experiment config (configs/NAME.py[:arg]).")
  flags.DEFINE_integer("processes", 2, "N: processes of one device each, against 1 process of N.")
  flags.DEFINE_multi_string("override", [], "Config override FIELD=VALUE for both (repeatable).")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def time_launch(config: str, processes: int, devices: int,
                overrides: list[str]) -> tuple[float, dict]:
  """(seconds from launch until all processes exited, the test report)."""
  workdir = tempfile.mkdtemp(prefix="ecgjax-multihost-")
  command = [sys.executable, "-m", "ecgjax.main", f"--config={config}", f"--workdir={workdir}"]
  command += [f"--config.{o}" for o in overrides]
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
  if processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}",
               JAX_NUM_PROCESSES=str(processes))
  start = time.perf_counter()
  procs = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True,
                            env=dict(env, JAX_PROCESS_ID=str(i)) if processes > 1 else env)
           for i in range(processes)]
  errors = [p.communicate()[1] for p in procs]
  seconds = time.perf_counter() - start
  try:
    for p, err in zip(procs, errors):
      if p.returncode:
        raise SystemExit(f"A process exited {p.returncode}:\n{err[-3000:]}")
    with open(os.path.join(workdir, "eval", "report.json")) as f:
      return seconds, json.load(f)
  finally:
    shutil.rmtree(workdir, ignore_errors=True)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  one_s, one = time_launch(FLAGS.config, 1, FLAGS.processes, FLAGS.override)
  many_s, many = time_launch(FLAGS.config, FLAGS.processes, 1, FLAGS.override)
  n = FLAGS.processes
  print(f"{FLAGS.config} {' '.join(FLAGS.override)}")
  print(f"| launch | wall s | test macro-F1 |\n|---|---|---|\n"
        f"| 1 process, {n} devices | {one_s:.1f} | {one['macro_f1']:.4f} |\n"
        f"| {n} processes, 1 device each | {many_s:.1f} | {many['macro_f1']:.4f} |")
  print(f"{n} processes took {many_s - one_s:+.1f} s against one (target: at most +30 s).")


def run() -> None:
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
