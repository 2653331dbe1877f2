"""The fast 2x2 max pooling agrees with flax's max_pool in values and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models.pooling import max_pool_2x2


@pytest.mark.parametrize("shape", [(2, 8, 12, 3), (1, 7, 9, 4), (3, 5, 6, 2)])
@pytest.mark.parametrize("padding", ["VALID", "SAME"])
def test_matches_flax_max_pool(shape, padding):
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape).astype(np.float32))
  reference = lambda v: nn.max_pool(v, (2, 2), strides=(2, 2), padding=padding)
  np.testing.assert_array_equal(max_pool_2x2(x, padding), reference(x))
  weights = jnp.asarray(np.random.default_rng(1).normal(size=reference(x).shape), jnp.float32)
  grad = lambda f: jax.grad(lambda v: jnp.sum(f(v) * weights))(x)
  np.testing.assert_allclose(grad(lambda v: max_pool_2x2(v, padding)), grad(reference), atol=1e-6)


def test_rejects_unknown_padding():
  with pytest.raises(ValueError, match="padding"):
    max_pool_2x2(jnp.zeros((1, 4, 4, 1)), "FULL")
