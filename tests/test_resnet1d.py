"""ResNet1D: shapes, the registry, training-mode statistics, gradients, and refusing page images."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import signals as signals_config
from ecgjax import models
from ecgjax.models.resnet1d import ResNet1D


def _tiny(**kwargs):
  return ResNet1D(num_classes=4, stem_width=4, widths=(4, 8), kernel_size=5, **kwargs)


def test_logits_and_features_shapes():
  model = _tiny()
  x = jax.random.normal(jax.random.key(0), (3, 200, 13))
  variables = model.init(jax.random.key(1), x)
  logits, features = model.apply(variables, x, return_features=True)
  assert logits.shape == (3, 4) and logits.dtype == jnp.float32
  assert features.shape == (3, 8)
  assert np.all(np.isfinite(np.asarray(logits)))
  # Every stage but the first halves time; the stem and its pooling quarter it.
  names = set(variables["params"])
  assert {"stem", "stem_bn", "stage0_block0", "stage1_block0", "logits"} <= names
  assert "proj" in variables["params"]["stage1_block0"]  # Width and length change there.
  assert "proj" not in variables["params"]["stage0_block0"]


def test_registry_builds_the_config_model():
  config = signals_config.get_config("smoke")
  model = models.create_model(config.model)
  assert isinstance(model, ResNet1D) and model.widths == (4, 8)
  assert "resnet1d" in models.SIGNAL_MODELS


def test_train_mode_updates_batch_stats_and_gradients_flow():
  model = _tiny(dropout=0.0)
  x = jax.random.normal(jax.random.key(0), (4, 160, 13)) * 2.0 + 1.0
  variables = model.init(jax.random.key(1), x)
  labels = jnp.array([0, 1, 2, 3])

  def loss(params):
    logits, updates = model.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                  train=True, mutable=["batch_stats"])
    one_hot = jax.nn.one_hot(labels, 4)
    return -jnp.mean(jnp.sum(one_hot * jax.nn.log_softmax(logits), -1)), updates

  (value, updates), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
  assert np.isfinite(float(value))
  stem_mean = updates["batch_stats"]["stem_bn"]["mean"]
  assert not np.allclose(stem_mean, variables["batch_stats"]["stem_bn"]["mean"])
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree_util.tree_leaves(grads)]
  assert all(np.isfinite(norms)) and min(norms) > 0  # Every parameter gets a gradient.


def test_refuses_page_images():
  model = _tiny()
  with pytest.raises(ValueError, match="config.data.input='signals'"):
    model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)))


def test_stacked_view_lines_each_lead_up_from_its_page_column():
  """view='stacked': channel k is lead k over the samples its column shows (the page's 3 x 4
  layout), then the rhythm strip's quarters; nothing of another lead's window leaks in."""
  from ecgjax import digitize  # pylint: disable=g-import-not-at-top
  from ecgjax.models.resnet1d import stack_leads  # pylint: disable=g-import-not-at-top
  shown = digitize.shown_mask(5000)[:, ::4]  # What page_view keeps of each lead, at 125 Hz.
  x = np.zeros((2, 1250, 13), np.float32)
  for k in range(12):
    x[:, shown[k], k] = k + 1
  x[:, :, 12] = np.arange(1250)
  stacked = np.asarray(stack_leads(jnp.asarray(x)))
  assert stacked.shape == (2, 312, 16)
  for k in range(12):
    assert (stacked[..., k] == k + 1).all(), k
  for q in range(4):  # The strip's quarters, each in time order.
    quarter = stacked[0, :, 12 + q]
    assert quarter[0] >= 312 * q and (np.diff(quarter) == 1).all()
  model = _tiny(view="stacked")
  variables = model.init(jax.random.key(0), jnp.asarray(x))
  assert model.apply(variables, jnp.asarray(x)).shape == (2, 4)
  assert variables["params"]["stem"]["kernel"].shape[1] == 16
  with pytest.raises(ValueError, match="config.model.view"):
    _tiny(view="rows").init(jax.random.key(0), jnp.asarray(x))


def test_pooling_max_and_mean_plus_max():
  """pooling='max' keeps the largest value of each feature over time, 'mean+max' both, with the
  same trunk: the same parameters give max >= mean everywhere (the block ends in a ReLU), and
  more where a feature fires once, as on one extrasystole of the strip."""
  x = np.zeros((2, 200, 13), np.float32)
  x[:, 100:104, 12] = 3.0  # One beat on the rhythm strip, nothing else.
  x[1, 20:24, 0] = 2.0  # The second page also has a wave in lead I.
  x = jnp.asarray(x)
  mean = _tiny()
  variables = mean.init(jax.random.key(1), x)
  _, f_mean = mean.apply(variables, x, return_features=True)
  _, f_max = _tiny(pooling="max").apply(variables, x, return_features=True)
  f_mean, f_max = np.asarray(f_mean), np.asarray(f_max)
  assert f_max.shape == f_mean.shape == (2, 8)
  assert np.all(f_max >= f_mean - 1e-6) and np.any(f_max > f_mean + 1e-3)
  both = _tiny(pooling="mean+max")
  both_vars = both.init(jax.random.key(1), x)
  assert both_vars["params"]["logits"]["kernel"].shape == (16, 4)
  # The trunk's parameters are the same ones: the features are the two poolings side by side.
  both_vars = {**both_vars, "params": {**variables["params"],
                                       "logits": both_vars["params"]["logits"]}}
  logits, f_both = both.apply(both_vars, x, return_features=True)
  np.testing.assert_allclose(np.asarray(f_both), np.concatenate([f_mean, f_max], -1), atol=1e-6)
  assert logits.shape == (2, 4)
  with pytest.raises(ValueError, match="config.model.pooling"):
    _tiny(pooling="attention").init(jax.random.key(0), x)


def test_config_pooling_reaches_the_model():
  config = signals_config.get_config("smoke")
  assert config.model.pooling == "mean"
  config.model.pooling = "mean+max"
  assert models.create_model(config.model).pooling == "mean+max"


def test_config_arguments_combine():
  """'pretrain,smoke' is the pre-training recipe shrunk for a smoke run (what a sweep's --smoke
  asks of the signal_pretraining ablation); an unknown argument is named."""
  pretrain = signals_config.get_config("pretrain")
  both = signals_config.get_config("pretrain,smoke")
  assert pretrain.dataset.name == both.dataset.name == "ecg_signals_sim"
  assert pretrain.dataset.config == "large" and both.dataset.config == "tiny"
  assert pretrain.data.test_fold is None and both.data.test_fold is None
  assert both.model.widths == (4, 8) and pretrain.model.widths == (32, 64, 128, 128)
  with pytest.raises(ValueError, match="'pretrian'"):
    signals_config.get_config("pretrian,smoke")
