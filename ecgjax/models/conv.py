"""`Conv`: `flax.linen.Conv` for NHWC images, with the convolution chosen per backend.

Parameters are named and shaped as in `flax.linen.Conv` (``kernel`` (KH, KW, C // groups, D),
optional ``bias`` (D,)), so checkpoints, Keras imports and Grad-CAM layer names are unchanged. The
convolution itself is `ecgjax.kernels.conv.conv2d`: oneDNN on a single CPU device, XLA elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ecgjax.kernels import conv as conv_kernels


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
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, x.shape[-1] // groups, self.features), self.param_dtype)
    bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype) \
        if self.use_bias else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv_kernels.conv2d(x, kernel, self.strides, self.padding, groups, self.impl)
    y = y.astype(x.dtype)
    if bias is not None:
      y = y + bias
    return y
