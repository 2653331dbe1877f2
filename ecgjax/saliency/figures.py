"""Figures of one explained page: the heat map over the page, and bar charts of the per-lead numbers.

matplotlib and scipy are imported when a figure is drawn, not when this module is.

Not here: the attributions (`attribution`), the per-lead numbers (`leads`), or the JSON and file
names (`explain`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ecgjax.data import layout as layout_lib
from ecgjax.saliency.leads import lead_pixel_boxes

if TYPE_CHECKING:
  from ecgjax.saliency.pages import Page


def plot_overlay(page: Page, heat: np.ndarray, title: str, path: str,
                 lead_boxes: Mapping[str, tuple[float, float, float, float]]) -> None:
  """The page with the heat map over it and the lead boxes outlined."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import patches  # pylint: disable=g-import-not-at-top
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from scipy import ndimage  # pylint: disable=g-import-not-at-top

  h, w = heat.shape
  # Gradients sit on one-pixel traces; a little blur makes the map readable (display only).
  shown = ndimage.gaussian_filter(heat, sigma=max(1.0, w / 200))
  top = np.percentile(shown, 99.5)
  shown = np.clip(shown / top, 0, 1) if top > 0 else shown
  fig, ax = plt.subplots(figsize=(10, 10 * h / w + 0.6), dpi=100)
  image = page.image[..., 0] if page.image.shape[-1] == 1 else page.image
  ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
  ax.imshow(shown, cmap="inferno", alpha=0.55 * shown ** 0.5, vmin=0, vmax=1)
  for name, (r0, r1, c0, c1) in lead_pixel_boxes(page.box, lead_boxes).items():
    ax.add_patch(patches.Rectangle((c0 - 0.5, r0 - 0.5), c1 - c0, r1 - r0, fill=False, lw=0.6,
                                   edgecolor="tab:cyan"))
    ax.text(c0 + 1, r0 + 1, name, color="tab:cyan", fontsize=8, va="top")
  ax.set_title(title, fontsize=10)
  ax.axis("off")
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def plot_leads(leads: Mapping[str, Any], title: str, path: str,
               contrast: Mapping[str, Any] | None = None,
               density_label: str = "attribution density\n(1 = page average)") -> None:
  """Bar charts per lead, in report order: attribution density (1 = the image's average), then,
  where `leads` has it, attribution per unit of the lead's own ink (1 = the median lead), then,
  given `contrast` (`explain_pages`' record), each lead's signed contribution in logits to the
  predicted class against the runner-up. `density_label`: the first chart's axis label (a signal
  model's density is relative to the shown signal, `signals.per_lead_signals`)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  names = [*layout_lib.LEADS, layout_lib.RHYTHM]
  names += [n for n in leads["density"] if n not in names]
  panels = [("density", leads["density"], leads["ranking"][:3], density_label, 1.0)]
  if "ink_relative" in leads:
    panels.append(("per ink", leads["ink_relative"], leads["ink_ranking"][:3],
                   "attribution per unit ink\n(1 = median lead)", 1.0))
  if contrast is not None:
    values = contrast["lead_contribution"]
    top = sorted(values, key=values.get, reverse=True)[:3]
    panels.append(("contrast", values, top, f"logits toward the prediction\nover "
                   f"{contrast['versus']}", 0.0))
  fig, axes = plt.subplots(len(panels), 1, figsize=(8, 1.0 + 2.8 * len(panels)), dpi=100,
                           squeeze=False)
  for ax, (_, values, top, label, reference) in zip(axes[:, 0], panels):
    heights = [values.get(n, 0.0) for n in names]
    ax.bar(range(len(heights)), heights, color=["tab:red" if n in top else "tab:blue" for n in names])
    ax.axhline(reference, color="gray", ls="--", lw=0.8)
    ax.set_xticks(range(len(heights)), names, rotation=45)
    ax.set_ylabel(label, fontsize=8)
  axes[0, 0].set_title(f"{title}\nleads that drove the prediction: {', '.join(leads['ranking'][:3])}"
                       + (f"; per ink: {', '.join(leads['ink_ranking'][:3])}"
                          if "ink_ranking" in leads else ""), fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
