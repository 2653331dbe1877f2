"""1x1 convolution written as a matrix product.

XLA:CPU sends a 1x1 `lax.conv` through its generic convolution path, about twice as slow forward and
backward as the same contraction written as a `dot_general` over the channel axis (measured on a
16x56x56x144 -> 24 MobileNetV2 projection: 69 ms against 30 ms). On GPU and TPU XLA already turns a
1x1 convolution into a matrix product, so the dot form is the XLA path on every backend. On a
single CPU device with oneDNN built (`ecgjax.kernels.conv.resolve_impl`, the one place that picks)
oneDNN's 1x1 convolution is a little faster still: 2.0 / 1.0 / 1.9 ms forward / input / kernel
gradient on that projection against 2.3 / 1.2 / 3.3 for the matrix product (with huge pages; XLA's
1x1 `lax.conv` took 5.5 / 2.4 / 14, `python experiments/benchmark_conv.py`).

Parameters are named and shaped as in `flax.linen.Conv` with ``kernel_size=(1, 1)`` (and as Keras'
Conv2D): ``kernel`` (1, 1, in, out) and optional ``bias`` (out,), so weights move between them as is.

Not for: strided or dilated 1x1 convolutions.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ecgjax.kernels import conv as conv_kernels
from ecgjax.models.conv import apply_conv_layer


def pointwise_conv(x: jax.Array, kernel: jax.Array, impl: str = "auto") -> jax.Array:
  """Applies a (1, 1, C, D) `kernel` to the last axis of `x` (..., C) -> (..., D).

  `impl` ('auto', 'xla' or 'onednn', see `ecgjax.kernels.conv.resolve_impl`) chooses between the
  matrix product and oneDNN's 1x1 convolution (NHWC inputs only).
  """
  if kernel.shape[:2] != (1, 1) or kernel.shape[2] != x.shape[-1]:
    raise ValueError(f"Pointwise kernel shape {kernel.shape} does not fit input shape {x.shape}; "
                     f"expected (1, 1, {x.shape[-1]}, out).")
  if x.ndim == 4 and conv_kernels.resolve_impl(impl, jnp.result_type(x, kernel)) == "onednn":
    return conv_kernels.conv2d(x, kernel, (1, 1), "VALID", impl="onednn")
  return lax.dot_general(x, kernel[0, 0], (((x.ndim - 1,), (0,)), ((), ())))


class PointwiseConv(nn.Module):
  """A 1x1 convolution (stride 1) over the last axis of an NHWC input.

  Attributes:
    features: output channels.
    use_bias: whether to add a bias.
    impl: 'auto', 'xla' or 'onednn'; see `pointwise_conv`.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """

  features: int
  use_bias: bool = False
  impl: str = "auto"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return apply_conv_layer(self, x, (1, 1, x.shape[-1], self.features),
                            lambda x, kernel: pointwise_conv(x, kernel, self.impl))
