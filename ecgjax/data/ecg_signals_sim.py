"""TFDS builder `ecg_signals_sim`: simulated recordings without pages, to pre-train the 1-D models.

An example is only a recipe: its class and a seed (``source_path`` = "sim:<class>:<seed>",
``image_id`` its hash); the run simulates the record when it loads the data
(`ecgjax.data.digitized`, with `config.data.input='signals'`), masked to what a page would show.
Nothing is rendered, so a set of any size builds in a second and loads at about 30 ms a record, where
`ecg_synth` renders every page. Splits (fold0..fold4) and fold assignment are those of
`ecgjax.data.features`, so a config switches between this and `ecg_images` by name, e.g. to
pre-train and then fine-tune with `config.init_from`.

Not for the image models: there is no image (`config.data.input='image'` is refused).
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from ecgjax.classes import CLASS_NAMES
from ecgjax.data import features as features_lib
from ecgjax.data import synth


@dataclasses.dataclass(kw_only=True)
class EcgSignalsSimConfig(tfds.core.BuilderConfig):
  """A size of the simulated set."""
  per_class: int = 500  # Records per class.
  seed: int = 0  # Base seed (combined with the config name, class and index).


class EcgSignalsSim(tfds.core.GeneratorBasedBuilder):
  """Simulated 12-lead recordings of the four classes (class and seed only)."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      EcgSignalsSimConfig(name="tiny", description="5 records per class, for unit tests.",
                          per_class=5),
      EcgSignalsSimConfig(name="small", description="250 records per class.", per_class=250),
      EcgSignalsSimConfig(name="large", description="1000 records per class, for pre-training.",
                          per_class=1000),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "large"

  def __init__(self, *, file_format=None, **kwargs):
    super().__init__(file_format=file_format or "array_record", **kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "label": tfds.features.ClassLabel(names=CLASS_NAMES),
            "image_id": tfds.features.Text(),  # Unique per record: the fold assignment's key.
            "source_path": tfds.features.Text(),  # "sim:<class>:<seed>".
        }),
        homepage="https://github.com/ecgjax/ecgjax",
        description="Class and seed of simulated 12-lead recordings (`ecgjax.data.synth`); the "
                    "signals are simulated when loaded.")

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    splits = features_lib.split_by_fold(build_examples(self.builder_config))
    return {split: self._generate_examples(examples) for split, examples in splits.items()}

  def _generate_examples(self, examples):
    for example in examples:
      yield example["image_id"], example


def build_examples(cfg: EcgSignalsSimConfig) -> list[dict]:
  """Every example of `cfg`, in a fixed order."""
  examples = []
  for label in CLASS_NAMES:
    for i in range(cfg.per_class):
      seed = synth.page_seed(f"signals:{cfg.name}:{cfg.seed}", label, i)
      source = f"sim:{label}:{seed}"
      examples.append({"label": label, "image_id": features_lib.content_id(source.encode()),
                       "source_path": source})
  if len({e["image_id"] for e in examples}) != len(examples):
    raise RuntimeError(f"ecg_signals_sim/{cfg.name}: two records have the same seed.")
  return examples
