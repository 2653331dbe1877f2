"""Average beats (ecgjax/models/beats.py): QRS peaks against the simulator's own beat times, which
beats each lead keeps, where their gradients go, and the ResNet1D views that read them."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.data import digitized
from ecgjax.data import synth
from ecgjax.models import beats
from ecgjax.models.resnet1d import ResNet1D

HZ = 125
T = 1250  # 10 s at 125 Hz.
BEFORE, AFTER = 31, 56  # round(0.25 s * 125), round(0.45 s * 125).


@pytest.mark.parametrize("label", range(4))
def test_qrs_peaks_find_every_simulated_beat(label):
  """One peak per beat the simulator drew (its `beat_times_s`), within 40 ms, none extra: on the
  rhythm strip of the page view, for every class (the abnormal rhythms included)."""
  for seed in range(2):
    record = synth.simulate(label, seed)
    view = digitized.page_view(record.signals[:, :5000], record.lead("II")[:5000], HZ)
    peaks = np.asarray(beats.qrs_peaks(jnp.asarray(view[None, :, 12]), HZ))[0]
    found = peaks[peaks >= 0] / HZ
    truth = record.params["beat_times_s"]
    truth = truth[truth < 10.0]
    assert len(found) == len(truth), (label, seed, found, truth)
    assert np.abs(found - truth).max() < 0.04, (label, seed, found - truth)


def _rr_truth(beat_times_s):
  """`beats.RHYTHM_FEATURES` of the simulator's own beat times inside the strip's 10 s."""
  t = beat_times_s[beat_times_s < 10.0]
  rr = np.diff(t)
  return np.array([np.log(rr.mean()), rr.std() / rr.mean(),
                   np.sqrt(np.mean(np.diff(rr) ** 2)) / rr.mean(),
                   np.abs(rr - rr.mean()).max() / rr.mean(), len(t) / 10])


@pytest.mark.parametrize("label,seed", [(0, 6), (0, 9), (1, 1), (3, 0)])
def test_rhythm_features_measure_the_simulated_rr_intervals(label, seed):
  """Each measure against the same measure of the simulator's beat times (`beat_times_s`), from the
  peaks found on the page view's strip: the rate within 1%, the variation within 0.015 (125 Hz puts
  each peak within 8 ms), every beat counted; atrial fibrillation (seeds 6 and 9 of
  abnormal_heartbeat) measures far above the regular rhythms."""
  record = synth.simulate(label, seed)
  view = digitized.page_view(record.signals[:, :5000], record.lead("II")[:5000], HZ)
  found = np.asarray(beats.rhythm_features(jnp.asarray(view[None])))[0]
  truth = _rr_truth(record.params["beat_times_s"])
  assert found.shape == (len(beats.RHYTHM_FEATURES),)
  np.testing.assert_allclose(found[0], truth[0], atol=0.01)
  np.testing.assert_allclose(found[1:4], truth[1:4], atol=0.015)
  assert round(float(found[4]) * 10) == round(truth[4] * 10)
  afib = record.params["condition"] == "afib"
  assert afib == (label == 0)
  assert (found[1] > 0.1) if afib else (found[1] < 0.05), found


def test_rhythm_features_of_a_page_without_beats_are_zeros():
  x = np.zeros((2, T, 13), np.float32)
  x[1, 50::100, 12] = 5.0  # Twelve beats 0.8 s apart: regular, 75 a minute.
  found = np.asarray(beats.rhythm_features(jnp.asarray(x)))
  assert (found[0] == 0).all()
  np.testing.assert_allclose(found[1], [np.log(0.8), 0, 0, 0, 1.2], atol=1e-6)


def _spikes_and_ramps():
  """A strip with a sharp spike every 100 samples (at 50, 150, ..., 1150) and each lead k holding
  the time index (a ramp) inside the 2.5 s its column shows, 0 elsewhere."""
  from ecgjax import digitize  # pylint: disable=g-import-not-at-top
  shown = digitize.shown_mask(5000)[:, ::4]
  x = np.zeros((1, T, 13), np.float32)
  for k in range(12):
    x[0, shown[k], k] = np.nonzero(shown[k])[0]
  x[0, 50::100, 12] = 5.0
  return x


def test_each_lead_averages_only_the_beats_wholly_inside_its_window():
  x = _spikes_and_ramps()
  found = np.asarray(beats.qrs_peaks(jnp.asarray(x[:, :, 12]), HZ))[0]
  # The squared slope is 25 at the spike's sample and the next; the peak is either.
  found = found[found >= 0]
  assert len(found) == 12 and np.abs(found - np.arange(50, T, 100) - 0.5).max() <= 0.5, found
  peaks = np.concatenate([np.arange(50, T, 100), [-1, -1]])  # -1: no beat.
  template, counts = beats.average_beats(jnp.asarray(x), jnp.asarray(peaks[None]))
  template, counts = np.asarray(template)[0], np.asarray(counts)[0]
  assert template.shape == (BEFORE + AFTER, 13)
  # Column 0 (I, II, III) shows samples [0, 313): windows [p - 31, p + 56) fit for p = 50, 150, 250.
  # Column 1 (aVR, aVL, aVF) [313, 625): p = 350, 450, 550 (550 + 56 = 606). Column 2
  # [625, 938): 750, 850 (650 - 31 < 625).
  # Column 3 [938, 1250): 1050, 1150 (1150 + 56 = 1206 <= 1250). The strip: all 12.
  expected = {"I": [50, 150, 250], "aVR": [350, 450, 550], "V1": [750, 850], "V6": [1050, 1150]}
  from ecgjax.data.layout import LEADS  # pylint: disable=g-import-not-at-top
  for lead, kept in expected.items():
    k = LEADS.index(lead)
    assert counts[k] == len(kept), lead
    # The ramp's value at window sample j is p - 31 + j: the average over kept beats.
    np.testing.assert_allclose(template[:, k], np.mean(kept) - BEFORE + np.arange(BEFORE + AFTER),
                               rtol=1e-6, err_msg=lead)
  assert counts[12] == 12


def test_gradients_reach_only_the_samples_a_lead_beat_came_from():
  x = jnp.asarray(_spikes_and_ramps())
  from ecgjax.data.layout import LEADS  # pylint: disable=g-import-not-at-top
  v1 = LEADS.index("V1")
  peaks = jnp.asarray([list(range(50, T, 100))])
  grad = np.asarray(jax.grad(lambda s: beats.average_beats(s, peaks)[0][..., v1].sum())(x))[0]
  assert (np.delete(grad, v1, axis=1) == 0).all()
  # V1 keeps the beats at 750 and 850: the samples of their windows, each half of the average.
  windows = np.r_[750 - BEFORE:750 + AFTER, 850 - BEFORE:850 + AFTER]
  assert list(np.nonzero(grad[:, v1])[0]) == list(windows)
  np.testing.assert_allclose(grad[windows, v1], 0.5)


def test_a_flat_page_has_no_beats_and_gives_zeros():
  template, counts = beats.average_beats(jnp.zeros((2, T, 13)))
  assert np.asarray(counts).sum() == 0 and np.all(np.asarray(template) == 0)
  with pytest.raises(ValueError, match="page views"):
    beats.average_beats(jnp.zeros((1, T, 12)))


@pytest.mark.parametrize("view", ["beats", "page+beats", "page+beats+rhythm"])
def test_resnet1d_reads_the_average_beats(view):
  x = jnp.asarray(_spikes_and_ramps()).repeat(2, axis=0)
  model = ResNet1D(num_classes=4, stem_width=4, widths=(4, 8), kernel_size=5, dropout=0.0,
                   view=view)
  variables = model.init(jax.random.key(0), x)
  logits, features = model.apply(variables, x, return_features=True)
  rhythm = "rhythm" in view
  trunks = len(view.split("+")) - rhythm
  assert logits.shape == (2, 4) and features.shape == (2, 8 * trunks + 16 * rhythm)
  names = set(variables["params"])
  assert {"beats_stem", "beats_stage1_block0"} <= names
  assert ("rhythm_dense" in names) == rhythm
  # The page trunk keeps the names a 'page' run's checkpoint has.
  page_names = set(ResNet1D(num_classes=4, stem_width=4, widths=(4, 8), kernel_size=5).init(
      jax.random.key(0), x)["params"])
  assert (page_names <= names) == view.startswith("page+")
  # Each beat trunk's input: 87 samples, not strided by the stem.
  assert variables["params"]["beats_stem"]["kernel"].shape == (5, 13, 4)

  def loss(params):
    out, _ = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                         train=True, mutable=["batch_stats"])
    return jnp.sum(out * jnp.arange(4.0))

  grads = jax.grad(loss)(variables["params"])
  assert min(float(jnp.linalg.norm(g)) for g in jax.tree_util.tree_leaves(grads)) > 0


def test_integrated_gradients_of_the_beat_view_add_up_to_the_logit():
  """Integrated Gradients from flat leads is complete on the beat view: the peaks found on the
  scaled page are the page's own at every step of the path, so the attributions on the page's
  samples sum to the change of the logit."""
  from ecgjax import saliency  # pylint: disable=g-import-not-at-top
  from ecgjax.saliency import signals as sal_signals  # pylint: disable=g-import-not-at-top
  import functools  # pylint: disable=g-import-not-at-top
  x = jnp.asarray(np.stack([digitized.simulated_view("mi", 3), digitized.simulated_view(1, 8)]))
  model = ResNet1D(num_classes=4, stem_width=4, widths=(4, 8), kernel_size=5, view="beats")
  logit_fn = functools.partial(model.apply, model.init(jax.random.key(0), x))
  attr = saliency.attribute("integrated_gradients", logit_fn, x, key=jax.random.key(1), steps=64,
                            baseline=sal_signals.BASELINE)
  total, gap = saliency.completeness(logit_fn, x, attr, None, sal_signals.BASELINE)
  np.testing.assert_allclose(total, gap, rtol=0.02, atol=1e-3)
  # Every lead had beats to average (else its samples could not matter at all).
  _, counts = beats.average_beats(x)
  assert np.all(np.asarray(counts)[:, :12] > 0)
  assert float(np.abs(np.asarray(gap)).min()) > 1e-4
