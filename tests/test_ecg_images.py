"""Tests of the `ecg_images` builder: the real 18-file sample, tiny generated releases, TFDS checks."""

from __future__ import annotations

import io
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image, ImageDraw

from ecgjax.classes import CLASS_NAMES
from ecgjax.data import ecg_images

from sample_data import SAMPLE_DIR as SAMPLE
RELEASE_FOLDERS = {
    "abnormal_heartbeat": "ECG Images of Patient that have abnormal heartbeat (233x12=2796)",
    "history_of_mi": "ECG Images of Patient that have History of MI (172x12=2064)",
    "mi": "ECG Images of Myocardial Infarction Patients (240x12=2880)",
    "normal": "Normal Person ECG Images (284x12=3408)",
}
PINK = (248, 162, 171)


def fake_page(seed: int) -> bytes:
  """A small page laid out as the release's: pink paper, white grid panel, a random trace."""
  rng = np.random.default_rng(seed)
  page = Image.new("RGB", (330, 240), PINK)
  draw = ImageDraw.Draw(page)
  draw.rectangle((60, 8, 270, 20), fill="black")  # the header's title
  draw.rectangle((10, 45, 319, 224), fill=(253, 250, 250))  # the panel
  for x in range(10, 320, 6):
    draw.line((x, 45, x, 224), fill=(240, 215, 218))
  y = 135 + np.cumsum(rng.normal(0, 6, 60)).clip(-80, 80)
  draw.line(list(zip(np.linspace(15, 315, 60), y)), fill="black", width=2)
  buffer = io.BytesIO()
  page.save(buffer, "JPEG", quality=90)
  return buffer.getvalue()


def reencode(data: bytes, quality: int = 70) -> bytes:
  buffer = io.BytesIO()
  Image.open(io.BytesIO(data)).save(buffer, "JPEG", quality=quality)
  return buffer.getvalue()


def make_release(root: pathlib.Path, pages_per_class: int = 2) -> pathlib.Path:
  """A tiny release: `pages_per_class` distinct pages per class, plus copies of three kinds."""
  for k, label in enumerate(CLASS_NAMES):
    folder = root / RELEASE_FOLDERS[label]
    folder.mkdir(parents=True)
    for i in range(pages_per_class):
      (folder / f"{label}({i + 1}).jpg").write_bytes(fake_page(100 * k + i))
  hb = root / RELEASE_FOLDERS["abnormal_heartbeat"]
  (hb / "abnormal_heartbeat(1) - Copy.jpg").write_bytes((hb / "abnormal_heartbeat(1).jpg").read_bytes())
  mi = root / RELEASE_FOLDERS["mi"]
  (mi / "mi(31).jpg").write_bytes(reencode((mi / "mi(1).jpg").read_bytes()))
  (root / "README.txt").write_text("not an image")
  return root


# ---------------------------------------------------------------------------------------------
# The real sample, built once through TFDS into array_record.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_build(tmp_path_factory):
  builder = ecg_images.EcgImages(config="w1024", data_dir=tmp_path_factory.mktemp("tfds"),
                                 file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(SAMPLE)))
  source = builder.as_data_source()
  examples = {split: list(source[split]) for split in source}
  return builder, examples


def test_sample_counts(sample_build):
  builder, examples = sample_build
  assert sorted(examples) == [f"fold{i}" for i in range(5)]
  assert sum(len(v) for v in examples.values()) == 16
  sizes = sorted(len(v) for v in examples.values())
  assert sizes == [3, 3, 3, 3, 4]
  labels = [ex["label"] for v in examples.values() for ex in v]
  assert np.bincount(labels, minlength=4).tolist() == [4, 4, 4, 4]
  metadata = builder.info.metadata
  assert metadata["duplicates_removed_per_class"] == {
      "abnormal_heartbeat": 0, "history_of_mi": 0, "mi": 1, "normal": 1}
  assert metadata["num_bad_files"] == 0
  assert metadata["ignored_files"] == ["README.md"]


def test_sample_copies_are_gone_and_never_straddle_folds(sample_build):
  _, examples = sample_build
  paths = [ex["source_path"].decode() for v in examples.values() for ex in v]
  names = {p.split("/")[-1] for p in paths}
  assert "MI(1).jpg" in names and "Normal(1).jpg" in names
  assert "MI(31).jpg" not in names and "Normal(143).jpg" not in names
  ids = [ex["image_id"].decode() for v in examples.values() for ex in v]
  assert len(set(ids)) == len(ids) == 16
  # Each image_id is the hash of the representative's bytes.
  for ex in (ex for v in examples.values() for ex in v):
    data = (SAMPLE / ex["source_path"].decode()).read_bytes()
    assert ecg_images.features_lib.content_id(data) == ex["image_id"].decode()


def test_sample_crop(sample_build):
  _, examples = sample_build
  for ex in (ex for v in examples.values() for ex in v):
    image = ex["image"]
    assert image.dtype == np.uint8 and image.shape[1:] == (1024, 3)
    # The README's panel is 1224 x 2102 px; at 1024 px wide that is 596 rows.
    assert abs(image.shape[0] - 596) <= 2
    # No pink margin left at the edges: the border rows are the panel's near-white.
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]]).astype(float)
    assert (border[:, 0] - border[:, 1]).mean() < 45, "the crop still shows pink page margin"
    assert image.mean() > 200


def test_sample_from_zip_gives_the_same_pages(tmp_path):
  archive = tmp_path / "manual" / "gwbz3fsgp8-2.zip"
  archive.parent.mkdir()
  with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
    for path in sorted(SAMPLE.rglob("*.jpg")):
      zf.write(path, f"ECG Images dataset of Cardiac Patients/{path.relative_to(SAMPLE)}")
  from_zip = ecg_images.scan_release(archive.parent)
  from_folders = ecg_images.scan_release(SAMPLE)
  assert [p.content_id for p in from_zip.pages] == [p.content_id for p in from_folders.pages]
  assert from_zip.pages[0].source.path.startswith("gwbz3fsgp8-2.zip/ECG Images dataset")


# ---------------------------------------------------------------------------------------------
# Tiny generated releases: folder names, copies, errors.
# ---------------------------------------------------------------------------------------------


def test_copies_and_reencoded_copies_are_one_page(tmp_path, caplog):
  scan = ecg_images.scan_release(make_release(tmp_path))
  assert len(scan.pages) == 8
  assert scan.duplicates_per_class == {"abnormal_heartbeat": 1, "history_of_mi": 0, "mi": 1,
                                       "normal": 0}
  assert scan.files_per_class["mi"] == 3
  assert "README.txt" in caplog.text  # named in a warning, not skipped in silence
  assert scan.closest_distinct > ecg_images.DUPLICATE_DISTANCE


def test_other_folder_spellings_are_recognised(tmp_path):
  spellings = {"abnormal_heartbeat": "ABNORMAL_HEARTBEAT_ECG_IMAGES",
               "history_of_mi": "post_mi_history_ecg_images",
               "mi": "Myocardial Infarction ECG Images", "normal": "normal_ecg_images"}
  for k, (label, folder) in enumerate(spellings.items()):
    (tmp_path / "train" / folder).mkdir(parents=True)
    (tmp_path / "train" / folder / "a.jpg").write_bytes(fake_page(k))
  scan = ecg_images.scan_release(tmp_path)
  assert sorted(p.label for p in scan.pages) == sorted(CLASS_NAMES)
  assert ecg_images.class_of_path("X/ECG Images of Patient that have History of MI (172x12=2064)"
                                  "/PMI(1).jpg") == "history_of_mi"
  assert ecg_images.class_of_path("Normal/notes/abnormal.jpg") == "normal"


def test_one_page_under_two_classes_names_both_files(tmp_path):
  root = make_release(tmp_path)
  page = (root / RELEASE_FOLDERS["normal"] / "normal(1).jpg").read_bytes()
  (root / RELEASE_FOLDERS["mi"] / "stray.jpg").write_bytes(reencode(page, 60))
  with pytest.raises(ValueError, match=r"stray\.jpg \(mi\).*normal\(1\)\.jpg \(normal\)"):
    ecg_images.scan_release(root)


def test_image_outside_class_folders_is_an_error(tmp_path):
  root = make_release(tmp_path)
  (root / "extras").mkdir()
  (root / "extras" / "page.jpg").write_bytes(fake_page(999))
  with pytest.raises(ValueError, match=r"extras/page\.jpg"):
    ecg_images.scan_release(root)


def _add_bad_files(root: pathlib.Path) -> None:
  normal = root / RELEASE_FOLDERS["normal"]
  (normal / "truncated.jpg").write_bytes(fake_page(555)[:1500])
  (normal / "text.jpg").write_bytes(b"this is not a jpeg")


def test_bad_files_stop_the_build_by_default(tmp_path):
  root = make_release(tmp_path)
  _add_bad_files(root)
  with pytest.raises(ValueError, match=r"2 of 12 images") as error:
    ecg_images.scan_release(root)
  assert "truncated.jpg" in str(error.value) and "text.jpg" in str(error.value)


def test_a_partly_downloaded_zip_is_named_and_skipped_on_request(tmp_path):
  root = make_release(tmp_path / "manual")
  whole = ecg_images.scan_release(root)
  archive = root / "second_half.zip"
  with zipfile.ZipFile(archive, "w") as zf:
    zf.writestr(f"{RELEASE_FOLDERS['normal']}/extra.jpg", fake_page(777))
  os.truncate(archive, os.path.getsize(archive) // 2)  # The download broke off.
  with pytest.raises(ValueError, match=r"second_half\.zip: not a readable zip archive"):
    ecg_images.scan_release(root)
  skipped = ecg_images.scan_release(root, on_bad_file="skip")
  assert list(skipped.bad_files) == ["second_half.zip"]
  assert len(skipped.pages) == len(whole.pages)


def test_bad_files_skipped_are_counted_in_the_build(tmp_path):
  root = make_release(tmp_path / "manual")
  _add_bad_files(root)
  builder = ecg_images.EcgImages(config="w1024", data_dir=tmp_path / "tfds",
                                 file_format="array_record", on_bad_file="skip")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(root)))
  assert builder.info.metadata["num_bad_files"] == 2
  assert any(p.endswith("truncated.jpg") for p in builder.info.metadata["bad_files"])
  assert sum(s.num_examples for s in builder.info.splits.values()) == 8
  reloaded = ecg_images.EcgImages(config="w1024", data_dir=tmp_path / "tfds")
  assert reloaded.info.metadata["num_bad_files"] == 2


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_missing_or_empty_manual_dir_says_where_to_put_the_release(tmp_path, make):
  manual_dir = tmp_path / "manual"
  if make == "empty":
    manual_dir.mkdir()
  with pytest.raises(FileNotFoundError) as error:
    ecg_images.scan_release(manual_dir)
  assert str(manual_dir) in str(error.value)
  assert "10.17632/gwbz3fsgp8.2" in str(error.value)
  assert "Normal Person ECG Images (284x12=3408)/Normal(1).jpg" in str(error.value)


def test_builds_and_reads_without_tensorflow(tmp_path):
  root = make_release(tmp_path / "manual")
  script = textwrap.dedent(f"""
      import importlib.abc, importlib.util, sys
      is_tf = lambda name: name == "tensorflow" or name.startswith("tensorflow.")
      find_spec = importlib.util.find_spec
      importlib.util.find_spec = lambda n, p=None: None if is_tf(n) else find_spec(n, p)
      class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
          if is_tf(name):
            raise ModuleNotFoundError(name, name=name)
      sys.meta_path.insert(0, Block())
      import tensorflow_datasets as tfds
      from ecgjax.data import ecg_images
      b = ecg_images.EcgImages(data_dir={str(tmp_path / 'tfds')!r}, file_format="array_record")
      b.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir={str(root)!r}))
      source = b.as_data_source()
      n = sum(len(source[s]) for s in source)
      image = source["fold0"][0]["image"]
      assert "tensorflow" not in sys.modules
      print(n, image.shape[1])
  """)
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=pathlib.Path(__file__).parents[1], timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.split()[-2:] == ["8", "1024"]


# ---------------------------------------------------------------------------------------------
# TFDS's own checks, on a tiny generated release used as dummy_data.
# ---------------------------------------------------------------------------------------------


class EcgImagesTest(tfds.testing.DatasetBuilderTestCase):
  DATASET_CLASS = ecg_images.EcgImages
  # 2 distinct pages per class dealt round-robin from a rotating fold: sizes 2, 2, 2, 1, 1.
  SPLITS = {"fold0": 2, "fold1": 2, "fold2": 2, "fold3": 1, "fold4": 1}
  BUILDER_CONFIG_NAMES_TO_TEST = ["w1024", "full"]

  @classmethod
  def setUpClass(cls):
    # Generated rather than checked in: no binary files in the repository.
    cls._dummy_root = pathlib.Path(tempfile.mkdtemp(prefix="ecg_images_dummy_"))
    cls.EXAMPLE_DIR = str(make_release(cls._dummy_root / "release"))
    super().setUpClass()

  @classmethod
  def tearDownClass(cls):
    super().tearDownClass()
    shutil.rmtree(cls._dummy_root, ignore_errors=True)



def test_a_page_file_reaches_the_model_as_its_stored_example(sample_build):
  """`pipeline.load_page(..., dataset_config=...)` (prediction, evaluation, saliency on files)
  gives the model the page as training gave it: stored as the builder config stores it."""
  from configs import cnn_small  # pylint: disable=g-import-not-at-top
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top
  config = cnn_small.get_config()
  config.dataset.name, config.dataset.config = "ecg_images", "w1024"
  _, examples = sample_build
  model_input = lambda image: pipeline.Preprocess(config.data).process(image).astype(int)
  for ex in examples["fold0"][:2]:
    path = SAMPLE / ex["source_path"].decode()
    rgb, _ = pipeline.read_page(path)
    stored = pipeline.as_stored(rgb, config.dataset, config.data)
    assert stored.shape == ex["image"].shape
    assert np.abs(stored.astype(int) - ex["image"]).mean() < 0.5
    loaded, _ = pipeline.load_page(path, config.data, dataset_config=config.dataset)
    assert np.abs(loaded - model_input(ex["image"])).mean() < 0.5
    # Read as it is (2213 px wide), the page reaches the model unlike any training page.
    assert np.abs(model_input(rgb) - model_input(ex["image"])).mean() > 2
