"""The custom convolutional network of the seed project, made configurable.

Stages of [3x3 convolution, BatchNorm, ReLU] x `convs_per_stage`, then 2x2 max pooling and optional
spatial dropout; global average pooling; a dense head. It is the fast baseline and the default page-image model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from ecgjax.models.batch_norm import BatchNorm
from ecgjax.models.conv import Conv
from ecgjax.models.pooling import max_pool_2x2


class CustomCNN(nn.Module):
  """A plain VGG-style CNN with BatchNorm.

  Attributes:
    num_classes: number of output logits.
    filters: output channels of each stage; each stage halves the resolution.
    convs_per_stage: 3x3 convolutions per stage.
    dense_units: width of the hidden dense layer before the logits (0: none).
    dropout: dropout rate before the head (and before the logits if dense_units > 0).
    bn_momentum: BatchNorm moving-average momentum (Keras and Flax default 0.99 is too slow for short
      runs: the statistics stay near their start; the trainer also recomputes them before evaluation).
    dtype: computation dtype; parameters stay float32.
    conv_impl: 'auto', 'xla' or 'onednn'; see `ecgjax.kernels.conv.resolve_impl`.
  """
  num_classes: int
  filters: Sequence[int] = (32, 64, 128, 256)
  convs_per_stage: int = 1
  dense_units: int = 128
  dropout: float = 0.3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, images, *, train: bool = False, return_features: bool = False):
    conv = functools.partial(Conv, kernel_size=(3, 3), padding="SAME", use_bias=False,
                             impl=self.conv_impl, dtype=self.dtype, param_dtype=jnp.float32)
    norm = functools.partial(BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=1e-3, dtype=self.dtype,
                             param_dtype=jnp.float32)
    x = images.astype(self.dtype)
    for stage, width in enumerate(self.filters):
      for i in range(self.convs_per_stage):
        x = conv(width, name=f"stage{stage}_conv{i}")(x)
        x = norm(name=f"stage{stage}_bn{i}")(x)
        x = nn.relu(x)
      x = max_pool_2x2(x, padding="SAME")
    features = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    if self.dense_units:
      x = nn.relu(nn.Dense(self.dense_units, dtype=self.dtype, param_dtype=jnp.float32,
                           name="hidden")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                      name="logits")(x).astype(jnp.float32)
    if return_features:
      return logits, features.astype(jnp.float32)
    return logits
