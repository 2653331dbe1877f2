"""experiments/errors.py: pages a sweep arm's runs always get wrong, read from the runs' own
predictions.csv files as `train_and_evaluate` writes them (`report.write_rows`)."""

import os
import subprocess
import sys

import pytest

from ecgjax import report as report_lib
from experiments import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = {"HB(1).jpg": "abnormal_heartbeat", "HB(2).jpg": "abnormal_heartbeat",
         "PMI(1).jpg": "history_of_mi", "PMI(2).jpg": "history_of_mi", "MI(1).jpg": "mi",
         "MI(2).jpg": "mi", "Normal(1).jpg": "normal", "Normal(2).jpg": "normal"}


def _run(arm_dir, name, taken_for):
  """A run's eval/predictions.csv: every page right but those in `taken_for` {page: class}."""
  rows = []
  for page, true in PAGES.items():
    predicted = taken_for.get(page, true)
    probs = {f"p_{c}": (0.9 if c == predicted else 0.1 / 3) for c in
             ("abnormal_heartbeat", "history_of_mi", "mi", "normal")}
    rows.append({"source_path": f"folder/{page}", "true_class": true,
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
