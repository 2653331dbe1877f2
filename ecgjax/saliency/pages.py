"""Pages to explain: a model input with its panel box, label and source, as the pipeline makes it.

`prepare_page` runs the deterministic preprocessing (`pipeline.Preprocess`) on a decoded panel and
records where the panel lies in the result (`leads.content_box`); `page_from_example` and
`page_from_file` decode a data set example or a file on disk first.

Not here: attributions, figures, or the model.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from ecgjax.data import pipeline
from ecgjax.saliency.leads import content_box


@dataclasses.dataclass
class Page:
  """A model input with what is needed to explain it."""
  name: str  # Used for file names.
  image: np.ndarray  # uint8 (H, W, C) at the model's input size.
  box: tuple[int, int, int, int]  # content_box of the panel in `image`.
  label: int | None = None  # The true class, if known.
  source: str = ""


def prepare_page(rgb: np.ndarray, data_config: ml_collections.ConfigDict, name: str,
                 label: int | None = None, source: str = "") -> Page:
  """A decoded panel (uint8 H, W, 3) -> the model input, with the same ops as `pipeline.Preprocess`."""
  image = pipeline.Preprocess(data_config).process(rgb)
  box = content_box(rgb.shape[:2], tuple(data_config.image_size), data_config.resize_mode)
  return Page(name=name, image=image, box=box, label=label, source=source)


def page_from_example(example: Mapping[str, Any], data_config: ml_collections.ConfigDict,
                      name: str) -> Page:
  """A `pipeline.Source` example (an encoded panel crop) -> Page."""
  source = example.get("source_path", b"")
  source = source.decode() if isinstance(source, bytes) else str(source)
  rgb = pipeline.Preprocess(data_config).decode(example)
  return prepare_page(rgb, data_config, name, int(example["label"]), source)


def page_from_file(path: str, data_config: ml_collections.ConfigDict, crop_panel: bool = True,
                   label: int | None = None,
                   dataset_config: ml_collections.ConfigDict | None = None) -> Page:
  """A page on disk (a scan of the whole page, or with crop_panel=False a panel crop) -> Page.

  `dataset_config`: the run's `config.dataset`; the panel is then stored as its data set stores
  pages first (`pipeline.as_stored`), as prediction does.
  """
  rgb, _ = pipeline.read_page(path, crop=crop_panel)
  if dataset_config is not None:
    rgb = pipeline.as_stored(rgb, dataset_config, data_config)
  name = os.path.splitext(os.path.basename(path))[0]
  return prepare_page(rgb, data_config, name, label, path)
