"""Saliency of the 1-D signal models (`config.data.input='signals'`), drawn back onto the page.

A signal model reads `ecgjax.data.digitized.page_view` of a page: (T, 13) in mV, channel k < 12 lead
`layout.LEADS[k]` during the 2.5 s the page shows it (0 elsewhere), channel 12 the rhythm strip. The
gradient methods of `attribution` take that input as they take images; here:

- `SignalPage`, `signal_page_from_file`: a page file digitized (`ecgjax.digitize`), its model input,
  and the `Digitized` read-out whose `PageFit` says where every sample lies on the page.
- `per_lead_signals`: each lead's share of |attribution| over its shown window, the rhythm strip as
  its own entry, in the shape of `leads.per_lead` so `figures.plot_leads` draws it.
- `trace_segments`: each channel's digitized trace in page pixels (the lead's 2.5 s in its row and
  column, the strip in the bottom row) with the attribution of every point.
- `plot_signal_overlay`: the page with those traces coloured and thickened by |attribution|.
- `explain_signal_pages`: attributions, per-lead numbers, the figures and one JSON, as
  `explain.explain_pages` does for image runs (`python -m ecgjax.saliency` picks it for signal runs).

Integrated Gradients starts from the zero input: every lead flat at its median (`page_view` centres
each lead on it), so a lead's attributions add up to what its waveform, rather than a flat line, adds
to the logit. Grad-CAM is not offered: it needs 2-D feature maps.

Not here: the attribution maths (`attribution`), the digitizer, the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ecgjax import digitize as digitize_lib
from ecgjax.classes import CLASS_NAMES
from ecgjax.data import digitized as digitized_lib
from ecgjax.data.layout import LEAD_GRID, LEADS, RHYTHM
from ecgjax.data.panel import read_rgb
from ecgjax.saliency.attribution import LogitFn
from ecgjax.saliency.explain import safe_name, attribute_pages
from ecgjax.saliency.figures import plot_leads

# The attribution methods that apply to signals (Grad-CAM needs (B, h, w, c) feature maps).
SIGNAL_METHODS: tuple[str, ...] = ("gradient", "smoothgrad", "integrated_gradients")
CHANNELS: tuple[str, ...] = (*LEADS, RHYTHM)  # The model input's channels, in order.
BASELINE = 0.0  # Integrated Gradients' reference: each lead flat at its median.


@dataclasses.dataclass
class SignalPage:
  """A page as a signal model reads it, with what is needed to draw its explanation."""
  name: str  # Used for file names.
  signals: np.ndarray  # (T, 13) float32, `digitized.page_view`.
  digitized: digitize_lib.Digitized  # The 500 Hz read-out and its fit to the page.
  rgb: np.ndarray  # uint8 (H, W, 3): the whole page, as digitized.
  label: int | None = None  # The true class, if known.
  source: str = ""


def signal_page(rgb: np.ndarray, name: str, hz: int = 125, label: int | None = None,
                source: str = "") -> SignalPage:
  """A whole page (uint8 RGB) -> SignalPage: digitized, and its model input."""
  d = dataclasses.replace(digitize_lib.digitize(rgb), source=source or name)
  return SignalPage(name=name, signals=digitized_lib.page_view(d.signals, d.rhythm, hz),
                    digitized=d, rgb=rgb, label=label, source=source)


def signal_page_from_file(path: str, hz: int = 125, label: int | None = None) -> SignalPage:
  """A whole page on disk -> SignalPage (raises OSError or ValueError for a file that is no page)."""
  return signal_page(read_rgb(path), os.path.splitext(os.path.basename(path))[0], hz, label,
                     source=path)


def shown_windows(num_samples: int) -> np.ndarray:
  """(13, num_samples) bool: the samples of each channel of a `page_view` that hold its signal.

  A lead's window is every sample that averages any 500 Hz sample the page shows (at 125 Hz the
  2.5 s columns end mid-sample, so the samples at the column edges belong to both leads there); the
  rhythm strip's is all of it.
  """
  total = digitized_lib.NUM_SAMPLES
  if num_samples <= 0 or total % num_samples:
    raise ValueError(f"A page view has a divisor of {total} samples, got {num_samples}.")
  leads = digitize_lib.shown_mask(total).reshape(len(LEADS), num_samples, -1).any(-1)
  return np.concatenate([leads, np.ones((1, num_samples), bool)], axis=0)


def per_lead_signals(attributions: np.ndarray) -> dict[str, Any]:
  """Which leads drove one prediction: `leads.per_lead`'s read-out for one (T, 13) attribution.

  Returns:
    `share`: each lead's fraction of the absolute attribution mass inside its shown window, the
    rhythm strip as `layout.RHYTHM`; `other`: the rest (samples outside the windows, which hold 0
    in every input: only plain gradients and SmoothGrad put mass there). `density`: share divided
    by the window's fraction of all windows' samples (1 = the shown signal's average; the strip, four
    times a lead's length, is not favoured for its length). `signed`: each window's sum of signed
    attributions (for Integrated Gradients its part of logit(x) - logit(flat leads)). `ranking`:
    the entries by density, largest first.
  """
  a = np.asarray(attributions, np.float64)
  if a.ndim != 2 or a.shape[1] != len(CHANNELS):
    raise ValueError(f"Expected (T, {len(CHANNELS)}) attributions, got {a.shape}.")
  windows = shown_windows(a.shape[0]).T  # (T, 13)
  mass = np.abs(a)
  total = float(mass.sum())
  sums = (mass * windows).sum(0)
  signed = (a * windows).sum(0)
  sizes = windows.sum(0) / windows.sum()
  share = {name: (float(sums[k]) / total if total > 0 else 0.0) for k, name in enumerate(CHANNELS)}
  density = {name: share[name] / float(sizes[k]) for k, name in enumerate(CHANNELS)}
  return {"share": share, "other": max(0.0, 1.0 - sum(share.values())), "density": density,
          "signed": {name: float(signed[k]) for k, name in enumerate(CHANNELS)},
          "ranking": sorted(density, key=density.get, reverse=True)}


def _row_of(channel: str) -> int:
  if channel == RHYTHM:
    return len(LEAD_GRID)
  return next(r for r, leads in enumerate(LEAD_GRID) if channel in leads)


def _trace_points(d: digitize_lib.Digitized, values: np.ndarray):
  """Per channel: page pixels (n, 2), values (n,) and 500 Hz sample indices (n,) of its read trace."""
  values = np.asarray(values, np.float64)
  if values.ndim != 2 or values.shape[1] != len(CHANNELS) or len(d.time_s) % values.shape[0]:
    raise ValueError(f"Expected (T, {len(CHANNELS)}) values with T dividing {len(d.time_s)}, got "
                     f"{values.shape}.")
  factor = len(d.time_s) // values.shape[0]
  layout, fit = d.layout, d.fit
  layout_x = layout.trace_left + d.time_s * layout.px_per_s  # The digitizer's time -> x, inverted.
  out = {}
  for k, channel in enumerate(CHANNELS):
    row = _row_of(channel)
    mv = d.rhythm if channel == RHYTHM else d.lead(channel)
    index = np.flatnonzero(np.isfinite(mv))  # NaN outside the lead's window and where unread.
    # As `digitize.plot_overlay` draws it: the traces' own time origin (`PageFit.trace_shift`).
    x = fit.page_x(layout_x[index], layout.baselines[row]) + fit.trace_shift
    y = fit.baseline(row, x) - mv[index].astype(np.float64) * fit.px_per_mv
    out[channel] = (np.stack([x, y], 1), values[index // factor, k], index)
  return out


def trace_segments(d: digitize_lib.Digitized, values: np.ndarray
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Each channel's digitized trace in page pixels, with a value per point.

  Args:
    d: the page's read-out (`digitize.digitize`), whose fit maps time and mV to page pixels exactly
      as the digitizer mapped pixels to them (row baseline, mV scale, x offset, scale, rotation).
    values: (T, 13) per-sample values over the model input (e.g. |attribution|); the 500 Hz points a
      model sample averages take its value.

  Returns:
    {channel: (xy (n, 2) page pixels (x, y), v (n,))}: the 500 Hz samples the page shows of that
    channel (a lead's 2.5 s in its row and column, the strip along the bottom row) and the digitizer
    read; unread samples are left out.
  """
  return {c: (xy, v) for c, (xy, v, _) in _trace_points(d, values).items()}


def _segments(d: digitize_lib.Digitized, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """LineCollection input: (m, 2, 2) segments joining neighbouring read samples, and their values."""
  segments, colours = [np.zeros((0, 2, 2))], [np.zeros(0)]
  for xy, v, index in _trace_points(d, values).values():
    joined = np.flatnonzero(np.diff(index) == 1)  # No segment across an unread gap.
    segments.append(np.stack([xy[joined], xy[joined + 1]], 1))
    colours.append((v[joined] + v[joined + 1]) / 2)
  return np.concatenate(segments), np.concatenate(colours)


def display_values(attributions: np.ndarray, hz: int) -> np.ndarray:
  """(T, 13) |attribution| smoothed over about 30 ms and scaled so that the 99th percentile of the
  shown samples is 1 (clipped to [0, 1]). Display only: Integrated Gradients' x * gradient is 0
  wherever the trace crosses its median, which would make a coloured trace flicker."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  mass = np.abs(np.asarray(attributions, np.float64))
  shown = ndimage.gaussian_filter1d(mass, sigma=max(0.5, 0.03 * hz), axis=0, mode="nearest")
  windows = shown_windows(mass.shape[0]).T
  top = np.percentile(shown[windows], 99) if windows.any() else 0.0
  return np.clip(shown / top, 0.0, 1.0) if top > 0 else np.zeros_like(shown)


def plot_signal_overlay(page: SignalPage, attributions: np.ndarray, title: str, path: str,
                        leads: dict[str, Any] | None = None, hz: int | None = None) -> None:
  """The page (faded) with its digitized traces coloured and thickened by |attribution|, each lead's
  share written at its window's start (given `leads`, `per_lead_signals`' read-out), a colour bar."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib.collections import LineCollection  # pylint: disable=g-import-not-at-top

  d = page.digitized
  hz = hz or attributions.shape[0] * d.fs // len(d.time_s)
  values = display_values(attributions, hz)
  segments, colours = _segments(d, values)
  h, w = page.rgb.shape[:2]
  fig_w = 14.0
  fig, ax = plt.subplots(figsize=(fig_w, fig_w * h / w * 0.92 + 0.9), dpi=100)
  step = int(np.ceil(w / 1400))  # The figure is 1400 px wide: a full-resolution page is only slower.
  grey = page.rgb[::step, ::step].astype(np.float32).mean(-1)
  gh, gw = grey.shape
  ax.imshow(grey, cmap="gray", vmin=0, vmax=255, alpha=0.35,
            extent=(-0.5, gw * step - 0.5, gh * step - 0.5, -0.5))
  cmap = plt.get_cmap("turbo")
  lines = LineCollection(segments, cmap=cmap, norm=matplotlib.colors.Normalize(0, 1),
                         linewidths=0.5 + 2.5 * colours, capstyle="round")
  lines.set_array(colours)
  ax.add_collection(lines)
  if leads is not None:
    layout, fit = d.layout, d.fit
    top3 = leads["ranking"][:3]
    for channel in CHANNELS:
      row = _row_of(channel)
      col = 0 if channel == RHYTHM else LEAD_GRID[row].index(channel)
      x = float(fit.page_x(layout.column_x(col) + 2.5 * layout.px_per_mm, layout.baselines[row]))
      y = float(fit.baseline(row, x)) - 1.3 * fit.px_per_mv
      ax.text(x, y, f"{channel} {100 * leads['share'][channel]:.0f}%", fontsize=9,
              color="tab:red" if channel in top3 else "navy", va="bottom",
              fontweight="bold" if channel in top3 else "normal",
              bbox={"facecolor": "white", "alpha": 0.7, "lw": 0, "pad": 1})
  ax.set_xlim(0, w)
  ax.set_ylim(h, 0)
  ax.set_title(title, fontsize=10)
  ax.axis("off")
  bar = fig.colorbar(lines, ax=ax, fraction=0.025, pad=0.01)
  bar.set_label("|attribution| (smoothed; 1 = 99th percentile)", fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def explain_signal_pages(logit_fn: LogitFn, pages: Sequence[SignalPage], out_dir: str, *,
                         method: str = "integrated_gradients", seed: int = 0,
                         pages_per_call: int = 4, contrast_steps: int = 0,
                         **options) -> dict[str, Any]:
  """Attributions of a signal model for `pages`, written as overlay and bar-chart PNGs and one JSON.

  The predicted class is explained with `method` (one of `SIGNAL_METHODS`; `options` go to
  `attribution.attribute`); Integrated Gradients starts from `BASELINE` (flat leads) and the JSON
  records its completeness. With `contrast_steps > 0`, Integrated Gradients of the margin
  logit[predicted] - logit[runner-up] gives each lead's signed contribution to choosing the
  predicted class over the runner-up, as `explain.explain_pages` does for page images.

  Returns:
    {"json": path, "pages": [{"overlay": path, "leads": path}, ...]}.
  """
  if not pages:
    raise ValueError("explain_signal_pages: no pages given.")
  if method not in SIGNAL_METHODS:
    raise ValueError(f"{method!r} does not apply to a signal model; use one of {SIGNAL_METHODS}.")
  os.makedirs(out_dir, exist_ok=True)
  probs, attributions, gaps, contrasts, contrast_gaps = attribute_pages(
      logit_fn, [p.signals for p in pages], method=method, baseline=BASELINE, seed=seed,
      pages_per_call=pages_per_call, contrast_steps=contrast_steps, **options)
  predicted = probs.argmax(-1)
  hz = pages[0].signals.shape[0] * digitized_lib.FS // digitized_lib.NUM_SAMPLES

  records, written = [], []
  for i, page in enumerate(pages):
    leads = per_lead_signals(attributions[i])
    pred = CLASS_NAMES[predicted[i]]
    contrast = None
    if contrasts is not None:
      second = int(np.argsort(probs[i])[-2])
      contributions = per_lead_signals(contrasts[i])["signed"]
      contrast = {"versus": CLASS_NAMES[second],
                  "margin": float(np.log(probs[i, predicted[i]]) - np.log(probs[i, second])),
                  "margin_over_baseline": float(contrast_gaps[i, 1]),
                  "attribution_sum": float(contrast_gaps[i, 0]), "steps": int(contrast_steps),
                  "lead_contribution": contributions,
                  "other_contribution": float(contrast_gaps[i, 0]) - sum(contributions.values())}
    true = CLASS_NAMES[page.label] if page.label is not None else "unknown"
    title = (f"{page.name} (signal model, {method})\npredicted {pred} "
             f"(p={probs[i, predicted[i]]:.2f}), true {true}"
             + (f" (p={probs[i, page.label]:.2f})" if page.label is not None else ""))
    stem = os.path.join(out_dir, f"{i:02d}_{safe_name(page.name)[:40]}_{method}")
    overlay, bars = stem + "_overlay.png", stem + "_leads.png"
    plot_signal_overlay(page, attributions[i], title, overlay, leads, hz)
    plot_leads(leads, title, bars, contrast, density_label="attribution density\n(1 = average "
               "of the shown signal)")
    d = page.digitized
    record = {
        "page": page.name, "source": page.source, "input": "signals", "method": method,
        "true_class": None if page.label is None else CLASS_NAMES[page.label],
        "predicted_class": pred,
        "probabilities": dict(zip(CLASS_NAMES, map(float, probs[i]))),
        "explained_class": pred, "lead_share": leads["share"], "other_share": leads["other"],
        "lead_density": leads["density"], "lead_signed_sum": leads["signed"],
        "top_leads": leads["ranking"][:3],
        "digitization_quality": {**dict(zip(d.leads, map(float, d.quality))),
                                 RHYTHM: float(d.rhythm_quality)},
        "overlay": overlay, "lead_chart": bars,
    }
    if contrast is not None:
      record["contrast"] = contrast
    if gaps is not None:
      record["completeness"] = {"attribution_sum": float(gaps[i, 0]),
                                "logit_difference": float(gaps[i, 1]), "baseline": BASELINE}
    records.append(record)
    written.append({"overlay": overlay, "leads": bars})
  json_path = os.path.join(out_dir, f"saliency_{method}.json")
  with open(json_path, "w") as f:
    json.dump({"method": method, "input": "signals", "signal_hz": hz,
               "baseline": "each lead flat at its median (zero input)", "options": options,
               "contrast_steps": int(contrast_steps), "seed": seed, "pages": records}, f, indent=2)
  return {"json": json_path, "pages": written}
