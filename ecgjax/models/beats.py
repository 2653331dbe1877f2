"""Each lead's average heartbeat, cut from the page view inside the jitted model.

A 3 x 4 page shows each lead for 2.5 s only, three leads at a time, so on the page view
(`ecgjax.data.digitized.page_view`) no convolution ever sees V2 and V5 at the same moment. Readers
of ECGs (and the "median beats" of clinical carts) compare the leads beat against beat instead: each
lead's beats, aligned on their QRS complexes and averaged, put every lead's Q wave, ST segment and
T wave at the same sample. `average_beats` does that on (batch, time, 13) page views:

1. `qrs_peaks` finds the QRS complexes on the 10 s rhythm strip (channel 12), recorded at the same
   time as every lead: the squared slope, smoothed over 0.1 s (a triangle), peaks once per
   complex; a peak is a sample that is the largest within +-0.25 s and above 30% of a robust
   reference (the median of the six largest such maxima, so that one artefact does not hide every
   beat).
2. Around each peak, the window from 0.25 s before to 0.45 s after it, kept for a lead when it lies
   wholly inside the 2.5 s the page shows of that lead (any window, for the strip itself).
3. Each channel's kept windows averaged: (batch, 0.7 s, 13). A lead with no whole beat is 0.

The peak positions are integers taken under `stop_gradient`; the averages are linear in the
signals, so saliency (gradients, Integrated Gradients) flows to the samples the beats came from.
Written in jax rather than with a QRS detector from a library (e.g. wfdb's XQRS, numpy only) so
that it runs inside the model on the model's own input: caches, fusion and saliency are unchanged.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from ecgjax.data.layout import LEAD_GRID
from ecgjax.data.layout import LEADS

DURATION_S = 10.0  # The page view's time base.
BEFORE_S = 0.25  # Window start before the QRS peak: the P wave's end and the PR segment.
AFTER_S = 0.45  # Window end after it: the ST segment and the T wave.
SMOOTH_S = 0.1  # Moving average of the squared slope: about one QRS complex.
REFRACTORY_S = 0.25  # A peak is the largest within this either side (up to 240 beats a minute).
THRESHOLD = 0.3  # Of the reference peak height.
REFERENCE_PEAKS = 6  # The reference is the median of this many largest peaks.
MAX_BEATS = 40  # Peaks kept per page (10 s at 240 beats a minute).


def rate(time_steps: int) -> float:
  """Samples per second of a page view with `time_steps` samples over 10 s."""
  return time_steps / DURATION_S


def qrs_peaks(rhythm: jax.Array, hz: float, max_beats: int = MAX_BEATS) -> jax.Array:
  """(batch, T) rhythm strips -> (batch, max_beats) int32 sample indices of QRS peaks in time
  order, -1 after the last."""
  rhythm = jax.lax.stop_gradient(rhythm.astype(jnp.float32))
  slope = jnp.diff(rhythm, axis=1, prepend=rhythm[:, :1]) ** 2
  # Two centred moving averages of an odd width: a triangle SMOOTH_S wide, which peaks in the
  # middle of an event (a box would be flat over it).
  width = 2 * round(SMOOTH_S * hz / 4) + 1
  energy = slope
  for _ in range(2):
    energy = jax.lax.reduce_window(energy, 0.0, jax.lax.add, (1, width), (1, 1), "SAME") / width
  half = max(1, round(REFRACTORY_S * hz))
  local_max = jax.lax.reduce_window(energy, -jnp.inf, jax.lax.max, (1, 2 * half + 1), (1, 1),
                                    "SAME")
  before = jnp.pad(energy, ((0, 0), (1, 0)), constant_values=-jnp.inf)[:, :-1]
  is_peak = (energy >= local_max) & (energy > before)  # The first sample of a flat top only.
  heights = jnp.sort(jnp.where(is_peak, energy, 0.0), axis=1)[:, -REFERENCE_PEAKS:]
  reference = jnp.median(heights, axis=1, keepdims=True)
  keep = is_peak & (energy > THRESHOLD * reference) & (reference > 0)
  return jax.vmap(lambda k: jnp.nonzero(k, size=max_beats, fill_value=-1)[0])(keep).astype(
      jnp.int32)


# The column (0-3) of the 3 x 4 page each lead is shown in.
LEAD_COLUMN = {lead: c for row in LEAD_GRID for c, lead in enumerate(row)}


def column_bounds(time_steps: int) -> list[int]:
  """The first sample of each of the page's four 2.5 s columns, then `time_steps`."""
  return [math.ceil(c * time_steps / len(LEAD_GRID[0])) for c in range(len(LEAD_GRID[0]) + 1)]


def lead_windows(time_steps: int) -> tuple[list[int], list[int]]:
  """[start) and [end) sample of the part of the page each of the 13 channels shows."""
  bounds = column_bounds(time_steps)
  starts = [bounds[LEAD_COLUMN[lead]] for lead in LEADS] + [0]
  ends = [bounds[LEAD_COLUMN[lead] + 1] for lead in LEADS] + [time_steps]
  return starts, ends


def average_beats(signals: jax.Array, peaks: jax.Array | None = None) -> tuple[jax.Array,
                                                                               jax.Array]:
  """(batch, T, 13) page views -> ((batch, L, 13) average beats, (batch, 13) beats averaged).

  L is 0.7 s of samples, the QRS peak at sample round(0.25 s * hz). `peaks`: (batch, K) from
  `qrs_peaks` (found on channel 12 when None).
  """
  batch, time_steps, channels = signals.shape
  if channels != len(LEADS) + 1:
    raise ValueError(f"average_beats takes (batch, time, {len(LEADS) + 1}) page views (the twelve "
                     f"leads and the rhythm strip), got shape {signals.shape}.")
  hz = rate(time_steps)
  if peaks is None:
    peaks = qrs_peaks(signals[:, :, -1], hz)
  before, after = round(BEFORE_S * hz), round(AFTER_S * hz)
  starts, ends = lead_windows(time_steps)
  window_start = peaks[:, :, None] - before  # (batch, K, 1)
  inside = ((window_start >= jnp.asarray(starts)) & (peaks[:, :, None] + after <= jnp.asarray(ends))
            & (peaks[:, :, None] >= 0))  # (batch, K, 13)
  positions = jnp.clip(window_start + jnp.arange(before + after), 0, time_steps - 1)  # (B, K, L)
  segments = jnp.take_along_axis(signals, positions.reshape(batch, -1, 1), axis=1)
  segments = segments.reshape(batch, peaks.shape[1], before + after, channels)
  weights = inside.astype(signals.dtype)
  counts = weights.sum(axis=1)  # (batch, 13)
  total = jnp.einsum("bklc,bkc->blc", segments, weights)
  return total / jnp.maximum(counts, 1.0)[:, None, :], counts


# What `rhythm_features` measures of a page's RR intervals (the time between successive QRS peaks
# on the rhythm strip), in this order.
RHYTHM_FEATURES = ("log_mean_rr_s", "rr_cv", "rmssd_over_mean_rr", "max_rr_deviation_over_mean",
                   "beats_over_10")


def rhythm_features(signals: jax.Array, peaks: jax.Array | None = None) -> jax.Array:
  """(batch, T, 13) page views -> (batch, 5) measures of the rhythm over the strip's 10 s.

  The beat-to-beat regularity that the convolutions, each seeing a second or two, cannot compare
  across the strip: the log of the mean RR interval (the heart rate), its coefficient of variation,
  the root mean square of successive RR differences and the largest deviation from the mean, both
  over the mean, and the number of beats over 10 (`RHYTHM_FEATURES`). From `qrs_peaks` (found on
  channel 12 when `peaks` is None), under `stop_gradient`: no gradient reaches the signals through
  them. A page with fewer than two beats gives zeros; with two, no successive differences (0).
  """
  hz = rate(signals.shape[1])
  if peaks is None:
    peaks = qrs_peaks(signals[:, :, -1], hz)
  peaks = jax.lax.stop_gradient(peaks)
  valid = peaks >= 0
  rr = jnp.diff(peaks, axis=1).astype(jnp.float32) / hz  # (batch, K - 1) seconds.
  has_rr = valid[:, 1:] & valid[:, :-1]
  count = has_rr.sum(axis=1)
  n = jnp.maximum(count, 1).astype(jnp.float32)
  mean = jnp.where(has_rr, rr, 0.0).sum(axis=1) / n
  safe_mean = jnp.where(count > 0, mean, 1.0)
  deviation = jnp.where(has_rr, rr - mean[:, None], 0.0)
  std = jnp.sqrt((deviation ** 2).sum(axis=1) / n)
  has_diff = has_rr[:, 1:] & has_rr[:, :-1]
  successive = jnp.where(has_diff, jnp.diff(rr, axis=1), 0.0)
  rmssd = jnp.sqrt((successive ** 2).sum(axis=1) / jnp.maximum(has_diff.sum(axis=1), 1))
  features = jnp.stack([jnp.log(safe_mean), std / safe_mean, rmssd / safe_mean,
                        jnp.abs(deviation).max(axis=1) / safe_mean,
                        valid.sum(axis=1).astype(jnp.float32) / 10.0], axis=1)
  return jnp.where((count > 0)[:, None], features, 0.0).astype(signals.dtype)
