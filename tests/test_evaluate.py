"""External validation: a final model (no test fold) evaluated on a folder in the release layout."""

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from PIL import Image

from ecgjax import evaluate
from ecgjax import predict
from ecgjax import report
from ecgjax import train
from ecgjax.classes import CLASS_NAMES
from sample_data import SAMPLE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEST_REPORT_FIELDS = {"checkpoint_step", "checkpoint", "split", "dataset", "model"}

# The folder: release and other folder names, a copy of a page, a page in a zip, a blank page
# (no grid panel), a file that is not an image, an image in no class folder, and files to ignore.
GOOD = {
    "Normal Person ECG Images (284x12=3408)/Normal(1).jpg": "normal",
    "Normal Person ECG Images (284x12=3408)/Normal(143).jpg": "normal",  # A copy of Normal(1).
    "mi_ecg_images/MI(1).jpg": "mi",
    "mi_ecg_images/MI(2).jpg": "mi",
    "post_mi_history/PMI(1).jpg": "history_of_mi",
    "abnormal_heartbeat/HB(1).jpg": "abnormal_heartbeat",
    "abnormal_heartbeat/blank.png": "abnormal_heartbeat",
    "more.zip/normal_ecg_images/Normal(2).jpg": "normal",
}
BAD = ("abnormal_heartbeat/HB(2).jpg", "unsorted/x.jpg")


def _sample(name):
  return next(SAMPLE_DIR.glob(f"*/{name}"))


def _copy(src, dst):
  os.makedirs(os.path.dirname(dst), exist_ok=True)
  shutil.copyfile(src, dst)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tfds_data_dir):
  """A final model: trained on every fold, with no test or validation fold."""
  from configs import cnn_small  # pylint: disable=g-import-not-at-top
  config = cnn_small.get_config("smoke")
  config.dataset.data_dir = tfds_data_dir
  config.data.test_fold, config.data.val_fold = None, None
  config.train.num_epochs = 1
  config.saliency.num_pages = 0
  workdir = str(tmp_path_factory.mktemp("final"))
  train.Trainer(config, workdir).train()
  return workdir


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("hospital")
  for path in GOOD:
    if path.endswith(".jpg") and not path.startswith("more.zip"):
      _copy(_sample(os.path.basename(path)), root / path)
  Image.new("RGB", (1100, 800), "white").save(root / "abnormal_heartbeat" / "blank.png")
  with zipfile.ZipFile(root / "more.zip", "w") as zf:
    zf.write(_sample("Normal(2).jpg"), "normal_ecg_images/Normal(2).jpg")
  (root / BAD[0]).write_text("this is not a JPEG")
  _copy(_sample("HB(3).jpg"), root / BAD[1])
  (root / "abnormal_heartbeat" / ".DS_Store").write_bytes(b"\0")
  (root / "readme.txt").write_text("pages from another hospital")
  return str(root)


def test_report_predictions_and_figure(run_dir, folder, tmp_path):
  out = str(tmp_path / "out")
  rep = evaluate.evaluate(run_dir, folder, out)
  with open(os.path.join(out, "report.json")) as f:
    written = json.load(f)
  assert written == {k: v for k, v in rep.items() if k != "outputs"}
  # The fields of the run's own test report, over every good page, copies included.
  expected = set(report.classification_report(np.array([0, 1]), np.zeros((2, 4))))
  assert expected | TEST_REPORT_FIELDS <= set(written)
  assert written["num_examples"] == len(GOOD)
  cm = np.array(written["confusion_matrix"])
  assert cm.sum() == len(GOOD)
  assert [int(n) for n in cm.sum(1)] == [list(GOOD.values()).count(c) for c in CLASS_NAMES]
  assert written["files_read"] == len(GOOD) + len(BAD)
  assert sorted(written["skipped_files"]) == sorted(BAD)
  assert "not a readable image" in written["skipped_files"][BAD[0]]
  assert "in no class folder" in written["skipped_files"][BAD[1]]
  assert written["unreliable_pages"] == 1
  # The run had no validation fold, so its 'best' is its latest, and the report says which.
  assert written["model"] == "cnn" and written["checkpoint"] == "latest"

  with open(os.path.join(out, "predictions.csv")) as f:
    rows = list(csv.DictReader(f))
  assert {r["path"]: r["true_class"] for r in rows} == GOOD
  counts = np.zeros_like(cm)
  for r in rows:
    probs = np.array([float(r[f"p_{c}"]) for c in CLASS_NAMES])
    assert np.isclose(probs.sum(), 1.0) and r["predicted_class"] == CLASS_NAMES[probs.argmax()]
    assert r["reliable"] == str(not r["path"].endswith("blank.png"))
    counts[CLASS_NAMES.index(r["true_class"]), CLASS_NAMES.index(r["predicted_class"])] += 1
  np.testing.assert_array_equal(counts, cm)
  # The same numbers as `ecgjax.predict` gives for the files themselves (the zip's page too).
  by_path = {r["path"]: r for r in rows}
  direct = predict.predict_files(run_dir, [str(_sample(n)) for n in ("MI(2).jpg", "Normal(2).jpg")])
  for path, result in zip(["mi_ecg_images/MI(2).jpg", "more.zip/normal_ecg_images/Normal(2).jpg"],
                          direct):
    np.testing.assert_allclose([float(by_path[path][f"p_{c}"]) for c in CLASS_NAMES],
                               [result["probabilities"][c] for c in CLASS_NAMES], rtol=1e-6)
  with Image.open(os.path.join(out, "confusion_matrix.png")) as png:
    assert png.format == "PNG" and png.width > 100


def _run(*args):
  return subprocess.run([sys.executable, "-m", "ecgjax.evaluate", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"})


def test_command_names_skipped_files_and_exits_1(run_dir, folder):
  out = _run(f"--workdir={run_dir}", f"--manual_dir={folder}", "--checkpoint=latest")
  assert out.returncode == 1, out.stderr[-3000:]
  assert "Traceback" not in out.stderr
  skipped = [line for line in out.stderr.splitlines()
             if line.startswith("ecgjax.evaluate: skipped")]
  assert len(skipped) == len(BAD)
  for line, path in zip(skipped, sorted(BAD)):
    assert os.path.join(folder, path) in line
  # The good pages are still evaluated, into RUN/external/<folder name>.
  default_out = os.path.join(run_dir, "external", os.path.basename(folder))
  assert sorted(os.listdir(default_out)) == ["confusion_matrix.png", "predictions.csv",
                                             "report.json"]
  with open(os.path.join(default_out, "report.json")) as f:
    assert json.load(f)["num_examples"] == len(GOOD)
  assert f"{len(GOOD)} pages" in out.stdout and default_out in out.stdout


def test_command_on_a_clean_folder_exits_0_and_bad_arguments_fail_in_one_line(run_dir, tmp_path):
  clean = tmp_path / "clean"
  _copy(_sample("MI(3).jpg"), clean / "mi" / "MI(3).jpg")
  _copy(_sample("Normal(3).jpg"), clean / "normal" / "Normal(3).jpg")
  out = _run(f"--workdir={run_dir}", f"--manual_dir={clean}", f"--out={tmp_path / 'out'}")
  assert out.returncode == 0, out.stderr[-3000:]
  with open(tmp_path / "out" / "report.json") as f:
    rep = json.load(f)
  assert rep["num_examples"] == 2 and rep["skipped_files"] == {}
  # Not a run directory: one line naming its missing config.json, nothing written.
  not_a_run = tmp_path / "not_a_run"
  not_a_run.mkdir()
  out = _run(f"--workdir={not_a_run}", f"--manual_dir={clean}")
  assert out.returncode == 1
  assert "Traceback" not in out.stderr
  assert str(not_a_run / "config.json") in out.stderr.strip().splitlines()[-1]
  assert os.listdir(not_a_run) == []
  # A folder without class folders: one line saying what layout is expected.
  out = _run(f"--workdir={run_dir}", f"--manual_dir={tmp_path / 'out'}")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert "No image in a class folder" in out.stderr.strip().splitlines()[-1]


def test_the_default_signal_recipe_is_evaluated_on_whole_pages(tfds_data_dir, folder, tmp_path):
  """configs/default.py (the signal model) as a final model: each file of the folder is digitized
  whole; the report counts the good pages, names the bad files, and matches `ecgjax.predict`."""
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config("smoke")
  config.dataset.data_dir = tfds_data_dir
  config.data.test_fold, config.data.val_fold = None, None
  config.train.num_epochs = 1
  config.saliency.num_pages = 0
  workdir = str(tmp_path / "signals")
  train.Trainer(config, workdir).train()
  out = str(tmp_path / "out")
  rep = evaluate.evaluate(workdir, folder, out)
  assert rep["model"] == "resnet1d"
  assert rep["files_read"] == len(GOOD) + len(BAD)
  assert set(BAD) <= set(rep["skipped_files"])
  assert rep["num_examples"] + len(rep["skipped_files"]) - len(BAD) == len(GOOD)
  assert rep["num_examples"] >= len(GOOD) - 1  # Every real page is read (the blank one may not be).
  with open(os.path.join(out, "predictions.csv")) as f:
    by_path = {r["path"]: r for r in csv.DictReader(f)}
  (direct,) = predict.predict_files(workdir, [str(_sample("MI(2).jpg"))])
  assert direct["note"].endswith("whole page digitized")
  np.testing.assert_allclose([float(by_path["mi_ecg_images/MI(2).jpg"][f"p_{c}"])
                              for c in CLASS_NAMES],
                             [direct["probabilities"][c] for c in CLASS_NAMES], rtol=1e-5)
