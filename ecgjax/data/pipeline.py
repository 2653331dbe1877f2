"""The input pipeline: TFDS data sources in, batches of uint8 images (or signals) and labels out.

Every page is decoded and resized once per run (`decoded.load`, cached on disk); batches are gathered
from those arrays by index. Train batches come from an endless, seeded, per-epoch reshuffled
`grain.MapDataset` of indices, sharded by process for multi-host runs; the iterator is checkpointable
(`get_state`/`set_state`) so a resumed run sees the same batches. Evaluation batches cover a split
exactly once, padded to whole batches with a `mask`. Images stay uint8 on the host (four times less to
move than float32); augmentation (`augment`) and `normalize` run inside the jitted step. With
`config.data.input='signals'` the same machinery carries each page's digitized leads instead
(`digitized`, float32 in mV, under the same batch key "image"), which `normalize` leaves as they are.
With `config.data.input='image+signals'` (a fused model with page and signal backbones) a batch holds
both, the page under "image" and its leads under "signals" (`decoded.Joined`), and `model_inputs`
gives the model {"image": ..., "signals": ...}.

Not here: the data sets themselves (`ecg_synth`, `ecg_images`), the host image ops (`transforms`) and
the augmentation ops (`augment`).
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from PIL import Image

from ecgjax.data import decoded as decoded_lib
from ecgjax.data import features as features_lib
from ecgjax.data import transforms

# Importing the builders registers them with TFDS, so a config can name them.
DATASET_MODULES = {
    "ecg_synth": "ecgjax.data.ecg_synth",
    "ecg_images": "ecgjax.data.ecg_images",
    "ecg_signals_sim": "ecgjax.data.ecg_signals_sim",  # Signals only: config.data.input='signals'.
}
INPUTS = ("image", "signals", "image+signals")  # What `config.data.input` may name.


def _register_builder(name: str) -> None:
  import importlib  # pylint: disable=g-import-not-at-top
  module = DATASET_MODULES.get(name)
  if module is None:
    raise ValueError(f"Unknown data set {name!r} (config.dataset.name); "
                     f"available: {sorted(DATASET_MODULES)}.")
  importlib.import_module(module)


def dataset_builder(dataset_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """The TFDS builder named by `config.dataset` (`name`, `config`, `data_dir`, `manual_dir`)."""
  _register_builder(dataset_config.name)
  name = dataset_config.name
  if dataset_config.get("config"):
    name = f"{name}/{dataset_config.config}"
  return tfds.builder(name, data_dir=dataset_config.get("data_dir") or None,
                      file_format="array_record")


def prepare(dataset_config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Builds the data set if needed (generated, or from `manual_dir`) and returns its builder."""
  builder = dataset_builder(dataset_config)
  download_config = tfds.download.DownloadConfig(
      manual_dir=dataset_config.get("manual_dir") or None)
  builder.download_and_prepare(file_format="array_record", download_config=download_config)
  return builder


@dataclasses.dataclass(frozen=True)
class Splits:
  """Which folds train, validate and test (`config.data.test_fold`, `config.data.val_fold`)."""
  train: tuple[str, ...]
  val: tuple[str, ...]
  test: tuple[str, ...]


def fold_splits(data_config: ml_collections.ConfigDict) -> Splits:
  """`config.data.test_fold` tests, `val_fold` selects the checkpoint, every other fold trains.

  Either may be None: no test split (a final model, trained on every fold but the validation one and
  evaluated elsewhere with `ecgjax.evaluate`); no validation split (the latest checkpoint is used).
  """
  num = features_lib.NUM_FOLDS
  meaning = {"test_fold": "no test fold, evaluate elsewhere",
             "val_fold": "no validation, and the latest checkpoint is reported"}
  folds = {}
  for field, none in meaning.items():
    value = data_config[field]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                              or not 0 <= value < num):
      raise ValueError(f"config.data.{field}={value!r}: use a fold 0..{num - 1}, or None ({none}).")
    folds[field] = None if value is None else int(value)
  test, val = folds["test_fold"], folds["val_fold"]
  if val is not None and val == test:
    raise ValueError(f"config.data.val_fold={val} must differ from config.data.test_fold={test} "
                     f"(or be None: {meaning['val_fold']}).")
  return Splits(train=tuple(f"fold{i}" for i in range(num) if i not in (test, val)),
                val=(f"fold{val}",) if val is not None else (),
                test=(f"fold{test}",) if test is not None else ())


class Source:
  """Random access to the examples of several splits of one built data set, images still encoded."""

  def __init__(self, builder: tfds.core.DatasetBuilder, splits: Sequence[str]):
    self.builder = builder
    self.splits = tuple(splits)
    # Images stay encoded; a data set of signal recipes (`ecg_signals_sim`) has none.
    decoders = ({"image": tfds.decode.SkipDecoding()} if "image" in builder.info.features
                else None)
    self.split_sources = [builder.as_data_source(split=s, decoders=decoders) for s in self.splits]
    self._offsets = np.cumsum([0] + [len(s) for s in self.split_sources])

  def __len__(self) -> int:
    return int(self._offsets[-1])

  def __getitem__(self, index: int) -> dict[str, Any]:
    index = int(index)
    part = int(np.searchsorted(self._offsets, index, side="right")) - 1
    return self.split_sources[part][index - int(self._offsets[part])]

  def labels(self) -> np.ndarray:
    """All labels, in index order (reads the records; fine for data sets of this size)."""
    return np.array([int(self[i]["label"]) for i in range(len(self))], dtype=np.int64)

  def __repr__(self) -> str:
    return f"Source({self.builder.info.full_name}, splits={self.splits}, n={len(self)})"


def decode_image(data: bytes, target_hw: tuple[int, int] | None = None,
                 what: str = "image") -> np.ndarray:
  """Decodes JPEG/PNG bytes to uint8 RGB (H, W, 3).

  With `target_hw`, JPEG's DCT scaling (`Image.draft`) decodes at the smallest power-of-two reduction
  still at least that size, which makes decoding a 1024 px page for a 256 px model several times
  cheaper.
  """
  try:
    image = Image.open(io.BytesIO(data))
    if target_hw is not None:
      image.draft("RGB", (target_hw[1], target_hw[0]))
    return np.asarray(image.convert("RGB"))
  except Exception as e:  # PIL raises many types for bad data.
    raise ValueError(f"Cannot decode {what}: {e}") from e


class Preprocess(grain.transforms.Map):
  """Decodes and applies the deterministic ops of `config.data`.

  In order: the grid removed (`remove_grid`), the resize to `image_size` (`resize_mode`, and
  `downscale`: 'bilinear' or 'min_pool'), one luminance channel (`grayscale`). With
  `crop='leads'` the panel is cut into its leads instead of resized whole, each lead `image_size`,
  stacked as channels (`transforms.leads`).
  """

  def __init__(self, data_config: ml_collections.ConfigDict):
    self.image_size = tuple(data_config.image_size)
    self.grayscale = bool(data_config.grayscale)
    self.downscale = data_config.get("downscale", "bilinear")
    self.crop = data_config.get("crop", "panel")
    spec = "remove_grid|" if data_config.get("remove_grid", False) else ""
    channels = 1 if self.grayscale else 3
    if self.crop == "leads":  # One image per lead, stacked as channels (`transforms.leads`).
      spec += "grayscale|" if self.grayscale else ""
      spec += f"leads({self.image_size[0]}, {self.image_size[1]}, method={self.downscale!r})"
      channels *= transforms.LEAD_CHANNELS
    else:
      spec += (f"resize({self.image_size[0]}, {self.image_size[1]}, "
               f"mode={data_config.resize_mode!r}, method={self.downscale!r})")
      if data_config.grayscale:
        spec += "|grayscale"
    self.spec = spec
    self.key = decoded_lib.cache_key(data_config)
    self.output_shape = (*self.image_size, channels)
    self.dtype = np.uint8
    self._ops = None

  def map(self, example):
    return {"image": self.process(self.decode(example)), "label": np.int32(example["label"])}

  def decode(self, example) -> np.ndarray:
    """An example's encoded panel -> uint8 RGB, as large as `process` needs it."""
    source = example.get("source_path", b"")
    source = source.decode() if isinstance(source, bytes) else str(source)
    # JPEG's reduced decoding averages like an area resize: not before min-pooling.
    draft = self.image_size if self.downscale == "bilinear" else None
    return decode_image(example["image"], draft, what=f"image of {source!r}")

  def process(self, image: np.ndarray) -> np.ndarray:
    """A decoded uint8 RGB image to the model's input size and channels."""
    if self._ops is None:  # Built lazily: ops are closures, built again in each worker.
      self._ops = transforms.parse(self.spec)
    return transforms.apply(self._ops, image, np.random.default_rng(0))


class Gather(grain.transforms.Map):
  """A batch of indices to the batch of decoded examples at them."""

  def __init__(self, decoded: decoded_lib.DecodedImages):
    self.decoded = decoded

  def map(self, indices):
    return self.decoded.gather(indices)


def _ensure_flags_parsed() -> None:
  """grain reads absl flags when it starts workers, and in them. Outside an absl app (a notebook,
  pytest) or in a worker process, nothing has parsed them: take the defaults without validating,
  since a worker started from `python -m ecgjax.main` defines that entry point's required flags."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _worker_init(worker_index: int, worker_count: int) -> None:
  del worker_index, worker_count
  _ensure_flags_parsed()


# How training pages are drawn: 'shuffle' (each once an epoch) or 'balanced' (with replacement,
# each class equally often).
SAMPLING = ("shuffle", "balanced")


class ShuffledBatches:
  """The index batches of an endless run of epochs, for `grain.MapDataset.source`.

  Element k is batch k: epoch k // per_epoch, a fresh permutation of the examples seeded by
  (seed, epoch), cut into global batches; the last partial batch of an epoch is dropped, so every
  epoch has `len(examples) // global_batch_size` steps. Process p takes the p-th contiguous part
  of the global batch: the rows its devices hold in the global array, so a run over several
  processes sees every example in the same row as one process with as many devices (and draws the
  same augmentation and dropout for it). Shuffling whole epochs at once costs microseconds a batch;
  grain's per-example shuffle costs milliseconds (`experiments/benchmark_pipeline.py` prints both).

  With `labels` (class-balanced sampling, `config.data.sampling='balanced'`), an epoch is as many
  draws with replacement, each class drawn equally often in expectation: a page of a class of n
  pages with probability 1 / (num_classes x n).
  """

  def __init__(self, num_examples: int, local_batch_size: int, seed: int, process_index: int = 0,
               process_count: int = 1, labels: np.ndarray | None = None):
    self.num_examples = int(num_examples)
    self.probabilities = None
    if labels is not None:
      labels = np.asarray(labels)
      if len(labels) != self.num_examples:
        raise ValueError(f"{len(labels)} labels for {self.num_examples} examples.")
      _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
      self.probabilities = 1.0 / (len(counts) * counts[inverse])
    self.local_batch_size = int(local_batch_size)
    self.global_batch_size = self.local_batch_size * int(process_count)
    self.per_epoch = self.num_examples // self.global_batch_size
    if self.per_epoch == 0:
      raise ValueError(f"{self.num_examples} training examples are fewer than one global batch of "
                       f"{self.global_batch_size}; lower config.train.batch_size.")
    self.seed = int(seed)
    self.process_index = int(process_index)
    self._cache: tuple[int, np.ndarray] | None = None

  def __len__(self) -> int:
    return sys.maxsize  # Endless; as `repeat(None)` does.

  def permutation(self, epoch: int) -> np.ndarray:
    cached = self._cache
    if cached is None or cached[0] != epoch:
      rng = np.random.default_rng([self.seed, epoch])
      order = (rng.permutation(self.num_examples) if self.probabilities is None else
               rng.choice(self.num_examples, self.num_examples, p=self.probabilities))
      cached = (epoch, order)
      self._cache = cached  # One tuple assignment: safe with several reading threads.
    return cached[1]

  def __getitem__(self, index: int) -> np.ndarray:
    epoch, position = divmod(int(index), self.per_epoch)
    start = position * self.global_batch_size + self.process_index * self.local_batch_size
    return self.permutation(epoch)[start:start + self.local_batch_size]


def train_dataset(decoded: decoded_lib.DecodedImages, data_config: ml_collections.ConfigDict, *,
                  local_batch_size: int, seed: int, process_index: int | None = None,
                  process_count: int | None = None) -> grain.IterDataset:
  """An endless stream of this process's training batches, shuffled anew each epoch and
  unaugmented (augmentation runs in the train step). grain iterates, prefetches, runs workers and
  checkpoints the position."""
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  sampling = data_config.get("sampling", "shuffle")
  if sampling not in SAMPLING:
    raise ValueError(f"config.data.sampling={sampling!r}: use one of {SAMPLING}.")
  ds = grain.MapDataset.source(ShuffledBatches(
      len(decoded), local_batch_size, seed, process_index, process_count,
      labels=decoded.labels if sampling == "balanced" else None))
  ds = ds.map(Gather(decoded))
  iter_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=int(data_config.read_threads),
                                                 prefetch_buffer_size=int(data_config.prefetch)))
  if data_config.worker_count:
    _ensure_flags_parsed()
    iter_ds = iter_ds.mp_prefetch(
        grain.MultiprocessingOptions(num_workers=int(data_config.worker_count)),
        worker_init_fn=_worker_init)
  return iter_ds


def eval_batches(decoded: decoded_lib.DecodedImages, *, local_batch_size: int,
                 process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict[str, np.ndarray]]:
  """Every example of `decoded` exactly once, in order, in padded batches with a `mask`.

  Each process takes a strided slice; all processes yield the same number of batches (padding where
  needed), as the jitted step over the global batch requires.
  """
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  indices = np.arange(len(decoded))[process_index::process_count]
  per_process = -(-len(decoded) // process_count)
  num_batches = -(-per_process // local_batch_size)
  for b in range(num_batches):
    chunk = indices[b * local_batch_size:(b + 1) * local_batch_size]
    batch = decoded.gather(chunk)
    pad = local_batch_size - len(chunk)
    # Every input (the page, or the page and its signals) and the labels, padded with zeros.
    batch = {key: np.concatenate([value, np.zeros((pad,) + value.shape[1:], value.dtype)])
             for key, value in batch.items()}
    batch["mask"] = np.arange(local_batch_size) < len(chunk)
    yield batch


def eval_order(num_examples: int, *, local_batch_size: int, process_count: int) -> np.ndarray:
  """The example index of each row of the global batches that `eval_batches` makes in every
  process (process 0's rows of a batch first), all batches concatenated; -1 for padding."""
  per_process = -(-num_examples // process_count)
  num_batches = -(-per_process // local_batch_size)
  rows = []
  for b in range(num_batches):
    for p in range(process_count):
      chunk = np.arange(num_examples)[p::process_count][b * local_batch_size:
                                                         (b + 1) * local_batch_size]
      rows += [chunk, np.full(local_batch_size - len(chunk), -1)]
  return np.concatenate(rows).astype(np.int64)


def load(source: Source, config: ml_collections.ConfigDict
         ) -> decoded_lib.DecodedImages | decoded_lib.Joined:
  """The model inputs of every example of `source`, read once and cached (`decoded.load`): pages
  decoded at the model's size, with `config.data.input='signals'` their digitized leads, with
  'image+signals' both (`decoded.Joined`: batches hold "image" and "signals")."""
  kind = config.data.get("input", "image")
  if kind == "image+signals":
    views = {}
    for key in ("image", "signals"):
      one = ml_collections.ConfigDict(config.to_dict())
      one.data.input = key
      views[key] = load(source, one)
    return decoded_lib.Joined(views)
  if kind == "signals":
    from ecgjax.data import digitized  # pylint: disable=g-import-not-at-top
    return decoded_lib.load(source, config.data, preprocess=digitized.Preprocess(config))
  if kind != "image":
    raise ValueError(f"config.data.input={kind!r}; use one of {INPUTS}.")
  if "image" not in source.builder.info.features:
    raise ValueError(f"{source.builder.info.full_name} holds no images, only signals: use it with "
                     "config.data.input='signals' and a signal model (e.g. 'resnet1d').")
  return decoded_lib.load(source, config.data)


def input_range(config: ml_collections.ConfigDict) -> tuple[float, float] | None:
  """What `normalize` maps the inputs to: `config.data.value_range`, or None for signals (mV)."""
  if config.data.get("input", "image") == "signals":
    return None
  return tuple(config.data.value_range)


def model_inputs(batch: dict[str, jax.Array], value_range: Sequence[float] | None
                 ) -> jax.Array | dict[str, jax.Array]:
  """What the model reads from a batch, in jit: the normalised page images (or signals, under the
  same key); with a "signals" entry as well, {"image": normalised pages, "signals": float32 mV}."""
  images = normalize(batch["image"], value_range)
  if "signals" in batch:
    return {"image": images, "signals": normalize(batch["signals"], None)}
  return images


def normalize(images: jax.Array, value_range: Sequence[float] | None = (-1.0, 1.0),
              dtype: Any = jnp.float32) -> jax.Array:
  """Images on the 0..255 scale (uint8, or float after augmentation) to `value_range`; in jit.

  `value_range=None`: the inputs are already on the model's scale (signals in mV), only cast.
  """
  if value_range is None:
    return images.astype(dtype)
  lo, hi = value_range
  return (images.astype(dtype) * ((hi - lo) / 255.0) + lo).astype(dtype)


# Smaller than this on a side, an image cannot show the twelve leads of a page.
MIN_PAGE_SIDE = 64
NO_PANEL = "no grid panel found"


def read_page(path: str | os.PathLike, crop: bool = True) -> tuple[np.ndarray, str]:
  """A page from disk as uint8 RGB, cropped to its ECG grid panel as the data sets store it.

  Any size, JPEG or PNG, RGB, gray or RGBA; a whole photographed or scanned page works. With `crop`,
  the panel is found from the pixels; an image in which no panel stands out (already a panel crop) is
  used whole, with a warning and a note starting with `NO_PANEL`. Returns the image and a note on
  what was done. A file that is not an image, or is too small to be a page, raises ValueError
  naming it.
  """
  from ecgjax.data import panel  # pylint: disable=g-import-not-at-top
  path = os.fspath(path)
  rgb = panel.read_rgb(path)
  if min(rgb.shape[:2]) < MIN_PAGE_SIDE:
    raise ValueError(f"{path}: {rgb.shape[1]}x{rgb.shape[0]} px is too small for an ECG page "
                     f"(at least {MIN_PAGE_SIDE} px a side).")
  if not crop:
    return rgb, "whole image (no crop asked)"
  try:
    box = panel.find_panel(rgb, source=path)
  except ValueError as e:
    logging.warning("%s Using the whole image.", e)
    return rgb, f"{NO_PANEL}: whole image used"
  return (rgb[box.top:box.bottom, box.left:box.right],
          f"panel rows {box.top}-{box.bottom}, columns {box.left}-{box.right}")


def stored_panel(panel: np.ndarray, dataset_config: ml_collections.ConfigDict) -> bytes | None:
  """A panel crop (uint8 RGB) encoded as the data set of `dataset_config` stores its pages: resized
  to its builder config's width and JPEG-encoded as the builder does (`store_panel` of the
  builder's module); None for a builder that stores no pages.

  Without it a page read from a file differs from the training pages: a 1280 px panel min-pooled
  to the model's size is not the 640 px panel a `w640` model learnt from. For the page CNN
  (`configs/cnn_small.py`) trained on the development pages' `w640` (test fold 0, 59 pages), the
  model inputs of the files differed from the data set's by 6 grey levels on average and the
  fold's macro-F1 through the files was 0.40 against 0.83; stored first, the inputs are identical
  and so are the predictions.
  """
  import importlib  # pylint: disable=g-import-not-at-top
  _register_builder(dataset_config.name)
  module = importlib.import_module(DATASET_MODULES[dataset_config.name])
  store = getattr(module, "store_panel", None)
  return None if store is None else store(panel, dataset_config.get("config"))


def as_stored(panel: np.ndarray, dataset_config: ml_collections.ConfigDict,
              data_config: ml_collections.ConfigDict) -> np.ndarray:
  """`stored_panel`, decoded as training decodes it (`Preprocess.decode`): uint8 RGB."""
  data = stored_panel(panel, dataset_config)
  if data is None:
    return panel
  return Preprocess(data_config).decode({"image": data})


def load_page(path: str | os.PathLike, data_config: ml_collections.ConfigDict,
              crop: bool = True, dataset_config: ml_collections.ConfigDict | None = None
              ) -> tuple[np.ndarray, str]:
  """`read_page`, then preprocessed like evaluation data: (H, W, C) uint8 at the model's size.

  With `dataset_config` (the run's `config.dataset`), the panel first goes through `as_stored`, so
  the model sees the page as it saw its training pages; prediction, evaluation and saliency pass it.
  """
  rgb, note = read_page(path, crop)
  if dataset_config is not None:
    rgb = as_stored(rgb, dataset_config, data_config)
  return Preprocess(data_config).process(rgb), note
