"""From pixels to ECG leads: where the panel lies in the model input, and each lead's attribution.

`content_box` is where a decoded panel lands after the pipeline's resize; `lead_pixel_boxes` turns
the page layout's fractional lead boxes (`ecgjax.data.layout.lead_boxes`) into pixel slices of it;
`per_lead` sums one attribution map per lead box (share, density, signed sum, ranking) and, given
the page's `ink`, relates each lead's attribution to its own amount of trace.

Plain numpy, one map at a time. Not here: computing attributions (`attribution`), drawing them
(`figures`), or the layout itself (`ecgjax.data.layout`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ecgjax.data import layout as layout_lib
from ecgjax.data import transforms


def heat_map(attributions: np.ndarray) -> np.ndarray:
  """(..., H, W, C) attributions -> (..., H, W) non-negative mass: |a| summed over channels."""
  return np.abs(np.asarray(attributions, np.float64)).sum(axis=-1)


def ink(image: np.ndarray, value_range: Sequence[float] = (-1.0, 1.0)) -> np.ndarray:
  """(..., H, W) darkness of (..., H, W, C) images: 0 on paper white (the top of `value_range`),
  1 on black (its bottom), averaged over channels. uint8 images use (0, 255)."""
  image = np.asarray(image)
  lo, hi = (0.0, 255.0) if image.dtype == np.uint8 else (float(value_range[0]), float(value_range[1]))
  return np.clip((hi - image.astype(np.float64)) / (hi - lo), 0.0, 1.0).mean(axis=-1)


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
             lead_boxes: Mapping[str, tuple[float, float, float, float]] | None = None,
             page_ink: np.ndarray | None = None) -> dict[str, Any]:
  """Which leads drove one prediction: attribution per lead box of one (H, W, C) map.

  Args:
    attributions: (H, W, C) map of one page.
    box: where the panel lies in the map (`content_box`).
    lead_boxes: fractional lead boxes of the panel; default `layout.lead_boxes()`.
    page_ink: optional (H, W) ink of the page (`ink`), for `ink_relative`.

  Returns:
    `share`: each lead's fraction of the image's absolute attribution mass (with `other`, the rest:
    calibration pulses, labels, margins and padding, they sum to 1). `density`: share divided by
    the box's fraction of the image area, so 1 is the image's average and the rhythm strip (four
    times a lead's area) is not favoured for its size. `signed`: each lead's sum of signed
    attributions (for Integrated Gradients, its part of logit(x) - logit(baseline)). `ranking`:
    the leads by density, largest first. With `page_ink`: `ink_relative`, each lead's attribution
    per unit of its own ink divided by the median of the twelve leads' (1 = a typical lead: a lead
    with tall complexes or thick trace does not stand out for its ink alone, because gradients
    follow the trace everywhere), and `ink_ranking`, the leads by it.
  """
  lead_boxes = layout_lib.lead_boxes() if lead_boxes is None else lead_boxes
  mass = heat_map(attributions)
  total = float(mass.sum())
  sums = lead_sums(mass, box, lead_boxes)
  share = {k: (v / total if total > 0 else 0.0) for k, v in sums.items()}
  area = lead_sums(np.full(mass.shape, 1.0 / mass.size), box, lead_boxes)
  density = {k: (share[k] / area[k] if area[k] > 0 else 0.0) for k in share}
  signed = lead_sums(np.asarray(attributions, np.float64).sum(-1), box, lead_boxes)
  result = {"share": share, "other": max(0.0, 1.0 - sum(share.values())), "density": density,
            "signed": signed, "ranking": sorted(density, key=density.get, reverse=True)}
  if page_ink is not None:
    ink_sums = lead_sums(np.asarray(page_ink, np.float64), box, lead_boxes)
    per_ink = {k: (sums[k] / ink_sums[k] if ink_sums[k] > 0 else 0.0) for k in sums}
    typical = float(np.median([per_ink[k] for k in layout_lib.LEADS if k in per_ink]))
    relative = {k: (v / typical if typical > 0 else 0.0) for k, v in per_ink.items()}
    result["ink_relative"] = relative
    result["ink_ranking"] = sorted(relative, key=relative.get, reverse=True)
  return result
