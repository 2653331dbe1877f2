"""FusedModel: the three fusion methods, frozen and fine-tuned backbones, configs or modules."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models.cnn import CustomCNN
from ecgjax.models.fusion import FusedModel
from ecgjax.models.mobilenet_v2 import MobileNetV2
from ecgjax.models.vgg16 import VGG16

NUM_CLASSES = 4


def _backbones(mobilenet: bool = True):
  backbones = {
      "cnn": CustomCNN(NUM_CLASSES, filters=(4, 8), dense_units=0),
      "mobilenet_v2": MobileNetV2(NUM_CLASSES, alpha=0.35),
      "vgg16": VGG16(NUM_CLASSES, width=1 / 16, head="gap"),
  }
  if not mobilenet:  # Compiling MobileNetV2 once (in the concat_mlp case) is enough.
    del backbones["mobilenet_v2"]
  return backbones


@pytest.fixture(scope="module")
def images():
  return jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)


def _init(model, images):
  return jax.jit(model.init)({"params": jax.random.key(1), "dropout": jax.random.key(2)}, images)


@pytest.mark.parametrize("method", ["concat_mlp", "mean_probs", "learned_logit_weights"])
def test_methods_shapes_and_frozen_gradients(method, images):
  backbones = _backbones(mobilenet=method == "concat_mlp")
  model = FusedModel(NUM_CLASSES, backbones=backbones, method=method, mlp_units=8)
  variables = _init(model, images)
  assert {f"backbone_{key}" for key in backbones} <= set(variables["params"])
  logits, features = jax.jit(lambda v: model.apply(v, images, return_features=True))(variables)
  assert logits.shape == (2, NUM_CLASSES) and features.ndim == 2

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, images, train=True,
                            mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})
    return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

  grads = jax.jit(jax.grad(loss))(variables["params"])
  for key in backbones:
    assert all(not jnp.any(g) for g in jax.tree.leaves(grads[f"backbone_{key}"])), key
  head = {k: v for k, v in grads.items() if not k.startswith("backbone_")}
  assert (method == "mean_probs") == (not head)
  if head:
    assert any(jnp.any(g) for g in jax.tree.leaves(head))


def test_mean_probs_averages_backbone_probabilities(images):
  backbones = _backbones(mobilenet=False)
  model = FusedModel(NUM_CLASSES, backbones=backbones, method="mean_probs")
  variables = _init(model, images)
  probs = []
  for key, backbone in backbones.items():
    sub = {c: tree[f"backbone_{key}"] for c, tree in variables.items() if f"backbone_{key}" in tree}
    probs.append(jax.nn.softmax(backbone.apply(sub, images)))
  np.testing.assert_allclose(jax.nn.softmax(model.apply(variables, images)),
                             np.mean(probs, axis=0), rtol=1e-5, atol=1e-6)


def test_fine_tuning_reaches_backbones_and_configs_build_backbones(images):
  backbones = {"cnn": {"name": "cnn", "filters": (4, 8), "dense_units": 0},
               "vgg": {"name": "vgg16", "width": 1 / 16, "head": "gap"}}
  model = FusedModel(NUM_CLASSES, backbones=backbones, method="learned_logit_weights",
                     freeze_backbones=False)
  variables = _init(model, images)

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, images, train=True,
                            mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})
    return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert any(jnp.any(g) for g in jax.tree.leaves(grads["backbone_vgg"]))


def test_errors_name_the_field(images):
  with pytest.raises(ValueError, match="method='vote'"):
    _init(FusedModel(NUM_CLASSES, backbones=_backbones(False), method="vote"), images)
  with pytest.raises(ValueError, match="at least two backbones"):
    _init(FusedModel(NUM_CLASSES, backbones={"cnn": CustomCNN(NUM_CLASSES)}), images)
