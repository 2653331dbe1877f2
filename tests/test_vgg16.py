"""VGG16: Keras' 13 convolutions and head names, the pooling head, train mode and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models.vgg16 import VGG16


@pytest.mark.parametrize("head,feature_size", [("classifier", 8), ("gap", 32)])
def test_heads(head, feature_size):
  model = VGG16(num_classes=4, head=head, dense_units=8, width=1 / 16, dropout=0.5)
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
  variables = jax.jit(model.init)(jax.random.key(1), images)
  params = variables["params"]
  assert len([k for k in params if "_conv" in k]) == 13
  assert params["block5_conv3"]["kernel"].shape == (3, 3, 32, 32)
  assert ("fc1" in params) == (head == "classifier")
  logits, features = model.apply(variables, images, return_features=True)
  assert logits.shape == (2, 4) and features.shape == (2, feature_size)
  train_logits = model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(2)})
  assert not np.allclose(train_logits, logits)  # dropout is active in training only


def test_unknown_head_is_an_error():
  with pytest.raises(ValueError, match="head='avg'"):
    VGG16(num_classes=4, head="avg", width=1 / 16).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))


def test_batch_norm_variant_is_vgg16_bn():
  model = VGG16(num_classes=4, head="gap", width=1 / 16, batch_norm=True, kernel_init="he")
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
  variables = jax.jit(model.init)(jax.random.key(1), images)
  params, stats = variables["params"], variables["batch_stats"]
  convs = [k for k in params if "_conv" in k]
  assert len(convs) == 13 and all("bias" not in params[k] for k in convs)
  assert sorted(stats) == sorted(k.replace("_conv", "_bn") for k in convs)
  _, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
  assert not np.allclose(updates["batch_stats"]["block1_bn1"]["mean"], stats["block1_bn1"]["mean"])


def _feature_rms(kernel_init):
  model = VGG16(num_classes=4, head="gap", width=1 / 4, kernel_init=kernel_init)
  images = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
  variables = model.init(jax.random.key(1), images)
  _, features = model.apply(variables, images, return_features=True)
  return float(jnp.sqrt(jnp.mean(features**2)))


def test_he_init_carries_the_signal_through_13_relu_convolutions():
  # Keras' VGG16 as flax initialises it (variance 1/fan_in) halves the signal's power per ReLU
  # layer: the features of a from-scratch model are ~1/12 of He's (variance 2/fan_out), which
  # keeps them of the input's order.
  he, lecun = _feature_rms("he"), _feature_rms("lecun")
  assert 0.05 < he < 20
  assert lecun < he / 10


def test_unknown_kernel_init_is_an_error():
  with pytest.raises(ValueError, match="kernel_init='glorot'"):
    VGG16(num_classes=4, width=1 / 16, kernel_init="glorot").init(
        jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
