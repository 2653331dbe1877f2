"""1x1 convolution written as a matrix product.

XLA:CPU sends a 1x1 `lax.conv` through its generic convolution path, slower forward and backward
than the same contraction written as a `dot_general` over the channel axis. On GPU and TPU XLA
already turns a 1x1 convolution into a matrix product, so the dot form is the XLA path on every
backend. On a single CPU device with oneDNN built (`ecgjax.kernels.conv.resolve_impl`, the one place
that picks) oneDNN's 1x1 convolution is a little faster still. `python experiments/benchmark_conv.py`
prints all three per layer. `ecgjax.models.conv.conv_general_dilated` sends every 1x1, stride-1
layer here, so the layer is flax's `Conv` with ``kernel_size=(1, 1)``: ``kernel`` (1, 1, in, out)
and optional ``bias`` (out,), as in Keras' Conv2D, so weights move between them as is.

Not for: strided or dilated 1x1 convolutions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from ecgjax.kernels import conv as conv_kernels


def pointwise_conv(x: jax.Array, kernel: jax.Array, impl: str = "auto") -> jax.Array:
  """Applies a (1, 1, C, D) `kernel` to the last axis of `x` (..., C) -> (..., D).

  `impl` (`ecgjax.kernels.conv.IMPLS`, resolved by `ecgjax.kernels.conv.resolve_impl`) chooses
  between the matrix product and oneDNN's 1x1 convolution (NHWC inputs only).
  """
  if kernel.shape[:2] != (1, 1) or kernel.shape[2] != x.shape[-1]:
    raise ValueError(f"Pointwise kernel shape {kernel.shape} does not fit input shape {x.shape}; "
                     f"expected (1, 1, {x.shape[-1]}, out).")
  if x.ndim == 4 and conv_kernels.resolve_impl(impl, jnp.result_type(x, kernel)) == "onednn":
    return conv_kernels.conv2d(x, kernel, (1, 1), "VALID", impl="onednn")
  return lax.dot_general(x, kernel[0, 0], (((x.ndim - 1,), (0,)), ((), ())))

