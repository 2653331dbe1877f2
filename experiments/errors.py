r"""Which pages a sweep's runs get wrong, at every seed, and whether other models fail them too.

  python experiments/errors.py runs/ablations/signal_pooling/mean runs/ablations/signals/image \
      [--out=errors.md]

Each argument is an arm's folder of a sweep (`experiments/sweep.py`): its runs' per-page test
predictions (`RUN/eval/predictions.csv`, written by every run with a test fold) are read and
grouped by page. A page is *always wrong* for an arm when every run of the arm that tested it got
it wrong. The first arm's always-wrong pages are listed with, for every arm, how many of its runs
got the page wrong, the class they took it for most often and their mean probability of the true
class. Then, per arm, how many of those pages it also always gets wrong as the same class, and the
macro-F1 that the first arm's pages alone would leave (every other page right, pooled over all
pages): how much of the gap to a perfect score the pages that no seed gets right explain.

With `--manual_dir` (the release folder the runs' data set was built from) every page of the first
arm is digitized again (`ecgjax.digitize`, about 0.03 s a 1280 px page) and the report adds how
well: the always-wrong table gains each page's Einthoven residual (limb leads, 0 is perfect) and
its worst lead's quality (the share of its columns where a trace was found), and a table splits the
pages into quarters by each measure with the first arm's share of wrong predictions in each (and
each quarter's pages per class, since the classes differ in difficulty), and a line per measure
gives the Spearman rank correlation between a page's share of wrong runs and the measure within
each class. Errors that gather on the worst-read pages point at the digitizer; errors spread
evenly point elsewhere.

  python experiments/errors.py runs/ablations/signal_pooling/mean \
      --manual_dir=../shared/data/ecg_images_dev
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import glob
import os
import sys
from collections.abc import Sequence

import numpy as np
from absl import app
from absl import flags
from scipy import stats
from sklearn import metrics as skm

from ecgjax import digitize
from ecgjax.classes import CLASS_NAMES


@dataclasses.dataclass
class Page:
  """One page's predictions over the runs of one arm that tested it."""
  true_class: str
  predicted: list[str] = dataclasses.field(default_factory=list)
  p_true: list[float] = dataclasses.field(default_factory=list)

  @property
  def wrong(self) -> int:
    return sum(p != self.true_class for p in self.predicted)

  @property
  def always_wrong(self) -> bool:
    return bool(self.predicted) and self.wrong == len(self.predicted)

  @property
  def taken_for(self) -> str:
    """The wrong class the runs gave most often ('' if none was wrong)."""
    counts = collections.Counter(p for p in self.predicted if p != self.true_class)
    return counts.most_common(1)[0][0] if counts else ""


def read_arm(arm_dir: str) -> tuple[dict[str, Page], int]:
  """{page: Page} over the runs under `arm_dir` (their eval/predictions.csv), and the run count.

  A page is named by its path below the release folder (`source_path`)."""
  files = sorted(glob.glob(os.path.join(arm_dir, "*", "eval", "predictions.csv")))
  if not files:
    raise ValueError(f"{arm_dir}: no RUN/eval/predictions.csv below it; give an arm's folder of a "
                     "sweep (e.g. runs/ablations/signals/image) whose runs have finished.")
  pages: dict[str, Page] = {}
  for path in files:
    with open(path, newline="") as f:
      for row in csv.DictReader(f):
        page = pages.setdefault(row["source_path"], Page(row["true_class"]))
        if page.true_class != row["true_class"]:
          raise ValueError(f"{path}: {row['source_path']} is {row['true_class']!r} here and "
                           f"{page.true_class!r} in another run: the arms must test the same data.")
        page.predicted.append(row["predicted_class"])
        page.p_true.append(float(row["p_" + row["true_class"]]))
  return pages, len(files)


def pooled_macro_f1(true: Sequence[str], predicted: Sequence[str]) -> float:
  """Macro-F1 over CLASS_NAMES of one prediction per page, as the runs' reports compute it
  (`ecgjax.report.classification_report`: F1 0 for a class never right)."""
  return float(skm.f1_score(true, predicted, labels=list(CLASS_NAMES), average="macro",
                            zero_division=0))


def ceiling(pages: dict[str, Page], wrong: Sequence[str]) -> float:
  """Pooled macro-F1 if the pages `wrong` were taken for their usual wrong class and every other
  page of `pages` were right."""
  names, wrong = sorted(pages), set(wrong)
  true = [pages[n].true_class for n in names]
  predicted = [pages[n].taken_for if n in wrong else pages[n].true_class for n in names]
  return pooled_macro_f1(true, predicted)


@dataclasses.dataclass(frozen=True)
class Reading:
  """How well the digitizer reads one page, without truth."""
  limb: float  # Einthoven residual of the limb leads (`digitize.einthoven_residuals`).
  quality: float  # The worst of the twelve leads' quality (share of columns with a trace).


# Measures of `Reading` the report splits the pages by: (field, its name, worse is larger).
MEASURES = (("limb", "Einthoven residual, limb leads", True),
            ("quality", "worst lead's quality", False))


def read_pages(names: Sequence[str], manual_dir: str) -> dict[str, Reading]:
  """{page: Reading} of the pages `names` (paths below `manual_dir`), each digitized once."""
  readings = {}
  for n in names:
    path = os.path.join(os.path.expanduser(manual_dir), n)
    if not os.path.exists(path):
      raise ValueError(f"{path}: no such page; give --manual_dir the release folder the runs' data "
                       "set was built from.")
    try:
      d = digitize.digitize(path)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"{path}: cannot be digitized ({e}).") from e
    readings[n] = Reading(digitize.einthoven_residuals(d)[0], float(np.min(d.quality)))
  return readings


def quarters(pages: dict[str, Page], readings: dict[str, Reading], field: str,
             worse_is_larger: bool) -> list[tuple[float, float, list[int], int, int, int]]:
  """The pages in four equal-count groups by `field`, best-read first: per group (lowest and highest
  value, pages of each class in CLASS_NAMES order, runs wrong, runs, pages wrong in every run). A
  page whose measure is NaN (no limb lead read) counts as worst read."""
  def key(n):
    v = getattr(readings[n], field)
    v = np.inf if np.isnan(v) else (v if worse_is_larger else -v)
    return (v, n)
  ordered = sorted(readings, key=key)
  rows = []
  for group in np.array_split(np.array(ordered, dtype=object), 4):
    values = [getattr(readings[n], field) for n in group]
    per_class = [sum(pages[n].true_class == c for n in group) for c in CLASS_NAMES]
    rows.append((float(np.nanmin(values)), float(np.nanmax(values)), per_class,
                 sum(pages[n].wrong for n in group), sum(len(pages[n].predicted) for n in group),
                 sum(pages[n].always_wrong for n in group)))
  return rows


def within_class(pages: dict[str, Page], readings: dict[str, Reading],
                 field: str) -> dict[str, tuple[float, float, int]]:
  """{class: (Spearman rho, its p-value, pages)} between each page's share of wrong runs and
  `field`, over the pages of that class with a finite measure: whether a class's errors follow the
  reading, free of the classes' different difficulty. NaN where a class has under 3 pages or no
  variation."""
  out = {}
  for c in CLASS_NAMES:
    names = [n for n in readings if pages[n].true_class == c
             and np.isfinite(getattr(readings[n], field))]
    share = [pages[n].wrong / len(pages[n].predicted) for n in names]
    value = [getattr(readings[n], field) for n in names]
    rho = p = float("nan")
    if len(names) >= 3 and len(set(share)) > 1 and len(set(value)) > 1:
      rho, p = (float(v) for v in stats.spearmanr(share, value))
    out[c] = (rho, p, len(names))
  return out


def analyse(arm_dirs: Sequence[str], manual_dir: str | None = None) -> str:
  """The markdown report described in the module docstring."""
  arms = [(os.path.normpath(d), *read_arm(d)) for d in arm_dirs]
  name = lambda d: "/".join(d.split(os.sep)[-2:])  # 'signals/image'.
  first_dir, first, _ = arms[0]
  hard = sorted((n for n, p in first.items() if p.always_wrong),
                key=lambda n: (CLASS_NAMES.index(first[n].true_class), n))
  readings = read_pages(sorted(first), manual_dir) if manual_dir else {}
  read_head = " | Einthoven residual, worst lead's quality" if readings else ""
  lines = [f"# Pages {name(first_dir)} always gets wrong", ""]
  for d, pages, runs in arms:
    always = sum(p.always_wrong for p in pages.values())
    lines.append(f"- {name(d)}: {runs} runs, {len(pages)} pages, {always} wrong in every run that "
                 "tested them")
  lines += ["", f"{len(hard)} pages {name(first_dir)} gets wrong in every run. Per arm: runs "
            "wrong / runs, the class taken for most often, mean p(true class).", "",
            "| page | true class | " + " | ".join(name(d) for d, _, _ in arms) + read_head + " |",
            "|---|---|" + "---|" * (len(arms) + bool(readings))]
  for n in hard:
    cells = []
    for _, pages, _ in arms:
      p = pages.get(n)
      cells.append("not tested" if p is None else
                   f"{p.wrong}/{len(p.predicted)} {p.taken_for or '-'} {np.mean(p.p_true):.2f}")
    if readings:
      cells.append(f"{readings[n].limb:.3f}, {readings[n].quality:.2f}")
    lines.append(f"| {os.path.basename(n)} | {first[n].true_class} | " + " | ".join(cells) + " |")
  lines.append("")
  for d, pages, _ in arms[1:]:
    both = [n for n in hard if n in pages and pages[n].always_wrong]
    same = [n for n in both if pages[n].taken_for == first[n].taken_for]
    lines.append(f"- {name(d)} also gets {len(both)} of them wrong in every run, {len(same)} as "
                 "the same class.")
  lines.append(f"- Pooled macro-F1 over the {len(first)} pages if only these {len(hard)} were "
               f"wrong: {ceiling(first, hard):.3f}.")
  if readings:
    lines += ["", f"{name(first_dir)}'s errors by how well the digitizer reads the page: its "
              f"{len(first)} pages in quarters, best read first; runs wrong / runs that tested "
              "them, and pages wrong in every run. The classes are not spread evenly over the "
              "quarters, and some are harder than others: compare the quarters' classes before "
              "their errors.", "",
              "| measure | quarter | range | pages (" + " / ".join(CLASS_NAMES) + ") | "
              "runs wrong | share wrong | always wrong |",
              "|---|---|---|---|---|---|---|"]
    for field, title, worse_is_larger in MEASURES:
      for q, (lo, hi, per_class, wrong, runs, always) in enumerate(
          quarters(first, readings, field, worse_is_larger), 1):
        classes = " / ".join(map(str, per_class))
        lines.append(f"| {title} | {q} | {lo:.3f}-{hi:.3f} | {sum(per_class)}: {classes} | "
                     f"{wrong}/{runs} | "
                     f"{wrong / max(runs, 1):.3f} | {always} |")
    lines.append("")
    for field, title, _ in MEASURES:
      cells = [f"{c} {rho:+.2f} (p {p:.2f}, {n} pages)" if np.isfinite(rho) else
               f"{c} - ({n} pages)"
               for c, (rho, p, n) in within_class(first, readings, field).items()]
      lines.append(f"- Within each class, Spearman rho of a page's share of wrong runs against the "
                   f"{title}: " + "; ".join(cells) + ".")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError("Give at least one arm folder of a sweep, e.g. "
                         "runs/ablations/signals/image.")
  try:
    text = analyse(argv[1:], FLAGS.manual_dir)
  except ValueError as e:
    print(f"errors.py: {e}", file=sys.stderr)
    sys.exit(1)
  print(text, end="")
  if FLAGS.out:
    with open(FLAGS.out, "w") as f:
      f.write(text)


if __name__ == "__main__":
  FLAGS = flags.FLAGS
  flags.DEFINE_string("out", None, "Also write the report to this markdown file.")
  flags.DEFINE_string("manual_dir", None, "The release folder the runs' data set was built from: "
                      "digitize the first arm's pages again and report how well they read.")
  app.run(main)
