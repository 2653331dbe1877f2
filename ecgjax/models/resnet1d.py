"""A 1-D residual network over the leads read off a page, not over its pixels.

Its input is what `ecgjax.data.digitized` makes of a page: (time, 13) in mV, the twelve leads each
holding the 2.5 s the page shows of it (zeros elsewhere) on the page's 10 s time base, and the rhythm
strip. A stem convolution, stages of basic residual blocks (two convolutions of `kernel_size` with
BatchNorm, the first of a stage striding by 2, a 1-wide projection where the shape changes), global
average pooling over time and a dense head, as ResNet-18 is to images (He et al. 2016) and as
1-D ResNets are used for 12-lead classification (e.g. Ribeiro et al. 2020, Nat. Commun. 11:1760).

With `view='stacked'` the model first lines the leads up (`stack_leads`): each lead's own 2.5 s
window side by side, with the rhythm strip's four quarters, so that every convolution sees all
twelve leads at once (the page shows I, II, III together, then aVR, aVL, aVF, ...: on the page
view, II and aVF, or V2 and V5, never share a time step). With `view='beats'` it reads each lead's
average heartbeat instead (`ecgjax.models.beats`: the beats aligned on the rhythm strip's QRS
complexes, 0.7 s, all thirteen channels at the same phase of the cycle), and with `'page+beats'`
both, through two trunks whose pooled features are joined before the head. A view ending in
'+rhythm' also reads the rhythm strip's RR intervals (`beats.rhythm_features`: the rate, their
variation beat to beat), through a small dense layer joined to the trunks' features: a
convolution's receptive field spans one or two beats, not the strip's 10 s.

Not for page images: the image models are `cnn`, `mobilenet_v2`, `vgg16` and `fusion`.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ecgjax.data.layout import LEADS
from ecgjax.models import beats as beats_lib
from ecgjax.models.batch_norm import BatchNorm

VIEWS = ("page", "stacked", "beats", "page+beats", "page+rhythm", "page+beats+rhythm")
POOLINGS = ("mean", "max", "mean+max")
_POOL = {"mean": jnp.mean, "max": jnp.max}  # Over time, for each part of a pooling's name.


def stack_leads(signals: jax.Array) -> jax.Array:
  """(batch, T, 13) page view -> (batch, floor(T / 4), 16): lead k's own window (its column of
  the 3 x 4 page, the time steps wholly inside it) in channel k, in `LEADS` order, then the rhythm
  strip's four quarters."""
  n = signals.shape[1] // 4
  starts = beats_lib.column_bounds(signals.shape[1])[:4]
  lead_starts = [starts[beats_lib.LEAD_COLUMN[lead]] for lead in LEADS]
  parts = [signals[:, start:start + n, k] for k, start in enumerate(lead_starts)]
  parts += [signals[:, start:start + n, len(LEADS)] for start in starts]
  return jnp.stack(parts, axis=-1)


class ResidualBlock1D(nn.Module):
  """[conv, BN, ReLU, conv, BN] + shortcut, then ReLU."""
  width: int
  strides: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    residual = x
    y = self.conv(self.width, strides=(self.strides,), name="conv0")(x)
    y = nn.relu(self.norm(name="bn0")(y))
    y = self.conv(self.width, name="conv1")(y)
    y = self.norm(name="bn1")(y)
    if residual.shape != y.shape:
      residual = self.conv(self.width, kernel_size=(1,), strides=(self.strides,),
                           name="proj")(residual)
      residual = self.norm(name="proj_bn")(residual)
    return nn.relu(residual + y)


class ResNet1D(nn.Module):
  """A small ResNet over (batch, time, channels) signals.

  Attributes:
    num_classes: number of output logits.
    stem_width: channels of the stem convolution (stride 2, then max pooling by 2).
    widths: output channels of each stage; each stage halves the time axis.
    blocks_per_stage: residual blocks per stage.
    kernel_size: width of every convolution but the projections (in samples: 7 at 125 Hz is 56 ms).
    dropout: dropout rate before the logits.
    bn_momentum: BatchNorm moving-average momentum (the trainer also recomputes the statistics).
    dtype: computation dtype; parameters stay float32.
    view: 'page' (the leads where the page shows them), 'stacked' (`stack_leads`), 'beats' (each
      lead's average beat, `beats.average_beats`) or 'page+beats' (two trunks, features joined);
      '+rhythm' adds the RR-interval measures (`beats.rhythm_features`).
    rhythm_width: units of the dense layer over the rhythm measures.
    pooling: how each trunk's last feature map becomes one vector: 'mean' over time, 'max' over
      time (a wave seen once in the 10 s, an extrasystole or one lead's ST segment, counts as much
      as one seen throughout), or 'mean+max', both concatenated (the concat pooling of the 1-D
      models benchmarked on PTB-XL, Strodthoff et al. 2021, IEEE JBHI 25:1519).
  """
  num_classes: int
  stem_width: int = 32
  widths: Sequence[int] = (32, 64, 128, 128)
  blocks_per_stage: int = 1
  kernel_size: int = 7
  dropout: float = 0.3
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  view: str = "page"
  rhythm_width: int = 16
  pooling: str = "mean"

  @nn.compact
  def __call__(self, signals, *, train: bool = False, return_features: bool = False):
    if signals.ndim != 3:
      raise ValueError(f"ResNet1D takes (batch, time, channels) signals, got shape "
                       f"{signals.shape}; it needs config.data.input='signals'.")
    conv = functools.partial(nn.Conv, kernel_size=(self.kernel_size,), padding="SAME",
                             use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
    norm = functools.partial(BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                             epsilon=1e-3, dtype=self.dtype, param_dtype=jnp.float32)
    if self.view not in VIEWS:
      raise ValueError(f"ResNet1D.view={self.view!r} (config.model.view); use one of {VIEWS}.")
    if self.pooling not in POOLINGS:
      raise ValueError(f"ResNet1D.pooling={self.pooling!r} (config.model.pooling); use one of "
                       f"{POOLINGS}.")
    views = self.view.split("+")
    # The rhythm strip's QRS peaks, found once for the views that read them.
    peaks = (beats_lib.qrs_peaks(signals[:, :, -1], beats_lib.rate(signals.shape[1]))
             if {"beats", "rhythm"} & set(views) else None)
    inputs = {"page": lambda: signals, "stacked": lambda: stack_leads(signals),
              "beats": lambda: beats_lib.average_beats(signals, peaks)[0]}
    features = []
    for view in views:
      if view == "rhythm":
        rhythm = beats_lib.rhythm_features(signals.astype(jnp.float32), peaks)
        features.append(nn.relu(nn.Dense(self.rhythm_width, dtype=self.dtype,
                                         param_dtype=jnp.float32, name="rhythm_dense")(rhythm)))
        continue
      beat = view == "beats"
      # The page trunk keeps its names of before the views, so older runs load unchanged.
      prefix = "beats_" if beat else ""
      x = inputs[view]().astype(self.dtype)
      # The beats are 0.7 s long: no downsampling stem, so that the ST segment keeps its samples.
      x = conv(self.stem_width, strides=(1 if beat else 2,), name=f"{prefix}stem")(x)
      x = nn.relu(norm(name=f"{prefix}stem_bn")(x))
      if not beat:
        x = nn.max_pool(x, (3,), strides=(2,), padding="SAME")
      for stage, width in enumerate(self.widths):
        for block in range(self.blocks_per_stage):
          strides = 2 if block == 0 and stage > 0 else 1
          x = ResidualBlock1D(width, strides, conv, norm,
                              name=f"{prefix}stage{stage}_block{block}")(x)
      features += [_POOL[p](x, axis=1) for p in self.pooling.split("+")]
    features = jnp.concatenate(features, axis=-1)
    x = nn.Dropout(self.dropout, deterministic=not train)(features)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                      name="logits")(x).astype(jnp.float32)
    if return_features:
      return logits, features.astype(jnp.float32)
    return logits
