"""Depthwise 2D convolution as shifted slices: XLA:CPU's fast form when oneDNN cannot be built.

XLA:CPU runs a depthwise convolution (`lax.conv_general_dilated` with ``feature_group_count`` equal
to the channel count) far slower than TensorFlow does, forward and backward
(`python experiments/benchmark_conv.py` prints both, per layer). On a single float32 CPU device it
runs in oneDNN (`ecgjax.kernels.conv`, 'onednn'). Where oneDNN cannot be built, the same operation is
written here as ``kh * kw`` shifted, strided slices of the padded input, each multiplied by one tap
of the kernel and summed ('shifted'): a chain of elementwise ops that XLA:CPU fuses into a few loops,
with a hand-written gradient (polyphase input gradient, one variadic reduction for the kernel
gradient). On GPU and TPU the grouped convolution is the fast path ('xla').
`ecgjax.kernels.conv.resolve_impl` is the only place that picks one, and
`ecgjax.models.conv.conv_general_dilated` runs it; all compute the same function
(tests/test_depthwise.py and tests/test_conv.py check values and gradients).

Not for: grouped convolutions with a depth multiplier other than 1 (MobileNetV2 needs none); the
layer (`ecgjax.models.conv.Conv` with ``feature_group_count`` equal to the channels).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from ecgjax.kernels import conv as conv_kernels

Padding = str | Sequence[tuple[int, int]]


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, strides: Sequence[int] = (1, 1),
                     padding: Padding = "SAME") -> jax.Array:
  """Depthwise convolution of NHWC `x` with `kernel` of shape (kh, kw, 1, C), as shifted slices.

  Args:
    x: (B, H, W, C) input.
    kernel: (kh, kw, 1, C), the layout `flax.linen.Conv` uses for ``feature_group_count=C``.
    strides: (sh, sw).
    padding: 'SAME', 'VALID' or explicit ((top, bottom), (left, right)), as in `lax.conv`.

  Returns:
    (B, H', W', C), the same as `lax.conv_general_dilated(..., feature_group_count=C)`.
  """
  kh, kw, one, channels = kernel.shape
  if one != 1 or x.shape[-1] != channels:
    raise ValueError(f"Depthwise kernel shape {kernel.shape} does not fit input shape {x.shape}; "
                     f"expected (kh, kw, 1, {x.shape[-1]}).")
  strides = tuple(int(s) for s in strides)
  pads = conv_kernels.explicit_padding(x.shape[1:3], (kh, kw), strides, padding)
  return _shifted_depthwise(x, kernel, strides, tuple(pads))


def _taps(x_padded, kernel_hw, strides, out_hw):
  """The strided windows of `x_padded` that tap (i, j) of the kernel meets, in row-major order."""
  batch, _, _, channels = x_padded.shape
  return [
      lax.slice(x_padded, (0, i, j, 0),
                (batch, i + (out_hw[0] - 1) * strides[0] + 1,
                 j + (out_hw[1] - 1) * strides[1] + 1, channels),
                (1, strides[0], strides[1], 1))
      for i in range(kernel_hw[0]) for j in range(kernel_hw[1])]


def _valid_shifted(x_padded, kernel, strides):
  kh, kw = kernel.shape[:2]
  out_hw = ((x_padded.shape[1] - kh) // strides[0] + 1, (x_padded.shape[2] - kw) // strides[1] + 1)
  taps = _taps(x_padded, (kh, kw), strides, out_hw)
  out = taps[0] * kernel[0, 0, 0]
  for index in range(1, kh * kw):
    out = out + taps[index] * kernel[index // kw, index % kw, 0]
  return out


# The gradients are written by hand because autodiff of the slices gives scatter-like pads (and,
# for the kernel, nine separate reductions) that XLA:CPU runs ~10x slower than the forward pass.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _shifted_depthwise(x, kernel, strides, pads):
  return _valid_shifted(jnp.pad(x, ((0, 0), *pads, (0, 0))), kernel, strides)


def _shifted_depthwise_fwd(x, kernel, strides, pads):
  return _shifted_depthwise(x, kernel, strides, pads), (x, kernel)


def _shifted_depthwise_bwd(strides, pads, residuals, grad):
  x, kernel = residuals
  kh, kw = kernel.shape[:2]
  (sh, sw), ((pt, pb), (pl, pr)) = strides, pads
  batch, height, width, channels = x.shape
  out_h, out_w = grad.shape[1:3]

  # Input gradient, in polyphase form: padded-input row s*m + a only receives taps i = a + q*s
  # from output row m - q, so each of the s*s phases is a small stride-1 shifted sum on the
  # output grid, and the phases interleave back into rows. No multiply touches a dilation zero.
  rows = -(-(height + pt + pb) // sh)
  cols = -(-(width + pl + pr) // sw)
  qh, qw = (kh - 1) // sh, (kw - 1) // sw
  grad_padded = jnp.pad(grad, ((0, 0), (qh, rows - out_h), (qw, cols - out_w), (0, 0)))
  phases = []
  for a in range(sh):
    row_phases = []
    for b in range(sw):
      phase = jnp.zeros((batch, rows, cols, channels), grad.dtype)
      for q in range((kh - 1 - a) // sh + 1 if a < kh else 0):
        for r in range((kw - 1 - b) // sw + 1 if b < kw else 0):
          window = grad_padded[:, qh - q:qh - q + rows, qw - r:qw - r + cols]
          phase = phase + window * kernel[a + q * sh, b + r * sw, 0]
      row_phases.append(phase)
    phases.append(jnp.stack(row_phases, axis=3))
  dx_padded = jnp.stack(phases, axis=2).reshape(batch, rows * sh, cols * sw, channels)
  dx = dx_padded[:, pt:pt + height, pl:pl + width]

  # Kernel gradient: one variadic reduction reads x and grad once for all kh*kw taps; nine
  # separate sums are ~7x slower on XLA:CPU. Accumulate in float32 even for bfloat16 inputs.
  taps = _taps(jnp.pad(x, ((0, 0), *pads, (0, 0))), (kh, kw), strides, (out_h, out_w))
  grad32 = grad.astype(jnp.float32)
  products = tuple(tap.astype(jnp.float32) * grad32 for tap in taps)
  sums = lax.reduce(products, tuple(jnp.zeros((), jnp.float32) for _ in products),
                    lambda acc, new: tuple(u + v for u, v in zip(acc, new)), (0, 1, 2))
  dkernel = jnp.stack(sums).reshape(kh, kw, 1, channels).astype(kernel.dtype)
  return dx.astype(x.dtype), dkernel


_shifted_depthwise.defvjp(_shifted_depthwise_fwd, _shifted_depthwise_bwd)

