"""Converts Keras MobileNetV2 / VGG16 weights into Flax variables: the library side of the import.

`load_keras_model(path, model_name)` reads a whole saved model (`.keras`, or `.h5` written by
`model.save`), possibly with the application nested inside it, or a weights-only `.h5` such as
Keras' ImageNet files (with or without the classifier top), for which the Keras application is built
first. `from_keras(keras_model, model)` maps weights by layer name onto our modules (their layers
carry Keras' names), and fails naming the layer on any name or shape mismatch. Two conversions are
allowed on purpose: a 3-channel first convolution is summed over its input channels for a 1-channel
(gray) model, which gives identical outputs on gray images; and with `drop_top` Keras' `predictions`
layer is ignored (e.g. 1000 ImageNet classes) and ours keeps its fresh initialisation.

Keras and TensorFlow are imported inside the functions only, so `ecgjax.models` never needs them.
Not for: writing a run directory, or the command line (both in `ecgjax.convert_keras`, so that
the model library imports neither the experiment configs nor the checkpoint code); exporting Flax
weights back to Keras; architectures other than MobileNetV2 and VGG16.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# The layers of our modules that may be missing from a Keras model without a classifier top.
_HEAD_LAYERS = ("predictions", "fc1", "fc2")


def iter_layers(keras_model) -> Iterator[Any]:
  """Yields every layer with weights, descending into nested models (a seed-style wrapper)."""
  for layer in keras_model.layers:
    if hasattr(layer, "layers") and layer.layers:
      yield from iter_layers(layer)
    elif layer.weights:
      yield layer


def keras_variables(keras_model, rename: Mapping[str, str] | None = None) -> dict[str, dict]:
  """Converts every Keras layer with weights into Flax's layout, keyed by (renamed) layer name.

  Returns:
    {'params': {layer: {...}}, 'batch_stats': {layer: {...}}} of numpy arrays.
  """
  import keras  # pylint: disable=import-outside-toplevel

  rename = dict(rename or {})
  params, batch_stats = {}, {}
  for layer in iter_layers(keras_model):
    name = rename.pop(layer.name, layer.name)
    if name in params:
      raise ValueError(f"Two Keras layers map to Flax layer {name!r}; check --rename.")
    weights = [np.asarray(w) for w in layer.get_weights()]
    if isinstance(layer, keras.layers.DepthwiseConv2D):
      if layer.depth_multiplier != 1:
        raise ValueError(f"Keras layer {layer.name!r}: depth_multiplier={layer.depth_multiplier}; "
                         "only 1 is supported.")
      # Keras: (kh, kw, C, 1); flax grouped conv: (kh, kw, 1, C).
      params[name] = {"kernel": weights[0].transpose(0, 1, 3, 2)}
      if layer.use_bias:
        params[name]["bias"] = weights[1]
    elif isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
      params[name] = {"kernel": weights[0]}
      if layer.use_bias:
        params[name]["bias"] = weights[1]
    elif isinstance(layer, keras.layers.BatchNormalization):
      if not (layer.scale and layer.center):
        raise ValueError(f"Keras layer {layer.name!r}: BatchNormalization without scale or center "
                         "is not supported.")
      gamma, beta, mean, var = weights
      params[name] = {"scale": gamma, "bias": beta}
      batch_stats[name] = {"mean": mean, "var": var}
    else:
      raise ValueError(f"Keras layer {layer.name!r} ({type(layer).__name__}) has weights but no "
                       "known Flax counterpart.")
  if rename:
    raise ValueError(f"--rename names Keras layers that do not exist: {sorted(rename)}.")
  return {"params": params, "batch_stats": batch_stats}


def _merge(target: dict, source: dict, collection: str, drop_top: bool) -> dict:
  """Takes every layer of `target` (shape tree) from `source`; errors name the layer."""
  merged = {}
  extra = sorted(set(source) - set(target) - ({"predictions"} if drop_top else set()))
  if extra:
    raise ValueError(f"Keras layer(s) {extra} have no counterpart in the Flax model "
                     f"({collection}); wrong --model/--alpha, or a head to --rename?")
  for layer, leaves in target.items():
    if layer not in source or (drop_top and layer == "predictions"):
      if layer in _HEAD_LAYERS:
        continue
      raise ValueError(f"Flax layer {layer!r} ({collection}) is missing from the Keras model.")
    if set(leaves) != set(source[layer]):
      raise ValueError(f"Layer {layer!r}: Flax has {sorted(leaves)}, Keras has "
                       f"{sorted(source[layer])} ({collection}).")
    merged[layer] = {}
    for leaf, spec in leaves.items():
      value = source[layer][leaf]
      if (leaf == "kernel" and value.ndim == 4 and spec.shape[2] == 1 and value.shape[2] == 3
          and value.shape[:2] + value.shape[3:] == spec.shape[:2] + spec.shape[3:]):
        # Gray input: a gray image repeated on 3 channels meets the summed kernel identically.
        value = value.sum(axis=2, keepdims=True)
      if value.shape != spec.shape:
        raise ValueError(f"Layer {layer!r} {leaf}: Keras shape {value.shape} but Flax shape "
                         f"{spec.shape} ({collection}); check --alpha, --image_size, --channels, "
                         "the number of classes, or --drop_top.")
      merged[layer][leaf] = jnp.asarray(value, spec.dtype)
  return merged


def from_keras(keras_model, model: nn.Module | None = None, *, image_shape: tuple[int, ...] |
               None = None, drop_top: bool = False, rename: Mapping[str, str] | None = None,
               seed: int = 0) -> dict[str, Any]:
  """Returns Flax variables {'params', 'batch_stats'} holding `keras_model`'s weights.

  Args:
    keras_model: a Keras MobileNetV2 or VGG16 (Keras Applications layout), possibly nested.
    model: the Flax module to fill; None returns the raw conversion (`keras_variables`).
    image_shape: (H, W, C) of the Flax model's input; default: the Keras input shape.
    drop_top: ignore Keras' `predictions` layer and keep ours freshly initialised.
    rename: Keras layer name -> Flax layer name, e.g. {'dense': 'predictions'}.
    seed: initialises the layers Keras does not provide (a missing classifier top).
  """
  source = keras_variables(keras_model, rename)
  if model is None:
    return source
  if image_shape is None:
    image_shape = tuple(keras_model.input_shape[1:])
  if None in image_shape:
    raise ValueError(f"Keras input shape {keras_model.input_shape} is not fully defined; pass "
                     "image_shape=(H, W, C).")
  init = lambda: model.init(jax.random.key(seed), jnp.zeros((1, *image_shape), jnp.float32))
  shapes = flax.core.unfreeze(jax.eval_shape(init))
  # Parameters first, so that a mismatch is reported at the first layer of the network.
  merged = {
      collection: _merge(shapes[collection], source.get(collection, {}), collection, drop_top)
      for collection in sorted(shapes, key=lambda c: c != "params")}
  missing = {c: [l for l in tree if l not in merged[c]] for c, tree in shapes.items()}
  if any(missing.values()):
    logging.info("Layers kept from initialisation (not in the Keras model): %s", missing)
    fresh = flax.core.unfreeze(jax.jit(init)())
    for collection, layers in missing.items():
      for layer in layers:
        merged[collection][layer] = fresh[collection][layer]
  return merged


def load_keras_model(path: str, model_name: str, *, alpha: float = 1.0,
                     image_size: int | None = None):
  """Loads a whole Keras model from `path`, or builds the application and loads weights into it."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"Keras weights file {path!r} does not exist.")
  import keras  # pylint: disable=import-outside-toplevel

  if path.endswith(".keras") or _h5_has_model_config(path):
    return keras.models.load_model(path, compile=False)
  if not path.endswith(".h5"):
    raise ValueError(f"{path!r}: expected a .keras or .h5 file.")
  import h5py  # pylint: disable=import-outside-toplevel

  with h5py.File(path, "r") as f:
    group = f["model_weights"] if "model_weights" in f else f
    include_top = "predictions" in group
    classes = 1000
    if include_top:
      kernels = []
      group["predictions"].visititems(
          lambda name, item: kernels.append(item.shape[-1])
          if isinstance(item, h5py.Dataset) and "kernel" in name else None)
      classes = kernels[0] if kernels else classes
  size = image_size or 224
  kwargs = dict(weights=None, include_top=include_top, input_shape=(size, size, 3),
                classes=classes, classifier_activation=None)
  if model_name == "mobilenet_v2":
    keras_model = keras.applications.MobileNetV2(alpha=alpha, **kwargs)
  else:
    keras_model = keras.applications.VGG16(**kwargs)
  keras_model.load_weights(path)
  return keras_model


def _h5_has_model_config(path: str) -> bool:
  if not path.endswith(".h5"):
    return False
  import h5py  # pylint: disable=import-outside-toplevel

  with h5py.File(path, "r") as f:
    return "model_config" in f.attrs


if __name__ == "__main__":
  # The command moved with the run-directory writing; this module stays a library (see above).
  import shlex  # pylint: disable=import-outside-toplevel
  import sys  # pylint: disable=import-outside-toplevel
  sys.exit("ecgjax.models.keras_import is no longer a command; run, with the same flags:\n  "
           + shlex.join(["python", "-m", "ecgjax.convert_keras", *sys.argv[1:]]))
