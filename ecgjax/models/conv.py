"""`Conv`: `flax.linen.Conv` running the convolution that suits the layer and the backend.

Every convolution of every model is flax's own `nn.Conv` (parameters ``kernel`` (KH, KW,
C // groups, D) and optional ``bias`` (D,), so checkpoints, Keras imports and Grad-CAM layer names
do not depend on how it runs), with `conv_general_dilated` here injected in place of
`lax.conv_general_dilated`. That asks `ecgjax.kernels.conv.resolve_impl`, the one place that picks
(`config.model.conv_impl`), and runs the layer:
- in oneDNN (`ecgjax.kernels.conv`) on a single float32 CPU device;
- a 1x1, stride-1 layer as a matrix product (`ecgjax.models.pointwise`) on XLA;
- a depthwise layer as shifted slices (`ecgjax.models.depthwise`) on CPU without oneDNN;
- otherwise as `lax.conv_general_dilated` (GPU, TPU).
All of them compute the same function: tests/test_conv.py, test_depthwise.py and test_pointwise.py
check values and gradients against `lax.conv_general_dilated` and `flax.linen.Conv`.

Not for: dilated or batch-grouped convolutions, or layouts other than NHWC/HWIO, which run as
`lax.conv_general_dilated` whatever the choice.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from ecgjax.kernels import conv as conv_kernels
from ecgjax.models import depthwise
from ecgjax.models import pointwise

NHWC = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs: jax.Array, rhs: jax.Array, window_strides: Sequence[int],
                         padding: str | Sequence[tuple[int, int]], lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None, preferred_element_type=None,
                         *, impl: str = "auto") -> jax.Array:
  """`lax.conv_general_dilated`, run by the implementation `resolve_impl` picks from `impl`.

  Takes the arguments of `lax.conv_general_dilated` and returns its result; `impl` is one of
  `ecgjax.kernels.conv.IMPLS`.
  """
  args = (lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
          feature_group_count, batch_group_count, precision, preferred_element_type)
  undilated = all(d == 1 for d in (*(lhs_dilation or (1,)), *(rhs_dilation or (1,))))
  if (lhs.ndim != 4 or dimension_numbers is None or not undilated or batch_group_count != 1
      or precision is not None or preferred_element_type is not None
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
      != lax.conv_dimension_numbers(lhs.shape, rhs.shape, NHWC)):
    return lax.conv_general_dilated(*args)

  kernel_hw, (channels, features) = rhs.shape[:2], (lhs.shape[-1], rhs.shape[-1])
  strides = tuple(int(s) for s in window_strides)
  pads = conv_kernels.explicit_padding(lhs.shape[1:3], kernel_hw, strides, padding)
  dtype = jnp.result_type(lhs, rhs)
  impl = conv_kernels.resolve_impl(impl, dtype,
                                   depthwise=feature_group_count == channels == features)
  # Module attributes looked up at each call: experiments/benchmark_layers.py swaps them.
  if kernel_hw == (1, 1) and strides == (1, 1) and feature_group_count == 1 \
      and pads == ((0, 0), (0, 0)):
    y = pointwise.pointwise_conv(lhs, rhs, impl)
  elif impl == "shifted":
    y = depthwise.depthwise_conv2d(lhs, rhs, strides, pads)
  else:
    y = conv_kernels.conv2d(lhs, rhs, strides, pads, feature_group_count, impl)
  return y.astype(dtype)


# Named as the class it returns: models write `Conv(...)` where flax's examples write `nn.Conv`.
def Conv(features: int, kernel_size: Sequence[int] = (3, 3), *,  # pylint: disable=invalid-name
         impl: str = "auto", **kwargs: Any) -> nn.Conv:
  """``flax.linen.Conv(features, kernel_size, **kwargs)`` running `conv_general_dilated`.

  Args:
    features: output channels (the input channels for a depthwise layer, with
      ``feature_group_count`` equal to them).
    kernel_size: (KH, KW).
    impl: 'auto', 'xla', 'onednn' or 'shifted'; see `ecgjax.kernels.conv.resolve_impl`.
    **kwargs: the other fields of `flax.linen.Conv` (strides, padding, use_bias, dtype, name...).
  """
  convolution = functools.partial(conv_general_dilated, impl=impl)
  # `conv_general_dilated_cls` rather than flax's deprecated `conv_general_dilated` field: flax
  # calls it with no arguments for the function.
  return nn.Conv(features, kernel_size, conv_general_dilated_cls=lambda: convolution, **kwargs)
