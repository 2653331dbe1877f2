"""Tests of the TFDS builder `ecg_synth`: build the tiny config and read it back as the pipeline does."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import tensorflow_datasets as tfds

from ecgjax.classes import CLASS_NAMES
from ecgjax.data import ecg_synth
from ecgjax.data import features as features_lib


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  # Two workers: the parallel path the large config takes.
  builder = tfds.builder("ecg_synth/tiny", data_dir=str(data_dir), num_workers=2)
  builder.download_and_prepare(file_format="array_record")
  return str(data_dir)


def test_registered_with_configs():
  assert "ecg_synth" in tfds.list_builders()
  names = [c.name for c in ecg_synth.EcgSynth.BUILDER_CONFIGS]
  assert {"tiny", "small", "large"} <= set(names)
  small = ecg_synth.EcgSynth.builder_configs["small"]
  assert (small.width, small.height, small.per_class) == (1024, 596, 50)


def test_splits_counts_and_features(tiny_dir):
  builder = tfds.builder("ecg_synth/tiny", data_dir=tiny_dir)
  info = builder.info
  assert set(info.splits) == set(features_lib.SPLITS)
  assert info.features["label"].names == list(CLASS_NAMES)
  assert str(info.file_format.value) == "array_record"
  per_class = ecg_synth.EcgSynth.builder_configs["tiny"].per_class
  seen_ids, counts = set(), collections.Counter()
  for split in features_lib.SPLITS:
    source = tfds.data_source("ecg_synth/tiny", data_dir=tiny_dir, split=split)
    labels = collections.Counter()
    for i in range(len(source)):
      example = source[i]
      labels[int(example["label"])] += 1
      image_id = example["image_id"].decode()
      assert image_id not in seen_ids
      seen_ids.add(image_id)
      name = CLASS_NAMES[int(example["label"])]
      assert example["source_path"].decode().startswith(f"synth:{name}:")
    # Stratified folds: 5 pages per class over 5 folds is one of each class per fold.
    assert labels == {c: per_class // 5 for c in range(len(CLASS_NAMES))}, (split, labels)
    counts.update(labels)
  assert sum(counts.values()) == per_class * len(CLASS_NAMES)


def test_images_decode_to_the_panel(tiny_dir):
  source = tfds.data_source("ecg_synth/tiny", data_dir=tiny_dir, split="fold0")
  image = source[0]["image"]
  cfg = ecg_synth.EcgSynth.builder_configs["tiny"]
  assert image.shape == (cfg.height, cfg.width, 3) and image.dtype == np.uint8
  # A grid panel: mostly near-white paper with dark ink, no pink page margin in the corners.
  gray = image.astype(int).mean(-1)
  assert np.median(gray) > 220 and gray.min() < 80
  for corner in (image[:4, :4], image[:4, -4:], image[-4:, :4], image[-4:, -4:]):
    r, g, b = corner.reshape(-1, 3).mean(0)
    assert r - g < 40, corner.reshape(-1, 3).mean(0)  # Pink would be about 248, 162, 171.


def test_build_is_deterministic_across_worker_counts(tiny_dir):
  cfg = ecg_synth.EcgSynth.builder_configs["tiny"]
  serial = ecg_synth.build_examples(cfg, num_workers=1)
  ids = {e["image_id"] for e in serial}
  stored = set()
  for split in features_lib.SPLITS:
    source = tfds.data_source("ecg_synth/tiny", data_dir=tiny_dir, split=split)
    stored |= {source[i]["image_id"].decode() for i in range(len(source))}
  assert ids == stored
  assert all(e["image_id"] == features_lib.content_id(e["image"]) for e in serial)
