"""Model registry: every model is chosen by name from `config.model.name`.

`create_model(model_config)` passes every other field of `config.model` to the module's constructor,
so `--config.model.alpha=0.5` sets `MobileNetV2.alpha`, and a field the module does not have is an
error naming it. Modules are imported lazily so that a model's heavy dependencies load only when it is
used.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import ml_collections

from ecgjax.classes import NUM_CLASSES

# name -> "module:Class".
MODELS: dict[str, str] = {
    "cnn": "ecgjax.models.cnn:CustomCNN",
    "mobilenet_v2": "ecgjax.models.mobilenet_v2:MobileNetV2",
    "vgg16": "ecgjax.models.vgg16:VGG16",
    "fusion": "ecgjax.models.fusion:FusedModel",
    "resnet1d": "ecgjax.models.resnet1d:ResNet1D",
}
# What each model reads (`config.data.input`): page images unless named here.
SIGNAL_MODELS: frozenset[str] = frozenset({"resnet1d"})

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def get_model_cls(name: str) -> type[nn.Module]:
  if name not in MODELS:
    raise ValueError(f"Unknown model {name!r} (config.model.name); available: {sorted(MODELS)}.")
  module_name, cls_name = MODELS[name].split(":")
  return getattr(importlib.import_module(module_name), cls_name)


def model_kwargs(model_config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """The constructor arguments in `model_config` (all fields but `name`), with dtypes resolved."""
  kwargs = dict(model_config.to_dict() if hasattr(model_config, "to_dict") else model_config)
  kwargs.pop("name")
  # MobileNetV2's `depthwise_impl` is now `conv_impl`, which every convolution shares. Runs saved
  # before it merged still load: the choice changes speed only, never the function computed, and
  # 'auto' picks the fast path of the machine that loads them.
  kwargs.pop("depthwise_impl", None)
  for key in ("dtype", "param_dtype"):
    if isinstance(kwargs.get(key), str):
      if kwargs[key] not in _DTYPES:
        raise ValueError(f"config.model.{key}={kwargs[key]!r}; expected one of {sorted(_DTYPES)}.")
      kwargs[key] = _DTYPES[kwargs[key]]
  for key, value in kwargs.items():
    if isinstance(value, list):  # ConfigDict turns tuples into lists on the command line.
      kwargs[key] = tuple(value)
  return kwargs


def create_model(model_config: ml_collections.ConfigDict, num_classes: int = NUM_CLASSES,
                 **overrides) -> nn.Module:
  """Builds the module named by `model_config.name` with the other fields as its arguments."""
  cls = get_model_cls(model_config.name)
  kwargs = {**model_kwargs(model_config), **overrides}
  fields = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ValueError(
        f"config.model has field(s) {unknown} that model {model_config.name!r} ({cls.__name__}) "
        f"does not take; its fields are {sorted(fields - {'parent', 'name'})}.")
  return cls(num_classes=num_classes, **kwargs)
