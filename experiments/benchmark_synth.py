"""Throughput of the synthetic data set: full-size pages per second per CPU core.

    PYTHONPATH=. python experiments/benchmark_synth.py --pages 40 --pool

Prints the rate of each stage (simulate, render, encode the page as JPEG) and of all three together
in one process, the target being at least 10 pages/s per core, and with --pool the rate of
`python -m ecgjax.data.synth`-style generation on all cores. Per-core rates use the process's CPU
time, which other jobs on a shared machine barely disturb; wall-clock rates are printed beside them.
"""

from __future__ import annotations

import os
import time

from absl import app
from absl import flags

from ecgjax.classes import CLASS_NAMES
from ecgjax.data import synth

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_integer("pages", 40, "Pages per measurement.")
  flags.DEFINE_bool("pool", False, "Also time generation on all cores.")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  jobs = [(CLASS_NAMES[i % 4], 1000 + i) for i in range(FLAGS.pages)]
  synth.prepare()  # Static page parts are cached per process, as in every worker.
  cpu = {"simulate": 0.0, "render": 0.0, "encode": 0.0}
  wall = dict(cpu)
  for label, seed in jobs:
    c0, w0 = time.process_time(), time.perf_counter()
    record = synth.simulate(label, seed)
    c1, w1 = time.process_time(), time.perf_counter()
    page = synth.render(record, seed)
    c2, w2 = time.process_time(), time.perf_counter()
    synth.encode_jpeg(page)
    c3, w3 = time.process_time(), time.perf_counter()
    for stage, (c, w) in zip(cpu, [(c1 - c0, w1 - w0), (c2 - c1, w2 - w1), (c3 - c2, w3 - w2)]):
      cpu[stage] += c
      wall[stage] += w
  n = len(jobs)
  cpu["total"], wall["total"] = sum(cpu.values()), sum(wall.values())
  for stage in cpu:
    print(f"{stage:>9}: {n / cpu[stage]:7.1f} pages/s/core by CPU time ({1000 * cpu[stage] / n:6.1f} "
          f"ms/page), {n / wall[stage]:7.1f} by wall clock"
          + ("   target >= 10" if stage == "total" else ""))

  if FLAGS.pool:
    import tempfile
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as out:
      t0 = time.perf_counter()
      synth.write_release(out, per_class=max(1, n // 4), seed=0, workers=cores)
      seconds = time.perf_counter() - t0
    pages = 4 * max(1, n // 4)
    print(f"write_release on {cores} cores: {pages / seconds:.1f} pages/s "
          f"({pages / seconds / cores:.1f} per core, including process start-up)")


def run() -> None:
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
