"""VGG16 as in Keras Applications (13 convolutions), with its classifier head or a pooling head.

Layer names follow `keras.applications.VGG16` (block1_conv1 ... block5_conv3, fc1, fc2,
predictions) so that `ecgjax.models.keras_import` maps Keras weights onto this module by name.
`width` scales every convolution and exists for the tiny test variant (1/16); at 1.0 the module is
Keras' VGG16.

Trained from scratch, Keras' plain VGG16 does not learn ECG pages: 13 ReLU convolutions initialised
with variance 1/fan_in halve the signal's power at each layer, and the gradient that reaches the
first blocks vanishes. `batch_norm=True` is torchvision's `vgg16_bn` (BatchNorm after every
convolution, which then has no bias) and `kernel_init='he'` its initialisation (He et al. 2015,
variance 2/fan_out); weights imported from Keras need the defaults.

Not for: VGG19; loading weights (see `keras_import`).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ecgjax.models.batch_norm import BatchNorm
from ecgjax.models.conv import Conv
from ecgjax.models.pooling import max_pool_2x2

# Output channels of the convolutions in each of the five blocks, as in Keras.
STAGES: tuple[tuple[int, ...], ...] = (
    (64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
HEADS = ("classifier", "gap")
KERNEL_INITS = {
    "lecun": nn.initializers.lecun_normal(),  # flax's default
    "he": nn.initializers.variance_scaling(2.0, "fan_out", "normal"),  # torchvision's VGG
}


class VGG16(nn.Module):
  """VGG16 (Simonyan and Zisserman 2015), Keras Applications layout.

  Attributes:
    num_classes: number of output logits.
    head: 'classifier' (Keras' include_top: flatten, fc1, fc2, predictions; needs the input size
      the weights were trained at) or 'gap' (global average pooling, then the logits).
    dense_units: width of fc1 and fc2 in the classifier head (Keras: 4096).
    dropout: dropout rate after fc1 and fc2, or after pooling in the 'gap' head (Keras: none).
    width: multiplier on every convolution's channels; 1.0 is Keras' VGG16.
    batch_norm: BatchNorm after every convolution (torchvision's vgg16_bn); convolutions then have no
      bias, and Keras weights do not fit.
    bn_momentum: BatchNorm moving-average momentum.
    kernel_init: the convolutions' initialisation, one of `KERNEL_INITS` ('lecun', 'he').
    dtype: computation dtype; parameters stay float32.
    conv_impl: 'auto', 'xla' or 'onednn'; see `ecgjax.kernels.conv.resolve_impl`.
  """

  num_classes: int
  head: str = "classifier"
  dense_units: int = 4096
  dropout: float = 0.0
  width: float = 1.0
  batch_norm: bool = False
  bn_momentum: float = 0.9
  kernel_init: str = "lecun"
  dtype: Any = jnp.float32
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False, return_features: bool = False):
    if self.head not in HEADS:
      raise ValueError(f"VGG16.head={self.head!r} (config.model.head); expected one of {HEADS}.")
    if self.kernel_init not in KERNEL_INITS:
      raise ValueError(f"VGG16.kernel_init={self.kernel_init!r} (config.model.kernel_init); "
                       f"expected one of {tuple(KERNEL_INITS)}.")
    dense = lambda units, name: nn.Dense(units, dtype=self.dtype, param_dtype=jnp.float32,
                                         name=name)
    x = images.astype(self.dtype)
    for block, widths in enumerate(STAGES, start=1):
      for i, channels in enumerate(widths, start=1):
        x = Conv(max(1, int(channels * self.width)), (3, 3), padding="SAME", impl=self.conv_impl,
                 use_bias=not self.batch_norm, kernel_init=KERNEL_INITS[self.kernel_init],
                 dtype=self.dtype, param_dtype=jnp.float32, name=f"block{block}_conv{i}")(x)
        if self.batch_norm:
          x = BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                        dtype=self.dtype, param_dtype=jnp.float32, name=f"block{block}_bn{i}")(x)
        x = nn.relu(x)
      x = max_pool_2x2(x, padding="VALID")

    if self.head == "classifier":
      # Keras flattens channels-last feature maps in (H, W, C) order, as reshape does here.
      x = x.reshape(x.shape[0], -1)
      x = nn.relu(dense(self.dense_units, "fc1")(x))
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
      features = nn.relu(dense(self.dense_units, "fc2")(x))
    else:
      features = jnp.mean(x, axis=(1, 2))
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    logits = dense(self.num_classes, "predictions")(x).astype(jnp.float32)
    if return_features:
      return logits, features.astype(jnp.float32)
    return logits
