"""The fast depthwise convolution equals lax.conv's grouped convolution, in values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from ecgjax.kernels import conv
from ecgjax.models import conv as conv_layer
from ecgjax.models import depthwise


def _grouped(x, kernel, strides, padding, impl):
  """The depthwise convolution that `impl` runs in a model's layer."""
  return conv_layer.conv_general_dilated(x, kernel, strides, padding,
                                         dimension_numbers=conv_layer.NHWC,
                                         feature_group_count=x.shape[-1], impl=impl)


def _reference(x, kernel, strides, padding):
  pads = padding if isinstance(padding, str) else list(padding)
  return lax.conv_general_dilated(x, kernel, strides, pads,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  feature_group_count=x.shape[-1])


@pytest.mark.parametrize("shape,kernel_hw,strides,padding", [
    ((2, 9, 10, 8), (3, 3), (1, 1), "SAME"),
    ((2, 9, 10, 8), (3, 3), (1, 1), "VALID"),
    ((2, 16, 16, 8), (3, 3), (2, 2), ((0, 1), (0, 1))),  # Keras' MobileNetV2 pad, even input
    ((2, 15, 14, 8), (3, 3), (2, 2), ((1, 1), (0, 1))),  # odd height
    ((2, 15, 14, 8), (3, 3), (2, 2), "SAME"),
    ((1, 11, 12, 4), (5, 3), (3, 2), "SAME"),
])
def test_shifted_equals_grouped_conv(shape, kernel_hw, strides, padding):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(*kernel_hw, 1, shape[-1])), jnp.float32)
  want, want_vjp = jax.vjp(lambda x, k: _reference(x, k, strides, padding), x, kernel)
  got, got_vjp = jax.vjp(
      lambda x, k: depthwise.depthwise_conv2d(x, k, strides, padding), x, kernel)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  cotangent = jnp.asarray(rng.normal(size=want.shape), jnp.float32)
  for got_grad, want_grad in zip(got_vjp(cotangent), want_vjp(cotangent)):
    np.testing.assert_allclose(got_grad, want_grad, rtol=1e-4, atol=1e-4)


def test_xla_conv_impl_is_the_reference():
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.normal(size=(1, 6, 6, 3)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 1, 3)), jnp.float32)
  np.testing.assert_array_equal(
      _grouped(x, kernel, (1, 1), "SAME", impl="xla"),
      _reference(x, kernel, (1, 1), "SAME"))


def test_bfloat16_gradients_accumulate_in_float32():
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.normal(size=(4, 16, 16, 8)), jnp.bfloat16)
  kernel = jnp.asarray(rng.normal(size=(3, 3, 1, 8)), jnp.bfloat16)
  loss = lambda k, x, impl: jnp.sum(
      _grouped(x, k, (1, 1), "SAME", impl).astype(jnp.float32) ** 2)
  got = jax.grad(loss)(kernel, x, "shifted")
  want = jax.grad(loss)(kernel.astype(jnp.float32), x.astype(jnp.float32), "xla")
  assert got.dtype == jnp.bfloat16
  np.testing.assert_allclose(got.astype(jnp.float32), want, rtol=3e-2, atol=3e-1)


def test_resolve_impl_picks_by_backend():
  # oneDNN on a single float32 CPU device (tests/test_conv.py checks it builds), else shifted.
  assert conv.resolve_impl("auto", depthwise=True, backend="cpu") == "onednn"
  assert conv.resolve_impl("auto", depthwise=True, backend="cpu", dtype=jnp.bfloat16) == "shifted"
  assert conv.resolve_impl("auto", depthwise=True, backend="gpu") == "xla"
  assert conv.resolve_impl("auto", depthwise=True, backend="tpu") == "xla"
  assert conv.resolve_impl("xla", depthwise=True, backend="cpu") == "xla"
  with pytest.raises(ValueError, match="conv_impl 'fast'"):
    conv.resolve_impl("fast", depthwise=True)


def test_module_params_match_flax_grouped_conv():
  x = jnp.ones((1, 8, 8, 5))
  ours = conv_layer.Conv(5, (3, 3), strides=(2, 2), feature_group_count=5, use_bias=True)
  variables = ours.init(jax.random.key(0), x)
  flax_conv = __import__("flax.linen", fromlist=["Conv"]).Conv(
      5, (3, 3), strides=(2, 2), padding="SAME", feature_group_count=5, use_bias=True)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
      jnp.shape, flax_conv.init(jax.random.key(0), x))
  np.testing.assert_allclose(ours.apply(variables, x), flax_conv.apply(variables, x), rtol=1e-5,
                             atol=1e-5)


def test_wrong_kernel_shape_is_an_error():
  with pytest.raises(ValueError, match=r"expected \(kh, kw, 1, 4\)"):
    depthwise.depthwise_conv2d(jnp.ones((1, 5, 5, 4)), jnp.ones((3, 3, 4, 1)))
