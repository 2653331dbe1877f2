"""Seconds per page of `ecgjax.digitize.digitize` on one CPU core, at 1280 and 2213 px.

    PYTHONPATH=. python experiments/benchmark_digitize.py --repeats 3

Pages are decoded once beforehand (decoding a JPEG is not the digitizer's work); the dev set's pages
give 1280 px, the sample's 2213 px, synthetic pages both. Threads are pinned to one before numpy is
imported, and time is the process's CPU time (a shared machine's other jobs barely disturb it), with
wall-clock time beside it. Target (issue 13): <= 0.2 s per page.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
  os.environ[_var] = "1"

# pylint: disable=g-import-not-at-top,wrong-import-position
import pathlib
import time

import numpy as np
from absl import app
from absl import flags
from PIL import Image

from ecgjax import digitize
from ecgjax.data import synth
from ecgjax.data.layout import REAL_LAYOUT

FLAGS = flags.FLAGS
_SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_integer("pages", 8, "Pages per set.")
  flags.DEFINE_integer("repeats", 3, "Passes over the pages (the best pass counts).")
  flags.DEFINE_string("dev_dir", str(_SHARED / "ecg_images_dev"), "1280 px real pages.")
  flags.DEFINE_string("sample_dir", str(_SHARED / "ecg_images_sample"), "2213 px real pages.")


def _read(paths: list[pathlib.Path]) -> list[np.ndarray]:
  out = []
  for path in paths:
    with Image.open(path) as pil:
      out.append(np.asarray(pil.convert("RGB")))
  return out


def _synthetic(width: int, n: int) -> list[np.ndarray]:
  style = synth.PageStyle(layout=REAL_LAYOUT.scaled(width / REAL_LAYOUT.page_size[0]))
  return [synth.render(synth.simulate(i % 4, i), i, style=style) for i in range(n)]


def time_pages(pages: list[np.ndarray], repeats: int) -> tuple[float, float]:
  """Best (CPU, wall) seconds per page over `repeats` passes."""
  digitize.digitize(pages[0])  # Warm caches and imports.
  best_cpu = best_wall = float("inf")
  for _ in range(repeats):
    c0, w0 = time.process_time(), time.perf_counter()
    for page in pages:
      digitize.digitize(page)
    best_cpu = min(best_cpu, (time.process_time() - c0) / len(pages))
    best_wall = min(best_wall, (time.perf_counter() - w0) / len(pages))
  return best_cpu, best_wall


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  n = FLAGS.pages
  sets = {
      "real dev, 1280 px": _read(sorted(pathlib.Path(FLAGS.dev_dir).glob("*/*.jpg"))[:n]),
      "real sample, 2213 px": _read(sorted(pathlib.Path(FLAGS.sample_dir).glob("*/*.jpg"))[:n]),
      "synthetic, 1280 px": _synthetic(1280, n),
      "synthetic, 2213 px": _synthetic(2213, n),
  }
  print("| pages | n | CPU s/page (1 core) | wall s/page | target <= 0.2 |")
  print("|---|---|---|---|---|")
  for name, pages in sets.items():
    if not pages:
      print(f"| {name} | 0 | (none found) | | |")
      continue
    cpu, wall = time_pages(pages, FLAGS.repeats)
    print(f"| {name} | {len(pages)} | {cpu:.3f} | {wall:.3f} | {'yes' if cpu <= 0.2 else 'no'} |")


if __name__ == "__main__":
  _define_flags()
  app.run(main)
