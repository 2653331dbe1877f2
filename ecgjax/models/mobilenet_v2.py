"""MobileNetV2 exactly as in Keras Applications, so that Keras weights load and give the same logits.

Layer names, widths (`alpha` and Keras' `_make_divisible`), the asymmetric zero padding before each
stride-2 depthwise convolution, BatchNorm epsilon 1e-3, ReLU6, the 1280-wide last convolution and
the global-average-pooling head all follow `keras.applications.MobileNetV2`;
`ecgjax.models.keras_import` maps its weights onto this module by layer name. Every convolution is
`ecgjax.models.conv.Conv`, which runs depthwise and 1x1 convolutions in their fast forms per backend
(`ecgjax.kernels.conv.resolve_impl`).

Not for: loading weights (see `keras_import`), or MobileNetV3 and other variants.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ecgjax.models.batch_norm import BatchNorm
from ecgjax.models.conv import Conv

# (expansion, output channels before `alpha`, stride) of blocks 0..16, as in Keras.
BLOCKS: tuple[tuple[int, int, int], ...] = (
    (1, 16, 1),
    (6, 24, 2), (6, 24, 1),
    (6, 32, 2), (6, 32, 1), (6, 32, 1),
    (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
    (6, 96, 1), (6, 96, 1), (6, 96, 1),
    (6, 160, 2), (6, 160, 1), (6, 160, 1),
    (6, 320, 1),
)

# Keras' MobileNetV2 value; pretrained statistics are only right with it.
BN_EPSILON = 1e-3


def make_divisible(value: float, divisor: int = 8) -> int:
  """Keras' `_make_divisible`: round to a multiple of `divisor`, never more than 10% down."""
  new_value = max(divisor, int(value + divisor / 2) // divisor * divisor)
  if new_value < 0.9 * value:
    new_value += divisor
  return new_value


def keras_stride2_padding(height: int, width: int, kernel: int = 3) -> tuple[tuple[int, int], ...]:
  """Keras' `imagenet_utils.correct_pad`: ((top, bottom), (left, right)) before a stride-2 conv."""
  adjust = (1 - height % 2, 1 - width % 2)
  return ((kernel // 2 - adjust[0], kernel // 2), (kernel // 2 - adjust[1], kernel // 2))


class MobileNetV2(nn.Module):
  """MobileNetV2 (Sandler et al. 2018), Keras Applications layout.

  Attributes:
    num_classes: number of output logits.
    alpha: width multiplier (Keras' `alpha`); 0.35 at 32x32 input is the tiny test variant.
    dropout: dropout rate before the logits (Keras has none: 0.0 keeps its architecture).
    bn_momentum: BatchNorm moving-average momentum (Keras uses 0.999; only affects training).
    dtype: computation dtype; parameters stay float32.
    conv_impl: 'auto', 'xla', 'onednn' or 'shifted' (depthwise convolutions as shifted slices);
      see `ecgjax.kernels.conv.resolve_impl`.
  """

  num_classes: int
  alpha: float = 1.0
  dropout: float = 0.0
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False, return_features: bool = False):
    norm = functools.partial(BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=BN_EPSILON, dtype=self.dtype,
                             param_dtype=jnp.float32)
    conv = functools.partial(Conv, use_bias=False, impl=self.conv_impl, dtype=self.dtype,
                             param_dtype=jnp.float32)
    pointwise = functools.partial(conv, kernel_size=(1, 1))

    x = images.astype(self.dtype)
    # 'SAME' with stride 2 pads like TensorFlow (extra row/column at the bottom/right).
    x = conv(make_divisible(32 * self.alpha), (3, 3), strides=(2, 2), padding="SAME",
             name="Conv1")(x)
    x = nn.relu6(norm(name="bn_Conv1")(x))

    for block_id, (expansion, filters, stride) in enumerate(BLOCKS):
      inputs = x
      in_channels = x.shape[-1]
      out_channels = make_divisible(int(filters * self.alpha))
      prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
      if block_id:
        x = pointwise(expansion * in_channels, name=f"{prefix}expand")(x)
        x = nn.relu6(norm(name=f"{prefix}expand_BN")(x))
      padding = keras_stride2_padding(*x.shape[1:3]) if stride == 2 else "SAME"
      channels = x.shape[-1]  # Depthwise: one group per channel.
      x = conv(channels, (3, 3), strides=(stride, stride), padding=padding,
               feature_group_count=channels, name=f"{prefix}depthwise")(x)
      x = nn.relu6(norm(name=f"{prefix}depthwise_BN")(x))
      x = pointwise(out_channels, name=f"{prefix}project")(x)
      x = norm(name=f"{prefix}project_BN")(x)
      if stride == 1 and in_channels == out_channels:
        x = x + inputs

    last_channels = make_divisible(1280 * self.alpha) if self.alpha > 1.0 else 1280
    x = pointwise(last_channels, name="Conv_1")(x)
    x = nn.relu6(norm(name="Conv_1_bn")(x))
    features = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                      name="predictions")(x).astype(jnp.float32)
    if return_features:
      return logits, features.astype(jnp.float32)
    return logits
