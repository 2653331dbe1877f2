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
