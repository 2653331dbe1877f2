"""From pixels to ECG leads: where the panel lies in the model input, and each lead's attribution.

`content_box` is where a decoded panel lands after the pipeline's resize; `lead_pixel_boxes` turns
the page layout's fractional lead boxes (`ecgjax.data.layout.lead_boxes`) into pixel slices of it;
`per_lead` sums one attribution map per lead box (share, density, signed sum, ranking).

Plain numpy, one map at a time. Not here: computing attributions (`attribution`), drawing them
(`figures`), or the layout itself (`ecgjax.data.layout`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ecgjax.data import layout as layout_lib
from ecgjax.data import transforms


def heat_map(attributions: np.ndarray) -> np.ndarray:
  """(..., H, W, C) attributions -> (..., H, W) non-negative mass: |a| summed over channels."""
  return np.abs(np.asarray(attributions, np.float64)).sum(axis=-1)


def content_box(source_hw: tuple[int, int], target_hw: tuple[int, int],
                resize_mode: str = "pad") -> tuple[int, int, int, int]:
  """Where the source image lands in the model input: (top, left, height, width) in pixels."""
  return transforms.fit_box(source_hw, target_hw, resize_mode)


def lead_pixel_boxes(box: tuple[int, int, int, int],
                     lead_boxes: Mapping[str, tuple[float, float, float, float]]
                     ) -> dict[str, tuple[int, int, int, int]]:
  """Fractional (left, top, right, bottom) panel boxes -> pixel (row0, row1, col0, col1) slices.

  A pixel belongs to a box when its centre does, so boxes that share an edge share no pixel.
  """
  top, left, height, width = box
  edge = lambda offset, size, f: int(np.ceil(offset + f * size - 0.5))
  return {name: (edge(top, height, t), edge(top, height, b), edge(left, width, l),
                 edge(left, width, r))
          for name, (l, t, r, b) in lead_boxes.items()}


def lead_sums(values: np.ndarray, box: tuple[int, int, int, int],
              lead_boxes: Mapping[str, tuple[float, float, float, float]]) -> dict[str, float]:
  """The sum of an (H, W) map over each lead's box (boxes as fractions of the panel at `box`)."""
  return {name: float(values[r0:r1, c0:c1].sum())
          for name, (r0, r1, c0, c1) in lead_pixel_boxes(box, lead_boxes).items()}


def per_lead(attributions: np.ndarray, box: tuple[int, int, int, int],
             lead_boxes: Mapping[str, tuple[float, float, float, float]] | None = None
             ) -> dict[str, Any]:
  """Which leads drove one prediction: attribution per lead box of one (H, W, C) map.

  Returns:
    `share`: each lead's fraction of the image's absolute attribution mass (with `other`, the rest:
    calibration pulses, labels, margins and padding, they sum to 1). `density`: share divided by
    the box's fraction of the image area, so 1 is the image's average and the rhythm strip (four
    times a lead's area) is not favoured for its size. `signed`: each lead's sum of signed
    attributions (for Integrated Gradients, its part of logit(x) - logit(baseline)). `ranking`:
    the leads by density, largest first.
  """
  lead_boxes = layout_lib.lead_boxes() if lead_boxes is None else lead_boxes
  mass = heat_map(attributions)
  total = float(mass.sum())
  share = {k: (v / total if total > 0 else 0.0) for k, v in lead_sums(mass, box, lead_boxes).items()}
  area = lead_sums(np.full(mass.shape, 1.0 / mass.size), box, lead_boxes)
  density = {k: (share[k] / area[k] if area[k] > 0 else 0.0) for k in share}
  signed = lead_sums(np.asarray(attributions, np.float64).sum(-1), box, lead_boxes)
  return {"share": share, "other": max(0.0, 1.0 - sum(share.values())), "density": density,
          "signed": signed, "ranking": sorted(density, key=density.get, reverse=True)}
