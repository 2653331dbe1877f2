"""Tests of the ECG digitizer: against the truth on small synthetic pages, by Einthoven's law on
real sample pages, and that these checks catch a digitizer that swaps leads or misplaces a
baseline."""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ecgjax import digitize
from ecgjax.data import synth
from ecgjax.data.layout import LEAD_GRID, LEADS, REAL_LAYOUT

from sample_data import SAMPLE_DIR

WIDTH = 1280  # The dev set's width: fast, and the resolution the digitizer must read.
# One page per class (seeds chosen once, not tuned), rendered at WIDTH.
SYNTH_PAGES = [("normal", 11), ("abnormal_heartbeat", 12), ("mi", 13), ("history_of_mi", 14)]
# Real pages of the sample, one per class folder.
REAL_PAGES = ["ECG Images of Patient that have abnormal heartbeat (233x12=2796)/HB(3).jpg",
              "ECG Images of Myocardial Infarction Patients (240x12=2880)/MI(4).jpg",
              "Normal Person ECG Images (284x12=3408)/Normal(2).jpg"]


@functools.lru_cache(maxsize=None)
def _synthetic(label: str, seed: int, width: int = WIDTH):
  style = synth.PageStyle(layout=REAL_LAYOUT.scaled(width / REAL_LAYOUT.page_size[0]))
  record = synth.simulate(label, seed)
  page, geometry = synth.render(record, seed, style=style, return_geometry=True)
  return record, page, geometry, digitize.digitize(page)


@functools.lru_cache(maxsize=None)
def _real(name: str) -> digitize.Digitized:
  return digitize.digitize(SAMPLE_DIR / name)


def synthetic_failures(d: digitize.Digitized, record: synth.Record) -> list[str]:
  """What is wrong with a digitization of a synthetic page, judged against its record."""
  mask = digitize.shown_mask(d.signals.shape[1])
  truth = np.where(mask, record.signals, np.nan)
  out = []
  snr = np.array([digitize.snr_db(truth[i], d.signals[i]) for i in range(len(LEADS))])
  r = np.array([digitize.pearson_r(truth[i], d.signals[i]) for i in range(len(LEADS))])
  if np.median(snr) < 7.0:
    out.append(f"median SNR {np.median(snr):.1f} dB < 7")
  if r.min() < 0.75:
    out.append(f"lead {LEADS[int(np.argmin(r))]} has r {r.min():.2f} < 0.75")
  if d.quality.min() < 0.9:
    out.append(f"lead {LEADS[int(np.argmin(d.quality))]} read on {d.quality.min():.0%} of columns")
  # Not mean-removed: the pulse's foot is 0 mV, so a misplaced baseline shows here.
  offsets = np.array([np.nanmedian(d.signals[i] - truth[i]) for i in range(len(LEADS))])
  if np.abs(offsets).max() > 0.06:
    out.append(f"lead {LEADS[int(np.argmax(np.abs(offsets)))]} is off by "
               f"{offsets[np.argmax(np.abs(offsets))]:+.2f} mV")
  # The gain: the least-squares slope of the reading on the truth where the truth changes slowly
  # (QRS complexes, which a pixel grid blurs and shifts, left out), median over leads.
  slopes = []
  for i in range(len(LEADS)):
    x, y = truth[i][mask[i]], d.signals[i][mask[i]]
    steep = np.abs(np.gradient(x))
    ok = steep <= np.median(steep)
    x, y = x[ok] - x[ok].mean(), y[ok] - y[ok].mean()
    slopes.append(float((x * y).sum() / (x * x).sum()))
  if not 0.9 < np.median(slopes) < 1.12:
    out.append(f"median gain {np.median(slopes):.2f} outside (0.9, 1.12)")
  return out


def real_failures(d: digitize.Digitized) -> list[str]:
  """What is wrong with a digitization of a real page, judged by Einthoven's law and baselines."""
  out = []
  limb, aug = digitize.einthoven_residuals(d)
  if not limb <= 0.08:
    out.append(f"III - (II - I) residual {limb:.3f} > 0.08")
  if not aug <= 0.1:
    out.append(f"aVR + aVL + aVF residual {aug:.3f} > 0.1")
  if d.quality.min() < 0.95:
    out.append(f"lead {LEADS[int(np.argmin(d.quality))]} read on {d.quality.min():.0%} of columns")
  # A resting ECG spends most of its time near 0 mV (the pulse's foot).
  medians = np.nanmedian(d.signals, axis=1)
  if np.abs(medians).max() > 0.2:
    out.append(f"lead {LEADS[int(np.argmax(np.abs(medians)))]} has median "
               f"{medians[np.argmax(np.abs(medians))]:+.2f} mV")
  return out


def _swapped(d: digitize.Digitized, a: str, b: str) -> digitize.Digitized:
  signals = d.signals.copy()
  signals[[LEADS.index(a), LEADS.index(b)]] = signals[[LEADS.index(b), LEADS.index(a)]]
  return dataclasses.replace(d, signals=signals)


def _row_shifted(d: digitize.Digitized, row: int, mv: float) -> digitize.Digitized:
  signals = d.signals.copy()
  for lead in LEAD_GRID[row]:
    signals[LEADS.index(lead)] += mv
  return dataclasses.replace(d, signals=signals)


@pytest.mark.parametrize("label,seed", SYNTH_PAGES)
def test_reads_synthetic_pages(label, seed):
  record, _, _, d = _synthetic(label, seed)
  assert d.signals.shape == (12, 5000) and d.signals.dtype == np.float32 and d.fs == 500
  assert d.leads == LEADS
  mask = digitize.shown_mask()
  assert np.isnan(d.signals[~mask]).all() and not np.isnan(d.signals[mask]).any()
  assert synthetic_failures(d, record) == []


def test_reads_the_rhythm_strip_and_names_its_lead():
  record, _, geometry, d = _synthetic(*SYNTH_PAGES[0])
  assert d.rhythm.shape == (5000,) and d.rhythm_quality > 0.95
  assert digitize.snr_db(record.lead(geometry.rhythm_lead), d.rhythm) > 7.0
  assert d.rhythm_lead()[0] == geometry.rhythm_lead


def test_measures_offset_rotation_and_scale():
  _, _, geometry, d = _synthetic(*SYNTH_PAGES[1])
  s = WIDTH / REAL_LAYOUT.page_size[0]
  assert abs(d.fit.x_shift - geometry.offset_px[0]) < 0.6
  # The renderer's angle maps output to input pixels: the page turns the other way.
  assert abs(np.rad2deg(d.fit.rotation) + geometry.rotation_deg) < 0.08
  assert d.fit.px_per_mv == pytest.approx(REAL_LAYOUT.px_per_mv * s, rel=0.03)
  assert all(d.fit.found)
  expected = np.array(REAL_LAYOUT.baselines) * s + geometry.offset_px[1]
  assert np.abs(np.array(d.fit.baselines) - expected).max() < 3.0  # Rotation moves them too.


def test_full_resolution_page():
  record, _, _, d = _synthetic("mi", 21, width=REAL_LAYOUT.page_size[0])
  assert synthetic_failures(d, record) == []


@pytest.mark.parametrize("name", REAL_PAGES)
def test_real_pages_obey_einthoven(name):
  d = _real(name)
  assert d.signals.shape == (12, 5000)
  assert real_failures(d) == []
  lead, r = d.rhythm_lead()
  assert lead in ("II", "III") and r > 0.95


def test_checks_catch_a_broken_digitizer():
  record, _, _, d = _synthetic(*SYNTH_PAGES[0])
  # Leads of one column that differ (r 0.36 here; V2 and V3 of this record have r 0.92, which a
  # good enough reading no longer tells apart).
  assert synthetic_failures(_swapped(d, "V4", "V6"), record)
  assert synthetic_failures(_row_shifted(d, 1, 0.1), record)
  assert synthetic_failures(dataclasses.replace(d, signals=d.signals * 1.25), record)
  real = _real(REAL_PAGES[0])
  assert real_failures(_swapped(real, "I", "II"))
  assert real_failures(_swapped(real, "aVF", "V3"))
  assert real_failures(_row_shifted(real, 2, 0.3))


def test_metrics():
  rng = np.random.default_rng(0)
  x = rng.normal(size=1000)
  assert digitize.snr_db(x, x) == float("inf")
  assert digitize.snr_db(x, x + 0.1 * rng.normal(size=1000)) == pytest.approx(20.0, abs=0.5)
  assert digitize.snr_db(x, x + 5.0) > 100  # Means are removed.
  assert digitize.pearson_r(x, 2 * x + 1) == pytest.approx(1.0)
  y = np.where(np.arange(1000) < 500, x, np.nan)
  assert digitize.pearson_r(y, x) == pytest.approx(1.0)
  record = synth.simulate("normal", 3)
  mask = digitize.shown_mask()
  exact = dataclasses.replace(_synthetic(*SYNTH_PAGES[0])[3],
                              signals=np.where(mask, record.signals, np.nan).astype(np.float32))
  limb, aug = digitize.einthoven_residuals(exact)
  assert limb < 1e-6 and aug < 1e-6


def test_command_line_writes_csv_and_plot(tmp_path):
  _, page, _, _ = _synthetic(*SYNTH_PAGES[2])
  path = tmp_path / "page.png"
  Image.fromarray(page).save(path)
  command = [sys.executable, "-m", "ecgjax.digitize", str(path), "--out", str(tmp_path / "out")]
  subprocess.run(command, check=True, cwd=pathlib.Path(__file__).resolve().parents[1],
                 capture_output=True)
  rows = (tmp_path / "out" / "page.csv").read_text().splitlines()
  assert rows[0].split(",") == ["time_s", *LEADS, "rhythm"]
  assert len(rows) == 5001
  first = rows[1].split(",")
  assert first[1] != "" and first[4] == ""  # I is shown at t = 0, aVR is not.
  assert (tmp_path / "out" / "page.png").stat().st_size > 10_000


def test_command_line_writes_wfdb_records_that_read_back(tmp_path):
  import wfdb  # pylint: disable=g-import-not-at-top
  _, page, _, d = _synthetic(*SYNTH_PAGES[2])
  path = tmp_path / "MI(1).png"  # Not a WFDB record name: written as MI_1_.
  Image.fromarray(page).save(path)
  command = [sys.executable, "-m", "ecgjax.digitize", str(path), "--out", str(tmp_path / "out"),
             "--noplot", "--wfdb"]
  subprocess.run(command, check=True, cwd=pathlib.Path(__file__).resolve().parents[1],
                 capture_output=True)
  record = wfdb.rdrecord(str(tmp_path / "out" / "MI_1_"))
  assert record.fs == 500 and record.sig_name == [*LEADS, "rhythm"] and record.units[0] == "mV"
  written = np.concatenate([d.signals, d.rhythm[None]], 0).T
  # NaN outside each lead's window (and where unread) comes back as NaN; the rest to 1 uV.
  np.testing.assert_array_equal(np.isnan(record.p_signal), np.isnan(written))
  np.testing.assert_allclose(record.p_signal, written, atol=6e-4)
  assert "MI(1).png" in record.comments[0]


def test_command_line_names_bad_files_and_reads_the_rest(tmp_path):
  _, page, _, _ = _synthetic(*SYNTH_PAGES[2])
  Image.fromarray(page).save(tmp_path / "page.png")
  (tmp_path / "bad.jpg").write_bytes(b"not an image")
  command = [sys.executable, "-m", "ecgjax.digitize", str(tmp_path / "missing.jpg"),
             str(tmp_path / "bad.jpg"), str(tmp_path / "page.png"), "--out",
             str(tmp_path / "out"), "--noplot"]
  result = subprocess.run(command, cwd=pathlib.Path(__file__).resolve().parents[1],
                          capture_output=True, text=True)
  assert result.returncode == 1
  errors = [l for l in result.stderr.splitlines() if l.startswith("error: ")]
  assert len(errors) == 2 and "missing.jpg" in errors[0] and "bad.jpg" in errors[1]
  assert "Traceback" not in result.stderr
  assert (tmp_path / "out" / "page.csv").exists()


def test_rejects_bad_input(tmp_path):
  with pytest.raises(FileNotFoundError):
    digitize.digitize(tmp_path / "missing.jpg")
  (tmp_path / "bad.jpg").write_bytes(b"not an image")
  with pytest.raises(ValueError, match="bad.jpg"):
    digitize.digitize(tmp_path / "bad.jpg")
  with pytest.raises(ValueError, match="too small"):
    digitize.digitize(np.zeros((50, 80, 3), np.uint8))
  with pytest.raises(ValueError, match="RGB uint8"):
    digitize.digitize(np.zeros((500, 800), np.float32))


def _median_snr(d: digitize.Digitized, record: synth.Record) -> float:
  mask = digitize.shown_mask(d.signals.shape[1])
  truth = np.where(mask, record.signals, np.nan)
  return float(np.median([digitize.snr_db(truth[i], d.signals[i]) for i in range(len(LEADS))]))


@pytest.mark.parametrize("label,seed", [("normal", 11), ("mi", 32)])
def test_full_resolution_snr(label, seed):
  # The traces' time base comes from their own ends (`PageFit.trace_shift`), not only from the
  # pulses and separators, which the renderer places half a pixel differently from its traces.
  # Before that these pages read at 11.1 and 14.2 dB.
  record, _, _, d = _synthetic(label, seed, width=REAL_LAYOUT.page_size[0])
  assert _median_snr(d, record) >= 15.0
  assert abs(d.fit.trace_shift) < 0.3 * d.layout.px_per_mm


@pytest.mark.parametrize("width", [WIDTH, REAL_LAYOUT.page_size[0]])
def test_measures_the_grid_period(width):
  _, _, _, d = _synthetic(*SYNTH_PAGES[1], width=width)
  truth = REAL_LAYOUT.px_per_mm * width / REAL_LAYOUT.page_size[0]  # The renderer's px per mm.
  assert d.fit.grid_px_per_mm == pytest.approx((truth, truth), rel=0.01)
  assert d.fit.grid_strength > 5.0 and d.fit.scale == "width"


def test_real_grid_period_agrees_with_the_width():
  d = _real(REAL_PAGES[0])
  s = REAL_LAYOUT.px_per_mm  # 2213 px wide.
  # The release's grid is 0.9% coarser than its traces' scale; both are about 7.9 px per mm.
  assert d.fit.grid_px_per_mm == pytest.approx((s, s), rel=0.02)
  assert d.fit.grid_strength > 5.0 and d.fit.scale == "width"


def test_page_without_grid_falls_back_to_the_width():
  style = synth.PageStyle(layout=REAL_LAYOUT.scaled(WIDTH / REAL_LAYOUT.page_size[0]),
                          grid_colors=(synth.PANEL_WHITE,))
  record = synth.simulate("normal", 11)
  d = digitize.digitize(synth.render(record, 11, style=style))
  assert d.fit.grid_strength < 5.0 and d.fit.scale == "width"
  assert synthetic_failures(d, record) == []


def test_padded_page_takes_the_grid_scale():
  # 12% of white added on the right: the width's scale is 12% off, the grid's is not.
  record, page, _, _ = _synthetic(*SYNTH_PAGES[0])
  padded = np.concatenate([page, np.full((page.shape[0], int(0.12 * WIDTH), 3), 255, np.uint8)], 1)
  d = digitize.digitize(padded)
  assert d.fit.scale == "grid"
  assert d.fit.grid_px_per_mm[0] == pytest.approx(REAL_LAYOUT.px_per_mm * WIDTH / 2213, rel=0.01)
  assert synthetic_failures(d, record) == []
