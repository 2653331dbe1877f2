"""Orbax checkpoints of a run's workdir, and loading a trained model back for inference.

Layout of a workdir:
  config.json                the run's config, written at the start (what `load_model` rebuilds from)
  checkpoints/<step>/state   the TrainState (parameters, optimizer, EMA, BatchNorm statistics)
  checkpoints/<step>/data    the grain iterator state of every process (for exact resumption)

The manager keeps the latest `config.train.keep_checkpoints` checkpoints and, besides them, the best
by validation macro-F1 (metric `val_macro_f1`, saved at the end of each epoch).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import grain
import jax
import ml_collections
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from ecgjax import mesh as mesh_lib
from ecgjax import models

BEST_METRIC = "val_macro_f1"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), "checkpoints")


def make_manager(workdir: str, keep: int = 2) -> ocp.CheckpointManager:
  preservation = policies.AnyPreservationPolicy([
      policies.LatestN(n=keep),
      policies.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1,
                     keep_checkpoints_without_metrics=False),
  ])
  options = ocp.CheckpointManagerOptions(
      preservation_policy=preservation, best_fn=lambda m: m[BEST_METRIC], best_mode="max",
      create=True, enable_async_checkpointing=False)
  return ocp.CheckpointManager(checkpoint_dir(workdir), item_names=("state", "data"),
                               options=options)


def save(manager: ocp.CheckpointManager, step: int, state: Any,
         data_iterator: grain.DatasetIterator | None, metrics: dict[str, float] | None = None):
  items = {"state": ocp.args.StandardSave(state)}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointSave(data_iterator)
  manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=True)


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any,
            data_iterator: grain.DatasetIterator | None = None) -> Any:
  """Restores the state (sharded like `abstract_state`) and, if given, the iterator in place."""
  items = {"state": ocp.args.StandardRestore(abstract_state)}
  if data_iterator is not None:
    items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
  try:
    return manager.restore(step, args=ocp.args.Composite(**items))["state"]
  except ValueError as e:
    if "structure" not in str(e):
      raise
    raise ValueError(
        f"The checkpoint at step {step} in {manager.directory} does not match the model and "
        "optimizer this config builds (a changed config.model or config.train.optimizer/"
        "grad_clip_norm?). Resume with the run's own config.json, or start a new --workdir "
        f"(use config.init_from to start from its weights). Orbax said: {str(e)[:500]}") from e


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"{path} not found: {workdir!r} is not an ecgjax run directory (train one with "
        "`python -m ecgjax.main --config=... --workdir=...`).")
  with open(path) as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))


def _tuples(tree):
  """JSON turns tuples into lists; configs use tuples (image sizes, filters)."""
  if isinstance(tree, dict):
    return {k: _tuples(v) for k, v in tree.items()}
  if isinstance(tree, list):
    return tuple(_tuples(v) for v in tree)
  return tree


@dataclasses.dataclass(eq=False)  # Hashable by identity, so `logit_fn` can be a static jit argument.
class LoadedModel:
  """A trained model ready for inference: `logit_fn(images_in_value_range) -> (B, classes)`."""
  config: ml_collections.ConfigDict
  model: nn.Module
  variables: dict[str, Any]
  step: int

  def logit_fn(self, images: jax.Array) -> jax.Array:
    return self.model.apply(self.variables, images, train=False)

  def apply(self, variables: dict[str, Any], images: jax.Array, **kwargs) -> jax.Array:
    return self.model.apply(variables, images, train=False, **kwargs)


def select_step(manager: ocp.CheckpointManager, which: str | int) -> int:
  if isinstance(which, int) or str(which).isdigit():
    step = int(which)
    if step not in manager.all_steps():
      raise ValueError(f"No checkpoint at step {step} in {manager.directory}; "
                       f"have {sorted(manager.all_steps())}.")
    return step
  if which == "best":
    step = manager.best_step()
    if step is None:  # No checkpoint carries a validation metric (no val fold): use the latest.
      step = manager.latest_step()
  elif which == "latest":
    step = manager.latest_step()
  else:
    raise ValueError(f"Checkpoint {which!r}: use 'best', 'latest' or a step number.")
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {manager.directory}: has the run trained?")
  return step


def inference_variables(state: Any) -> dict[str, Any]:
  """The variables evaluation uses: EMA parameters if kept, and recomputed BatchNorm statistics."""
  params = state["ema_params"] if state.get("ema_params") else state["params"]
  variables = {"params": params}
  if state.get("eval_batch_stats"):
    variables["batch_stats"] = state["eval_batch_stats"]
  return variables


def load_model(workdir: str, which: str | int = "best",
               model_factory: Callable[[ml_collections.ConfigDict], nn.Module] | None = None
               ) -> LoadedModel:
  """Rebuilds a run's model from `workdir/config.json` and restores its inference variables."""
  config = read_config(workdir)
  mesh_lib.use_compilation_cache(config.get("compilation_cache_dir"))
  manager = make_manager(workdir, keep=int(config.train.keep_checkpoints))
  step = select_step(manager, which)
  # Onto this process's first device: in a multi-process run every process restores (orbax's
  # restore is collective) and then computes with its own copy, needing no other process.
  target = _local_target(os.path.join(manager.directory, str(step), "state"))
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))
  state = restored["state"]
  model = (model_factory or (lambda c: models.create_model(c.model)))(config)
  manager.close()
  return LoadedModel(config=config, model=model, variables=inference_variables(state), step=step)


def _local_target(directory: str) -> Any:
  """The abstract tree of the state saved in `directory`, every array on this process's device."""
  tree = ocp.StandardCheckpointHandler().metadata(epath.Path(directory)).tree
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), tree)


def load_backbones(workdirs: ml_collections.ConfigDict | dict[str, str]) -> dict[str, LoadedModel]:
  """The trained backbones of a fused model: {key: LoadedModel} for every non-empty workdir."""
  loaded = {}
  for key, workdir in dict(workdirs).items():
    if not workdir:
      continue
    try:
      loaded[key] = load_model(workdir, "best")
    except FileNotFoundError as e:
      raise FileNotFoundError(f"config.fusion.workdirs.{key}={workdir!r}: {e}") from e
  return loaded


def save_inference_variables(workdir: str, config: ml_collections.ConfigDict,
                             variables: dict[str, Any], step: int = 0) -> str:
  """Writes a run directory holding only inference variables (e.g. converted Keras weights).

  `load_model`, `config.init_from`, saliency and prediction then use it like a trained run. Refuses
  to overwrite a workdir that already has checkpoints.
  """
  manager = make_manager(workdir)
  if manager.latest_step() is not None:
    latest = manager.latest_step()
    manager.close()
    raise FileExistsError(f"{manager.directory} already holds a checkpoint (step {latest}); "
                          "choose a new --workdir.")
  write_config(config, workdir)
  batch_stats = variables.get("batch_stats", {})
  state = {"params": variables["params"], "ema_params": variables["params"],
           "batch_stats": batch_stats, "eval_batch_stats": batch_stats}
  manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)), force=True)
  manager.close()
  return os.path.join(manager.directory, str(step))
