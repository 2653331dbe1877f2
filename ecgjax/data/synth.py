"""Synthetic 12-lead ECGs of the four classes, and pages rendered to look like the real release.

`simulate(label, seed)` draws a 10 s, 500 Hz, 12-lead recording of one synthetic patient: a moving
cardiac dipole (sums of Gaussian waves per beat) projected on the lead vectors, plus electrode
noise. Each class has its physiology, drawn from ranges that overlap normal variation (see
`_CONDITIONS`). `render(record, seed)` draws it on a page with the geometry of the real release
(`ecgjax.data.layout`), then varies line width, rotation, offset, grid colour and JPEG artefacts by
seed. `python -m ecgjax.data.synth --out DIR --per_class N --seed S` writes pages in the real
release's folder layout; the TFDS builder `ecg_synth` (`ecgjax.data.ecg_synth`) stores their grid
panels.

The simulator is a plausible teaching model, not a physiological one: it is meant for pre-training,
demos and tests, never for claims about real patients.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import multiprocessing
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import special

from ecgjax.classes import CLASS_NAMES, class_index
from ecgjax.data.layout import LEAD_GRID, LEADS, REAL_LAYOUT, PageLayout

# Folder and file names of the real release, so written pages can feed the `ecg_images` builder.
RELEASE_FOLDERS: dict[str, str] = {
    "abnormal_heartbeat": "ECG Images of Patient that have abnormal heartbeat (233x12=2796)",
    "history_of_mi": "ECG Images of Patient that have History of MI (172x12=2064)",
    "mi": "ECG Images of Myocardial Infarction Patients (240x12=2880)",
    "normal": "Normal Person ECG Images (284x12=3408)",
}
RELEASE_PREFIXES: dict[str, str] = {
    "abnormal_heartbeat": "HB", "history_of_mi": "PMI", "mi": "MI", "normal": "Normal"}

# Sub-conditions per class, with their probabilities; `simulate(..., condition=...)` forces one.
_CONDITIONS: dict[str, dict[str, float]] = {
    "normal": {"sinus": 1.0},
    "abnormal_heartbeat": {"afib": 0.3, "pvc": 0.25, "brady": 0.1, "tachy": 0.15, "rbbb": 0.1,
                           "lbbb": 0.1},
    "mi": {"anterior": 0.45, "inferior": 0.35, "lateral": 0.2},
    "history_of_mi": {"anterior": 0.45, "inferior": 0.35, "lateral": 0.2},
}

# Patient axes: x to the patient's left, y inferior (feet), z anterior.
# Unit vectors of the territories: an injury current towards them raises ST there and depresses it
# in the leads that look from the opposite side (the reciprocal change).
_TERRITORIES: dict[str, np.ndarray] = {
    "anterior": np.array([0.15, -0.25, 1.0]),
    "inferior": np.array([-0.25, 1.0, -0.2]),
    "lateral": np.array([1.0, -0.45, -0.1]),
}
_TERRITORIES = {k: v / np.linalg.norm(v) for k, v in _TERRITORIES.items()}
# The leads that look at each territory (used by tests and saliency read-outs).
TERRITORY_LEADS: dict[str, tuple[str, ...]] = {
    "anterior": ("V1", "V2", "V3", "V4"),
    "inferior": ("II", "III", "aVF"),
    "lateral": ("I", "aVL", "V5", "V6"),
}
# Horizontal-plane angles (degrees from +x towards +z) and gains of the precordial leads.
_CHEST_ANGLES = np.array([120.0, 95.0, 75.0, 55.0, 30.0, 5.0])
_CHEST_GAINS = np.array([1.0, 1.5, 1.6, 1.4, 1.1, 0.9])


@dataclasses.dataclass(frozen=True)
class Record:
  """One simulated recording."""
  signals: np.ndarray  # (12, n) float32, millivolts, in the order of `leads`.
  leads: tuple[str, ...]
  fs: int
  label: int
  params: dict[str, Any]  # What was drawn: rhythm, condition, heart rate, beat times, axis, ...

  @property
  def label_name(self) -> str:
    return CLASS_NAMES[self.label]

  def lead(self, name: str) -> np.ndarray:
    return self.signals[self.leads.index(name)]


def _rng(*key: Any) -> np.random.Generator:
  """A generator seeded by a tuple of ints/strings, stable across processes and Python versions."""
  words = [int.from_bytes(str(k).encode(), "little") % (2**63) for k in key]
  return np.random.default_rng(np.random.SeedSequence(words))


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Waves:
  """Gaussian waves of the cardiac dipole: centre (s), left and right widths (s), vector (mV)."""
  centre: list[float] = dataclasses.field(default_factory=list)
  left: list[float] = dataclasses.field(default_factory=list)
  right: list[float] = dataclasses.field(default_factory=list)
  vector: list[np.ndarray] = dataclasses.field(default_factory=list)
  # ST plateaus: (start, end, vector), a smooth box from the J point to the end of T.
  plateaus: list[tuple[float, float, np.ndarray]] = dataclasses.field(default_factory=list)

  def add(self, centre, left, right, vector):
    self.centre.append(centre)
    self.left.append(left)
    self.right.append(right)
    self.vector.append(np.asarray(vector, dtype=np.float64))

  def dipole(self, t: np.ndarray) -> np.ndarray:
    """(n, 3) dipole at times `t`."""
    c = np.asarray(self.centre)[None]
    d = t[:, None] - c
    width = np.where(d < 0, np.asarray(self.left)[None], np.asarray(self.right)[None])
    g = np.exp(-0.5 * (d / width) ** 2)
    out = g @ np.stack(self.vector)
    for start, end, vector in self.plateaus:
      box = special.expit((t - start) / 0.006) * special.expit((end - t) / 0.025)
      out += box[:, None] * vector[None]
    return out


def _unit(v) -> np.ndarray:
  v = np.asarray(v, dtype=np.float64)
  return v / np.linalg.norm(v)


def _rr_intervals(rng, duration_s: float, rhythm: str, hr: float) -> np.ndarray:
  """RR intervals (s) covering `duration_s` plus margins."""
  rr0 = 60.0 / hr
  n = int(math.ceil((duration_s + 3.0) / rr0 * 1.6)) + 2
  if rhythm == "afib":
    # Irregularly irregular: independent intervals with a wide spread (CV about 0.15-0.35).
    return rr0 * rng.lognormal(0.0, rng.uniform(0.15, 0.3), n).clip(0.45, 2.5)
  # Sinus: respiratory sinus arrhythmia plus a little jitter (CV about 0.01-0.06).
  k = np.arange(n)
  resp = rng.uniform(0.01, 0.05) * np.sin(2 * np.pi * k * rr0 / rng.uniform(3.0, 6.0)
                                           + rng.uniform(0, 2 * np.pi))
  return rr0 * (1 + resp + rng.normal(0, rng.uniform(0.005, 0.02), n))


def _chest_vectors(rng) -> np.ndarray:
  """(6, 3) lead vectors of V1-V6 with electrode placement varying between patients."""
  ang = np.deg2rad(_CHEST_ANGLES + rng.normal(0, 5, 6))
  tilt = np.array([0.0, 0.0, 0.1, 0.15, 0.2, 0.2]) + rng.normal(0, 0.05, 6)
  vec = np.stack([np.cos(ang), tilt, np.sin(ang)], 1)
  return vec * (_CHEST_GAINS * rng.uniform(0.85, 1.15, 6))[:, None]


def _electrode_noise(rng, t: np.ndarray, fs: int) -> np.ndarray:
  """(9, n) noise of electrodes RA, LA, LL, V1-V6: baseline wander, muscle noise, mains."""
  n = len(t)
  wander_amp = rng.uniform(0.0, 0.15)
  out = np.zeros((9, n))
  for _ in range(3):  # Slow wander, partly shared (respiration moves all electrodes).
    f = rng.uniform(0.05, 0.5)
    shared = rng.uniform(0.3, 1.0)
    phase = rng.uniform(0, 2 * np.pi, 9)
    amp = wander_amp * (shared + (1 - shared) * rng.uniform(-1, 1, 9))
    out += amp[:, None] * np.sin(2 * np.pi * f * t[None] + phase[:, None])
  muscle = rng.uniform(0.0, 0.015) * (rng.random(9) < 0.7)
  if muscle.any():
    white = rng.normal(size=(9, n)) * muscle[:, None]
    kernel = np.ones(3) / math.sqrt(3)  # Muscle noise is broad-band but not white up to fs/2.
    out += np.stack([np.convolve(w, kernel, mode="same") for w in white])
  if rng.random() < 0.4:
    mains = rng.choice([50.0, 60.0])
    amp = rng.uniform(0.005, 0.03) * rng.uniform(0.3, 1.0, 9)
    out += amp[:, None] * np.sin(2 * np.pi * mains * t[None] + rng.uniform(0, 2 * np.pi, 9)[:, None])
  return out


def simulate(label: int | str, seed: int, *, duration_s: float = 10.0, fs: int = 500,
             condition: str | None = None) -> Record:
  """One synthetic 12-lead recording of class `label` (index or name).

  Args:
    label: class index or name (`ecgjax.classes.CLASS_NAMES`).
    seed: everything is drawn from it; equal seeds give equal records.
    duration_s: length in seconds.
    fs: sampling rate in Hz.
    condition: forces a sub-condition of the class (see `conditions(label)`), for tests; by default
      it is drawn from the class's mix.

  Returns:
    A `Record` with `signals` of shape (12, round(duration_s * fs)) in mV, leads in `LEADS` order.
  """
  label = class_index(label)
  name = CLASS_NAMES[label]
  rng = _rng("simulate", label, seed)
  options = _CONDITIONS[name]
  if condition is None:
    condition = rng.choice(list(options), p=list(options.values()))
  elif condition not in options:
    raise ValueError(f"Unknown condition {condition!r} for class {name!r}; "
                     f"expected one of {tuple(options)}.")
  condition = str(condition)
  n = int(round(duration_s * fs))
  t = np.arange(n) / fs

  # Between-patient variation: size, electrical axis, intervals.
  scale = rng.lognormal(0.0, 0.2)
  axis = np.deg2rad(rng.uniform(-25, 90))
  r_vec = scale * rng.uniform(1.1, 1.8) * _unit(
      [np.cos(axis), np.sin(axis), -rng.uniform(0.3, 0.8)])
  t_axis = axis + np.deg2rad(rng.normal(0, 15))
  t_vec = scale * rng.uniform(0.15, 0.35) * _unit([np.cos(t_axis), np.sin(t_axis),
                                                 rng.uniform(0.1, 0.5)])
  p_vec = rng.uniform(0.08, 0.2) * _unit([0.5, 0.85, rng.uniform(-0.2, 0.3)])
  q_vec = scale * rng.uniform(0.05, 0.2) * _unit([-0.6, 0.2, 0.8])
  s_vec = scale * rng.uniform(0.15, 0.5) * _unit([-0.4, -0.5, -0.7])
  pr = rng.uniform(0.12, 0.2)
  qrs_w = rng.uniform(0.009, 0.013)  # Width of the R wave: QRS about 80-110 ms.
  qtc = rng.uniform(0.37, 0.44)
  # Normal variants that overlap the pathologies: early repolarisation, flat or low T waves.
  st_vec = rng.uniform(0.0, 0.06) * _unit([0.3, 0.3, 1.0])
  hr = rng.uniform(50, 100)
  rhythm = "sinus"
  has_p = True
  wide = None  # "rbbb" or "lbbb"
  territory = None

  if name == "abnormal_heartbeat":
    if condition == "afib":
      rhythm, has_p, hr = "afib", False, rng.uniform(60, 150)
    elif condition == "brady":
      hr = rng.uniform(32, 52)
    elif condition == "tachy":
      hr = rng.uniform(98, 160)
    elif condition in ("rbbb", "lbbb"):
      wide = condition
    elif condition == "pvc":
      rhythm = "sinus+pvc"
  elif name in ("mi", "history_of_mi"):
    territory = condition
    hr = rng.uniform(55, 105)
  terr = _TERRITORIES[territory] if territory else None

  # Build the beat template (offsets from the R peak, s) as lists of waves.
  def sinus_beat(waves: _Waves, tr: float, rr: float, amp: float) -> None:
    qt = qtc * math.sqrt(rr)
    if has_p:
      waves.add(tr - 0.035 - pr + 0.05, 0.022, 0.02, p_vec)
    if wide == "lbbb":
      lb = scale * rng_beat.uniform(0.95, 1.05) * lbbb_vec
      waves.add(tr - 0.02, 0.022, 0.022, lb * amp)
      waves.add(tr + 0.03, 0.022, 0.025, lb * amp * 0.9)
      waves.add(tr + qt - 0.06, 0.06, 0.045, -0.45 * lb * amp)  # Discordant T.
      waves.plateaus.append((tr + 0.07, tr + qt - 0.05, -0.08 * lb))
      return
    if not (territory and name == "history_of_mi" and q_path > 0):
      waves.add(tr - 0.022, 0.008, 0.008, q_vec * amp)
    waves.add(tr, qrs_w, qrs_w, r_now * amp)
    waves.add(tr + 0.024, 0.009, 0.011, s_vec * amp)
    if wide == "rbbb":
      waves.add(tr + 0.065, 0.02, 0.022, rbbb_vec * amp)
    if terr is not None and name == "history_of_mi" and q_path > 0:
      waves.add(tr - 0.028, 0.012, 0.014, -q_path * terr * amp)  # Pathological Q (lost forces).
    t_centre = tr + qt - 0.075
    waves.add(t_centre, 0.055, 0.04, t_now * amp)
    if st_now is not None:
      waves.plateaus.append((tr + 0.045 + (0.05 if wide else 0.0), t_centre + 0.06, st_now))

  rng_beat = _rng("beats", label, seed)
  lbbb_vec = _unit([0.85, rng.uniform(-0.3, 0.4), -0.6]) * rng.uniform(1.4, 2.2)
  rbbb_vec = scale * rng.uniform(0.4, 0.8) * _unit([-0.5, 0.1, 0.9])
  q_path = 0.0
  r_now, t_now, st_now = r_vec, t_vec, st_vec
  if wide == "rbbb":
    t_now = t_vec - 0.2 * scale * _unit([-0.3, 0.0, 1.0])  # T inverted in V1-V2.
  if name == "mi":
    st_amp = rng.uniform(0.12, 0.45)
    st_now = st_amp * terr
    t_now = t_vec * rng.uniform(0.6, 1.0) + rng.uniform(0.3, 0.8) * terr  # Hyperacute T.
    if rng.random() < 0.4:  # Early Q in some acute infarcts.
      r_now = r_vec - rng.uniform(0.1, 0.4) * float(r_vec @ terr) * terr
  elif name == "history_of_mi":
    kind = rng.choice(["q", "q+t", "t"], p=[0.35, 0.45, 0.2])
    st_now = rng.uniform(0.0, 0.04) * terr  # Residual, below any acute criterion.
    if "q" in kind:
      q_path = rng.uniform(0.2, 0.6) * scale
      r_now = r_vec - rng.uniform(0.3, 0.8) * max(float(r_vec @ terr), 0.0) * terr
    if "t" in kind:
      t_now = t_vec - (float(t_vec @ terr) + rng.uniform(0.1, 0.35)) * terr  # T inversion.

  rr = _rr_intervals(rng, duration_s, rhythm, hr)
  start = -rng.uniform(0.0, 60.0 / hr) - 1.0  # Start mid-cycle; beats before 0 shape the start.
  r_times = start + np.concatenate([[0.0], np.cumsum(rr)])
  r_times = r_times[r_times < duration_s + 1.0]
  waves = _Waves()
  beat_kinds = []
  pvc_vec = rng.uniform(1.2, 2.4) * _unit(rng.normal(size=3))
  pvc_at = set()
  if rhythm == "sinus+pvc":
    inside = np.flatnonzero((r_times > 0.3) & (r_times < duration_s - 0.5))
    count = min(len(inside) - 1, int(rng.integers(1, 4)))
    pvc_at = set(rng.choice(inside[:-1], size=max(count, 1), replace=False).tolist())
  resp_phase = rng.uniform(0, 2 * np.pi)
  for i, tr in enumerate(r_times):
    beat_rr = float(rr[min(i, len(rr) - 1)])
    amp = 1.0 + 0.05 * math.sin(2 * math.pi * tr / 4.5 + resp_phase)
    if i in pvc_at:
      # Premature and wide, with a compensatory pause: the next sinus beat keeps its time.
      prev = r_times[i - 1]
      tp = prev + rng.uniform(0.5, 0.7) * (tr - prev)
      waves.add(tp - 0.02, 0.035, 0.03, pvc_vec)
      waves.add(tp + 0.04, 0.03, 0.035, -0.5 * pvc_vec + 0.3 * _unit(rng.normal(size=3)))
      waves.add(tp + 0.3, 0.07, 0.05, -0.35 * pvc_vec)
      beat_kinds.append(("pvc", float(tp)))
      continue
    sinus_beat(waves, float(tr), beat_rr, amp)
    beat_kinds.append(("sinus", float(tr)))
  dipole = waves.dipole(t)
  if rhythm == "afib":
    # Fibrillatory waves at 4-9 Hz with wandering frequency, strongest in V1 and the inferior leads.
    f0 = rng.uniform(4, 9)
    phase = 2 * np.pi * np.cumsum(f0 + 0.8 * np.sin(2 * np.pi * 0.3 * t + rng.uniform(0, 6))) / fs
    f_amp = rng.uniform(0.02, 0.1) * (1 + 0.3 * np.sin(2 * np.pi * 0.7 * t))
    f_wave = f_amp * (np.sin(phase) + 0.3 * np.sin(2 * phase + rng.uniform(0, 6)))
    dipole += f_wave[:, None] * _unit([0.1, 0.7, 0.7])[None]

  chest = _chest_vectors(rng)
  noise = _electrode_noise(rng, t, fs)
  ra, la, ll = noise[0], noise[1], noise[2]
  lead_i = dipole[:, 0] + (la - ra)
  lead_ii = dipole @ np.array([0.5, math.sqrt(3) / 2, 0.0]) + (ll - ra)
  wct = (ra + la + ll) / 3
  v = dipole @ chest.T + (noise[3:] - wct[None]).T
  # Derived limb leads by their definitions, so the identities hold to float precision.
  signals = np.stack([
      lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2,
      lead_ii - lead_i / 2, *v.T]).astype(np.float32)
  kept = [(k, s) for k, s in beat_kinds if 0 <= s < duration_s]
  params = {
      "class": name, "condition": condition, "rhythm": rhythm, "heart_rate": float(hr),
      "axis_deg": float(np.rad2deg(axis)), "pr_s": float(pr), "qtc_s": float(qtc),
      "scale": float(scale), "territory": territory,
      "beat_times_s": np.array([s for _, s in kept]),
      "beat_kinds": tuple(k for k, _ in kept),
      "st_vector_mv": np.asarray(st_now, dtype=np.float64),
  }
  return Record(signals=signals, leads=LEADS, fs=fs, label=label, params=params)


def conditions(label: int | str) -> tuple[str, ...]:
  """The sub-conditions `simulate` draws for class `label`."""
  return tuple(_CONDITIONS[CLASS_NAMES[class_index(label)]])


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------

PAGE_PINK = (248, 162, 171)
PANEL_WHITE = (253, 251, 251)
TRACE_BLACK = (8, 7, 7)


@dataclasses.dataclass(frozen=True)
class PageStyle:
  """What a page looks like; seeds vary a page within these choices."""
  layout: PageLayout = REAL_LAYOUT
  rhythm_leads: tuple[str, ...] = ("II", "III")  # The strip's lead is drawn from these by seed.
  page_color: tuple[int, int, int] = PAGE_PINK
  panel_color: tuple[int, int, int] = PANEL_WHITE
  # Grid dot colours, one drawn per page.
  grid_colors: tuple[tuple[int, int, int], ...] = (
      (100, 96, 97), (118, 104, 108), (88, 88, 94), (135, 112, 118), (108, 100, 100))
  grid: str = "dots"  # "dots" (the real release's dotted grid), "lines" (classic 1/5 mm paper).
  line_widths: tuple[int, ...] = (3, 3, 4, 4, 5)  # Trace width (px at 200 dpi), drawn per page.
  max_rotation_deg: float = 0.25
  max_offset_px: float = 4.0
  jpeg_quality: tuple[int, int] = (60, 95)  # Range of the page's JPEG round trip.
  title: str = "Synthetic Heart Foundation of ecgjax"  # Not a real institution's letterhead.
  subtitle: str = "ECG Report"

  def scale(self) -> float:
    return self.layout.page_size[0] / REAL_LAYOUT.page_size[0]


DEFAULT_STYLE = PageStyle()


@dataclasses.dataclass(frozen=True)
class PageGeometry:
  """Where the panel ended up on a rendered page (after rotation and offset)."""
  panel_box: tuple[int, int, int, int]  # Largest upright box inside the moved panel; crop this.
  rotation_deg: float
  offset_px: tuple[float, float]
  rhythm_lead: str
  line_width: int
  jpeg_quality: int


@functools.lru_cache(maxsize=None)
def _font(kind: str, size: int) -> ImageFont.FreeTypeFont:
  """Serif for lead labels (the release uses a Times-like face), bold sans for the title."""
  names = {"serif": ("STIXGeneral.ttf", "DejaVuSerif.ttf"),
           "bold": ("DejaVuSans-Bold.ttf",)}[kind]
  folders = ["/usr/share/fonts/truetype/dejavu"]
  try:
    import matplotlib  # Only for its bundled fonts (STIX is Times-like, DejaVu everywhere).
    folders.insert(0, os.path.join(matplotlib.get_data_path(), "fonts", "ttf"))
  except ImportError:
    pass
  for name in names:
    for folder in folders:
      path = os.path.join(folder, name)
      if os.path.exists(path):
        return ImageFont.truetype(path, size)
  return ImageFont.load_default(size)


def _draw_grid(panel: np.ndarray, layout: PageLayout, color, panel_color, kind: str) -> None:
  """Draws the grid into `panel` (the panel's pixels) in place."""
  h, w = panel.shape[:2]
  mm = layout.px_per_mm
  # Phase the grid on the trace origin so 5 mm lines fall where the real release has them.
  ox = (layout.trace_left - layout.panel_box[0]) % (5 * mm) - 5 * mm
  oy = (layout.baselines[0] - layout.panel_box[1]) % (5 * mm) - 5 * mm
  color = np.asarray(color, np.float32)
  halo = (np.asarray(panel_color, np.float32) * 2 + color) / 3
  if kind == "lines":
    xs = ox + mm * np.arange(int(w / mm) + 6)
    ys = oy + mm * np.arange(int(h / mm) + 6)
    for k, x in enumerate(xs):
      xi = int(round(x))
      if 0 <= xi < w:
        panel[:, xi] = color if k % 5 == 0 else halo
    for k, y in enumerate(ys):
      yi = int(round(y))
      if 0 <= yi < h:
        panel[yi, :] = color if k % 5 == 0 else np.minimum(panel[yi, :], halo)
    return
  # The release's dotted grid: 1 mm dots in blocks, the 5 mm lines as denser dotted lines, and a dot
  # row and column left out per block, which gives the panel its tiled look.
  k = np.arange(int(max(w, h) / mm) + 12)
  minor_x = ox + mm * k[(k % 5) != 4]
  minor_y = oy + mm * k[(k % 5) != 4]
  major_x = ox + mm * k[(k % 5) == 3]
  major_y = oy + mm * k[(k % 5) == 3]
  half = mm / 2

  def put(ys, xs, value):
    yy, xx = np.meshgrid(np.round(ys).astype(int), np.round(xs).astype(int), indexing="ij")
    ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    panel[yy[ok], xx[ok]] = value

  # Each 1 mm dot is a small cluster, as the release's resampled print shows it.
  light = (np.asarray(panel_color, np.float32) + color) / 2
  put(minor_y - 2, minor_x + 3, halo)
  put(minor_y - 2, minor_x, light)
  put(minor_y, minor_x + 3, light)
  put(minor_y, minor_x, color)
  dense_y = oy + half * np.arange(int(h / half) + 12)
  dense_x = ox + half * np.arange(int(w / half) + 12)
  put(dense_y, major_x, color)
  put(major_y, dense_x, color)


def _header(img: Image.Image, style: PageStyle) -> None:
  """The letterhead band: a heart logo, a title and a red 'ECG Report' rule with a beat glyph."""
  s = style.scale()
  d = ImageDraw.Draw(img)
  red = (236, 28, 36)
  # Logo: a heart of two discs and a triangle, with white leaves and a stem.
  cx, cy, r = 265 * s, 150 * s, 36 * s
  d.ellipse([cx - 2 * r, cy - r, cx, cy + r], fill=red)
  d.ellipse([cx, cy - r, cx + 2 * r, cy + r], fill=red)
  d.polygon([(cx - 1.95 * r, cy + 0.3 * r), (cx + 1.95 * r, cy + 0.3 * r), (cx, cy + 2.0 * r)],
            fill=red)
  for ang in (-60, -30, 0, 30, 60):
    a = math.radians(ang - 90)
    tip = (cx + 1.9 * r * math.cos(a), cy - 0.9 * r + 1.9 * r * math.sin(a))
    d.polygon([(cx - 6 * s, cy - 0.9 * r), tip, (cx + 6 * s, cy - 0.9 * r)], fill=red,
              outline=(255, 255, 255))
  d.line([(cx, cy - 0.7 * r), (cx, cy + 0.3 * r)], fill=(255, 255, 255), width=max(1, round(6 * s)))
  d.ellipse([cx - 7 * s, cy + 0.3 * r - 7 * s, cx + 7 * s, cy + 0.3 * r + 7 * s],
            fill=(255, 255, 255))
  d.arc([cx - 3 * r, cy - 2.4 * r, cx + 3 * r, cy + 2.9 * r], 110, 250, fill=(150, 40, 50),
        width=max(1, round(3 * s)))
  d.arc([cx - 3 * r, cy - 2.4 * r, cx + 3 * r, cy + 2.9 * r], -70, 70, fill=(150, 40, 50),
        width=max(1, round(3 * s)))
  # Title and subtitle.
  title_font = _font("bold", max(8, round(62 * s)))
  d.text((1270 * s, 60 * s), style.title, font=title_font, fill=(0, 0, 0), anchor="mm")
  sub_font = _font("bold", max(8, round(46 * s)))
  d.text((1185 * s, 166 * s), style.subtitle, font=sub_font, fill=red, anchor="mm")
  sub_w = d.textlength(style.subtitle, font=sub_font)
  lw = max(1, round(5 * s))
  y = 173 * s
  d.line([(560 * s, y), (1185 * s - sub_w / 2 - 15 * s, y)], fill=red, width=lw)
  d.line([(1185 * s + sub_w / 2 + 15 * s, y), (style.layout.page_size[0], y)], fill=red, width=lw)
  glyph = [(392, 173), (420, 173), (432, 150), (447, 205), (455, 85), (465, 228), (478, 140),
           (487, 173), (560, 173)]
  d.line([(x * s, yy * s) for x, yy in glyph], fill=red, width=lw, joint="curve")


@functools.lru_cache(maxsize=32)
def _background(style: PageStyle, grid_color: tuple[int, int, int], rhythm_lead: str) -> Image.Image:
  """Everything on a page that does not depend on the signals, cached per style and choice."""
  layout = style.layout
  layout.validate()
  img = Image.new("RGB", layout.page_size, style.page_color)
  _header(img, style)
  page = np.array(img)
  l, t, r, b = layout.panel_box
  panel = page[t:b, l:r]
  panel[:] = style.panel_color
  _draw_grid(panel, layout, grid_color, style.panel_color, style.grid)
  img = Image.fromarray(page)
  d = ImageDraw.Draw(img)
  s = style.scale()
  width = max(1, round(3 * s))
  x0, x1, x2, x3 = layout.cal_x
  height = layout.px_per_mv  # 1 mV.
  label_font = _font("serif", max(6, round(26 * s)))
  rows = [list(leads) for leads in LEAD_GRID] + [[rhythm_lead]]
  for row, leads in enumerate(rows):
    base = layout.baselines[row]
    d.line([(x0, base), (x1, base), (x1, base - height), (x2, base - height), (x2, base),
            (x3, base)], fill=TRACE_BLACK, width=width + 1, joint="curve")
    for col, lead in enumerate(leads):
      x, y = layout.column_x(col) + layout.label_offset[0], base + layout.label_offset[1]
      d.text((x, y), lead, font=label_font, fill=TRACE_BLACK, anchor="ls")
  for x, top, bottom in layout.separators():
    d.line([(x, top), (x, bottom)], fill=TRACE_BLACK, width=width)
  return img


def prepare(style: PageStyle | None = None) -> None:
  """Pre-renders every static background `render` can draw for `style` (a few per style).

  Optional: `render` builds them on first use; benchmarks call this so they time steady state.
  """
  style = style or DEFAULT_STYLE
  for color in style.grid_colors:
    for lead in style.rhythm_leads:
      _background(style, tuple(int(c) for c in color), lead)


def _trace_points(record: Record, layout: PageLayout, rhythm_lead: str) -> list[np.ndarray]:
  """Polylines (k, 2) in page pixels: one per lead row (its four columns) and the rhythm strip."""
  fs = record.fs
  n_col = int(round(layout.column_s * fs))
  n_total = layout.columns * n_col
  if record.signals.shape[1] < n_total:
    raise ValueError(f"Record has {record.signals.shape[1]} samples at {fs} Hz; the page needs "
                     f"{layout.duration_s} s ({n_total} samples). Simulate with duration_s >= "
                     f"{layout.duration_s}.")
  x = layout.trace_left + np.arange(n_total) / fs * layout.px_per_s
  rows = []
  for row, leads in enumerate(LEAD_GRID):
    y = np.concatenate([record.lead(lead)[c * n_col:(c + 1) * n_col] for c, lead in enumerate(leads)])
    rows.append(np.stack([x, layout.baselines[row] - y * layout.px_per_mv], 1))
  y = record.lead(rhythm_lead)[:n_total]
  rows.append(np.stack([x, layout.baselines[-1] - y * layout.px_per_mv], 1))
  return rows


def render(record: Record, seed: int, *, style: PageStyle | None = None,
           return_geometry: bool = False) -> np.ndarray | tuple[np.ndarray, PageGeometry]:
  """A page showing `record`, as an RGB uint8 array of shape (height, width, 3).

  The page has the real release's layout (`style.layout`); the seed draws the rhythm-strip lead,
  trace width, grid colour, a slight rotation and offset, and the quality of a JPEG round trip that
  leaves real JPEG artefacts. Equal (record, seed, style) give byte-identical pages.

  With `return_geometry=True` also returns a `PageGeometry` whose `panel_box` lies inside the moved
  grid panel, for cropping.
  """
  style = style or DEFAULT_STYLE
  layout = style.layout
  rng = _rng("render", seed)
  rhythm_lead = str(rng.choice(style.rhythm_leads))
  grid_color = tuple(int(c) for c in style.grid_colors[rng.integers(len(style.grid_colors))])
  width = max(1, round(int(rng.choice(style.line_widths)) * style.scale()))
  angle = float(rng.uniform(-1, 1) * style.max_rotation_deg)
  offset = tuple(float(v) for v in rng.uniform(-1, 1, 2) * style.max_offset_px * style.scale())
  quality = int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1))

  # Rotate about the page centre and shift. PIL's affine maps output to input pixels:
  # p_in = A p_out + b. The background (axis-aligned dots and text) takes nearest-neighbour
  # resampling, which is 7x faster than bilinear and invisible at these angles; the traces are drawn
  # afterwards at their moved coordinates, so they stay sharp.
  w, h = layout.page_size
  a = math.radians(angle)
  mat = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
  centre = np.array([w / 2, h / 2])
  shift = centre - mat @ (centre + np.asarray(offset))
  img = _background(style, grid_color, rhythm_lead)
  if angle or any(offset):
    img = img.transform(img.size, Image.Transform.AFFINE, (*mat[0], shift[0], *mat[1], shift[1]),
                        resample=Image.Resampling.NEAREST, fillcolor=style.page_color)
  else:
    img = img.copy()
  inverse = np.linalg.inv(mat)
  draw = ImageDraw.Draw(img)
  for points in _trace_points(record, layout, rhythm_lead):
    moved = (points - shift) @ inverse.T
    # No joint="curve": PIL draws those in Python, and at 0.4 px per sample there are no gaps.
    draw.line(moved.ravel().tolist(), fill=TRACE_BLACK, width=width)
  buffer = io.BytesIO()
  img.save(buffer, format="JPEG", quality=quality)
  page = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))  # RGB in, RGB out.
  if not return_geometry:
    return page
  return page, PageGeometry(
      panel_box=_moved_panel_box(layout, mat, shift), rotation_deg=angle, offset_px=offset,
      rhythm_lead=rhythm_lead, line_width=width, jpeg_quality=quality)


def _moved_panel_box(layout: PageLayout, mat: np.ndarray, shift: np.ndarray
                     ) -> tuple[int, int, int, int]:
  """Largest upright integer box inside the panel after the page's move (p_in = mat p_out + shift)."""
  w, h = layout.page_size
  l, t, r, b = layout.panel_box
  corners = np.array([(l, t), (r, t), (r, b), (l, b)], np.float64)
  moved = (corners - shift) @ np.linalg.inv(mat).T
  left = math.ceil(max(moved[0, 0], moved[3, 0]))
  top = math.ceil(max(moved[0, 1], moved[1, 1]))
  right = math.floor(min(moved[1, 0], moved[2, 0]))
  bottom = math.floor(min(moved[2, 1], moved[3, 1]))
  return (max(left, 0), max(top, 0), min(right, w), min(bottom, h))


def encode_jpeg(image: np.ndarray, quality: int = 92) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
  return buffer.getvalue()


def panel_jpeg(label: int | str, seed: int, width: int, height: int,
               style: PageStyle | None = None, quality: int = 92) -> bytes:
  """Simulates, renders and crops the grid panel, resized to (width, height), as JPEG bytes.

  The builder's unit of work; a top-level function so worker processes can run it.
  """
  return panel_example(label, seed, width, height, style, quality)[0]


def panel_example(label: int | str, seed: int, width: int, height: int,
                  style: PageStyle | None = None, quality: int = 92
                  ) -> tuple[bytes, Record, PageGeometry]:
  """`panel_jpeg`'s bytes with the record and page geometry behind them (for saliency checks,
  which need the page's MI territory and rhythm-strip lead)."""
  record = simulate(label, seed)
  page, geometry = render(record, seed, style=style, return_geometry=True)
  panel = Image.fromarray(page).crop(geometry.panel_box)
  if panel.size != (width, height):
    panel = panel.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)
  return encode_jpeg(np.asarray(panel), quality), record, geometry


def page_seed(base_seed: int | str, label: int | str, index: int) -> int:
  """The seed of page `index` of class `label` in a set drawn with `base_seed`."""
  words = _rng("page", base_seed, class_index(label), index).integers(0, 2**31 - 1)
  return int(words)


# ---------------------------------------------------------------------------------------------
# Command line: pages in the real release's folder layout.
# ---------------------------------------------------------------------------------------------


def _write_page(job: tuple[str, int, int, str]) -> str:
  label, seed, number, out = job
  path = os.path.join(out, RELEASE_FOLDERS[label], f"{RELEASE_PREFIXES[label]}({number}).jpg")
  Image.fromarray(render(simulate(label, seed), seed)).save(path, format="JPEG", quality=92)
  return path


def write_release(out: str, per_class: int, seed: int, workers: int | None = None) -> list[str]:
  """Writes `per_class` pages of every class under `out`, named and foldered as the real release."""
  jobs = []
  for label in CLASS_NAMES:
    os.makedirs(os.path.join(out, RELEASE_FOLDERS[label]), exist_ok=True)
    jobs += [(label, page_seed(seed, label, i), i + 1, out) for i in range(per_class)]
  workers = workers or os.cpu_count() or 1
  if workers == 1:
    return [_write_page(job) for job in jobs]
  with multiprocessing.get_context("spawn").Pool(workers) as pool:
    return pool.map(_write_page, jobs, chunksize=max(1, len(jobs) // (4 * workers)))


def _define_flags() -> None:
  """`python -m ecgjax.data.synth`: writes synthetic ECG pages as JPEGs in the real release's folder
  layout. Defined only when run as a command, so importing this module defines no global flags."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string("out", None, "Output directory (created).", required=True)
  flags.DEFINE_integer("per_class", None, "Pages per class.", lower_bound=1, required=True)
  flags.DEFINE_integer("seed", 0, "Base seed; equal seeds, equal pages.")
  flags.DEFINE_integer("workers", None, "Processes (default: all cores).")


def main(argv: Sequence[str]) -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  paths = write_release(f.out, f.per_class, f.seed, f.workers)
  print(f"Wrote {len(paths)} pages under {f.out}.", file=sys.stderr)


def run() -> None:
  from absl import app  # pylint: disable=g-import-not-at-top
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
