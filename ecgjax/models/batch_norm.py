"""BatchNorm with a hand-written backward pass: flax's variables and numbers, fewer passes on CPU.

Differentiating `flax.linen.BatchNorm` leaves XLA:CPU a chain of elementwise ops and reductions; the
closed-form gradient below needs two reductions (sum of dy, sum of dy * x_hat) and one elementwise
pass. `python experiments/benchmark_layers.py` times MobileNetV2 and CustomCNN train steps with this
BatchNorm and with flax's.

`BatchNorm` keeps flax's variable names and shapes (params `scale`, `bias`; batch_stats `mean`,
`var`), its fast-variance statistics (E[x^2] - E[x]^2, clamped at 0) and its moving-average update, so
checkpoints and Keras imports are unchanged. Tested equal to `flax.linen.BatchNorm` in outputs,
gradients and statistics. Statistics are over every axis but the last (NHWC or NC), on one device's
view of a batch that jit shards: under jit the reductions are global, as in flax.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


def _stats(x32):
  axes = tuple(range(x32.ndim - 1))
  mean = jnp.mean(x32, axis=axes)
  var = jnp.maximum(jnp.mean(jnp.square(x32), axis=axes) - jnp.square(mean), 0.0)
  return mean, var


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _normalize(x, scale, bias, epsilon):
  """Training-mode BatchNorm: (y, batch mean, batch variance)."""
  return _normalize_fwd(x, scale, bias, epsilon)[0]


def _normalize_fwd(x, scale, bias, epsilon):
  x32 = x.astype(jnp.float32)
  mean, var = _stats(x32)
  inv = jax.lax.rsqrt(var + epsilon)
  y = (x32 - mean) * (inv * scale) + bias
  return (y.astype(x.dtype), mean, var), (x, mean, inv, scale)


def _normalize_bwd(epsilon, residuals, cotangents):
  del epsilon
  # The statistics leave through `stop_gradient` (they only feed the moving averages), so only the
  # output's cotangent carries information.
  x, mean, inv, scale = residuals
  dy = cotangents[0].astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  x_hat = (x.astype(jnp.float32) - mean) * inv
  dbias = jnp.sum(dy, axis=axes)
  dscale = jnp.sum(dy * x_hat, axis=axes)
  dx = (scale * inv / count) * (count * dy - dbias - x_hat * dscale)
  return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


_normalize.defvjp(_normalize_fwd, _normalize_bwd)


class BatchNorm(nn.Module):
  """Drop-in for `flax.linen.BatchNorm(use_running_average, momentum, epsilon, dtype,
  param_dtype)` over the last axis."""
  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
    use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                         use_running_average)
    features = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
    scale = self.param("scale", nn.initializers.ones, (features,), self.param_dtype)
    bias = self.param("bias", nn.initializers.zeros, (features,), self.param_dtype)
    dtype = self.dtype or x.dtype
    if use_running_average:
      inv = jax.lax.rsqrt(ra_var.value + self.epsilon) * scale
      y = (x.astype(jnp.float32) - ra_mean.value) * inv + bias
      return y.astype(dtype)
    y, mean, var = _normalize(x, scale.astype(jnp.float32), bias.astype(jnp.float32),
                              float(self.epsilon))
    if not self.is_initializing():
      mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
      ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
      ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * var
    return y.astype(dtype)
