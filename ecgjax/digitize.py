"""Reads the twelve lead signals off a photographed or scanned ECG page: pixels in, millivolts out.

`digitize(page)` takes a whole page of the release's layout (`ecgjax.data.layout`) at any resolution
(the release's 2213 px, the dev set's 1280 px, synthetic pages) and returns a `Digitized`: a
(12, 5000) float32 array in mV at 500 Hz on the page's 10 s time base, NaN outside the 2.5 s each
lead is shown, plus the 10 s rhythm strip and a per-lead quality (the fraction of the lead's pixel
columns where a trace was found).

How: the layout, scaled by the page width, says roughly where everything is; the pixels refine it.
The grid's period is measured (`PageFit.grid_px_per_mm`: the strongest period near 1 mm of the
non-ink darkness summed along strips of the panel, in x and in y); where a clear grid's period
departs more than 3% from the width's scale (a padded or cropped page) the layout is scaled by the
grid instead, and without a visible grid the width's scale stands. Each row's calibration pulse
gives that row's 0 mV line (the pulse's foot) and the vertical scale (its 1 mV height); the x of the
pulses' edges and of the column separators, measured at several heights, give the horizontal offset,
scale and the page's slight rotation. The traces' own ends (t = 0 and the last sample of each row,
where both are found) then set the traces' time origin (`PageFit.trace_shift`, at most 0.3 mm from
the pulses' and separators'): a rasteriser that places a trace differently from the straight lines
(PIL truncates the renderer's trace coordinates, half a pixel on average) moves the trace's ends
with it. Ink is found by hysteresis (a dark core, grey edges) with grid-dot specks removed; each
column's ink runs are listed at once (vectorised), and a tracker walks along each lead's 2.5 s, from
past its label towards both ends, taking in every pixel column the run that touches or lies nearest
the previous one, so a neighbouring row's tall waves, labels and dots are passed by. The runs give
the centreline by morphology (`_values`): a pen of known width inks the curve's range over a few
columns, which an opening and a closing undo, so a steep QRS's apex is kept. Separator columns are
skipped and bridged by interpolation; a lead's edges take its nearest read value.

Also here: the checks of a digitization, `snr_db` and `pearson_r` against a known truth (synthetic
pages) and `einthoven_residuals` where no truth exists (III = II - I in the first column,
aVR + aVL + aVF = 0 in the second), and `python -m ecgjax.digitize PAGES... --out DIR`, which writes
a CSV per page (time_s, the 12 leads, rhythm; empty where NaN) and a PNG of the traces drawn over
the page, and with `--wfdb` a WFDB record (`write_wfdb`, through PhysioNet's `wfdb` package, the
`wfdb` extra).

Not for: pages of other layouts (6 x 2, other speeds or gains: the layout is assumed, only its
position, scale and rotation are measured), perspective-distorted photographs, or coloured traces.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Sequence

import numpy as np
from scipy import fft as scipy_fft
from scipy import ndimage

from ecgjax.data.layout import LEAD_GRID, LEADS, REAL_LAYOUT, PageLayout
from ecgjax.data.panel import read_rgb

FS = 500  # Output sampling rate (Hz).
# A pixel is ink when its grey level (mean of R, G, B) is below this: the trace core is near black
# (< 60) on real and synthetic pages, the grid dots are lighter (80-240, by resolution and print).
INK_LEVEL = 70
# A pixel joins the ink when below this and connected to a pixel below `INK_LEVEL`: the grey edges
# of a thin stroke on a resampled (1280 px) page.
EDGE_LEVEL = 120
_MIN_PAGE_SIDE = 200
# How many columns either side a pen of half-width h inks, as a fraction of h: less than 1 because
# a round or mitred pen reaches its full depth only near its centre (measured on synthetic pages).
_PEN_REACH = 0.75
# A grid period is used when its spectral peak is this strong (no grid: 2-3; grids seen: 8-45) and
# its x and y periods agree within 2%; the layout takes it only where it departs from the width's
# scale by more than `_GRID_TRUSTED`: on the real release the grid's 1 mm is 0.9% larger than the
# traces' (7.945 vs 7.872 px per mm at 2213 px), so the width, which the layout was measured on, is
# the better scale for pages of the release's size.
_GRID_STRENGTH = 5.0
_GRID_TRUSTED = 0.03


@dataclasses.dataclass(frozen=True)
class PageFit:
  """Where the layout's rows ended up on this page (page pixels)."""
  baselines: tuple[float, ...]  # y of 0 mV at each row's calibration pulse (3 lead rows, rhythm).
  pulse_x: tuple[float, ...]  # x where each row's baseline was measured (its pulse's centre).
  px_per_mv: float  # Vertical scale, from the pulses' height.
  x_shift: float  # page x = layout x + x_shift + x_scale (layout x - cx) - rotation (y - cy).
  x_scale: float
  rotation: float  # Radians; y of a row's baseline grows by rotation * dx along the row.
  centre: tuple[float, float]  # (cx, cy) of the fit, in layout pixels.
  found: tuple[bool, ...]  # Whether each row's pulse was found (else the layout's was used).
  # x of the traces (px) relative to the pulses' and separators' fit, from the rows' trace ends.
  trace_shift: float = 0.0
  # Measured period of the grid along x and y (NaN: none measured); its strength (peak over the
  # spectrum's median, < 3 without a grid); and where the layout's scale came from: "width" (the
  # page width) or "grid" (the grid's period, where it departs more than 3% from the width's).
  grid_px_per_mm: tuple[float, float] = (float("nan"), float("nan"))
  grid_strength: float = 0.0
  scale: str = "width"

  def baseline(self, row: int, x: np.ndarray) -> np.ndarray:
    """y of 0 mV of `row` at page columns `x`."""
    return self.baselines[row] + self.rotation * (np.asarray(x, np.float64) - self.pulse_x[row])

  def page_x(self, layout_x: np.ndarray, layout_y: float) -> np.ndarray:
    cx, cy = self.centre
    layout_x = np.asarray(layout_x, np.float64)
    return (layout_x + self.x_shift + self.x_scale * (layout_x - cx)
            - self.rotation * (layout_y - cy))

  def layout_x(self, page_x: np.ndarray, layout_y: float) -> np.ndarray:
    cx, cy = self.centre
    page_x = np.asarray(page_x, np.float64)
    return cx + (page_x - cx - self.x_shift + self.rotation * (layout_y - cy)) / (1 + self.x_scale)


@dataclasses.dataclass(frozen=True)
class Digitized:
  """The signals read off one page."""
  signals: np.ndarray  # (12, 5000) float32 mV in `leads` order; NaN outside each lead's window.
  rhythm: np.ndarray  # (5000,) float32 mV, the 10 s rhythm strip; `rhythm_lead()` names its lead.
  leads: tuple[str, ...]
  fs: int
  quality: np.ndarray  # (12,) fraction of each lead's pixel columns where a trace was found.
  rhythm_quality: float
  fit: PageFit
  layout: PageLayout  # The layout scaled to the page (before the measured refinements).
  source: str = "<array>"

  @property
  def time_s(self) -> np.ndarray:
    return np.arange(self.signals.shape[1]) / self.fs

  def lead(self, name: str) -> np.ndarray:
    return self.signals[self.leads.index(name)]

  def rhythm_lead(self) -> tuple[str, float]:
    """The lead the rhythm strip most likely shows, and its Pearson r over that lead's window."""
    scores = [pearson_r(s, self.rhythm) for s in self.signals]
    best = int(np.nanargmax(scores))
    return self.leads[best], float(scores[best])


def shown_mask(n: int = 5000) -> np.ndarray:
  """(12, n) bool: which samples of each lead (`LEADS` order) a 3 x 4 page shows."""
  mask = np.zeros((len(LEADS), n), bool)
  per = n // len(LEAD_GRID[0])
  for row in LEAD_GRID:
    for col, lead in enumerate(row):
      mask[LEADS.index(lead), col * per:(col + 1) * per] = True
  return mask


# ---------------------------------------------------------------------------------------------
# Pixels
# ---------------------------------------------------------------------------------------------


def _load(page: np.ndarray | str | os.PathLike) -> tuple[np.ndarray, str]:
  if isinstance(page, np.ndarray):
    if page.ndim != 3 or page.shape[-1] != 3 or page.dtype != np.uint8:
      raise ValueError(f"Expected an RGB uint8 page (H, W, 3), got {page.dtype} {page.shape}.")
    return page, "<array>"
  path = os.fspath(page)
  return read_rgb(path), path


def _ink(rgb: np.ndarray, top: int, bottom: int, min_area: int) -> tuple[np.ndarray, np.ndarray]:
  """Bool ink mask of rows [top, bottom) of the page, and those rows' R + G + B (uint16).

  Hysteresis: pixels darker than `EDGE_LEVEL` in connected components that hold a pixel darker
  than `INK_LEVEL` and at least `min_area` pixels. The core level keeps the grid's dots out, the
  edge level keeps a thin, resampled (grey-edged) steep stroke in one piece.
  """
  band = rgb[top:bottom]
  total = band[..., 0].astype(np.uint16)
  total += band[..., 1]
  total += band[..., 2]
  edge = total < 3 * EDGE_LEVEL
  labels, count = ndimage.label(edge, structure=np.ones((3, 3), bool))
  flat = labels.ravel()
  sizes = np.bincount(flat, minlength=count + 1)
  cores = np.bincount(flat, weights=(total < 3 * INK_LEVEL).ravel(), minlength=count + 1)
  # Grid dots that JPEG or a dark print pushes below the levels are specks of a few pixels; a
  # trace, a separator or a label is a component of hundreds.
  keep = (sizes >= min_area) & (cores > 0)
  keep[0] = False
  return keep[labels], total


def _period(profiles: np.ndarray, guess: float) -> tuple[float, float]:
  """The period (px) shared by the columns of `profiles` (n, k) within 15% of `guess`, and its
  peak's strength.

  The frequency in (1/1.15, 1/0.85) / guess with the most power summed over the k Hann-windowed,
  mean-removed profiles (k strips of the panel, so a slight rotation does not smear the grid), on a
  grid of a quarter of the main lobe, refined by a parabola through the log power. The band keeps
  out the 5 mm lines' 4th and 6th harmonics (1.25 and 0.83 mm). Strength: the peak's magnitude over
  the median in the band (2-4 where there is no grid, tens for a grid).
  """
  n = profiles.shape[0]
  if n < 8 * guess or not np.isfinite(guess) or guess < 2.0:
    return float("nan"), 0.0
  x = (profiles - profiles.mean(0)) * np.hanning(n)[:, None]
  size = scipy_fft.next_fast_len(4 * n)  # Zero-padded: bins a quarter of the main lobe apart.
  step = 1.0 / size
  lo, hi = int(np.ceil(1 / (1.15 * guess) / step)), int(np.floor(1 / (0.85 * guess) / step)) + 1
  freqs = np.arange(lo, hi) * step
  power = (np.abs(scipy_fft.rfft(x, size, axis=0)[lo:hi])**2).sum(1)
  i = int(np.argmax(power))
  if i == 0 or i == len(freqs) - 1:
    return float("nan"), 0.0
  a, b, c = np.log(power[i - 1:i + 2] + 1e-12)
  offset = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
  return float(1 / (freqs[i] + offset * step)), float(np.sqrt(power[i] / max(np.median(power),
                                                                               1e-12)))


def _grid(total: np.ndarray, ink: np.ndarray, top: int, layout: PageLayout
          ) -> tuple[float, float, float]:
  """The grid's period (px per mm) along x and y, measured in the panel, and the weaker strength.

  The grid is whatever is darker than the panel's paper and not ink (the trace, separators, labels
  and pulses are ink): its darkness summed down the columns of horizontal strips and along the rows
  of vertical strips (40 mm each) gives profiles whose strongest period near the layout's 1 mm is
  the minor grid's (`_period`). NaN where the panel is too small.
  """
  mm = layout.px_per_mm
  l, t, r, b = layout.panel_box
  ya, yb = max(0, int(t + 2 * mm) - top), min(total.shape[0], int(b - 2 * mm) - top)
  xa, xb = max(0, int(l + 2 * mm)), min(total.shape[1], int(r - 2 * mm))
  if yb - ya < 20 * mm or xb - xa < 20 * mm:
    return float("nan"), float("nan"), 0.0
  grey = total[ya:yb, xa:xb]
  paper = float(np.median(grey[::4, ::4]))
  dark = np.clip(paper - grey.astype(np.float32), 0, None)
  dark[ink[ya:yb, xa:xb]] = 0
  h, w = dark.shape
  strip = int(40 * mm)
  ky, kx = max(1, h // strip), max(1, w // strip)
  cols = dark[:ky * (h // ky)].reshape(ky, h // ky, w).sum(1).T  # (w, ky)
  rows = dark[:, :kx * (w // kx)].reshape(h, kx, w // kx).sum(2)  # (h, kx)
  px, sx = _period(cols, mm)
  py, sy = _period(rows, mm)
  return px, py, min(sx, sy)


def _clusters(profile: np.ndarray, level: float) -> list[tuple[float, float]]:
  """(centroid, mass) of each run of `profile` >= level, weighted by `profile`."""
  above = np.concatenate([[False], profile >= level, [False]])
  edges = np.flatnonzero(np.diff(above.astype(np.int8)))
  out = []
  for start, stop in zip(edges[::2], edges[1::2]):
    w = profile[start:stop]
    out.append((float(start + (w * np.arange(stop - start)).sum() / w.sum()), float(w.sum())))
  return out


def _fit_page(ink: np.ndarray, top: int, layout: PageLayout) -> PageFit:
  """Measures the rows' baselines, the vertical scale and the x mapping from pulses and separators.

  `ink` holds page rows [top, top + ink.shape[0]). Whatever is not found keeps the layout's value.
  """
  mm = layout.px_per_mm
  height = layout.px_per_mv
  h, w = ink.shape
  x0, x1, x2, x3 = layout.cal_x
  baselines, pulse_x, heights, found = [], [], [], []
  points = []  # (layout x, layout y, measured page x)
  for row, base in enumerate(layout.baselines):
    ya = int(max(0, base - height - 2.5 * mm - top))
    yb = int(min(h, base + 2.5 * mm - top))
    xa = int(max(0, x0 - 1.5 * mm))
    xb = int(min(w, x3 + 1.2 * mm))
    win = ink[ya:yb, xa:xb].astype(np.float32)
    cols = _clusters(win.sum(0), 0.5 * height)
    ok = False
    if len(cols) == 2:
      rise, fall = cols[0][0] + xa, cols[1][0] + xa
      lw = max(1.0, 0.25 * mm)
      plateau = win[:, max(0, int(rise + lw + 1 - xa)):max(0, int(fall - lw - xa))]
      foot = np.concatenate([win[:, :max(0, int(rise - lw - xa))],
                             win[:, int(fall + lw + 1 - xa):]], axis=1)
      if plateau.shape[1] >= 2 and foot.shape[1] >= 2:
        prof_top = plateau.sum(1)
        prof_foot = foot.sum(1)
        tops = _clusters(prof_top, 0.5 * prof_top.max()) if prof_top.max() > 0 else []
        feet = _clusters(prof_foot, 0.5 * prof_foot.max()) if prof_foot.max() > 0 else []
        if tops and feet:
          y_top = max(tops, key=lambda c: c[1])[0] + ya + top
          y_foot = max(feet, key=lambda c: c[1])[0] + ya + top
          if 0.8 * height < y_foot - y_top < 1.25 * height:
            ok = True
            baselines.append(y_foot)
            heights.append(y_foot - y_top)
            pulse_x.append((rise + fall) / 2)
            points += [(x1, base - height / 2, rise), (x2, base - height / 2, fall)]
    if not ok:
      baselines.append(np.nan)
      pulse_x.append((x1 + x2) / 2)
    found.append(ok)
  # Separators: the x of each, in its upper and lower half.
  for sx, s_top, s_bottom in layout.separators():
    half = (s_bottom - s_top) / 2
    for y_start in (s_top + 3 * mm, s_top + half):
      ya, yb = int(max(0, y_start - top)), int(min(h, y_start + half - 3 * mm - top))
      xa, xb = int(max(0, sx - 2 * mm)), int(min(w, sx + 2 * mm))
      if yb - ya < 4 * mm:
        continue
      cols = _clusters(ink[ya:yb, xa:xb].sum(0).astype(np.float32), 0.6 * (yb - ya))
      if len(cols) == 1:
        points.append((sx, (ya + yb) / 2 + top, cols[0][0] + xa))
  cx, cy = layout.page_size[0] / 2, layout.page_size[1] / 2
  x_shift = x_scale = rotation = 0.0
  if points:
    p = np.asarray(points, np.float64)
    residual = p[:, 2] - p[:, 0]
    spread_x = np.ptp(p[:, 0]) > 100 * mm
    spread_y = np.ptp(p[:, 1]) > 20 * mm
    design = [np.ones(len(p))]
    if spread_x:
      design.append(p[:, 0] - cx)
    if spread_y:
      design.append(-(p[:, 1] - cy))
    a = np.stack(design, 1)
    coef = np.linalg.lstsq(a, residual, rcond=None)[0]
    x_shift = float(coef[0])
    if spread_x:
      x_scale = float(coef[1])
    if spread_y:
      rotation = float(coef[-1])
    # A fit this far off is a misread, not a page: fall back to the layout.
    if abs(x_scale) > 0.05 or abs(rotation) > 0.03 or abs(x_shift) > 10 * mm:
      x_shift = x_scale = rotation = 0.0
  px_per_mv = float(np.median(heights)) if heights else height
  baselines = np.asarray(baselines, np.float64)
  layout_b = np.asarray(layout.baselines, np.float64)
  if np.isnan(baselines).all():
    baselines = layout_b.copy()
  else:
    # A row whose pulse was not found keeps its layout distance to the rows that were.
    known = ~np.isnan(baselines)
    shift = np.median(baselines[known] - layout_b[known])
    baselines = np.where(known, baselines, layout_b + shift)
  return PageFit(baselines=tuple(float(b) for b in baselines), pulse_x=tuple(pulse_x),
                 px_per_mv=px_per_mv, x_shift=x_shift, x_scale=x_scale, rotation=rotation,
                 centre=(cx, cy), found=tuple(found))


def _runs(ink: np.ndarray, x_start: int, x_stop: int, bridge: int):
  """Vertical ink runs of columns [x_start, x_stop): (first row, last row, column offsets).

  Runs of a column less than `bridge` pixels apart are one run: JPEG leaves pinholes in a trace.
  """
  m = ink[:, x_start:x_stop].T  # (columns, rows): np.nonzero then lists runs column by column.
  d = np.diff(m.view(np.int8), axis=1, prepend=np.int8(0), append=np.int8(0))
  col, first = np.nonzero(d == 1)
  _, stop = np.nonzero(d == -1)
  hole = np.flatnonzero((col[1:] == col[:-1]) & (first[1:] - stop[:-1] < bridge))
  if hole.size:
    stop = np.delete(stop, hole)
    first = np.delete(first, hole + 1)
    col = np.delete(col, hole + 1)
  offsets = np.concatenate([[0], np.cumsum(np.bincount(col, minlength=m.shape[0]))])
  return first, stop - 1, offsets


def _track(first: list[int], last: list[int], offsets: list[int], columns: Sequence[int],
           start: tuple[float, float], max_gap: float) -> tuple[list[float], list[float]]:
  """Follows one trace through `columns` (indices into the runs), from the interval `start`.

  In each column takes the run that touches (8-connected) or lies nearest the previous column's
  run; among touching runs the one whose centre is nearer and that shares more rows with it. None
  within `max_gap` (grown by each missed column) is a miss (NaN). Returns the chosen runs' first and
  last rows per column.
  """
  nan = float("nan")
  pa, pb = start
  tops, bottoms = [], []
  misses = 0
  for x in columns:
    best, best_key = -1, float("inf")
    for i in range(offsets[x], offsets[x + 1]):
      a, b = first[i], last[i]
      if a > pb + 1:
        key = (a - pb - 1) * 1000.0 + abs(a + b - pa - pb)
      elif b < pa - 1:
        key = (pa - b - 1) * 1000.0 + abs(a + b - pa - pb)
      else:  # Touching: the nearer centre, and the more shared rows (a speck shares few).
        key = abs(a + b - pa - pb) / 2 - (min(b, pb) - max(a, pa))
      if key < best_key:
        best, best_key = i, key
    if best >= 0 and best_key < (max_gap + 3 * misses) * 1000.0:
      pa, pb = first[best], last[best]
      tops.append(pa)
      bottoms.append(pb)
      misses = 0
    else:
      tops.append(nan)
      bottoms.append(nan)
      misses += 1
  return tops, bottoms


def _follow(first, last, offsets, a, b, x, step, stop) -> int:
  """How many columns from `x` on (by `step`, up to `stop`) hold a run touching the previous one."""
  n = 0
  while x != stop and 0 <= x < len(offsets) - 1:
    for i in range(offsets[x], offsets[x + 1]):
      if first[i] <= b + 1 and last[i] >= a - 1:
        a, b = first[i], last[i]
        break
    else:
      break
    n += 1
    x += step
  return n


def _monotone(y: np.ndarray, start: int, n: int) -> np.ndarray:
  """Whether y[start:start + n] rises or falls strictly through each point (a slope, no apex)."""
  padded = np.concatenate([[np.nan], y, [np.nan]])
  left = padded[start + 1:start + n + 1] - padded[start:start + n]
  right = padded[start + 2:start + n + 2] - padded[start + 1:start + n + 1]
  with np.errstate(invalid="ignore"):
    return left * right > 0


def _values(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
  """Page y of the trace's centreline per column, from its runs [top, bottom] (NaN: none found).

  A pen of half-width h inks, in column x, the curve's range over [x - h, x + h]: less h, a run's
  top is the curve's minimum over that window and its bottom the maximum. A moving maximum of the
  tops (a morphological opening of the curve) gives back the curve except in narrow troughs (on the
  page: downward spikes), and a moving minimum of the bottoms (a closing) except in narrow peaks.
  Where the two agree their mean is the value; where they part, the one that departs further from
  the line joining the stretch's ends is the spike, and is taken at its apex (where it does not rise
  or fall strictly); on a slope between, and where neither departs further, the mean.
  """
  valid = ~np.isnan(top)
  if valid.sum() < 2:
    return np.full(top.shape, np.nan)
  length = (bottom - top + 1)[valid]
  half = max(0.0, (float(np.median(length)) - 1) / 2)  # Flat stretches dominate: the pen's width.
  idx = np.arange(len(top))
  hi = np.interp(idx, idx[valid], (top + half)[valid])
  lo = np.interp(idx, idx[valid], (bottom - half)[valid])
  centre = (hi + lo) / 2
  hi, lo = np.minimum(hi, centre), np.maximum(lo, centre)
  size = 2 * int(round(half * _PEN_REACH)) + 1
  if size > 1:
    y_open = ndimage.maximum_filter1d(hi, size)  # hi is already the moving minimum of the curve.
    y_close = ndimage.minimum_filter1d(lo, size)
    y_open = np.maximum(np.minimum(y_open, lo), hi)
    y_close = np.minimum(np.maximum(y_close, hi), lo)
  else:
    y_open, y_close = hi, lo
  out = (y_open + y_close) / 2
  apart = np.concatenate([[False], y_close - y_open > 1.0, [False]])
  edges = np.flatnonzero(np.diff(apart.astype(np.int8)))
  for start, stop in zip(edges[::2].tolist(), edges[1::2].tolist()):
    left = out[start - 1] if start > 0 else out[start]
    right = out[stop] if stop < len(out) else out[stop - 1]
    line = left + (right - left) * (np.arange(start, stop) - start + 1) / (stop - start + 1)
    up = line - y_open[start:stop]  # How far the opening rises above the line (a peak).
    down = y_close[start:stop] - line  # How far the closing falls below it (a trough).
    seg = out[start:stop]
    lo_i, hi_i = max(start - 1, 0), min(stop + 1, len(out))
    peak = (up - down > 1.0) & ~_monotone(y_open[lo_i:hi_i], start - lo_i, stop - start)
    trough = (down - up > 1.0) & ~_monotone(y_close[lo_i:hi_i], start - lo_i, stop - start)
    seg[peak] = y_open[start:stop][peak]
    seg[trough] = y_close[start:stop][trough]
  out[~valid] = np.nan
  return out


def digitize(page: np.ndarray | str | os.PathLike, layout: PageLayout | None = None) -> Digitized:
  """Reads the 12 leads and the rhythm strip off a page (RGB uint8 array or image file path).

  Args:
    page: a whole page in the release's layout, any resolution (the layout is scaled to its width).
    layout: the page's layout at full resolution; default `REAL_LAYOUT`.

  Returns:
    A `Digitized` with signals at `FS` Hz on the page's 10 s time base.
  """
  rgb, source = _load(page)
  height, width = rgb.shape[:2]
  if min(height, width) < _MIN_PAGE_SIDE:
    raise ValueError(f"{source}: {width}x{height} px is too small for an ECG page.")
  base_layout = layout or REAL_LAYOUT
  layout = base_layout.scaled(width / base_layout.page_size[0])
  mm = layout.px_per_mm
  _, panel_top, _, panel_bottom = layout.panel_box
  top = max(0, int(panel_top - 3 * mm))
  bottom = min(height, int(panel_bottom + 3 * mm))
  ink, total = _ink(rgb, top, bottom, min_area=max(3, round((0.5 * mm)**2)))
  grid_x, grid_y, strength = _grid(total, ink, top, layout)
  grid_ok = strength >= _GRID_STRENGTH and abs(grid_x / grid_y - 1) < 0.02
  scale = "width"
  if grid_ok and abs((grid_x + grid_y) / 2 / mm - 1) > _GRID_TRUSTED:
    # The page is not at its width's scale (padded, cropped, another paper): the grid's is used.
    scale = "grid"
    layout = base_layout.scaled((grid_x + grid_y) / 2 / base_layout.px_per_mm)
    mm = layout.px_per_mm
    _, panel_top, _, panel_bottom = layout.panel_box
    top = max(0, int(panel_top - 3 * mm))
    bottom = min(height, int(panel_bottom + 3 * mm))
    ink, total = _ink(rgb, top, bottom, min_area=max(3, round((0.5 * mm)**2)))
  fit = _fit_page(ink, top, layout)
  if grid_ok and not any(fit.found):  # No pulse: 10 mm of the grid is 1 mV.
    fit = dataclasses.replace(fit, px_per_mv=float(grid_y * layout.mm_per_mv))
  fit = dataclasses.replace(fit, grid_px_per_mm=(grid_x, grid_y), grid_strength=strength,
                            scale=scale)

  n_total = int(round(layout.duration_s * FS))
  n_col = n_total // layout.columns
  spacing = float(np.median(np.diff(fit.baselines)))
  rows = [list(leads) for leads in LEAD_GRID] + [None]
  # The trace columns of every row, with a margin for shift and rotation.
  x_lo = max(0, int(fit.page_x(layout.trace_left, fit.baselines[0]) - 2 * mm))
  x_hi = min(width, int(fit.page_x(layout.column_x(layout.columns), fit.baselines[0]) + 2 * mm))
  first, last, offsets = _runs(ink, x_lo, x_hi, bridge=max(2, round(0.3 * mm)))
  first = first + top
  last = last + top
  signals = np.full((len(LEADS), n_total), np.nan, np.float32)
  quality = np.zeros(len(LEADS), np.float32)
  rhythm = np.full(n_total, np.nan, np.float32)
  rhythm_quality = 0.0
  separators = [fit.page_x(x, (y0 + y1) / 2) for x, y0, y1 in layout.separators()]
  sep_margin = 0.5 * mm + 1.0
  pieces, ends = [], {}
  pen = 0.5 * mm
  for row, leads in enumerate(rows):
    base_layout_y = layout.baselines[row]
    y_base = fit.baselines[row]
    # Keep only runs within reach of this row: up to most of the way to the neighbouring rows.
    reach = 0.95 * spacing
    sel = (last >= y_base - reach) & (first <= y_base + reach)
    idx = np.flatnonzero(sel)
    col_of = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))[idx]
    r_first = first[idx].tolist()
    r_last = last[idx].tolist()
    r_off = np.concatenate([[0], np.cumsum(np.bincount(col_of, minlength=len(offsets) - 1))]
                           ).tolist()
    segments = range(layout.columns) if leads is not None else [None]
    for col in segments:
      if col is None:
        t0, t1, n0, n1 = 0.0, layout.duration_s, 0, n_total
      else:
        t0, t1 = col * layout.column_s, (col + 1) * layout.column_s
        n0, n1 = col * n_col, (col + 1) * n_col
      px0 = fit.page_x(layout.trace_left + t0 * layout.px_per_s, base_layout_y)
      px1 = fit.page_x(layout.trace_left + t1 * layout.px_per_s, base_layout_y)
      xs = np.arange(int(np.ceil(px0)), int(np.floor(px1)) + 1)
      xs = xs[(xs >= x_lo) & (xs < x_hi)]
      keep = np.ones(len(xs), bool)
      if leads is not None:
        for sx in separators:
          keep &= np.abs(xs - sx) > sep_margin
      xs = xs[keep]
      if len(xs) < 4:
        continue
      # Start past the lead label (about 7 mm from the column's left), towards both ends.
      anchor = min(len(xs) - 1, int(np.searchsorted(xs, px0 + 8 * mm)))
      yb = float(fit.baseline(row, xs[anchor]))
      cols = (xs - x_lo).tolist()
      fwd_t, fwd_b = _track(r_first, r_last, r_off, cols[anchor:], (yb, yb), max_gap=2 * mm)
      start = (fwd_t[0], fwd_b[0]) if not np.isnan(fwd_t[0]) else (yb, yb)
      bwd_t, bwd_b = _track(r_first, r_last, r_off, cols[anchor - 1::-1] if anchor else [], start,
                            max_gap=2 * mm)
      tops = np.asarray(bwd_t[::-1] + fwd_t, np.float64)
      bottoms = np.asarray(bwd_b[::-1] + fwd_b, np.float64)
      ys = _values(tops, bottoms)
      mv = (fit.baseline(row, xs) - ys) / fit.px_per_mv
      pieces.append((row, col, leads, xs, mv, n0, n1))
      if col in (None, 0, layout.columns - 1):
        ok_cols = np.flatnonzero(~np.isnan(tops))
        if ok_cols.size:
          if col in (None, 0) and ok_cols[0] == 0:
            ends.setdefault(row, {})["left"] = xs[0] - _follow(
                r_first, r_last, r_off, tops[0], bottoms[0], xs[0] - x_lo - 1, -1, 0)
          if col in (None, layout.columns - 1) and ok_cols[-1] == len(xs) - 1:
            ends.setdefault(row, {})["right"] = xs[-1] + _follow(
                r_first, r_last, r_off, tops[-1], bottoms[-1], xs[-1] - x_lo + 1, 1, x_hi - x_lo)
  # The traces' own ends: where each row's trace begins (t = 0) and ends (the last sample).
  t_end = (n_total - 1) / FS * layout.px_per_s
  deltas = []
  for row, e in ends.items():
    if "left" in e and "right" in e:
      y = layout.baselines[row]
      want_l, want_r = fit.page_x(layout.trace_left, y), fit.page_x(layout.trace_left + t_end, y)
      if abs((e["right"] - e["left"]) - (want_r - want_l)) <= pen + 2:
        deltas.append((e["left"] + e["right"]) / 2 - (want_l + want_r) / 2)
  trace_shift = float(np.median(deltas)) if len(deltas) >= 2 else 0.0
  if abs(trace_shift) > 0.3 * mm:  # Farther than a pen's width: an end misread, not a placement.
    trace_shift = 0.0
  fit = dataclasses.replace(fit, trace_shift=trace_shift)
  for row, col, leads, xs, mv, n0, n1 in pieces:
    t = ((fit.layout_x(xs - trace_shift, layout.baselines[row]) - layout.trace_left)
         / layout.px_per_s)
    ok = ~np.isnan(mv)
    found = float(ok.mean())
    if ok.sum() >= 2:
      samples = np.interp(np.arange(n0, n1) / FS, t[ok], mv[ok]).astype(np.float32)
    else:
      samples = np.full(n1 - n0, np.nan, np.float32)
    if leads is None:
      rhythm[:] = samples
      rhythm_quality = found
    else:
      i = LEADS.index(leads[col])
      signals[i, n0:n1] = samples
      quality[i] = found
  return Digitized(signals=signals, rhythm=rhythm, leads=LEADS, fs=FS, quality=quality,
                   rhythm_quality=rhythm_quality, fit=fit, layout=layout, source=source)


# ---------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------


def _centred_pair(truth: np.ndarray, estimate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  x = np.asarray(truth, np.float64)
  y = np.asarray(estimate, np.float64)
  ok = ~(np.isnan(x) | np.isnan(y))
  x, y = x[ok], y[ok]
  return x - x.mean() if x.size else x, y - y.mean() if y.size else y


def snr_db(truth: np.ndarray, estimate: np.ndarray) -> float:
  """10 log10(sum x^2 / sum (x - y)^2) over samples where both are finite, each mean-removed."""
  x, y = _centred_pair(truth, estimate)
  if x.size < 2:
    return float("nan")
  err = float(((x - y)**2).sum())
  return float("inf") if err == 0 else float(10 * np.log10((x**2).sum() / err))


def pearson_r(truth: np.ndarray, estimate: np.ndarray) -> float:
  """Pearson correlation over samples where both are finite (NaN if either is constant)."""
  x, y = _centred_pair(truth, estimate)
  denom = float(np.sqrt((x**2).sum() * (y**2).sum()))
  return float((x * y).sum() / denom) if x.size >= 2 and denom > 0 else float("nan")


def einthoven_residuals(d: Digitized) -> tuple[float, float]:
  """Checks a digitization without truth, by the limb leads' identities on their shared windows.

  Returns (limb, augmented): sum((III - (II - I))^2) / sum(II^2) over the first column, and
  sum((aVR + aVL + aVF)^2) / sum(largest^2) over the second, where largest is whichever of the
  three has the most power; every lead mean-removed over its window. 0 is a perfect page.
  """
  def centred(name):
    v = d.lead(name).astype(np.float64)
    v = v[~np.isnan(v)]
    return v - v.mean() if v.size else v

  i, ii, iii = centred("I"), centred("II"), centred("III")
  n = min(len(i), len(ii), len(iii))
  limb = float("nan")
  if n:
    limb = float(((iii[:n] - (ii[:n] - i[:n]))**2).sum() / max((ii[:n]**2).sum(), 1e-12))
  avr, avl, avf = centred("aVR"), centred("aVL"), centred("aVF")
  n = min(len(avr), len(avl), len(avf))
  if not n:
    return limb, float("nan")
  largest = max((v[:n]**2).sum() for v in (avr, avl, avf))
  aug = float(((avr[:n] + avl[:n] + avf[:n])**2).sum() / max(largest, 1e-12))
  return limb, aug


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def write_csv(d: Digitized, path: str) -> None:
  """time_s, the 12 leads in `LEADS` order, then rhythm; NaN written as an empty field."""
  table = np.concatenate([d.time_s[None], d.signals.astype(np.float64), d.rhythm[None]], 0).T
  with open(path, "w") as f:
    f.write(",".join(["time_s", *d.leads, "rhythm"]) + "\n")
    for row in table:
      f.write(",".join("" if np.isnan(v) else f"{v:.4f}" for v in row) + "\n")


WFDB_EXTRA = "pip install 'ecgjax[wfdb]'"


def write_wfdb(d: Digitized, out_dir: str, name: str) -> str:
  """Writes `d` as a WFDB record (PhysioNet's `wfdb` package): `<record>.hea` and `<record>.dat`.

  Thirteen signals at `d.fs`: the 12 leads in `LEADS` order and the rhythm strip ("rhythm"), in mV,
  format 16 at 1000 units per mV (1 uV steps, +-32 mV); NaN (outside a lead's window, unread) is
  WFDB's invalid sample, so `wfdb.rdrecord(...).p_signal` gives it back as NaN. `record` is `name`
  with every character WFDB does not allow in a record name replaced by '_' (MI(1) -> MI_1_).
  Returns the record's path without extension. Needs the `wfdb` extra.
  """
  try:
    import wfdb  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"Writing WFDB records needs the wfdb package: {WFDB_EXTRA}.") from e
  record = re.sub(r"[^A-Za-z0-9_]", "_", name) or "record"
  signal = np.concatenate([d.signals, d.rhythm[None]], 0).T.astype(np.float64)
  signal = np.clip(signal, -32.0, 32.0)  # NaN stays NaN.
  channels = signal.shape[1]
  wfdb.wrsamp(record, fs=d.fs, units=["mV"] * channels, sig_name=[*d.leads, "rhythm"],
              p_signal=signal, fmt=["16"] * channels, adc_gain=[1000.0] * channels,
              baseline=[0] * channels, write_dir=out_dir,
              comments=[f"digitized by ecgjax from {os.path.basename(d.source) or name}"])
  return os.path.join(out_dir, record)


def plot_overlay(d: Digitized, page: np.ndarray, path: str) -> None:
  """A PNG of the digitized traces (red) drawn over the page, for a person to check."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  layout, fit = d.layout, d.fit
  h, w = page.shape[:2]
  fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
  ax = fig.add_axes((0, 0, 1, 1))
  ax.imshow(page)
  ax.set_axis_off()
  t = d.time_s
  layout_x = layout.trace_left + t * layout.px_per_s
  rows = [list(leads) for leads in LEAD_GRID]
  for row, leads in enumerate(rows):
    x = fit.page_x(layout_x, layout.baselines[row]) + fit.trace_shift
    for lead in leads:
      y = fit.baseline(row, x) - d.lead(lead) * fit.px_per_mv
      ax.plot(x, y, color="red", linewidth=0.6, alpha=0.8)
  x = fit.page_x(layout_x, layout.baselines[-1]) + fit.trace_shift
  ax.plot(x, fit.baseline(len(rows), x) - d.rhythm * fit.px_per_mv, color="red", linewidth=0.6,
          alpha=0.8)
  ax.text(10, 20, f"{os.path.basename(d.source)}: quality min {d.quality.min():.2f}, "
          f"Einthoven residuals {einthoven_residuals(d)[0]:.3f} / {einthoven_residuals(d)[1]:.3f}",
          color="blue", fontsize=10, va="top")
  fig.savefig(path)
  plt.close(fig)


def _define_flags() -> None:
  """`python -m ecgjax.digitize PAGES... --out DIR`: a CSV and an overlay PNG per page. Defined only
  when run as a command, so importing this module defines no global flags."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "Output directory (created).", required=True)
  flags.DEFINE_bool("plot", True, "Also write <name>.png, the traces over the page.")
  flags.DEFINE_bool("wfdb", False, "Also write a WFDB record per page (<name>.hea and .dat, "
                    f"non-alphanumeric characters as '_'); needs the wfdb extra ({WFDB_EXTRA}).")


def main(argv: Sequence[str]) -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) < 2:
    raise app.UsageError("Name at least one page image.")
  f = flags.FLAGS
  if f.wfdb:
    try:
      import wfdb  # pylint: disable=g-import-not-at-top,unused-import
    except ImportError:
      sys.exit(f"--wfdb needs the wfdb package: {WFDB_EXTRA}.")
  os.makedirs(f.out, exist_ok=True)
  failed = []
  for path in argv[1:]:
    try:  # A bad file is named on one line and skipped; the other pages are still read.
      rgb, _ = _load(path)
      d = digitize(rgb)
    except (OSError, ValueError) as e:
      failed.append(path)
      # ValueErrors name the file already; an OSError's strerror does not.
      message = f"{path}: {e.strerror}" if isinstance(e, OSError) and e.strerror else str(e)
      print(f"error: {message}", file=sys.stderr)
      continue
    d = dataclasses.replace(d, source=path)
    stem = os.path.join(f.out, os.path.splitext(os.path.basename(path))[0])
    write_csv(d, stem + ".csv")
    if f.wfdb:
      write_wfdb(d, f.out, os.path.basename(stem))
    if f.plot:
      plot_overlay(d, rgb, stem + ".png")
    limb, aug = einthoven_residuals(d)
    print(f"{path}: quality {d.quality.min():.2f}-{d.quality.max():.2f}, Einthoven {limb:.3f} "
          f"{aug:.3f} -> {stem}.csv", file=sys.stderr)
  if failed:
    sys.exit(f"{len(failed)} of {len(argv) - 1} pages could not be read: {', '.join(failed)}.")


def run() -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
