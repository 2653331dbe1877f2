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
