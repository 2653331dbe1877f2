"""Saliency of the signal models: attribution lands on the leads the logits read, each lead's trace is
drawn inside its own box of the page, and the command explains a signal run's pages."""

import functools
import json
import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from configs import signals as signals_config
from ecgjax import digitize
from ecgjax.classes import CLASS_NAMES
from ecgjax import models
from ecgjax import saliency
from ecgjax.data import digitized
from ecgjax.data import layout
from ecgjax.data import synth
from ecgjax.saliency import signals as sal_signals
from sample_data import SAMPLE_DIR

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MI_PAGE = os.path.join(str(SAMPLE_DIR), "ECG Images of Myocardial Infarction Patients (240x12=2880)",
                       "MI(1).jpg")
CHANNELS = (*layout.LEADS, layout.RHYTHM)


class ReadsChannels(nn.Module):
  """Four logits computed from the chosen input channels alone (a convolution, tanh, pooling)."""
  channels: tuple[int, ...]

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, (7,), padding="SAME", name="conv")(x[..., list(self.channels)])
    return nn.Dense(4, name="logits")(jnp.tanh(x).mean(axis=1))


def _views():
  """Two page views of simulated records: (2, 1250, 13), each lead 0 outside its window."""
  return jnp.asarray(np.stack([digitized.simulated_view("mi", 3), digitized.simulated_view(1, 8)]))


@pytest.mark.parametrize("read, method", [
    *((("V2", "V3"), m) for m in sal_signals.SIGNAL_METHODS),
    ((layout.RHYTHM,), "integrated_gradients"),
])
def test_attribution_lands_on_the_leads_the_logits_read(read, method):
  x = _views()
  model = ReadsChannels(tuple(CHANNELS.index(c) for c in read))
  logit_fn = functools.partial(model.apply, model.init(jax.random.key(0), x))
  attr = np.asarray(saliency.attribute(method, logit_fn, x, key=jax.random.key(1), num_samples=8,
                                       steps=32, baseline=sal_signals.BASELINE))
  assert attr.shape == x.shape
  for a in attr:
    leads = sal_signals.per_lead_signals(a)
    assert set(leads["share"]) == set(CHANNELS)
    assert sum(leads["share"].values()) + leads["other"] == pytest.approx(1.0)
    assert sum(leads["share"][c] for c in read) > 0.99 * (1.0 - leads["other"])
    assert leads["share"][read[0]] > 0.05
    assert set(leads["ranking"][:len(read)]) == set(read)
    if method == "integrated_gradients":
      # From flat leads, samples outside a lead's window (0 in every input) get nothing, and the
      # signed sums over the read leads add up to the logit's change.
      assert leads["other"] == pytest.approx(0.0, abs=1e-6)
  if method == "integrated_gradients":
    total, gap = saliency.completeness(logit_fn, x, jnp.asarray(attr), None, sal_signals.BASELINE)
    np.testing.assert_allclose(total, gap, rtol=0.02, atol=1e-3)


def test_grad_cam_is_refused_for_signals():
  x = _views()
  model = ReadsChannels((0,))
  logit_fn = functools.partial(model.apply, model.init(jax.random.key(0), x))
  with pytest.raises(ValueError, match=r"\(B, H, W, C\)"):
    saliency.grad_cam(logit_fn, x)
  with pytest.raises(ValueError, match="signal model"):
    sal_signals.explain_signal_pages(logit_fn, [None], "/nonexistent", method="grad_cam")


@pytest.fixture(scope="module")
def synthetic_page():
  record = synth.simulate("mi", 5)
  page = synth.render(record, 5)
  return page, digitize.digitize(page)


def test_each_trace_is_drawn_on_its_own_lead_of_the_page(synthetic_page):
  page, d = synthetic_page
  values = np.tile(np.arange(len(CHANNELS), dtype=np.float64), (1250, 1))  # Channel k's value: k.
  drawn = sal_signals.trace_segments(d, values)
  boxes = layout.lead_boxes_px(d.layout)
  grey = page.astype(np.float32).mean(-1)
  # The darkest pixel within 1 px of a point: the trace's ink where the point lies on it.
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  darkest = ndimage.minimum_filter(grey, size=3)
  mm = d.layout.px_per_mm
  assert set(drawn) == set(CHANNELS)
  for k, channel in enumerate(CHANNELS):
    xy, v = drawn[channel]
    assert np.all(v == k), channel  # Each point carries its own channel's value.
    # (Nearly) all of the lead's 2.5 s (the strip's 10 s) at 500 Hz, inside the lead's box.
    assert len(xy) > 0.9 * (5000 if channel == layout.RHYTHM else 1250), channel
    left, top, right, bottom = boxes[channel]
    assert np.all((xy[:, 0] > left - mm) & (xy[:, 0] < right + mm)), channel
    assert np.all((xy[:, 1] > top) & (xy[:, 1] < bottom)), channel
    assert np.ptp(xy[:, 0]) > 0.95 * (right - left), channel
    # On the trace: the page is dark under the points, most of all away from the baseline (the
    # waves), which a point misplaced in time would miss.
    x, y = np.rint(xy).astype(int).T
    on_ink = darkest[y, x] < digitize.EDGE_LEVEL
    mv = d.rhythm if channel == layout.RHYTHM else d.lead(channel)
    waves = np.abs(mv[np.isfinite(mv)] - np.nanmedian(mv)) > 0.3
    assert on_ink.mean() > 0.95, (channel, on_ink.mean())
    if waves.sum() > 20:
      assert on_ink[waves].mean() > 0.9, (channel, on_ink[waves].mean())


def test_overlay_is_drawn_and_explains_the_leads_read(synthetic_page, tmp_path):
  page, d = synthetic_page
  view = digitized.page_view(d.signals, d.rhythm)
  signal_page = sal_signals.SignalPage(name="synthetic mi", signals=view, digitized=d, rgb=page,
                                       label=2, source="synth:mi:5")
  model = ReadsChannels((CHANNELS.index("V2"), CHANNELS.index("V3")))
  logit_fn = functools.partial(model.apply, model.init(jax.random.key(0), view[None]))
  out = sal_signals.explain_signal_pages(logit_fn, [signal_page], str(tmp_path), steps=16,
                                         contrast_steps=8, pages_per_call=2)
  with open(out["json"]) as f:
    record, = json.load(f)["pages"]
  assert set(record["top_leads"][:2]) == {"V2", "V3"}
  assert record["true_class"] == "mi" and record["explained_class"] == record["predicted_class"]
  assert record["completeness"]["attribution_sum"] == pytest.approx(
      record["completeness"]["logit_difference"], rel=0.02, abs=1e-3)
  contrast = record["contrast"]
  assert set(k for k, v in contrast["lead_contribution"].items() if v != 0) <= {"V2", "V3"}
  for path in out["pages"][0].values():
    with Image.open(path) as image:
      assert image.size[0] > 500


@pytest.fixture(scope="module")
def signal_run_dir(tmp_path_factory, run_writer):
  """An untrained signal run (configs/signals.py:smoke, one checkpoint), as conftest's
  `smoke_run_dir` is for the image smoke model."""
  config = signals_config.get_config("smoke")
  model = models.create_model(config.model)
  shape = (1, digitized.NUM_SAMPLES * config.data.signal_hz // digitized.FS, digitized.CHANNELS)
  # Random weights of the right shapes: compiling `model.init` would take seconds, and the command
  # compiles the model anyway. BatchNorm keeps unit scale and statistics.
  rng = np.random.default_rng(0)
  unit = {"scale": 1.0, "var": 1.0, "mean": 0.0, "bias": 0.0}
  variables = jax.tree_util.tree_map_with_path(
      lambda path, s: np.full(s.shape, unit[path[-1].key], s.dtype) if path[-1].key in unit
      else (rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(s.dtype),
      jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(shape)))
  return run_writer(str(tmp_path_factory.mktemp("signal_run")), config, variables)


def test_command_explains_a_signal_run_and_names_bad_files(signal_run_dir, tmp_path):
  not_an_image = tmp_path / "notes.jpg"
  not_an_image.write_text("this is not a JPEG")
  out = str(tmp_path / "maps")
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  result = subprocess.run(
      [sys.executable, "-m", "ecgjax.saliency", f"--workdir={signal_run_dir}", f"--out={out}",
       "--steps=4", "--contrast_steps=0", "--images=no_such_page.jpg", f"--images={MI_PAGE}",
       str(not_an_image)], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 1, result.stderr[-3000:]
  errors = [l for l in result.stderr.splitlines() if l.startswith("error:")]
  assert len(errors) == 2 and "no_such_page.jpg" in errors[0] and "notes.jpg" in errors[1]
  # Integrated Gradients is the default for a signal run (Grad-CAM is the image runs').
  with open(os.path.join(out, "saliency_integrated_gradients.json")) as f:
    written = json.load(f)
  assert written["input"] == "signals"
  page, = written["pages"]
  assert page["true_class"] == "mi" and page["source"] == MI_PAGE
  assert sum(page["probabilities"].values()) == pytest.approx(1.0)
  assert page["predicted_class"] == max(page["probabilities"], key=page["probabilities"].get)
  assert set(page["lead_share"]) == set(CHANNELS)
  assert sum(page["lead_share"].values()) + page["other_share"] == pytest.approx(1.0)
  assert len(page["top_leads"]) == 3 and set(page["top_leads"]) <= set(CHANNELS)
  assert min(page["digitization_quality"].values()) > 0.5  # The real page was read.
  assert page["completeness"]["attribution_sum"] == pytest.approx(
      page["completeness"]["logit_difference"], rel=0.05, abs=0.01)
  assert "contrast" not in page  # --contrast_steps=0 (the contrast is tested in-process above).
  for key in ("overlay", "lead_chart"):
    with Image.open(page[key]) as image:
      assert image.size[0] > 500


def test_a_signal_run_writes_maps_of_its_first_test_pages(tfds_data_dir, tmp_path):
  """Training ends with maps as for a page model: the pages behind the first test examples (here
  synthetic pages rendered again from their seeds), explained on their digitized traces."""
  from ecgjax import train  # pylint: disable=g-import-not-at-top
  config = signals_config.get_config("smoke")
  config.dataset.name = "ecg_synth"
  config.dataset.data_dir = tfds_data_dir
  config.train.num_epochs = 1
  report = train.train_and_evaluate(config, str(tmp_path / "run"))
  maps = report["outputs"]["saliency"]
  with open(maps["json"]) as f:
    written = json.load(f)
  assert written["method"] == "integrated_gradients" and written["input"] == "signals"
  assert len(written["pages"]) == config.saliency.num_pages == len(maps["pages"])
  for record in written["pages"]:
    assert record["source"].startswith("synth:") and len(record["top_leads"]) == 3
    assert record["true_class"] in CLASS_NAMES
  for paths in maps["pages"]:
    assert all(os.path.getsize(p) > 10_000 for p in paths.values())
