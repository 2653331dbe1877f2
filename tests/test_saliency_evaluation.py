"""Saliency evaluation: territory localisation, cascading randomisation, deletion curves, the
per-lead read-out (ink-relative, contrast) and experiments/explain_eval.py end to end."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import checkpoints
from ecgjax import saliency
from ecgjax.data import layout
from ecgjax.data import synth
from ecgjax.models.cnn import CustomCNN
from ecgjax.saliency import evaluation
from experiments import explain_eval

H, W = 64, 112
BOX = (0, 0, H, W)  # The panel fills the model input.


def lead_mask(leads):
  """(H, W) 1 on the boxes of `leads`, 0 elsewhere."""
  mask = np.zeros((H, W), np.float32)
  for name, (r0, r1, c0, c1) in saliency.lead_pixel_boxes(BOX, layout.lead_boxes()).items():
    if name in leads:
      mask[r0:r1, c0:c1] = 1.0
  return mask


class ReadsLeads(nn.Module):
  """A model whose class-0 logit reads the ink of some leads' boxes only (a fixed random weight
  per pixel), class 1 its negative: its gradient lies on those boxes and nowhere else."""
  mask: np.ndarray

  @nn.compact
  def __call__(self, x):
    w = self.param("w", nn.initializers.normal(1.0), (H, W, 1))
    score = jnp.sum((1.0 - x) * jnp.abs(w) * self.mask[..., None], axis=(1, 2, 3)) / 50.0
    return jnp.stack([score, -score], axis=-1)


def page_with_ink(rng):
  """A white page (value range -1..1) with random dark strokes everywhere."""
  image = np.ones((H, W, 1), np.float32)
  rows = rng.integers(0, H, 600)
  cols = rng.integers(0, W, 600)
  image[rows, cols] = -1.0
  return image


@pytest.fixture(scope="module")
def anterior_model():
  model = ReadsLeads(mask=lead_mask(synth.TERRITORY_LEADS["anterior"]))
  variables = model.init(jax.random.key(0), jnp.zeros((1, H, W, 1)))
  return functools.partial(model.apply, variables)


def test_territory_localisation_finds_the_leads_a_model_reads(anterior_model):
  image = jnp.asarray(page_with_ink(np.random.default_rng(0)))[None]
  heat = saliency.heat_map(np.asarray(saliency.vanilla_gradient(anterior_model, image)))[0]
  page_ink = saliency.ink(np.asarray(image[0]))
  hit = evaluation.territory_localisation(heat, BOX, synth.TERRITORY_LEADS["anterior"], "II",
                                          page_ink=page_ink)
  assert hit["share"] == pytest.approx(1.0)
  assert 0.2 < hit["chance"] < 0.3  # Four of twelve lead boxes, the rhythm strip not among them.
  assert hit["lift"] == pytest.approx(1.0 / hit["chance"])
  assert set(hit["top3"]) <= set(synth.TERRITORY_LEADS["anterior"]) and hit["top3_hit"]
  assert hit["ink_top3_hit"] and hit["top1_hit"]
  miss = evaluation.territory_localisation(heat, BOX, synth.TERRITORY_LEADS["inferior"], "II")
  assert miss["share"] == 0.0 and not miss["top3_hit"] and miss["top3_hits"] == 0
  # The rhythm strip shows lead II: it belongs to the inferior territory's area, not to lateral's.
  inferior_ii = evaluation.territory_localisation(heat, BOX, ("II", "III", "aVF"), "II")
  inferior_iii = evaluation.territory_localisation(heat, BOX, ("II", "III", "aVF"), "V1")
  assert inferior_ii["chance"] > 2 * inferior_iii["chance"]
  with pytest.raises(ValueError, match="not ECG leads"):
    evaluation.territory_localisation(heat, BOX, ("V7",))


def test_top3_chance_is_the_hypergeometric_tail():
  rng = np.random.default_rng(0)
  draws = np.array([len({0, 1, 2, 3} & set(rng.choice(12, 3, replace=False))) >= 2
                    for _ in range(20000)])
  assert evaluation.top3_chance(4) == pytest.approx(draws.mean(), abs=0.01)
  assert evaluation.top3_chance(3) < evaluation.top3_chance(4)


def test_ink_relative_read_out_picks_the_lead_with_more_attribution_than_ink():
  rng = np.random.default_rng(1)
  image = page_with_ink(rng)
  page_ink = saliency.ink(image)
  # Attribution that follows the ink everywhere, twice as strong on V2, and five times the ink in
  # lead I: by density I leads, per unit of ink V2 does, and every other lead sits near 1.
  boost = 1.0 + lead_mask(("V2",))
  heavy = 1.0 + 4.0 * lead_mask(("I",))
  attributions = (page_ink * boost * heavy)[..., None]
  read = saliency.per_lead(attributions, BOX, page_ink=page_ink * heavy)
  assert read["ranking"][0] == "I"
  assert read["ink_ranking"][0] == "V2"
  assert read["ink_relative"]["V2"] == pytest.approx(2.0, rel=0.05)
  others = [read["ink_relative"][k] for k in layout.LEADS if k != "V2"]
  assert np.allclose(others, 1.0, atol=0.05)


def test_contrast_explains_one_class_over_another_and_ig_adds_up_to_the_margin():
  model = CustomCNN(num_classes=4, filters=(4, 8), dense_units=8)
  images = jax.random.uniform(jax.random.key(1), (2, 24, 40, 1), minval=-1.0, maxval=1.0)
  variables = model.init(jax.random.key(0), images)
  logit_fn = functools.partial(model.apply, variables)
  contrast = saliency.Contrast(logit_fn)
  logits = np.asarray(logit_fn(images))
  pairs = saliency.contrast_targets(jnp.array([2, 0]), jnp.array([1, 3]), 4)
  picked = np.take_along_axis(np.asarray(contrast(images)), np.asarray(pairs)[:, None], 1)[:, 0]
  np.testing.assert_allclose(picked, [logits[0, 2] - logits[0, 1], logits[1, 0] - logits[1, 3]],
                             rtol=1e-5, atol=1e-6)
  ig = functools.partial(saliency.integrated_gradients, baseline=1.0, steps=32)
  attr = ig(contrast, images, pairs)
  # Linear in the target: the contrast's attributions are the two classes' difference.
  np.testing.assert_allclose(
      np.asarray(attr),
      np.asarray(ig(logit_fn, images, jnp.array([2, 0])) - ig(logit_fn, images, jnp.array([1, 3]))),
      atol=1e-5)
  total, change = saliency.completeness(contrast, images, attr, pairs, 1.0)
  np.testing.assert_allclose(np.asarray(total), np.asarray(change), atol=0.01)


def test_cascading_randomisation_redraws_layers_from_the_top():
  model = CustomCNN(num_classes=4, filters=(4, 8), dense_units=8)
  images = jnp.zeros((1, 24, 40, 1))
  variables = model.init(jax.random.key(0), images)
  steps = evaluation.cascading_randomisation(model, variables, images, jax.random.key(7))
  names = [name for name, _ in steps]
  assert names == ["logits", "hidden", "stage1_bn0", "stage1_conv0", "stage0_bn0", "stage0_conv0"]
  changed = lambda a, b: not all(np.array_equal(x, y) for x, y in zip(
      jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
  for k, (_, randomised) in enumerate(steps):
    for j, name in enumerate(names):
      redrawn = changed(variables["params"][name], randomised["params"][name])
      # BatchNorm's initial scale (1) and bias (0) are not random: those layers are "re-drawn"
      # only if training moved them, which here it did not.
      assert redrawn == (j <= k and "bn" not in name), (k, name)
    assert not changed(variables["batch_stats"], randomised["batch_stats"])


def test_rank_correlation():
  a = np.random.default_rng(0).random((8, 9))
  assert evaluation.rank_correlation(a, a) == pytest.approx(1.0)
  assert evaluation.rank_correlation(a, -a) == pytest.approx(-1.0)
  assert evaluation.rank_correlation(a, np.exp(3 * a)) == pytest.approx(1.0)  # Ranks only.
  assert evaluation.rank_correlation(a, np.zeros_like(a)) == 0.0
  with pytest.raises(ValueError):
    evaluation.rank_correlation(a, a[:4])


def test_deletion_by_the_map_beats_random_and_ink_orders(anterior_model):
  image = page_with_ink(np.random.default_rng(2))
  heat = saliency.heat_map(np.asarray(saliency.vanilla_gradient(anterior_model,
                                                                jnp.asarray(image)[None])))[0]
  segments = evaluation.patch_segments((H, W), 8)
  assert segments.max() + 1 == (H // 8) * (W // 8)
  run = lambda order: evaluation.perturbation_curves(anterior_model, image, 0, segments, order,
                                                     steps=8, fill=1.0, batch_size=8)
  by_map = run(evaluation.segment_order(heat, segments))
  blank = np.ones_like(image)
  probs = lambda x: np.asarray(jax.nn.softmax(anterior_model(jnp.asarray(x)[None])))[0, 0]
  # The curves start and end at the page and at the blank page.
  assert by_map["deletion"][0] == pytest.approx(probs(image), abs=1e-5)
  assert by_map["deletion"][-1] == pytest.approx(probs(blank), abs=1e-5)
  assert by_map["insertion"][0] == pytest.approx(probs(blank), abs=1e-5)
  assert by_map["insertion"][-1] == pytest.approx(probs(image), abs=1e-5)
  assert np.all(np.diff(by_map["deletion"]) <= 1e-6)  # Each removal lowers the score it reads.
  rng = np.random.default_rng(0)
  random_auc = np.mean([evaluation.auc(c["fraction"], c["deletion"]) for c in
                        (run(evaluation.random_order(segments, rng)) for _ in range(3))])
  ink_auc = evaluation.auc(*(lambda c: (c["fraction"], c["deletion"]))(
      run(evaluation.ink_order(image, segments, (-1.0, 1.0)))))
  map_auc = evaluation.auc(by_map["fraction"], by_map["deletion"])
  assert map_auc < 0.85 * random_auc and map_auc < 0.9 * ink_auc
  assert evaluation.auc(by_map["fraction"], by_map["insertion"]) > random_auc


def test_lead_segments_cover_the_lead_boxes():
  segments, names = evaluation.lead_segments((H, W), BOX)
  assert names == [*layout.lead_boxes()]
  for i, name in enumerate(names):
    assert np.array_equal(segments == i, lead_mask((name,)) > 0) or name == layout.RHYTHM
  assert (segments == -1).any()  # Calibration pulses and margins belong to no lead.


def test_explain_eval_runs_every_evaluation_on_fresh_synthetic_pages(smoke_run_dir):
  loaded = checkpoints.load_model(smoke_run_dir)
  options = lambda method, value_range: {"smoothgrad": {"num_samples": 4, "chunk_size": 4},
                                         "integrated_gradients": {"steps": 4, "chunk_size": 4,
                                                                  "baseline": 1.0}}.get(method, {})
  result = explain_eval.evaluate(loaded, saliency.METHODS, per_class=2, sanity_pages=1,
                                 deletion_pages=1, deletion_steps=4, patch=8, random_orders=1,
                                 seed=0, options_for=options)
  assert result["pages"] == 4
  territories = {p["territory"] for p in result["pages_detail"]}
  assert territories <= set(synth.TERRITORY_LEADS)
  for name in (*saliency.METHODS, "ink (no model)"):
    row = result["territory"][name]
    assert 0.0 < row["chance"] < 1.0 and 0.0 <= row["share"] <= 1.0
  layers = result["sanity"]["gradient"]["layers"]
  assert layers[0] == "logits" and len(layers) == len(loaded.variables["params"])
  for unit in ("patch", "lead"):
    for name in (*saliency.METHODS, "ink", "random"):
      curve = result["deletion"][unit][name]
      assert curve["fraction"][0] == 0.0 and curve["fraction"][-1] == 1.0
      assert 0.0 <= curve["deletion_auc"] <= 1.0
  assert len(result["deletion"]["lead"]["random"]["fraction"]) == len(layout.lead_boxes()) + 1
  text = explain_eval.tables(result, saliency.METHODS, "smoothgrad")
  assert "smoothgrad (default)" in text and text.count("| random |") == 2
  with pytest.raises(ValueError, match="synthetic pages"):
    explain_eval.synthetic_pages(_real_config(loaded.config), 1)


def _real_config(config):
  config = config.copy_and_resolve_references()
  config.dataset.name = "ecg_images"
  return config
