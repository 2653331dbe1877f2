"""Tests of the synthetic ECG simulator, the page renderer and the page layout.

Each class's defining feature is measured on the signals (R peaks found from the signals, ST level at
J+60 ms against the PR segment, Q depth, RR irregularity), and the page's geometry is measured on
the rendered pixels.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from scipy import signal as sp_signal

from ecgjax.classes import CLASS_NAMES
from ecgjax.data import layout as layout_lib
from ecgjax.data import synth

from sample_data import SAMPLE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STILL = synth.PageStyle(max_rotation_deg=0.0, max_offset_px=0.0)  # Pixel positions are exact.


def r_peaks(record: synth.Record) -> np.ndarray:
  """R-peak sample indices found from the signals (slope energy over all leads)."""
  fs = record.fs
  # Squared slopes: QRS complexes are far steeper than P and T waves, even hyperacute T waves.
  slope = (np.diff(record.signals, axis=1) ** 2).sum(0)
  energy = np.convolve(slope, np.ones(int(0.04 * fs)) / (0.04 * fs), mode="same")
  peaks, _ = sp_signal.find_peaks(energy, height=0.3 * np.percentile(energy, 99.5),
                                  distance=int(0.3 * fs))
  # Refine to the largest absolute deflection of the lead-summed magnitude near each peak.
  mag = np.abs(record.signals).sum(0)
  w = int(0.04 * fs)
  return np.array([p - w + np.argmax(mag[max(p - w, 0):p + w]) for p in peaks if p >= w])


def st_and_q(record: synth.Record, lead: str) -> tuple[float, float]:
  """Median over beats of (ST at J+60 ms, deepest Q) in mV, relative to the PR segment.

  J is taken 40 ms after the R peak (QRS about 80-110 ms), so J+60 ms is R+100 ms.
  """
  fs, x = record.fs, record.lead(lead)
  st, q = [], []
  for r in r_peaks(record):
    if r - int(0.08 * fs) < 0 or r + int(0.12 * fs) >= len(x):
      continue
    base = np.median(x[r - int(0.065 * fs):r - int(0.055 * fs)])
    st.append(np.median(x[r + int(0.095 * fs):r + int(0.105 * fs)]) - base)
    q.append(x[r - int(0.05 * fs):r].min() - base)
  return float(np.median(st)), float(np.median(q))


def rr_cv(record: synth.Record) -> float:
  rr = np.diff(r_peaks(record)) / record.fs
  return float(rr.std() / rr.mean())


# ---------------------------------------------------------------------------------------------
# Signals
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", CLASS_NAMES)
def test_record_shape_and_limb_lead_identities(label):
  record = synth.simulate(label, seed=3)
  assert record.signals.shape == (12, 5000) and record.signals.dtype == np.float32
  assert record.leads == layout_lib.LEADS and record.fs == 500 and record.label_name == label
  lead = record.lead
  # Float32 storage of mV-sized values: identities hold to a few ulps.
  tol = dict(atol=2e-6, rtol=0)
  np.testing.assert_allclose(lead("III"), lead("II") - lead("I"), **tol)
  np.testing.assert_allclose(lead("aVR"), -(lead("I") + lead("II")) / 2, **tol)
  np.testing.assert_allclose(lead("aVL"), lead("I") - lead("II") / 2, **tol)
  np.testing.assert_allclose(lead("aVF"), lead("II") - lead("I") / 2, **tol)
  assert 0.3 < np.abs(record.signals).max() < 8.0  # Millivolts, not volts or microvolts.


def test_simulate_options():
  assert synth.simulate(2, 0, duration_s=2.5, fs=250).signals.shape == (12, 625)
  assert synth.simulate("mi", 0).label == CLASS_NAMES.index("mi")
  with pytest.raises(ValueError, match="Unknown class name"):
    synth.simulate("stemi", 0)
  with pytest.raises(ValueError, match="Unknown condition 'afib' for class 'mi'"):
    synth.simulate("mi", 0, condition="afib")


def test_simulate_is_deterministic_and_seeds_differ():
  a, b, c = synth.simulate(0, 11), synth.simulate(0, 11), synth.simulate(0, 12)
  np.testing.assert_array_equal(a.signals, b.signals)
  assert a.params["condition"] == b.params["condition"]
  assert not np.array_equal(a.signals, c.signals)


@pytest.mark.parametrize("territory", ["anterior", "inferior", "lateral"])
def test_acute_mi_raises_st_in_its_territory(territory):
  leads = synth.TERRITORY_LEADS[territory]
  seeds = range(6)
  mi = np.array([[st_and_q(synth.simulate("mi", s, condition=territory), l)[0] for l in leads]
                 for s in seeds])
  normal = np.array([[st_and_q(synth.simulate("normal", s), l)[0] for l in leads] for s in seeds])
  # Elevation in the territory (mean over its leads), clearly above normal early repolarisation.
  assert mi.mean(1).min() > 0.08, (territory, mi.round(2))
  assert mi.mean() > normal.mean() + 0.15, (territory, mi.mean(), normal.mean())
  assert np.abs(normal).mean() < 0.1


def test_acute_mi_has_reciprocal_depression():
  st = [st_and_q(synth.simulate("mi", s, condition="inferior"), "aVL")[0] for s in range(6)]
  assert np.median(st) < -0.05, np.round(st, 2)
  st = [st_and_q(synth.simulate("mi", s, condition="lateral"), "III")[0] for s in range(6)]
  assert np.median(st) < -0.05, np.round(st, 2)


@pytest.mark.parametrize("territory,leads", [("inferior", ("II", "aVF")), ("lateral", ("I", "V6"))])
def test_history_of_mi_has_q_waves_without_acute_st_elevation(territory, leads):
  # Leads whose normal QRS starts upright, so a deep initial deflection is a pathological Q.
  seeds = range(8)
  old = np.array([[st_and_q(synth.simulate("history_of_mi", s, condition=territory), l)
                   for l in leads] for s in seeds])  # (seed, lead, [st, q])
  normal = np.array([[st_and_q(synth.simulate("normal", s), l) for l in leads] for s in seeds])
  st = [st_and_q(synth.simulate("history_of_mi", s, condition=territory), l)[0]
        for s in seeds for l in synth.TERRITORY_LEADS[territory]]
  assert max(st) < 0.1, np.round(st, 2)  # No acute elevation in any territory lead.
  assert old[..., 1].mean() < normal[..., 1].mean() - 0.1, (old[..., 1].round(2),
                                                           normal[..., 1].round(2))


def test_afib_is_irregular_and_sinus_is_not():
  afib = [rr_cv(synth.simulate("abnormal_heartbeat", s, condition="afib")) for s in range(5)]
  sinus = [rr_cv(synth.simulate("normal", s)) for s in range(5)]
  assert min(afib) > 0.1, np.round(afib, 3)
  assert max(sinus) < 0.08, np.round(sinus, 3)


def test_rate_disorders_are_outside_normal_rates():
  def rate(record):
    return 60 / (np.diff(r_peaks(record)).mean() / record.fs)
  assert max(rate(synth.simulate(0, s, condition="brady")) for s in range(3)) < 55
  assert min(rate(synth.simulate(0, s, condition="tachy")) for s in range(3)) > 95
  normal = [rate(synth.simulate("normal", s)) for s in range(5)]
  assert 45 < min(normal) and max(normal) < 105, np.round(normal)


def test_pvc_beats_are_wide():
  for s in range(3):
    record = synth.simulate(0, s, condition="pvc")
    assert "pvc" in record.params["beat_kinds"]
    # The widest deflection of a PVC lasts longer than any sinus QRS: count samples above half
    # of the beat's peak of the summed magnitude.
    mag = np.abs(record.signals - np.median(record.signals, 1, keepdims=True)).sum(0)
    widths = {}
    for kind, t in zip(record.params["beat_kinds"], record.params["beat_times_s"]):
      i = int(t * record.fs)
      seg = mag[max(i - 50, 0):i + 60]
      widths.setdefault(kind, []).append((seg > seg.max() / 2).sum() / record.fs)
    assert min(widths["pvc"]) > 1.5 * np.median(widths["sinus"]), widths


# ---------------------------------------------------------------------------------------------
# Pages
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def still_page():
  return synth.render(synth.simulate("normal", 5), seed=5, style=STILL)


def test_render_is_byte_identical_per_seed():
  record = synth.simulate("mi", 2)
  a, geometry = synth.render(record, 9, return_geometry=True)
  b = synth.render(record, 9)
  c = synth.render(record, 10)
  assert a.shape == (1572, 2213, 3) and a.dtype == np.uint8
  assert a.tobytes() == b.tobytes()
  assert a.tobytes() != c.tobytes()
  assert 60 <= geometry.jpeg_quality <= 95 and abs(geometry.rotation_deg) <= 0.25


def _panel_edges(page: np.ndarray) -> tuple[int, int, int, int]:
  """(left, top, right, bottom) of the white panel on the pink page, measured from pixels."""
  white = (page.astype(int).min(-1) > 200)
  rows = np.flatnonzero(white.mean(1) > 0.5)
  cols = np.flatnonzero(white.mean(0) > 0.5)
  return cols[0], rows[0], cols[-1] + 1, rows[-1] + 1


def test_panel_position(still_page):
  edges = np.array(_panel_edges(still_page))
  np.testing.assert_allclose(edges, layout_lib.REAL_LAYOUT.panel_box, atol=1)
  # Page colour outside the panel is the release's pink.
  np.testing.assert_allclose(still_page[1550, 1000], synth.PAGE_PINK, atol=8)


def test_moved_panel_box_lies_inside_the_panel():
  for seed in range(3):
    page, geometry = synth.render(synth.simulate(3, seed), seed, return_geometry=True)
    l, t, r, b = geometry.panel_box
    assert r - l > 2080 and b - t > 1200, geometry
    crop = page[t:b, l:r].astype(int)
    pink = np.abs(crop - np.array(synth.PAGE_PINK)).sum(-1) < 40
    assert pink.sum() == 0, (geometry, np.argwhere(pink)[:5])


def _period(profile: np.ndarray, lo: int, hi: int) -> int:
  p = profile - profile.mean()
  ac = np.correlate(p, p, mode="full")[len(p) - 1:]
  return lo + int(np.argmax(ac[lo:hi]))


def _grid_periods(page: np.ndarray, box) -> tuple[int, int]:
  """Horizontal 1 mm and 5 mm grid periods (px) by autocorrelation of a trace-free band."""
  l, t, r, b = box
  band = 255.0 - page[t + 5:t + 60, l + 5:r - 5].astype(float).mean(-1)  # Above the first row.
  profile = band.sum(0)
  return _period(profile, 5, 12), _period(profile, 30, 50)


def test_grid_spacing_matches_the_real_release(still_page):
  layout = layout_lib.REAL_LAYOUT
  minor, major = _grid_periods(still_page, layout.panel_box)
  assert abs(minor - layout.px_per_mm) <= 1, minor
  assert abs(major - 5 * layout.px_per_mm) <= 1, major


def test_calibration_pulse_is_one_millivolt(still_page):
  layout = layout_lib.REAL_LAYOUT
  x = int(np.mean(layout.cal_x[1:3]))  # Across the top of the first pulse.
  base = layout.baselines[0]
  column = still_page[int(base - 120):int(base + 10), x].astype(int).min(-1)
  dark = np.flatnonzero(column < 50) + int(base - 120)  # Ink, not grid dots (about 90-135).
  top = dark.min()
  assert abs((base - top) - layout.px_per_mv) <= 3, (base, top)


@pytest.mark.parametrize("path_glob", ["Normal*/Normal(1).jpg", "*History*/PMI(1).jpg"])
def test_layout_matches_real_pages(path_glob):
  paths = sorted(SAMPLE_DIR.glob(path_glob))
  assert paths, f"No {path_glob} under {SAMPLE_DIR}"
  page = np.asarray(Image.open(paths[0]).convert("RGB"))
  layout = layout_lib.REAL_LAYOUT
  np.testing.assert_allclose(_panel_edges(page), layout.panel_box, atol=2)
  minor, major = _grid_periods(page, layout.panel_box)
  assert abs(major - 5 * layout.px_per_mm) <= 1, major
  # Column separators: long dark vertical lines, where the layout puts them.
  dark = page.astype(int).min(-1) < 90
  for x, top, bottom in layout.separators():
    xi = int(round(x))
    assert dark[int(top) + 5:int(bottom) - 5, xi - 2:xi + 3].any(1).mean() > 0.97, x


def test_lead_boxes_tile_the_panel(still_page):
  boxes = layout_lib.lead_boxes()
  assert set(boxes) == set(layout_lib.LEADS) | {layout_lib.RHYTHM}
  for name, (x0, y0, x1, y1) in boxes.items():
    assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, name
  # Lead boxes of one row are adjacent; each holds ink of its trace on a rendered page.
  assert boxes["I"][2] == pytest.approx(boxes["aVR"][0])
  assert boxes["I"][3] == pytest.approx(boxes["II"][1])
  l, t, r, b = layout_lib.REAL_LAYOUT.panel_box
  panel = still_page[t:b, l:r].astype(int).min(-1)
  h, w = panel.shape
  for name, (x0, y0, x1, y1) in boxes.items():
    ink = panel[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)] < 60
    assert ink.any(0).mean() > 0.9, name  # The trace runs across the whole box.


def test_scaled_layout_keeps_fractions():
  half = layout_lib.REAL_LAYOUT.scaled(0.5)
  assert half.page_size == (1106, 786)
  a, b = layout_lib.lead_boxes(), layout_lib.lead_boxes(half)
  for name in a:
    np.testing.assert_allclose(a[name], b[name], atol=2e-3)


def test_render_other_page_size():
  style = synth.PageStyle(layout=layout_lib.REAL_LAYOUT.scaled(0.5), grid="lines")
  page = synth.render(synth.simulate(1, 0), 0, style=style)
  assert page.shape == (786, 1106, 3)


def test_render_rejects_short_records():
  with pytest.raises(ValueError, match="needs 10.0 s"):
    synth.render(synth.simulate(0, 0, duration_s=5.0), 0)


def test_cli_writes_release_layout(tmp_path):
  subprocess.run([sys.executable, "-m", "ecgjax.data.synth", f"--out={tmp_path}", "--per_class=1",
                  "--seed=4", "--workers=1"], check=True, cwd=REPO, capture_output=True)
  files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jpg"))
  assert files == sorted(f"{synth.RELEASE_FOLDERS[c]}/{synth.RELEASE_PREFIXES[c]}(1).jpg"
                         for c in CLASS_NAMES)
  with Image.open(tmp_path / files[0]) as image:
    assert image.size == (2213, 1572) and image.format == "JPEG"
