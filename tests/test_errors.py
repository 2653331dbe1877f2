"""experiments/errors.py: pages a sweep arm's runs always get wrong, read from the runs' own
predictions.csv files as `train_and_evaluate` writes them (`report.write_rows`)."""

import os
import subprocess
import sys

import numpy as np
import pytest

from ecgjax import digitize
from ecgjax import report as report_lib
from experiments import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = {"HB(1).jpg": "abnormal_heartbeat", "HB(2).jpg": "abnormal_heartbeat",
         "PMI(1).jpg": "history_of_mi", "PMI(2).jpg": "history_of_mi", "MI(1).jpg": "mi",
         "MI(2).jpg": "mi", "Normal(1).jpg": "normal", "Normal(2).jpg": "normal"}


def _run(arm_dir, name, taken_for, folders=None):
  """A run's eval/predictions.csv: every page right but those in `taken_for` {page: class}; the
  pages below `folders[class]` ('folder' if not given)."""
  rows = []
  for page, true in PAGES.items():
    predicted = taken_for.get(page, true)
    probs = {f"p_{c}": (0.9 if c == predicted else 0.1 / 3) for c in
             ("abnormal_heartbeat", "history_of_mi", "mi", "normal")}
    folder = folders[true] if folders else "folder"
    rows.append({"source_path": f"{folder}/{page}", "true_class": true,
                 "predicted_class": predicted, **probs})
  os.makedirs(os.path.join(arm_dir, name, "eval"))
  report_lib.write_rows(rows, os.path.join(arm_dir, name, "eval", "predictions.csv"))


@pytest.fixture
def arms(tmp_path):
  a, b = str(tmp_path / "abl" / "signals"), str(tmp_path / "abl" / "image")
  _run(a, "seed0_fold0", {"HB(1).jpg": "normal", "MI(1).jpg": "normal"})
  _run(a, "seed1_fold0", {"HB(1).jpg": "normal"})
  _run(b, "seed0_fold0", {"HB(1).jpg": "normal", "MI(1).jpg": "normal", "PMI(2).jpg": "mi"})
  return a, b


def test_always_wrong_pages_agreement_and_ceiling(arms):
  a, b = arms
  pages, runs = errors.read_arm(a)
  assert runs == 2 and len(pages) == 8
  assert pages["folder/HB(1).jpg"].always_wrong and pages["folder/HB(1).jpg"].taken_for == "normal"
  assert pages["folder/MI(1).jpg"].wrong == 1 and not pages["folder/MI(1).jpg"].always_wrong
  text = errors.analyse([a, b])
  assert "- abl/signals: 2 runs, 8 pages, 1 wrong in every run" in text
  assert "- abl/image: 1 runs, 8 pages, 3 wrong in every run" in text
  assert "| HB(1).jpg | abnormal_heartbeat | 2/2 normal 0.03 | 1/1 normal 0.03 |" in text
  assert "MI(1).jpg |" not in text  # Right in one of the first arm's runs.
  assert "abl/image also gets 1 of them wrong in every run, 1 as the same class." in text
  # Only HB(1) taken for normal: F1 2/3 for abnormal_heartbeat, 4/5 for normal, 1 and 1.
  assert f"{(2 / 3 + 1 + 1 + 0.8) / 4:.3f}" in text.splitlines()[-1]
  assert errors.pooled_macro_f1(["mi", "normal"], ["normal", "normal"]) == pytest.approx(
      (0 + 2 / 3) / 4)


def test_refuses_a_folder_without_runs_or_with_other_labels(arms, tmp_path):
  a, _ = arms
  with pytest.raises(ValueError, match="no RUN/eval/predictions.csv"):
    errors.read_arm(str(tmp_path))
  path = os.path.join(a, "seed1_fold0", "eval", "predictions.csv")
  with open(path) as f:
    text = f.read()
  with open(path, "w") as f:
    f.write(text.replace("HB(2).jpg,abnormal_heartbeat", "HB(2).jpg,normal"))
  with pytest.raises(ValueError, match=r"HB\(2\).jpg is 'normal' here"):
    errors.read_arm(a)


def test_command_line(arms, tmp_path):
  a, b = arms
  out = tmp_path / "errors.md"
  done = subprocess.run([sys.executable, "experiments/errors.py", a, b, f"--out={out}"], cwd=REPO,
                        capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr
  assert done.stdout == out.read_text() and "| HB(1).jpg |" in done.stdout
  bad = subprocess.run([sys.executable, "experiments/errors.py", str(tmp_path / "none")],
                       cwd=REPO, capture_output=True, text=True, check=False)
  assert bad.returncode == 1 and "no RUN/eval/predictions.csv" in bad.stderr


SAMPLE = os.path.join(os.path.dirname(REPO), "shared", "data", "ecg_images_sample")


def test_digitization_quality_of_the_pages_from_the_release_folder(tmp_path):
  """--manual_dir digitizes the first arm's pages again: the always-wrong table gains their
  Einthoven residual and worst lead, and the quarter table counts each page's wrong runs once."""
  folders = {PAGES[page]: folder for folder in os.listdir(SAMPLE) for page in PAGES
             if os.path.exists(os.path.join(SAMPLE, folder, page))}
  assert len(folders) == 4
  arm = str(tmp_path / "abl" / "signals")
  wrong = {"HB(1).jpg": "normal", "MI(2).jpg": "normal"}
  _run(arm, "seed0_fold0", wrong, folders)
  _run(arm, "seed1_fold0", {"HB(1).jpg": "normal"}, folders)
  text = errors.analyse([arm], SAMPLE)
  page = f"{folders['abnormal_heartbeat']}/HB(1).jpg"
  reading = digitize.digitize(os.path.join(SAMPLE, page))
  limb = digitize.einthoven_residuals(reading)[0]
  assert (f"| HB(1).jpg | abnormal_heartbeat | 2/2 normal 0.03 | {limb:.3f}, "
          f"{reading.quality.min():.2f} |") in text
  rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| Einthoven")]
  assert [r[1] for r in rows] == ["1", "2", "3", "4"]
  counts = [r[3].split(": ") for r in rows]
  assert [n for n, _ in counts] == ["2"] * 4  # 8 pages in equal quarters, two of each class:
  per_class = [list(map(int, c.split(" / "))) for _, c in counts]
  assert [sum(c) for c in per_class] == [2] * 4 and [sum(c) for c in zip(*per_class)] == [2] * 4
  # Every page is in one quarter: the runs wrong add up to the arm's 3 of 16.
  runs = [tuple(map(int, r[4].split("/"))) for r in rows]
  assert sum(w for w, _ in runs) == 3 and sum(n for _, n in runs) == 16
  assert sum(int(r[6].rstrip(" |")) for r in rows) == 1  # HB(1), wrong in both runs.
  assert ("against the Einthoven residual, limb leads: abnormal_heartbeat - (2 pages); "
          "history_of_mi - (2 pages)") in text  # Too few pages a class for a rank correlation.
  lows = [float(r[2].split("-")[0]) for r in rows]
  assert lows == sorted(lows)  # Best read (smallest residual) first.
  readings = errors.read_pages([page], SAMPLE)
  assert readings[page].limb == pytest.approx(limb)
  with pytest.raises(ValueError, match=r"no_such_folder.*HB\(1\).jpg: no such page; give "
                     "--manual_dir"):
    errors.read_pages([page], str(tmp_path / "no_such_folder"))


def test_within_class_rank_correlation_of_errors_and_reading():
  """A class whose errors grow with the residual gives rho 1; one shrinking, -1; a class with under
  three pages, NaN; pages of other classes never enter a class's figure."""
  pages, readings = {}, {}
  for k in range(4):  # normal: wrong in k of 3 runs, residual growing with k.
    pages[f"n{k}"] = errors.Page("normal", ["mi"] * k + ["normal"] * (3 - k))
    readings[f"n{k}"] = errors.Reading(limb=0.1 * (k + 1), quality=1.0 - 0.1 * k)
  for k in range(3):  # mi: wrong in 2 - k of 2 runs, fewer with a larger residual.
    pages[f"m{k}"] = errors.Page("mi", ["normal"] * (2 - k) + ["mi"] * k)
    readings[f"m{k}"] = errors.Reading(limb=0.1 * k, quality=0.5)
  pages["h"] = errors.Page("history_of_mi", ["mi"])
  readings["h"] = errors.Reading(limb=0.2, quality=0.9)
  limb = errors.within_class(pages, readings, "limb")
  assert limb["normal"][0] == pytest.approx(1.0) and limb["normal"][2] == 4
  assert limb["mi"][0] == pytest.approx(-1.0) and limb["mi"][2] == 3
  assert np.isnan(limb["history_of_mi"][0]) and limb["abnormal_heartbeat"][2] == 0
  quality = errors.within_class(pages, readings, "quality")
  assert quality["normal"][0] == pytest.approx(-1.0) and np.isnan(quality["mi"][0])  # Constant.
