"""What every ecgjax data set holds: one feature schema and one leak-free fold assignment.

Both TFDS builders (`ecg_images`, the real release, and `ecg_synth`) use these, so a config switches
data set by name alone. Images are stored encoded (JPEG/PNG bytes or file paths), which lets TFDS
write array_record files without TensorFlow.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import tensorflow_datasets as tfds

from ecgjax.classes import CLASS_NAMES

NUM_FOLDS = 5
SPLITS: tuple[str, ...] = tuple(f"fold{i}" for i in range(NUM_FOLDS))


def features(encoding_format: str = "jpeg") -> tfds.features.FeaturesDict:
  """The feature schema shared by `ecg_images` and `ecg_synth`."""
  return tfds.features.FeaturesDict({
      # The ECG grid panel (page margins and header cropped away), RGB.
      "image": tfds.features.Image(shape=(None, None, 3), encoding_format=encoding_format),
      "label": tfds.features.ClassLabel(names=CLASS_NAMES),
      # Content hash of the page: equal pages share it, so it is also the deduplication key.
      "image_id": tfds.features.Text(),
      # Where the page came from (a path under manual_dir, or a synthetic record's seed).
      "source_path": tfds.features.Text(),
  })


def content_id(data: bytes) -> str:
  """A stable content hash used as `image_id`."""
  return hashlib.sha256(data).hexdigest()[:32]


def assign_folds(labels: Sequence[int], keys: Sequence[str], num_folds: int = NUM_FOLDS,
                 seed: int = 0) -> np.ndarray:
  """Stratified, deterministic fold of each example.

  Within each class the examples are ordered by a hash of (seed, key) — independent of input order and
  of file names — and dealt round-robin over the folds, with the starting fold rotated per class so
  that fold sizes stay within one of each other overall. `keys` must be unique per distinct page
  (for example `image_id` after deduplication), so copies of a page can never straddle folds.
  """
  labels = np.asarray(labels)
  if len(labels) != len(keys):
    raise ValueError(f"{len(labels)} labels but {len(keys)} keys.")
  if len(set(keys)) != len(keys):
    raise ValueError("Fold keys must be unique: deduplicate pages before assigning folds.")
  folds = np.empty(len(labels), dtype=np.int64)
  offset = 0
  for label in sorted(set(labels.tolist())):
    members = np.flatnonzero(labels == label)
    order = sorted(members, key=lambda i: hashlib.sha256(f"{seed}:{keys[i]}".encode()).hexdigest())
    for rank, i in enumerate(order):
      folds[i] = (offset + rank) % num_folds
    offset = (offset + len(members)) % num_folds
  return folds


def split_by_fold(examples: Sequence[dict]) -> dict[str, list[dict]]:
  """Examples (each with "label" and "image_id") grouped into `SPLITS` by `assign_folds`."""
  folds = assign_folds([e["label"] for e in examples], [e["image_id"] for e in examples])
  return {split: [e for e, f in zip(examples, folds) if f == i] for i, split in enumerate(SPLITS)}
