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
from sklearn import metrics as skm

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


def analyse(arm_dirs: Sequence[str]) -> str:
  """The markdown report described in the module docstring."""
  arms = [(os.path.normpath(d), *read_arm(d)) for d in arm_dirs]
  name = lambda d: "/".join(d.split(os.sep)[-2:])  # 'signals/image'.
  first_dir, first, _ = arms[0]
  hard = sorted((n for n, p in first.items() if p.always_wrong),
                key=lambda n: (CLASS_NAMES.index(first[n].true_class), n))
  lines = [f"# Pages {name(first_dir)} always gets wrong", ""]
  for d, pages, runs in arms:
    always = sum(p.always_wrong for p in pages.values())
    lines.append(f"- {name(d)}: {runs} runs, {len(pages)} pages, {always} wrong in every run that "
                 "tested them")
  lines += ["", f"{len(hard)} pages {name(first_dir)} gets wrong in every run. Per arm: runs "
            "wrong / runs, the class taken for most often, mean p(true class).", "",
            "| page | true class | " + " | ".join(name(d) for d, _, _ in arms) + " |",
            "|---|---|" + "---|" * len(arms)]
  for n in hard:
    cells = []
    for _, pages, _ in arms:
      p = pages.get(n)
      cells.append("not tested" if p is None else
                   f"{p.wrong}/{len(p.predicted)} {p.taken_for or '-'} {np.mean(p.p_true):.2f}")
    lines.append(f"| {os.path.basename(n)} | {first[n].true_class} | " + " | ".join(cells) + " |")
  lines.append("")
  for d, pages, _ in arms[1:]:
    both = [n for n in hard if n in pages and pages[n].always_wrong]
    same = [n for n in both if pages[n].taken_for == first[n].taken_for]
    lines.append(f"- {name(d)} also gets {len(both)} of them wrong in every run, {len(same)} as "
                 "the same class.")
  lines.append(f"- Pooled macro-F1 over the {len(first)} pages if only these {len(hard)} were "
               f"wrong: {ceiling(first, hard):.3f}.")
  return "\n".join(lines) + "\n"


def main(argv: Sequence[str]) -> None:
  if len(argv) < 2:
    raise app.UsageError("Give at least one arm folder of a sweep, e.g. "
                         "runs/ablations/signals/image.")
  try:
    text = analyse(argv[1:])
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
  app.run(main)
