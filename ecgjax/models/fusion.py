"""Fusion of several trained backbones (custom CNN, MobileNetV2, VGG16) under one head.

`FusedModel` runs each backbone on the same images and combines them by `method`:

- 'concat_mlp': concatenated penultimate features -> Dense(mlp_units) -> ReLU -> Dropout -> logits.
- 'mean_probs': the average of the backbones' softmax probabilities; the returned "logits" are its
  log, so softmax/cross-entropy on them see exactly the averaged probabilities. No parameters.
- 'learned_logit_weights': softmax-normalised learned weights (one per backbone, starting equal)
  over the backbones' logits.

The backbones may read different inputs: called with a dict (`config.data.input='image+signals'`:
{"image": pages, "signals": digitized leads}), each backbone reads the entry `input_of` names, the
signals for a signal model (`models.SIGNAL_MODELS`, e.g. the 1-D ResNet), the page images for the
others; called with one array, every backbone reads it.

Trained together (`freeze_backbones=False`, no trained runs given: `configs/fusion.py:...,joint`),
each backbone's logits are also sown, in training mode, into the collection `BRANCHES`
(``branches/logits``, one entry per backbone in order), so that the train step can give every
backbone its own cross-entropy besides the fused one (`config.train.branch_loss_weight`; measured
in docs/results/joint.md). `bn_momentum`, when set, replaces every backbone's BatchNorm momentum,
so that the trainer can recompute their statistics (`config.train.bn_recompute_batches`) through
one field as it does for a single model.

Backbone variables live under ``params/backbone_<key>`` (and ``batch_stats/backbone_<key>``), the
same trees each backbone has on its own, so a trained backbone checkpoint drops in. Restoring them
from their workdirs is `ecgjax.fusion_backbones`' job, not this module's (a model knows nothing of
runs). With `freeze_backbones` (default) the backbones run in inference mode (running BatchNorm
statistics, no dropout) and their outputs pass through `jax.lax.stop_gradient`, so they receive zero
gradients; `fusion_backbones` also masks them out of the optimizer, so that weight decay does not
move them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

METHODS = ("concat_mlp", "mean_probs", "learned_logit_weights")
BACKBONE_PREFIX = "backbone_"  # Backbone <key>'s variables are the subtree `backbone_<key>`.
BRANCHES = "branches"  # Collection of each backbone's own logits, for the train step's branch loss.


def mean_probs(logits: Sequence[jax.Array]) -> jax.Array:
  """The log of the backbones' averaged softmax probabilities (the 'mean_probs' fusion): softmax
  and cross-entropy on it see exactly the averaged probabilities."""
  log_probs = jnp.stack([jax.nn.log_softmax(l) for l in logits])
  return jax.nn.logsumexp(log_probs, axis=0) - jnp.log(len(logits))


def input_of(spec: Any) -> str:
  """Which entry of a dict input a backbone reads: 'signals' for a signal model, else 'image'.

  `spec` is a backbone's config (with 'name') or module; a module names its input with an `input`
  attribute if it has one.
  """
  from ecgjax.models import SIGNAL_MODELS  # pylint: disable=import-outside-toplevel
  if isinstance(spec, nn.Module):
    return getattr(spec, "input", "image")
  return "signals" if dict(spec).get("name") in SIGNAL_MODELS else "image"


def _build_backbone(spec: Any, num_classes: int, dtype: Any,
                    bn_momentum: float | None = None) -> nn.Module:
  if isinstance(spec, nn.Module):
    if bn_momentum is not None and hasattr(spec, "bn_momentum"):
      return spec.clone(bn_momentum=bn_momentum)
    return spec
  from ecgjax.models import create_model  # pylint: disable=import-outside-toplevel
  import ml_collections  # pylint: disable=import-outside-toplevel

  config = ml_collections.ConfigDict(dict(spec))
  if "name" not in config:
    raise ValueError(f"Backbone config {dict(spec)} has no 'name' (config.model.backbones.*.name).")
  if bn_momentum is not None and "bn_momentum" in config:
    config.bn_momentum = bn_momentum
  if "dtype" not in config:
    return create_model(config, num_classes=num_classes, dtype=dtype)
  return create_model(config, num_classes=num_classes)


class FusedModel(nn.Module):
  """Several backbones feeding one fusion head.

  Attributes:
    num_classes: number of output logits (every backbone must produce this many).
    backbones: {key: module or model config with 'name'} or a sequence of them; configs are built
      with `ecgjax.models.create_model`. Keys name the variable subtrees (``backbone_<key>``).
    method: one of `METHODS`.
    freeze_backbones: run backbones in inference mode and stop their gradients.
    mlp_units: hidden width of the 'concat_mlp' head.
    dropout: dropout rate in the 'concat_mlp' head.
    dtype: computation dtype of the head, and of backbones built from configs without a dtype.
    bn_momentum: if set, every backbone's BatchNorm momentum (None: each keeps its own).
  """

  num_classes: int
  backbones: Mapping[str, Any] | Sequence[Any] = ()
  method: str = "concat_mlp"
  freeze_backbones: bool = True
  mlp_units: int = 256
  dropout: float = 0.0
  dtype: Any = jnp.float32
  bn_momentum: float | None = None

  @nn.compact
  def __call__(self, images: jax.Array | Mapping[str, jax.Array], *, train: bool = False,
               return_features: bool = False):
    if self.method not in METHODS:
      raise ValueError(f"FusedModel.method={self.method!r} (config.model.method); expected one "
                       f"of {METHODS}.")
    specs = dict(self.backbones) if isinstance(self.backbones, Mapping) else {
        str(i): spec for i, spec in enumerate(self.backbones)}
    if len(specs) < 2:
      raise ValueError(f"FusedModel needs at least two backbones (config.model.backbones); got "
                       f"{len(specs)}.")
    all_logits, all_features = [], []
    for key, spec in specs.items():
      backbone = _build_backbone(spec, self.num_classes, self.dtype, self.bn_momentum).clone(
          name=f"{BACKBONE_PREFIX}{key}", parent=self)
      inputs = images
      if isinstance(images, Mapping):
        if input_of(spec) not in images:
          raise ValueError(f"Backbone {key!r} reads {input_of(spec)!r} but the model was given "
                           f"only {sorted(images)}; set config.data.input='image+signals'.")
        inputs = images[input_of(spec)]
      logits, features = backbone(inputs, train=train and not self.freeze_backbones,
                                  return_features=True)
      if logits.shape[-1] != self.num_classes:
        raise ValueError(f"Backbone {key!r} gives {logits.shape[-1]} logits; FusedModel has "
                         f"num_classes={self.num_classes}.")
      if self.freeze_backbones:
        logits, features = jax.lax.stop_gradient(logits), jax.lax.stop_gradient(features)
      if train:  # Not at init or evaluation: their variables stay params and batch_stats only.
        self.sow(BRANCHES, "logits", logits.astype(jnp.float32))
      all_logits.append(logits.astype(jnp.float32))
      all_features.append(features.astype(jnp.float32))

    features = jnp.concatenate(all_features, axis=-1)
    if self.method == "concat_mlp":
      hidden = nn.relu(nn.Dense(self.mlp_units, dtype=self.dtype, param_dtype=jnp.float32,
                                name="fusion_hidden")(features.astype(self.dtype)))
      features = hidden.astype(jnp.float32)
      hidden = nn.Dropout(self.dropout, deterministic=not train)(hidden)
      logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                        name="fusion_logits")(hidden).astype(jnp.float32)
    elif self.method == "mean_probs":
      logits = mean_probs(all_logits)
    else:
      weights = jax.nn.softmax(self.param("fusion_weights", nn.initializers.zeros,
                                          (len(all_logits),), jnp.float32))
      logits = jnp.einsum("k,kbc->bc", weights, jnp.stack(all_logits))
    if return_features:
      return logits, features
    return logits
