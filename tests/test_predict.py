"""Prediction on new pages: any size and mode, a bad file reported while the others go on."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ecgjax import checkpoints
from ecgjax import predict
from ecgjax import train
from ecgjax.classes import CLASS_NAMES
from ecgjax.data import pipeline
from sample_data import SAMPLE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tfds_data_dir):
  from configs import cnn_small  # pylint: disable=g-import-not-at-top
  config = cnn_small.get_config("smoke")
  config.dataset.data_dir = tfds_data_dir
  config.train.num_epochs = 1
  config.saliency.num_pages = 0
  workdir = str(tmp_path_factory.mktemp("run"))
  train.Trainer(config, workdir).train()
  return workdir


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
  out = tmp_path_factory.mktemp("pages")
  real = sorted(SAMPLE_DIR.glob("*Myocardial*/MI(1).jpg"))[0]
  rgb = Image.open(real).convert("RGB")
  paths = {"real_jpeg": str(real)}
  small = rgb.resize((rgb.width // 3, rgb.height // 3))
  paths["gray_png"] = str(out / "gray.png")
  small.convert("L").save(paths["gray_png"])
  paths["rgba_png"] = str(out / "rgba.png")
  small.convert("RGBA").save(paths["rgba_png"])
  paths["not_an_image"] = str(out / "notes.jpg")
  with open(paths["not_an_image"], "w") as f:
    f.write("this is not a JPEG")
  paths["one_pixel"] = str(out / "one_pixel.png")
  Image.new("RGB", (1, 1), "white").save(paths["one_pixel"])
  paths["blank_page"] = str(out / "blank.png")
  Image.new("RGB", (1100, 800), "white").save(paths["blank_page"])
  return paths


def test_every_page_predicted_and_bad_file_reported(run_dir, pages):
  order = ["real_jpeg", "not_an_image", "gray_png", "rgba_png"]
  results = predict.predict_files(run_dir, [pages[k] for k in order])
  assert [r["path"] for r in results] == [pages[k] for k in order]
  bad = results[1]
  assert "error" in bad and pages["not_an_image"] in bad["error"]
  loaded = checkpoints.load_model(run_dir)
  for r in (results[0], results[2], results[3]):
    probs = np.array([r["probabilities"][c] for c in CLASS_NAMES])
    assert np.isclose(probs.sum(), 1.0) and r["class"] == CLASS_NAMES[int(probs.argmax())]
    assert r["note"].startswith("panel rows")  # The grid panel was found on every page.
    assert r["reliable"]
  # The same numbers as the model on the page prepared by hand.
  image, _ = pipeline.load_page(pages["real_jpeg"], loaded.config.data,
                                dataset_config=loaded.config.dataset)
  logits = loaded.logit_fn(pipeline.normalize(image[None], loaded.config.data.value_range))
  expected = np.exp(logits[0] - logits[0].max())
  expected = expected / expected.sum()
  np.testing.assert_allclose([results[0]["probabilities"][c] for c in CLASS_NAMES], expected,
                             rtol=1e-5, atol=1e-6)


def test_a_page_too_small_is_an_error_and_a_page_without_panel_is_flagged(run_dir, pages):
  tiny, blank = predict.predict_files(run_dir, [pages["one_pixel"], pages["blank_page"]])
  assert "1x1 px is too small" in tiny["error"] and "class" not in tiny
  assert blank["reliable"] is False and blank["note"].startswith("no grid panel found")
  row = predict.format_table([blank]).splitlines()[-1]
  assert "UNRELIABLE: no grid panel found" in row


def test_command_json_and_exit_status(run_dir, pages):
  out = subprocess.run([sys.executable, "-m", "ecgjax.predict", f"--workdir={run_dir}", "--json",
                        pages["gray_png"], pages["not_an_image"]],
                       cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": REPO})
  assert out.returncode == 1  # One page failed...
  doc = json.loads(out.stdout)
  assert doc[0]["class"] in CLASS_NAMES  # ...and the other was still predicted.
  assert "not a readable image" in doc[1]["error"]
  assert pages["not_an_image"] in out.stderr
  table = subprocess.run([sys.executable, "-m", "ecgjax.predict", f"--workdir={run_dir}",
                          pages["rgba_png"]], cwd=REPO, capture_output=True, text=True,
                         timeout=300, env={**os.environ, "PYTHONPATH": REPO})
  assert table.returncode == 0, table.stderr[-2000:]
  assert "prediction" in table.stdout and "rgba.png" in table.stdout


def test_command_on_a_folder_that_is_no_run_says_so_in_one_line(pages, tmp_path):
  out = subprocess.run([sys.executable, "-m", "ecgjax.predict", f"--workdir={tmp_path}",
                        pages["gray_png"]], cwd=REPO, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": REPO})
  assert out.returncode == 1
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith("ecgjax.predict: ") and "config.json not found" in last
  assert "Traceback" not in out.stderr
