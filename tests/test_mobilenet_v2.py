"""MobileNetV2: Keras' widths and padding, train/eval modes, dtypes, and both depthwise paths."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models.mobilenet_v2 import MobileNetV2, keras_stride2_padding, make_divisible


def test_make_divisible_and_padding_follow_keras():
  # Values of keras.applications.mobilenet_v2._make_divisible and imagenet_utils.correct_pad.
  assert [make_divisible(32 * a) for a in (0.35, 0.5, 0.75, 1.0, 1.3)] == [16, 16, 24, 32, 40]
  assert make_divisible(int(320 * 0.35)) == 112
  assert keras_stride2_padding(112, 112) == ((0, 1), (0, 1))
  assert keras_stride2_padding(5, 6) == ((1, 1), (0, 1))


@pytest.fixture(scope="module")
def tiny():
  model = MobileNetV2(num_classes=4, alpha=0.35, dropout=0.2)
  images = jax.random.uniform(jax.random.key(0), (2, 40, 40, 3), minval=-1, maxval=1)
  return model, images, jax.jit(model.init)(jax.random.key(1), images)


def test_shapes_and_names(tiny):
  model, images, variables = tiny
  logits, features = jax.jit(lambda v: model.apply(v, images, return_features=True))(variables)
  assert logits.shape == (2, 4) and features.shape == (2, 1280)
  params = variables["params"]
  assert params["Conv1"]["kernel"].shape == (3, 3, 3, 16)
  assert params["expanded_conv_depthwise"]["kernel"].shape == (3, 3, 1, 16)
  assert params["block_16_project"]["kernel"].shape == (1, 1, 336, 112)
  assert len([k for k in params if k.endswith("depthwise")]) == 17
  assert set(variables["batch_stats"]) == {k for k in params if "bn" in k.lower()}


def test_train_mode_updates_batch_stats_and_uses_dropout(tiny):
  model, images, variables = tiny
  run = jax.jit(lambda v, key: model.apply(v, images, train=True, mutable=["batch_stats"],
                                           rngs={"dropout": key}))
  logits_a, updates = run(variables, jax.random.key(2))
  logits_b, _ = run(variables, jax.random.key(3))
  assert not np.allclose(logits_a, logits_b)  # dropout differs by key
  before, after = variables["batch_stats"]["bn_Conv1"], updates["batch_stats"]["bn_Conv1"]
  assert not np.allclose(before["mean"], after["mean"])


def test_depthwise_impls_give_the_same_logits(tiny):
  model, images, variables = tiny
  reference = jax.jit(model.clone(conv_impl="xla").apply)(variables, images)
  np.testing.assert_allclose(jax.jit(model.clone(conv_impl="shifted").apply)(variables, images),
                             reference, rtol=1e-5, atol=1e-5)


def test_gray_input_and_bfloat16_compute():
  model = MobileNetV2(num_classes=4, alpha=0.35, dtype=jnp.bfloat16)
  images = jnp.zeros((1, 32, 32, 1))
  variables = jax.jit(model.init)(jax.random.key(0), images)
  assert variables["params"]["Conv1"]["kernel"].shape == (3, 3, 1, 16)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  assert jax.jit(model.apply)(variables, images).dtype == jnp.float32
