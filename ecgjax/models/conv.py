"""`Conv`: `flax.linen.Conv` for NHWC images, with the convolution chosen per backend.

Parameters are named and shaped as in `flax.linen.Conv` (``kernel`` (KH, KW, C // groups, D),
optional ``bias`` (D,)), so checkpoints, Keras imports and Grad-CAM layer names are unchanged. The
convolution itself is `ecgjax.kernels.conv.conv2d`: oneDNN on a single CPU device, XLA elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ecgjax.kernels import conv as conv_kernels


def apply_conv_layer(module: nn.Module, x: jax.Array, kernel_shape: Sequence[int],
                     convolve: Callable[[jax.Array, jax.Array], jax.Array]) -> jax.Array:
  """The body every convolution layer here shares, called from its compact `__call__`.

  Declares ``kernel`` (`kernel_shape`, HWIO) and, when ``module.use_bias``, ``bias`` (the kernel's
  last dimension), as `flax.linen.Conv` names and shapes them; promotes to ``module.dtype``; returns
  ``convolve(x, kernel)`` plus the bias. `module` must have the fields ``use_bias``, ``dtype``,
  ``param_dtype``, ``kernel_init`` and ``bias_init``.
  """
  kernel = module.param("kernel", module.kernel_init, tuple(kernel_shape), module.param_dtype)
  bias = module.param("bias", module.bias_init, (kernel_shape[-1],), module.param_dtype) \
      if module.use_bias else None
  x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=module.dtype)
  y = convolve(x, kernel).astype(x.dtype)
  return y if bias is None else y + bias


class Conv(nn.Module):
  """A 2D convolution layer over NHWC inputs.

  Attributes:
    features: output channels.
    kernel_size: (KH, KW).
    strides: (SH, SW).
    padding: 'SAME', 'VALID' or ((top, bottom), (left, right)).
    feature_group_count: groups (the input channels for a depthwise convolution).
    use_bias: whether to add a bias.
    impl: 'auto', 'xla' or 'onednn'; see `ecgjax.kernels.conv.resolve_impl`.
    dtype: computation dtype.
    param_dtype: parameter dtype.
  """

  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  padding: conv_kernels.Padding = "SAME"
  feature_group_count: int = 1
  use_bias: bool = True
  impl: str = "auto"
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim != 4:
      raise ValueError(f"Conv {self.name!r} expects NHWC input; got shape {x.shape}.")
    groups = self.feature_group_count
    return apply_conv_layer(
        self, x, (*self.kernel_size, x.shape[-1] // groups, self.features),
        lambda x, kernel: conv_kernels.conv2d(x, kernel, self.strides, self.padding, groups,
                                              self.impl))
