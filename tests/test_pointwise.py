"""The matrix-product 1x1 convolution equals flax's Conv, with the same parameters."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models.conv import Conv
from ecgjax.models.pointwise import pointwise_conv


def test_pointwise_equals_flax_conv_values_and_gradients():
  x = jax.random.normal(jax.random.key(0), (2, 7, 6, 12))
  ours, reference = Conv(5, (1, 1), use_bias=True), nn.Conv(5, (1, 1), use_bias=True)
  variables = ours.init(jax.random.key(1), x)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
      jnp.shape, reference.init(jax.random.key(1), x))
  variables = jax.tree.map(lambda v: v + 0.1, variables)  # a nonzero bias too
  loss = lambda module: lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))
  np.testing.assert_allclose(ours.apply(variables, x), reference.apply(variables, x), rtol=1e-5,
                             atol=1e-5)
  got = jax.grad(loss(ours), argnums=(0, 1))(variables, x)
  want = jax.grad(loss(reference), argnums=(0, 1))(variables, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def test_bfloat16_compute_keeps_float32_params():
  module = Conv(3, (1, 1), use_bias=False, dtype=jnp.bfloat16)
  variables = module.init(jax.random.key(0), jnp.ones((1, 2, 2, 4)))
  assert variables["params"]["kernel"].dtype == jnp.float32
  assert module.apply(variables, jnp.ones((1, 2, 2, 4))).dtype == jnp.bfloat16


def test_wrong_kernel_shape_is_an_error():
  with pytest.raises(ValueError, match=r"expected \(1, 1, 4, out\)"):
    pointwise_conv(jnp.ones((1, 2, 2, 4)), jnp.ones((1, 1, 3, 2)))
