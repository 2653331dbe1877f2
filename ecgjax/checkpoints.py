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
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from absl import logging
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
  if jax.process_index() == 0:
    step_dir = os.path.join(manager.directory, str(step))
    _write_json(os.path.join(step_dir, CHECKSUMS), _file_checksums(step_dir))


# Beside orbax's files in each step directory: the CRC-32 of every file at save time, so that a
# bit flipped on disk since is found before the state is used (orbax and TensorStore check the
# structure of what they read, not its bytes).
CHECKSUMS = "ecgjax_checksums.json"


def _write_json(path: str, value: Any) -> None:
  with open(path + ".tmp", "w") as f:
    json.dump(value, f, indent=0, sort_keys=True)
  os.replace(path + ".tmp", path)


def _file_checksums(step_dir: str) -> dict[str, int]:
  sums = {}
  for root, _, files in os.walk(step_dir):
    for name in files:
      path = os.path.join(root, name)
      if path == os.path.join(step_dir, CHECKSUMS):
        continue
      crc = 0
      with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
          crc = zlib.crc32(chunk, crc)
      sums[os.path.relpath(path, step_dir)] = crc
  return sums


def verify(manager: ocp.CheckpointManager, step: int) -> None:
  """Raises OSError naming the files of checkpoint `step` that changed or vanished since it was
  saved (checkpoints saved before ecgjax wrote checksums are not checked)."""
  step_dir = os.path.join(manager.directory, str(step))
  path = os.path.join(step_dir, CHECKSUMS)
  if not os.path.exists(path):
    return
  with open(path) as f:
    expected = json.load(f)
  actual = _file_checksums(step_dir)
  bad = sorted(name for name, crc in expected.items() if actual.get(name) != crc)
  if bad:
    raise OSError(f"{len(bad)} file(s) differ from their checksums at save time or are missing: "
                  f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}")


class CheckpointMismatchError(ValueError):
  """A readable checkpoint that does not fit the model and optimizer the config builds."""


class CheckpointError(RuntimeError):
  """No checkpoint of the ones asked for could be read."""


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
    raise CheckpointMismatchError(
        f"The checkpoint at step {step} in {manager.directory} does not match the model and "
        "optimizer this config builds (a changed config.model or config.train.optimizer/"
        "grad_clip_norm?). Resume with the run's own config.json, or start a new --workdir "
        f"(use config.init_from to start from its weights). Orbax said: {str(e)[:500]}") from e


def candidate_steps(manager: ocp.CheckpointManager, which: str | int) -> list[int]:
  """The steps to try for `which`, in order: a step number alone; 'latest' newest first; 'best'
  the best by validation macro-F1 first (the latest where none has a metric), then newest first."""
  steps = sorted(manager.all_steps(), reverse=True)
  if isinstance(which, int) or str(which).isdigit():
    if int(which) not in steps:
      raise ValueError(f"No checkpoint at step {int(which)} in {manager.directory}; "
                       f"have {sorted(steps)}.")
    return [int(which)]
  if which not in ("best", "latest"):
    raise ValueError(f"Checkpoint {which!r}: use 'best', 'latest' or a step number.")
  if not steps:
    raise FileNotFoundError(f"No checkpoint in {manager.directory}: has the run trained?")
  first = manager.best_step() if which == "best" else None
  first = steps[0] if first is None else first
  return [first] + [s for s in steps if s != first]


def resolved_name(manager: ocp.CheckpointManager, which: str | int) -> str:
  """What `which` names in this run, for reports and logs: 'best' where no checkpoint has a
  validation metric (a run without a validation fold) is the latest, and is called so."""
  if which == "best" and manager.best_step() is None:
    return "latest"
  return str(which)


def select_step(manager: ocp.CheckpointManager, which: str | int) -> int:
  return candidate_steps(manager, which)[0]


def _reason(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:200]}{'...' if len(text) > 200 else ''}"


def restore_first_readable(manager: ocp.CheckpointManager, which: str | int,
                           restore_step: Callable[[int], Any]) -> tuple[int, Any]:
  """(step, restore_step(step)) for the first step of `candidate_steps(manager, which)` that reads.

  A checkpoint that cannot be read (files changed since it was saved, truncated or missing,
  damaged metadata) is logged in one line with its step and the reason, and the next one is tried;
  a readable checkpoint of another model (`CheckpointMismatchError`) is not damage and stops.
  """
  steps = candidate_steps(manager, which)
  failures = []
  for i, step in enumerate(steps):
    try:
      verify(manager, step)
      return step, restore_step(step)
    except CheckpointMismatchError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # orbax and tensorstore raise many types.
      failures.append(f"step {step}: {_reason(e)}")
      logging.warning("The checkpoint at step %d in %s cannot be read (%s)%s.", step,
                      manager.directory, _reason(e),
                      f"; trying step {steps[i + 1]}" if i + 1 < len(steps) else "")
  raise CheckpointError(f"No readable checkpoint for {which!r} in {manager.directory} ("
                        f"{'; '.join(failures)}). Restore the files, or start a new --workdir.")


def set_aside(workdir: str, steps: Sequence[int]) -> None:
  """Moves the checkpoints of `steps` out of the run's checkpoint directory into
  `workdir/damaged_checkpoints/`, kept for inspection, so training can save those steps again."""
  if jax.process_index() != 0:
    return
  target_dir = os.path.join(workdir, "damaged_checkpoints")
  os.makedirs(target_dir, exist_ok=True)
  for step in steps:
    target = os.path.join(target_dir, str(step))
    suffix = 1
    while os.path.exists(target):
      target, suffix = os.path.join(target_dir, f"{step}.{suffix}"), suffix + 1
    os.replace(os.path.join(checkpoint_dir(workdir), str(step)), target)
    logging.warning("Moved the unreadable checkpoint at step %d to %s.", step, target)


# Config fields that a resumed run may change: they decide how a run is fed, watched, saved and
# explained, never what it learns or what its reports measure. `saliency.` covers its whole block.
RESUMABLE_FIELDS = (
    "compilation_cache_dir", "dataset.data_dir", "dataset.manual_dir", "data.worker_count",
    "data.read_threads", "data.prefetch", "data.cache", "train.log_every_steps",
    "train.checkpoint_every_steps", "train.keep_checkpoints", "train.stop_at_step",
    "eval.batch_size", "saliency.")


class WorkdirConfigError(ValueError):
  """A workdir holds a run made with another config: resuming it would mix two experiments."""


def _flat_json(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _flat_json(sub, f"{prefix}{key}.").items()}
  return {prefix[:-1]: tree}


def config_changes(config: ml_collections.ConfigDict, workdir: str) -> tuple[list[str], list[str]]:
  """(fields that may not change, fields that may) where `config` differs from the run in
  `workdir`, each as "field: old -> new"; two empty lists for a new workdir. Fields the run's
  config.json lacks (added to ecgjax since) are not compared."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return [], []
  try:
    with open(path) as f:
      old = _flat_json(json.load(f))
  except (OSError, json.JSONDecodeError) as e:
    raise WorkdirConfigError(f"{path} cannot be read ({e}); it is this run's record: restore it "
                             "or start a new --workdir.") from e
  new = _flat_json(json.loads(config.to_json_best_effort()))
  fixed, resumable = [], []
  for key in sorted(old.keys() & new.keys()):
    if old[key] != new[key]:
      change = f"{key}: {json.dumps(old[key])} -> {json.dumps(new[key])}"
      (resumable if key.startswith(RESUMABLE_FIELDS) else fixed).append(change)
  return fixed, resumable


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir whose run was made with a config that differs beyond `RESUMABLE_FIELDS`,
  before anything is read or written; logs the resumable fields that changed."""
  fixed, resumable = config_changes(config, workdir)
  if fixed:
    raise WorkdirConfigError(
        f"{workdir} holds a run made with another config ({'; '.join(fixed)}). Start a new run "
        "with another --workdir, or resume this one with the config in its config.json; only "
        f"{', '.join(f + '*' if f.endswith('.') else f for f in RESUMABLE_FIELDS)} may change "
        "when a run resumes.")
  if resumable:
    logging.info("Resuming %s with changed fields (config.json keeps the original): %s", workdir,
                 "; ".join(resumable))


def write_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes `workdir/config.json` for a new run; an existing run's record is never overwritten."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, "config.json")
  if jax.process_index() == 0 and not os.path.exists(path):
    with open(path + ".tmp", "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(path + ".tmp", path)


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
  which: str | int = "best"  # The checkpoint asked for: 'best', 'latest' or a step.

  def logit_fn(self, images: jax.Array) -> jax.Array:
    return self.model.apply(self.variables, images, train=False)


def inference_variables(state: Any) -> dict[str, Any]:
  """The variables evaluation uses: EMA parameters if kept, and recomputed BatchNorm statistics."""
  params = state["ema_params"] if state.get("ema_params") else state["params"]
  variables = {"params": params}
  if state.get("eval_batch_stats"):
    variables["batch_stats"] = state["eval_batch_stats"]
  return variables


def reported_checkpoint(config: ml_collections.ConfigDict) -> str | int:
  """The checkpoint a run reports its test fold with (`config.eval.checkpoint`; 'best' in configs
  written before the field)."""
  return config.get("eval", {}).get("checkpoint", "best")


def load_model(workdir: str, which: str | int | None = None,
               model_factory: Callable[[ml_collections.ConfigDict], nn.Module] | None = None,
               use_its_cache: bool = True) -> LoadedModel:
  """Rebuilds a run's model from `workdir/config.json` and restores its inference variables:
  checkpoint `which` ('best', 'latest' or a step), by default the one the run reported
  (`reported_checkpoint`), so that a run evaluated, explained or fused is the run its report
  describes. With `use_its_cache`, the process compiles into that run's compilation cache (its
  `compilation_cache_dir`); a run that loads another's model (a fused model's backbones,
  `init_from`) keeps its own."""
  config = read_config(workdir)
  which = reported_checkpoint(config) if which is None or which == "" else which
  if use_its_cache:
    mesh_lib.use_compilation_cache(config.get("compilation_cache_dir"))
  manager = make_manager(workdir, keep=int(config.train.keep_checkpoints))

  def restore_step(step):
    # Onto this process's first device: in a multi-process run every process restores (orbax's
    # restore is collective) and then computes with its own copy, needing no other process.
    target = _local_target(os.path.join(manager.directory, str(step), "state"))
    args = ocp.args.Composite(state=ocp.args.StandardRestore(target))
    return manager.restore(step, args=args)["state"]

  step, state = restore_first_readable(manager, which, restore_step)
  which = resolved_name(manager, which)
  model = (model_factory or (lambda c: models.create_model(c.model)))(config)
  manager.close()
  return LoadedModel(config=config, model=model, variables=inference_variables(state), step=step,
                     which=which)


def _local_target(directory: str) -> Any:
  """The abstract tree of the state saved in `directory`, every array on this process's device."""
  tree = ocp.StandardCheckpointHandler().metadata(epath.Path(directory)).tree
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), tree)


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
