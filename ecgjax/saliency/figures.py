"""Figures of one explained page: the heat map over the page, and a bar chart of lead densities.

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


def plot_leads(leads: Mapping[str, Any], title: str, path: str) -> None:
  """A bar chart of each lead's attribution density (1 = the image's average), in report order."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  names = [*layout_lib.LEADS, layout_lib.RHYTHM]
  names += [n for n in leads["density"] if n not in names]
  values = [leads["density"].get(n, 0.0) for n in names]
  top = set(leads["ranking"][:3])
  fig, ax = plt.subplots(figsize=(8, 3.8), dpi=100)
  ax.bar(range(len(values)), values,
         color=["tab:red" if n in top else "tab:blue" for n in names])
  ax.axhline(1.0, color="gray", ls="--", lw=0.8)
  ax.set_xticks(range(len(values)), names, rotation=45)
  ax.set_ylabel("attribution density\n(1 = page average)")
  ax.set_title(f"{title}\nleads that drove the prediction: {', '.join(leads['ranking'][:3])}",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
