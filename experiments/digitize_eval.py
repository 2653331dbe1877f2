"""How well `ecgjax.digitize` reads pages: against the truth on synthetic pages, by Einthoven on
real ones.

    PYTHONPATH=. python experiments/digitize_eval.py --pages_per_condition 3 --widths 2213,1280 \
        --dev_pages 0

Synthetic: pages of every class and sub-condition (`synth.conditions`), rendered at each width in
`--widths`, are digitized and compared with the record they were drawn from over each lead's 2.5 s
window: SNR = 10 log10(sum x^2 / sum (x - y)^2) and Pearson r, truth x and digitized y each
mean-removed. A lead is read when its quality (fraction of its columns with a trace) is >= 0.9 and
its signal is finite. "aligned" is the SNR after one time shift per page (shared by all leads,
within +-1.5 px) that undoes what is left of the renderer's own sub-pixel placement: PIL truncates
polyline coordinates, so a synthetic trace lies half a pixel (on average) left of its record, while
the pulses and separators, at whole or rounded pixels, do not; the digitizer now takes the traces'
time origin from their own ends (`PageFit.trace_shift`), so the median shift is about 0.

Real (no truth): Einthoven residuals on the dev pages (`--dev_pages`, 0 = all 292) and the 16-file
sample: sum((III - (II - I))^2) / sum(II^2) in the first column and sum((aVR + aVL + aVF)^2) / sum
of the largest's square in the second (`digitize.einthoven_residuals`).
Targets (issue 13): median SNR >= 15 dB, median r >= 0.95, every lead read on >= 99% of pages,
median limb residual <= 0.1 on the dev pages.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np
from absl import app
from absl import flags

from ecgjax import digitize
from ecgjax.classes import CLASS_NAMES
from ecgjax.data import synth
from ecgjax.data.layout import LEADS, REAL_LAYOUT

FLAGS = flags.FLAGS
_SHARED = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_integer("pages_per_condition", 3, "Synthetic pages per (class, sub-condition).")
  flags.DEFINE_string("widths", "2213,1280", "Comma-separated page widths of the synthetic pages.")
  flags.DEFINE_integer("seed", 0, "Base seed of the synthetic pages.")
  flags.DEFINE_integer("dev_pages", 0, "Dev pages to check (0: all, -1: none), evenly spread.")
  flags.DEFINE_string("dev_dir", str(_SHARED / "ecg_images_dev"), "The dev pages.")
  flags.DEFINE_string("sample_dir", str(_SHARED / "ecg_images_sample"), "The 16-page sample.")


def synthetic_page(label: str, condition: str, seed: int, width: int) -> dict:
  """Digitizes one synthetic page; per-lead SNR, r, read flags, and the aligned SNR."""
  record = synth.simulate(label, seed, condition=condition)
  style = synth.PageStyle(layout=REAL_LAYOUT.scaled(width / REAL_LAYOUT.page_size[0]))
  page, geometry = synth.render(record, seed, style=style, return_geometry=True)
  d = digitize.digitize(page)
  mask = digitize.shown_mask(d.signals.shape[1])
  truth = np.where(mask, record.signals, np.nan)
  snr = np.array([digitize.snr_db(truth[i], d.signals[i]) for i in range(len(LEADS))])
  r = np.array([digitize.pearson_r(truth[i], d.signals[i]) for i in range(len(LEADS))])
  read = (d.quality >= 0.9) & np.isfinite(d.signals[mask.nonzero()].reshape(len(LEADS), -1)).all(1)
  # The renderer's placement: one shift per page, in samples (1.5 px at most).
  limit = 1.5 * d.fs / d.layout.px_per_s
  t = np.arange(d.signals.shape[1], dtype=np.float64)
  best, best_lag = -np.inf, 0.0
  for lag in np.linspace(-limit, limit, 13):
    shifted = [np.interp(t + lag, t[mask[i]], d.signals[i][mask[i]]) for i in range(len(LEADS))]
    score = np.median([digitize.snr_db(truth[i], np.where(mask[i], s, np.nan))
                       for i, s in enumerate(shifted)])
    if score > best:
      best, best_lag = score, lag
  shifted = [np.where(mask[i], np.interp(t + best_lag, t[mask[i]], d.signals[i][mask[i]]), np.nan)
             for i in range(len(LEADS))]
  aligned = np.array([digitize.snr_db(truth[i], shifted[i]) for i in range(len(LEADS))])
  rhythm_snr = digitize.snr_db(record.lead(geometry.rhythm_lead), d.rhythm)
  return {"snr": snr, "r": r, "read": read, "aligned": aligned, "lag": best_lag,
          "rhythm_snr": rhythm_snr, "rhythm_read": d.rhythm_quality >= 0.9}


def synthetic_table(pages_per_condition: int, width: int, seed: int) -> dict:
  rows, names = [], []
  for label in CLASS_NAMES:
    for condition in synth.conditions(label):
      for i in range(pages_per_condition):
        index = 1000 * synth.conditions(label).index(condition) + i
        page_seed = synth.page_seed(seed, label, index)
        rows.append(synthetic_page(label, condition, page_seed, width))
        names.append(f"{label}/{condition}")
  return {"rows": rows, "names": names}


def print_synthetic(table: dict, width: int) -> None:
  rows = table["rows"]
  snr = np.stack([r["snr"] for r in rows])
  cor = np.stack([r["r"] for r in rows])
  read = np.stack([r["read"] for r in rows])
  aligned = np.stack([r["aligned"] for r in rows])
  print(f"\n### Synthetic pages at {width} px: {len(rows)} pages "
        f"(median renderer shift {np.median([r['lag'] for r in rows]):+.2f} samples)\n")
  print("| lead | SNR median (dB) | SNR p10 | r median | r p10 | read | SNR aligned median |")
  print("|---|---|---|---|---|---|---|")
  for i, lead in enumerate(LEADS):
    print(f"| {lead} | {np.median(snr[:, i]):.1f} | {np.percentile(snr[:, i], 10):.1f} | "
          f"{np.median(cor[:, i]):.3f} | {np.percentile(cor[:, i], 10):.3f} | "
          f"{read[:, i].mean():.1%} | {np.median(aligned[:, i]):.1f} |")
  rs = np.array([r["rhythm_snr"] for r in rows])
  print(f"| rhythm | {np.median(rs):.1f} | {np.percentile(rs, 10):.1f} | | | "
        f"{np.mean([r['rhythm_read'] for r in rows]):.1%} | |")
  print(f"| **all** | **{np.median(snr):.1f}** | {np.percentile(snr, 10):.1f} | "
        f"**{np.median(cor):.3f}** | {np.percentile(cor, 10):.3f} | {read.mean():.1%} "
        f"(worst lead {read.mean(0).min():.1%}) | {np.median(aligned):.1f} |")
  print("\n| class/condition | pages | SNR median | SNR aligned median | r median |")
  print("|---|---|---|---|---|")
  names = np.array(table["names"])
  for name in dict.fromkeys(table["names"]):
    sel = names == name
    print(f"| {name} | {sel.sum()} | {np.median(snr[sel]):.1f} | {np.median(aligned[sel]):.1f} | "
          f"{np.median(cor[sel]):.3f} |")


def real_residuals(paths: list[pathlib.Path]) -> np.ndarray:
  """(n, 2) Einthoven residuals (limb, augmented) of the pages, and the minimum lead quality."""
  out = []
  for path in paths:
    d = digitize.digitize(path)
    out.append((*digitize.einthoven_residuals(d), float(d.quality.min())))
  return np.asarray(out)


def print_real(name: str, res: np.ndarray, seconds: float) -> None:
  print(f"\n### {name}: {len(res)} pages ({seconds / max(len(res), 1):.2f} s/page)\n")
  print("| residual | median | p25 | p75 | p90 | pages <= 0.1 |")
  print("|---|---|---|---|---|---|")
  for j, label in enumerate(["III - (II - I), / II", "aVR + aVL + aVF, / largest"]):
    v = res[:, j]
    print(f"| {label} | {np.median(v):.3f} | {np.percentile(v, 25):.3f} | "
          f"{np.percentile(v, 75):.3f} | {np.percentile(v, 90):.3f} | {(v <= 0.1).mean():.0%} |")
  print(f"| min lead quality | {np.median(res[:, 2]):.3f} | {np.percentile(res[:, 2], 25):.3f} | "
        f"{np.percentile(res[:, 2], 75):.3f} | | |")


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  for width in [int(w) for w in FLAGS.widths.split(",") if w]:
    if FLAGS.pages_per_condition > 0:
      print_synthetic(synthetic_table(FLAGS.pages_per_condition, width, FLAGS.seed), width)
  if FLAGS.dev_pages >= 0:
    paths = sorted(pathlib.Path(FLAGS.dev_dir).glob("*/*.jpg"))
    if not paths:
      raise FileNotFoundError(f"No dev pages (*/*.jpg) under {FLAGS.dev_dir}.")
    if FLAGS.dev_pages:
      picks = np.linspace(0, len(paths) - 1, FLAGS.dev_pages).round().astype(int)
      paths = [paths[i] for i in picks]
    t0 = time.perf_counter()
    res = real_residuals(paths)
    print_real(f"Dev pages (1280 px), {FLAGS.dev_dir}", res, time.perf_counter() - t0)
  paths = sorted(pathlib.Path(FLAGS.sample_dir).glob("*/*.jpg"))
  if paths:
    t0 = time.perf_counter()
    res = real_residuals(paths)
    print_real(f"Sample pages (2213 px, with duplicates), {FLAGS.sample_dir}", res,
               time.perf_counter() - t0)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
