"""Pages decoded once: the on-disk cache is written, reused, keyed by preprocessing, and checked."""

import os
import pickle

import numpy as np
import pytest

from ecgjax.data import decoded
from ecgjax.data import pipeline


def _source(config, splits=("fold0", "fold2")):
  return pipeline.Source(pipeline.dataset_builder(config.dataset), splits)


def _files(folder):
  return {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in sorted(os.listdir(folder))}


def test_cache_is_written_once_and_reused(smoke_config, tmp_path):
  source = _source(smoke_config)
  folder = str(tmp_path / "cache")
  first = decoded.load(source, smoke_config.data, folder=folder)
  written = _files(folder)
  assert {"fold0.npy", "fold0.labels.npy", "fold0.json", "fold2.npy"} <= set(written)
  again = decoded.load(source, smoke_config.data, folder=folder)
  assert _files(folder) == written  # Read, not decoded and written again.
  everything = np.arange(len(source))
  for a, b in ((first, again),):
    np.testing.assert_array_equal(a.gather(everything)["image"], b.gather(everything)["image"])
  np.testing.assert_array_equal(first.labels, source.labels())
  preprocess = pipeline.Preprocess(smoke_config.data)
  for i in (0, 5, len(source) - 1):  # Across the split boundary too.
    np.testing.assert_array_equal(first[i]["image"], preprocess.map(source[i])["image"])


def test_default_folder_is_keyed_by_data_set_and_preprocessing(smoke_config):
  source = _source(smoke_config, ("fold1",))
  ecg = decoded.load(source, smoke_config.data)  # The default: grid removed, min-pooled, grey.
  smoke_config.data.remove_grid, smoke_config.data.downscale = False, "bilinear"
  smoke_config.data.grayscale = False
  rgb = decoded.load(source, smoke_config.data)
  smoke_config.data.grayscale = True
  smoke_config.data.image_size = (32, 56)
  gray = decoded.load(source, smoke_config.data)
  assert rgb.image_shape == (48, 80, 3) and gray.image_shape == (32, 56, 1)
  assert ecg.image_shape == (48, 80, 1)
  root = os.path.join(str(source.builder.data_dir), "decoded")
  assert {"48x80_pad_gray_nogrid_min_pool", "48x80_pad_rgb", "32x56_pad_gray"} <= set(
      os.listdir(root))


def test_a_rebuilt_data_set_is_decoded_again(smoke_config, tmp_path):
  source = _source(smoke_config, ("fold0",))
  folder = str(tmp_path / "cache")
  decoded.load(source, smoke_config.data, folder=folder)
  # Pretend the cache came from another build of the data set: its ids no longer match.
  stale = np.zeros_like(np.load(os.path.join(folder, "fold0.npy")))
  np.save(os.path.join(folder, "fold0.npy"), stale)
  meta = os.path.join(folder, "fold0.json")
  with open(meta, "w") as f:
    f.write('{"ids_sha1": "another build", "num_examples": 4}')
  fresh = decoded.load(source, smoke_config.data, folder=folder)
  assert fresh.gather(np.arange(len(source)))["image"].any()
  assert np.load(os.path.join(folder, "fold0.npy")).any()


def test_mmap_mode_maps_the_files_and_pickles_by_path(smoke_config, tmp_path):
  source = _source(smoke_config)
  folder = str(tmp_path / "cache")
  memory = decoded.load(source, smoke_config.data, folder=folder)
  smoke_config.data.cache = "mmap"
  mapped = decoded.load(source, smoke_config.data, folder=folder)
  assert all(isinstance(images, np.memmap) for images, _ in mapped._parts)  # pylint: disable=protected-access
  idx = np.array([7, 0, 3, 6, 1])
  np.testing.assert_array_equal(memory.gather(idx)["image"], mapped.gather(idx)["image"])
  np.testing.assert_array_equal(memory.gather(idx)["label"], mapped.gather(idx)["label"])
  # A worker process gets the paths, not the pixels.
  blob = pickle.dumps(memory)
  assert len(blob) < 10_000
  np.testing.assert_array_equal(pickle.loads(blob).gather(idx)["image"], memory.gather(idx)["image"])


def test_bad_cache_mode_and_index_are_errors(smoke_config, tmp_path):
  source = _source(smoke_config, ("fold0",))
  smoke_config.data.cache = "disk"
  with pytest.raises(ValueError, match="config.data.cache='disk'"):
    decoded.load(source, smoke_config.data, folder=str(tmp_path))
  smoke_config.data.cache = "memory"
  images = decoded.load(source, smoke_config.data, folder=str(tmp_path))
  with pytest.raises(IndexError, match="out of range"):
    images.gather(np.array([len(source)]))
