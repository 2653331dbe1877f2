"""Pages decoded and resized once: uint8 arrays in host memory, cached on disk, gathered by index.

Decoding a JPEG page and resizing it costs far more than a train step on an accelerator needs per
image, so a run does it once per page, not once per epoch. `load(source, data_config)` returns
`DecodedImages`: every example of the source's splits at the model's input size and channels, and
their labels. Each split is cached as ``<split>.npy`` (images) and ``<split>.labels.npy`` beside the
built TFDS data set, in ``<builder data_dir>/decoded/<KEY>/`` with KEY as `cache_key` writes it,
e.g. ``256x448_pad_rgb`` or ``256x448_pad_gray_nogrid_min_pool``: the cache is keyed by the data
set, its builder config and version (the builder's directory) and the preprocessing. A
cache whose example ids differ from the built data set's (rebuilt since) is decoded again. Files are
written to a temporary name and renamed, so concurrent runs never read half a file.

`config.data.cache` chooses where the arrays live: 'memory' reads them into RAM (the release is
167 MB at 256x448); 'mmap' memory-maps the files, for sets larger than memory (the page cache keeps
what fits, and worker processes share it).

Not here: the order of examples, per-process slices and the iterator state (`pipeline`, with
grain), nor augmentation (`augment`, on the device).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import ml_collections
import numpy as np
from absl import logging

CACHE_MODES = ("memory", "mmap")


def cache_key(data_config: ml_collections.ConfigDict) -> str:
  """The folder name that tells one preprocessing from another."""
  h, w = (int(v) for v in data_config.image_size)
  channels = "gray" if data_config.grayscale else "rgb"
  key = f"{h}x{w}_{data_config.resize_mode}_{channels}"
  if data_config.get("remove_grid", False):
    key += "_nogrid"
  if data_config.get("downscale", "bilinear") != "bilinear":
    key += f"_{data_config.downscale}"
  if data_config.get("crop", "panel") != "panel":
    key += f"_{data_config.crop}"
  return key


def cache_mode(data_config: ml_collections.ConfigDict) -> str:
  """`config.data.cache`, checked: 'memory' or 'mmap'."""
  mode = data_config.get("cache", "memory")
  if mode not in CACHE_MODES:
    raise ValueError(f"config.data.cache={mode!r}; use one of {CACHE_MODES}.")
  return mode


class DecodedImages:
  """The decoded examples of several splits: `images` per split, gathered by global index."""

  def __init__(self, parts: Sequence[tuple[np.ndarray, np.ndarray]], paths: Sequence[str] = (),
               mode: str = "memory"):
    self._parts = [(images, labels.astype(np.int32)) for images, labels in parts]
    if mode == "memory" and len(self._parts) > 1:  # One array: a batch is then one fancy index.
      self._parts = [(np.concatenate([images for images, _ in self._parts]),
                      np.concatenate([labels for _, labels in self._parts]))]
    self._offsets = np.cumsum([0] + [len(labels) for _, labels in self._parts])
    self._paths = tuple(paths)
    self._mode = mode

  def __len__(self) -> int:
    return int(self._offsets[-1])

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self._parts[0][0].shape[1:])

  @property
  def labels(self) -> np.ndarray:
    return np.concatenate([labels for _, labels in self._parts])

  def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    """The examples at `indices` (global over the splits), as one batch."""
    indices = np.asarray(indices, np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
      raise IndexError(f"Index out of range 0..{len(self) - 1}: {indices}.")
    if len(self._parts) == 1:
      images, labels = self._parts[0]
      return {"image": images[indices], "label": labels[indices]}
    part = np.searchsorted(self._offsets, indices, side="right") - 1
    images = np.empty((len(indices),) + self.image_shape, self._parts[0][0].dtype)
    labels = np.empty((len(indices),), np.int32)
    for p in np.unique(part):
      where = part == p
      local = indices[where] - self._offsets[p]
      part_images, part_labels = self._parts[p]
      images[where] = part_images[local]
      labels[where] = part_labels[local]
    return {"image": images, "label": labels}

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    batch = self.gather(np.array([index]))
    return {"image": batch["image"][0], "label": batch["label"][0]}

  # Worker processes open the files again instead of receiving the arrays through a pipe.
  def __getstate__(self):
    if self._paths:
      return {"paths": self._paths, "mode": self._mode}
    return {"parts": self._parts, "mode": self._mode}

  def __setstate__(self, state):
    if "paths" in state:
      parts = [_read(path, "mmap") for path in state["paths"]]
      self.__init__(parts, state["paths"], state["mode"])
    else:
      self.__init__(state["parts"], (), state["mode"])


class Joined:
  """Several views of the same examples (`config.data.input='image+signals'`: the decoded page and
  its digitized leads), gathered together: a batch holds each view under its own key.

  Every view is a `DecodedImages` of the same source, in the same order; their labels must agree.
  """

  def __init__(self, views: dict[str, DecodedImages]):
    if not views:
      raise ValueError("Joined needs at least one view.")
    self.views = dict(views)
    first, *others = self.views.items()
    for key, view in others:
      if len(view) != len(first[1]) or not np.array_equal(view.labels, first[1].labels):
        raise ValueError(f"The {key!r} view of the examples does not line up with the "
                         f"{first[0]!r} view ({len(view)} against {len(first[1])} examples).")

  def __len__(self) -> int:
    return len(next(iter(self.views.values())))

  @property
  def image_shape(self) -> dict[str, tuple[int, ...]]:
    return {key: view.image_shape for key, view in self.views.items()}

  @property
  def labels(self) -> np.ndarray:
    return next(iter(self.views.values())).labels

  def gather(self, indices: np.ndarray) -> dict[str, np.ndarray]:
    batch = {}
    for key, view in self.views.items():
      part = view.gather(indices)
      batch[key], batch["label"] = part["image"], part["label"]
    return batch


def _read(path: str, mode: str) -> tuple[np.ndarray, np.ndarray]:
  images = np.load(path + ".npy", mmap_mode="r" if mode == "mmap" else None)
  labels = np.load(path + ".labels.npy")
  return images, labels


def _ids_digest(ids: Sequence[bytes | str]) -> str:
  digest = hashlib.sha1()
  for i in ids:
    digest.update(i if isinstance(i, bytes) else str(i).encode())
    digest.update(b"\0")
  return digest.hexdigest()


def _save(path: str, write: Callable[[Any], None]) -> None:
  """Writes `path` atomically with `write(binary_file)`: a temporary file, then a rename."""
  folder = os.path.dirname(path)
  fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _decode_split(split_source, preprocess, threads: int) -> tuple[np.ndarray, np.ndarray]:
  """Decodes every example of one split (PIL releases the GIL while decoding and resizing)."""
  n = len(split_source)

  def one(i):
    example = preprocess.map(split_source[i])
    return example["image"], example["label"]

  with concurrent.futures.ThreadPoolExecutor(max(1, threads)) as pool:
    results = list(pool.map(one, range(n)))
  images = np.stack([r[0] for r in results]) if results else np.zeros(
      (0, *preprocess.output_shape), preprocess.dtype)
  labels = np.array([r[1] for r in results], np.int32)
  return images, labels


def load(source, data_config: ml_collections.ConfigDict, *, folder: str | None = None,
         threads: int | None = None, preprocess=None) -> DecodedImages:
  """Every example of `source` (a `pipeline.Source`) decoded at the model's size, cached on disk.

  Args:
    source: the splits to load.
    data_config: `config.data` (image_size, resize_mode, grayscale, cache).
    folder: where the cache lives; default beside the built data set.
    threads: decoding threads; default one per core.
    preprocess: what reads an example (`map(example) -> {"image", "label"}`, with `key`, `spec`,
      `output_shape` and `dtype`); default `pipeline.Preprocess(data_config)`, the page images.
      `digitized.Preprocess` reads signals instead, cached the same way under its own key.
  """
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top
  mode = cache_mode(data_config)
  preprocess = preprocess or pipeline.Preprocess(data_config)
  folder = folder or os.path.join(str(source.builder.data_dir), "decoded", preprocess.key)
  threads = threads or os.cpu_count() or 1
  parts, paths = [], []
  writable = True
  for split, split_source in zip(source.splits, source.split_sources):
    path = os.path.join(folder, split)
    digest = _ids_digest([split_source[i]["image_id"] for i in range(len(split_source))])
    meta_path = path + ".json"
    cached = None
    if os.path.exists(meta_path):
      try:
        with open(meta_path) as f:
          meta = json.load(f)
        if meta.get("ids_sha1") == digest:
          cached = _read(path, mode)
      except (OSError, ValueError) as e:
        logging.warning("Decoded cache %s is unreadable (%s); decoding %s again.", path, e, split)
    if cached is None or len(cached[1]) != len(split_source):
      logging.info("Decoding %d pages of %s at %s into %s.", len(split_source), split,
                   preprocess.key, folder)
      images, labels = _decode_split(split_source, preprocess, threads)
      cached = (images, labels)
      if writable:
        try:
          os.makedirs(folder, exist_ok=True)
          _save(path + ".npy", lambda f: np.save(f, images))
          _save(path + ".labels.npy", lambda f: np.save(f, labels))
          meta = {"ids_sha1": digest, "num_examples": len(labels), "spec": preprocess.spec}
          _save(meta_path, lambda f: f.write(json.dumps(meta).encode()))
          if mode == "mmap":
            cached = _read(path, mode)
        except OSError as e:
          writable = False
          logging.warning("Cannot write the decoded cache in %s (%s): pages stay in memory for "
                          "this run only.", folder, e)
    parts.append(cached)
    paths.append(path)
  return DecodedImages(parts, paths if writable else (), mode)
