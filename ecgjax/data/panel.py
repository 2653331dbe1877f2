"""Finds the ECG grid panel on a page from its pixels, so the page's margins and header can be cropped.

The release's pages are pink with a white grid panel at fixed coordinates, but other copies are
re-scanned, photographed or printed on white paper with a pink grid, so nothing here is hard-coded:
the panel is the largest region whose colour differs from the paper seen at the image border. Thin
things (header text, rules, the logo's strokes) are removed by a morphological opening, and the
largest remaining region is taken, found on a reduced copy and its edges then placed at full
resolution. A slightly rotated panel gives its axis-aligned bounding box.

Not for: deskewing or perspective correction (a photographed page is cropped, not rectified), nor
for finding the leads inside the panel.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image
from scipy import ndimage

# The detector works on a copy reduced to about this many pixels on the short side: enough to place
# an edge within a few full-resolution pixels, small enough to take a few milliseconds.
_WORK_SIZE = 400
# A panel smaller than this fraction of the page is not what we are looking for (a logo, a stamp).
_MIN_AREA_FRACTION = 0.15
# Paper and panel must differ by at least this much (RGB distance, 0..441) to be told apart.
_MIN_CONTRAST = 8.0


@dataclasses.dataclass(frozen=True)
class Box:
  """A pixel rectangle: rows [top, bottom) and columns [left, right)."""
  top: int
  left: int
  bottom: int
  right: int

  @property
  def height(self) -> int:
    return self.bottom - self.top

  @property
  def width(self) -> int:
    return self.right - self.left


def _as_rgb(image: np.ndarray) -> np.ndarray:
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 3) or image.dtype != np.uint8:
    raise ValueError(f"Expected a uint8 HxWx1 or HxWx3 image, got {image.dtype} {image.shape}.")
  return np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image


def _odd(size: int) -> int:
  return max(3, size | 1)


def _otsu_class_means(values: np.ndarray) -> tuple[float, float]:
  """The means of the two classes of Otsu's split of `values` (a 256-bin histogram)."""
  hist, edges = np.histogram(values, bins=256)
  centres = (edges[:-1] + edges[1:]) / 2
  weight0 = np.cumsum(hist)
  weight1 = weight0[-1] - weight0
  sum0 = np.cumsum(hist * centres)
  with np.errstate(divide="ignore", invalid="ignore"):
    mean0 = sum0 / weight0
    mean1 = (sum0[-1] - sum0) / weight1
    between = weight0 * weight1 * (mean0 - mean1)**2
  split = int(np.nanargmax(between[:-1]))
  return float(mean0[split]), float(mean1[split])


def read_rgb(path) -> np.ndarray:
  """An image file as uint8 RGB (H, W, 3): JPEG or PNG, gray or RGBA too. A missing file raises
  FileNotFoundError; a file that is not an image, ValueError naming it."""
  path = str(path)
  try:
    with Image.open(path) as pil:
      return np.asarray(pil.convert("RGB"))
  except FileNotFoundError:
    raise
  except Exception as e:  # PIL raises many types for bad data.
    raise ValueError(f"{path}: not a readable image ({e}).") from e


def border_colour(image: np.ndarray, width: int = 2) -> np.ndarray:
  """The median colour of the outer `width` pixels: the paper, on a scan or a cropped photograph."""
  ring = np.concatenate([
      image[:width].reshape(-1, image.shape[-1]), image[-width:].reshape(-1, image.shape[-1]),
      image[:, :width].reshape(-1, image.shape[-1]), image[:, -width:].reshape(-1, image.shape[-1])
  ])
  return np.median(ring, axis=0)


def find_panel(image: np.ndarray, source: str = "<array>") -> Box:
  """The bounding box of the grid panel of a page, in `image`'s pixel coordinates.

  Args:
    image: the page, uint8 HxWx3 (or HxWx1/HxW grey).
    source: names the page in error messages (for example its path).

  Raises:
    ValueError: naming `source`, when no region large enough stands out from the paper.
  """
  rgb = _as_rgb(image)
  height, width = rgb.shape[:2]
  factor = max(1, min(height, width) // _WORK_SIZE)
  small = np.asarray(Image.fromarray(rgb).reduce(factor), dtype=np.float32)
  h, w = small.shape[:2]
  paper = border_colour(small, width=max(2, min(h, w) // 100))
  distance = np.linalg.norm(small - paper, axis=-1)
  # Averaging over a window wider than the grid's 5 mm period (1/30 of a page's short side is
  # about 7 mm) turns a printed grid of fine and bold lines into a uniform tint, so a pink grid on
  # white paper separates as well as a white panel on pink paper.
  smooth = ndimage.uniform_filter(distance, size=_odd(min(h, w) // 30))
  # Clipping at the level of the top _MIN_AREA_FRACTION of the page gives a dark header or trace
  # the panel's level, so Otsu splits paper from panel rather than panel from ink.
  clipped = np.minimum(smooth, np.percentile(smooth, 100 * (1 - _MIN_AREA_FRACTION)))
  if np.ptp(clipped) < _MIN_CONTRAST:
    paper_mean = panel_mean = float(clipped.mean())
  else:
    paper_mean, panel_mean = _otsu_class_means(clipped)
  if panel_mean - paper_mean < _MIN_CONTRAST:
    raise ValueError(
        f"{source}: no ECG grid panel found: nothing on the page differs from the paper colour "
        f"{paper.round().astype(int).tolist()} (contrast {panel_mean - paper_mean:.1f} < "
        f"{_MIN_CONTRAST}). Is this a page of the release?")
  # The midpoint between the two classes crosses a blurred step edge where the edge really is.
  mask = ndimage.binary_fill_holes(smooth > (paper_mean + panel_mean) / 2)
  # An opening (min then max filter, both separable) removes text lines and rules of the header.
  # Odd sizes keep the filters centred, so edges do not drift.
  k = _odd(min(h, w) // 25)
  mask = ndimage.maximum_filter(ndimage.minimum_filter(mask, size=k), size=k)
  labels, count = ndimage.label(mask)
  if count == 0:
    raise ValueError(f"{source}: no ECG grid panel found: no region survives an opening of {k} "
                     f"pixels at 1/{factor} scale.")
  areas = np.bincount(labels.ravel())[1:]
  best = int(np.argmax(areas))
  if areas[best] < _MIN_AREA_FRACTION * h * w:
    raise ValueError(
        f"{source}: no ECG grid panel found: the largest region differing from the paper covers "
        f"{areas[best] / (h * w):.0%} of the page (need {_MIN_AREA_FRACTION:.0%}).")
  rows, cols = ndimage.find_objects(labels)[best]
  coarse = Box(top=rows.start * factor, left=cols.start * factor,
               bottom=min(height, rows.stop * factor), right=min(width, cols.stop * factor))
  return _refine(rgb, paper, coarse, reach=_odd(min(h, w) // 30) * factor)


def _refine(rgb: np.ndarray, paper: np.ndarray, box: Box, reach: int) -> Box:
  """Moves each edge of `box` to where the panel starts at full resolution, within `reach` px.

  Along each edge the image is cut into eight blocks; a row (column) belongs to the panel when
  any block's mean distance from the paper is at least a quarter of the panel's just inside. Any
  block, not all: the corner of a slightly rotated panel must stay inside the box.
  """
  top, bottom = _refine_edges(rgb, paper, box.top, box.bottom, box.left, box.right, reach)
  left, right = _refine_edges(rgb.transpose(1, 0, 2), paper, box.left, box.right, box.top,
                              box.bottom, reach)
  return Box(top=top, left=left, bottom=bottom, right=right)


def _refine_edges(rgb: np.ndarray, paper: np.ndarray, start: int, stop: int, across_start: int,
                  across_stop: int, reach: int) -> tuple[int, int]:
  """Refined [start, stop) of the panel along axis 0 of `rgb`."""
  n = rgb.shape[0]
  if stop - start < 4 * reach:
    return start, stop

  def profile(lo: int, hi: int) -> np.ndarray:
    strip = rgb[lo:hi, across_start:across_stop].astype(np.float32)
    distance = np.linalg.norm(strip - paper, axis=-1)
    blocks = np.array_split(distance, 8, axis=1)
    return np.stack([b.mean(axis=1) for b in blocks], axis=1)  # (rows, 8)

  lo = max(0, start - reach)
  near = profile(lo, start + reach)
  inside = profile(start + reach, start + 3 * reach).mean(axis=0)
  if inside.max() < _MIN_CONTRAST:
    return start, stop
  # Walk out from inside the panel to the first row that is paper: a header or a logo beyond a gap
  # of paper is not the panel.
  # Only rows near the coarse edge are searched: deeper in, a gap between a printed grid's lines
  # is still the panel.
  margin = reach // 4
  misses = np.flatnonzero(~(near[:start + margin - lo] >= inside / 4).any(axis=1))
  new_start = lo + int(misses[-1]) + 1 if misses.size else lo
  hi = min(n, stop + reach)
  near = profile(stop - reach, hi)
  inside = profile(stop - 3 * reach, stop - reach).mean(axis=0)
  if inside.max() < _MIN_CONTRAST:
    return start, stop
  skip = reach - margin
  misses = np.flatnonzero(~(near[skip:] >= inside / 4).any(axis=1))
  new_stop = stop - reach + skip + int(misses[0]) if misses.size else hi
  return new_start, new_stop


def crop_panel(image: np.ndarray, source: str = "<array>") -> np.ndarray:
  """`image` cropped to its grid panel (see `find_panel`)."""
  box = find_panel(image, source)
  return image[box.top:box.bottom, box.left:box.right]
