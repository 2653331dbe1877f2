"""TFDS builder `ecg_synth`: synthetic ECG grid panels with the features and folds of `ecg_images`.

Each example is one page simulated and rendered by `ecgjax.data.synth`, with its grid panel cropped
(as the real builder crops rows 287-1510, columns 71-2172 of a real page), resized to the config's
width and stored as JPEG bytes, so TFDS writes array_record files without TensorFlow. Features,
splits (fold0..fold4) and fold assignment are those of `ecgjax.data.features`, so a config switches
between `ecg_images` and `ecg_synth` by name alone.

    import numpy as np
import tensorflow_datasets as tfds
from PIL import Image
    from ecgjax.data import ecg_synth  # Registers the builder.
    tfds.builder("ecg_synth/small", data_dir=d).download_and_prepare(file_format="array_record")
    source = tfds.data_source("ecg_synth/small", data_dir=d, split="fold0")

Pages are generated in parallel on all cores (`EcgSynth(num_workers=...)` overrides); the seed of
each page derives from the config's seed, the class and the page's index, so a build is
deterministic whatever the number of workers.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from ecgjax.classes import CLASS_NAMES
from ecgjax.data import features as features_lib
from ecgjax.data import synth
from ecgjax.data.layout import REAL_LAYOUT

_l, _t, _r, _b = REAL_LAYOUT.panel_box
PANEL_ASPECT = (_b - _t) / (_r - _l)  # Height / width of the real grid panel (1224 / 2102).


@dataclasses.dataclass(kw_only=True)
class EcgSynthConfig(tfds.core.BuilderConfig):
  """A size of the synthetic data set."""
  per_class: int = 50  # Pages per class.
  width: int = 1024  # Stored panel width, px; height follows the real panel's aspect ratio.
  seed: int = 0  # Base seed of the pages (combined with the config name, class and index).
  jpeg_quality: int = 92  # Quality of the stored panel (the page itself went through its own JPEG).

  @property
  def height(self) -> int:
    return round(self.width * PANEL_ASPECT)


class EcgSynth(tfds.core.GeneratorBasedBuilder):
  """Synthetic 12-lead ECG pages of the four classes (grid panel only)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      EcgSynthConfig(name="tiny", description="5 pages per class, 256 px wide, for unit tests.",
                     per_class=5, width=256),
      EcgSynthConfig(name="small", description="50 pages per class, 1024 px wide, for tests and "
                     "the demo.", per_class=50, width=1024),
      EcgSynthConfig(name="large", description="1000 pages per class, 1024 px wide, for "
                     "pre-training.", per_class=1000, width=1024),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "small"

  def __init__(self, *, file_format=None, num_workers: int | None = None, **kwargs):
    # array_record by default: random access for grain, written without TensorFlow.
    super().__init__(file_format=file_format or "array_record", **kwargs)
    self._num_workers = num_workers

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=features_lib.features("jpeg"),
        supervised_keys=("image", "label"),
        homepage="https://github.com/ecgjax/ecgjax",
        description=("Synthetic 12-lead ECG pages rendered with the layout of the ECG Images "
                     "dataset of Cardiac Patients (doi:10.17632/gwbz3fsgp8.2); grid panel only."),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    splits = features_lib.split_by_fold(build_examples(self.builder_config, self._num_workers))
    return {split: self._generate_examples(examples) for split, examples in splits.items()}

  def _generate_examples(self, examples):
    for example in examples:
      yield example["image_id"], example


def store_panel(panel: np.ndarray, config_name: str | None) -> bytes:
  """A panel crop (uint8 RGB) as the builder config `config_name` stores its pages (resized to its
  width as `synth.panel_jpeg` resizes, JPEG at its quality), for pages read from files."""
  configs = {c.name: c for c in EcgSynth.BUILDER_CONFIGS}
  name = config_name or EcgSynth.DEFAULT_BUILDER_CONFIG_NAME
  if name not in configs:
    raise ValueError(f"config.dataset.config={name!r} is no ecg_synth config; available: "
                     f"{sorted(configs)}.")
  cfg = configs[name]
  image = Image.fromarray(panel)
  if image.width != cfg.width:
    height = max(1, round(image.height * cfg.width / image.width))
    image = image.resize((cfg.width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
  return synth.encode_jpeg(np.asarray(image), cfg.jpeg_quality)


def example_jobs(cfg: EcgSynthConfig) -> list[tuple[str, int]]:
  """(class name, seed) of every page of `cfg`, in a fixed order."""
  return [(label, synth.page_seed(f"{cfg.name}:{cfg.seed}", label, i))
          for label in CLASS_NAMES for i in range(cfg.per_class)]


def _make(job: tuple[str, int, int, int, int]) -> bytes:
  label, seed, width, height, quality = job
  return synth.panel_jpeg(label, seed, width, height, quality=quality)


def build_examples(cfg: EcgSynthConfig, num_workers: int | None = None) -> list[dict]:
  """Generates every example of `cfg` (in memory: about 80 kB each at 1024 px)."""
  jobs = [(label, seed, cfg.width, cfg.height, cfg.jpeg_quality) for label, seed in example_jobs(cfg)]
  workers = num_workers if num_workers is not None else (os.cpu_count() or 1)
  if workers <= 1:
    images = [_make(job) for job in jobs]
  else:
    # spawn, not fork: the parent may hold JAX/TF threads, which fork does not copy safely.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
      images = pool.map(_make, jobs, chunksize=max(1, len(jobs) // (8 * workers)))
  examples = []
  for (label, seed), image in zip(example_jobs(cfg), images):
    examples.append({"image": image, "label": label, "image_id": features_lib.content_id(image),
                     "source_path": f"synth:{label}:{seed}"})
  ids = [e["image_id"] for e in examples]
  if len(set(ids)) != len(ids):
    raise RuntimeError(f"ecg_synth/{cfg.name}: two pages have the same content; seeds collide.")
  return examples
