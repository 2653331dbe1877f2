"""What the trainer asks of a model before building it, and the fused model's answer: its backbones.

`prepare(config)` returns a `ModelSetup`: extra arguments for `models.create_model`, a function that
puts pretrained variables into the freshly initialised ones, and which parameters the optimizer must
not move. For every model but `fusion` it is the empty `ModelSetup()`. For `fusion` it restores each
backbone from its trained run (`config.fusion.workdirs`, the checkpoint that run reported), checks
that run used the same data fields and folds as this one, takes each backbone's architecture from
that run's config, and, with `config.model.freeze_backbones`, freezes the `backbone_<key>` subtrees.

This module reads checkpoints so that `ecgjax.models.fusion` need not: the model knows nothing of
runs or workdirs. It does not train, and it is not how a fused run itself is restored (that is
`checkpoints.load_model`, like any other run).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from ecgjax import checkpoints
from ecgjax.models.fusion import BACKBONE_PREFIX
from ecgjax.models.fusion import input_of

# The data fields a backbone's run must share with the fused run, and their values in configs
# written before the field existed: a page model's preprocessing, or a signal model's rate.
_DATA_FIELDS = {"image": (("value_range", None), ("grayscale", None), ("image_size", None),
                          ("remove_grid", False), ("downscale", "bilinear")),
                "signals": (("signal_hz", 125),)}


@dataclasses.dataclass(frozen=True)
class ModelSetup:
  """What a model needs from the trainer besides `models.create_model(config.model)`.

  Attributes:
    model_overrides: extra keyword arguments for `models.create_model`.
    restore: `(params, batch_stats) -> (params, batch_stats)`, the initialised trees with pretrained
      subtrees put in (as host values); None when nothing is restored.
    frozen: `params -> tree of bools`, True for each parameter the optimizer must not move (not even
      by weight decay); None when all train.
    restored: the top-level subtrees of params and batch_stats that `restore` puts in; the trainer
      does not initialise them. `restore` accepts trees without them.
  """
  model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  restore: Callable[[Any, Any], tuple[Any, Any]] | None = None
  restored: frozenset[str] = frozenset()
  frozen: Callable[[Any], Any] | None = None


def prepare(config: ml_collections.ConfigDict) -> ModelSetup:
  """The set-up of `config.model`: nothing unless it is `fusion` (see the module docstring)."""
  if config.model.name != "fusion":
    return ModelSetup()
  loaded = load_backbones(config.fusion.workdirs)
  frozen = bool(config.model.freeze_backbones)
  missing = [k for k in config.model.backbones if k not in loaded]
  if frozen and missing:
    raise ValueError(
        f"config.model.freeze_backbones is True but no trained run is given for backbone(s) "
        f"{missing}: set --config.fusion.workdirs.{missing[0]}=RUN_DIR (or unfreeze them).")
  for key, backbone in loaded.items():
    for field, default in _DATA_FIELDS[input_of(backbone.config.model)]:
      theirs = backbone.config.data.get(field, default)
      if tuple(np.atleast_1d(theirs)) != tuple(np.atleast_1d(config.data[field])):
        raise ValueError(
            f"Backbone {key!r} ({config.fusion.workdirs[key]}) was trained with "
            f"data.{field}={theirs!r} but this run has "
            f"{config.data[field]!r}; set --config.data.{field} to match.")
    _check_folds(key, config.fusion.workdirs[key], backbone.config, config)
    logging.info("Backbone %r: %s, checkpoint %s at step %d.", key, config.fusion.workdirs[key],
                 backbone.which, backbone.step)
  specs = {k: (loaded[k].config.model.to_dict() if k in loaded else v.to_dict())
           for k, v in config.model.backbones.items()}
  return ModelSetup(model_overrides={"backbones": specs},
                    restore=functools.partial(_put_backbones, loaded) if loaded else None,
                    restored=frozenset(f"{BACKBONE_PREFIX}{k}" for k in loaded),
                    frozen=frozen_backbones if frozen else None)


def _check_folds(key: str, workdir: str, theirs: ml_collections.ConfigDict,
                 config: ml_collections.ConfigDict) -> None:
  """Refuses a backbone run that trained on the fold this run tests or validates on (of the same
  data set: a backbone trained elsewhere has no folds of this one)."""
  if (theirs.dataset.name, theirs.dataset.get("config")) != (config.dataset.name,
                                                             config.dataset.get("config")):
    return
  held_out = {theirs.data.get("test_fold"), theirs.data.get("val_fold")} - {None}
  for field in ("test_fold", "val_fold"):
    fold = config.data.get(field)
    if fold is not None and fold not in held_out:
      raise ValueError(
          f"Backbone {key!r} ({workdir}) trained on fold {fold}, which this run holds out "
          f"(data.{field}={fold}; the backbone held out {sorted(held_out) or 'none'}): fuse the "
          f"backbone runs of the same test and validation folds.")


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config` with each backbone whose trained run is given (`config.fusion.workdirs`) described by
  that run's own `config.model`, so that the fused run's config.json rebuilds the model it trained.

  Reads only the runs' config.json; any model but `fusion` is returned as it is.
  """
  if config.model.name != "fusion":
    return config
  resolved = ml_collections.ConfigDict(config.to_dict())
  for key, workdir in dict(config.fusion.workdirs).items():
    if workdir:
      try:
        theirs = checkpoints.read_config(workdir).model
      except FileNotFoundError as e:
        raise FileNotFoundError(f"config.fusion.workdirs.{key}={workdir!r}: {e}") from e
      resolved.model.backbones[key] = ml_collections.ConfigDict(theirs.to_dict())
  return resolved


def load_backbones(workdirs: ml_collections.ConfigDict | dict[str, str]
                   ) -> dict[str, checkpoints.LoadedModel]:
  """The trained backbones of a fused model: {key: LoadedModel} for every non-empty workdir."""
  loaded = {}
  for key, workdir in dict(workdirs).items():
    if not workdir:
      continue
    try:
      # The checkpoint its run reported; this run's compilation cache, not that run's.
      loaded[key] = checkpoints.load_model(workdir, use_its_cache=False)
    except FileNotFoundError as e:
      raise FileNotFoundError(f"config.fusion.workdirs.{key}={workdir!r}: {e}") from e
  return loaded


def frozen_backbones(params: dict[str, Any]) -> dict[str, Any]:
  """True for every parameter of a backbone (a top-level `backbone_<key>` subtree)."""
  return {k: jax.tree_util.tree_map(lambda _, f=k.startswith(BACKBONE_PREFIX): f, v)
          for k, v in params.items()}


def _put_backbones(loaded: dict[str, checkpoints.LoadedModel], params: dict[str, Any],
                   batch_stats: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  params, batch_stats = dict(params), dict(batch_stats)
  for key, backbone in loaded.items():
    # Restored on this process's device; as host values they replicate over every process's.
    variables = jax.device_get(backbone.variables)
    params[f"{BACKBONE_PREFIX}{key}"] = variables["params"]
    if "batch_stats" in variables:
      batch_stats[f"{BACKBONE_PREFIX}{key}"] = variables["batch_stats"]
  return params, batch_stats
