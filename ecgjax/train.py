"""Training and evaluation: `train_and_evaluate(config, workdir)` and its pure, jitted steps.

`train_step(state, batch) -> (state, metrics)` and `eval_step` are pure functions, jitted over a 1-D
device mesh with the batch sharded on `data` and everything else replicated: the same code runs on
one CPU or a pod. Randomness comes in as keys folded with the step number, so a run resumed from a
checkpoint (which includes the grain iterator state) ends with the same parameters as one never
interrupted. The train step augments its batch itself (`config.data.augment`, ops of
`ecgjax.data.augment`), so the host only gathers decoded pages; and the loop never waits on the
device between steps: whether the loss and parameters stayed finite travels in the metrics and is
read at log and checkpoint steps.

Evaluation-mode statistics are made trustworthy in two ways, both configurable: the evaluated
parameters are an exponential moving average of the trained ones (`train.ema_decay`; over the last
`train.swa_epochs`, their plain average instead: stochastic weight averaging), and before every
evaluation the BatchNorm statistics are recomputed for exactly those parameters as plain averages over
`train.bn_recompute_batches` training batches, instead of trusting moving averages that lag behind.
"""

# No `from __future__ import annotations`: clu metric collections read their annotations.

import dataclasses
import functools
import os
import time
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from clu import metrics

from ecgjax import checkpoints
from ecgjax import fusion_backbones
from ecgjax import mesh as mesh_lib
from ecgjax import models
from ecgjax import report as report_lib
from ecgjax import validate
from ecgjax import writers
from ecgjax.classes import CLASS_NAMES
from ecgjax.classes import NUM_CLASSES
from ecgjax.data import augment
from ecgjax.data import pipeline
from ecgjax.models.fusion import BRANCHES


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any  # Moving averages updated by training (an empty dict for models without BN).
  opt_state: Any
  ema_params: Any  # What evaluation uses (equal to `params` when train.ema_decay is 0).
  eval_batch_stats: Any  # BatchNorm statistics recomputed for `ema_params` at the last evaluation.


@flax.struct.dataclass
class FirstNonFinite(metrics.Metric):
  """The first step (1-based) whose loss or parameter norm was not finite; 0 while none was.

  Carried in the train metrics so that checking it needs no transfer from the device per step.
  """
  step: jax.Array

  @classmethod
  def from_model_output(cls, *, loss, param_norm, step, **_) -> "FirstNonFinite":
    finite = jnp.isfinite(loss) & jnp.isfinite(param_norm)
    return cls(step=jnp.where(finite, 0, step).astype(jnp.int32))

  def merge(self, other: "FirstNonFinite") -> "FirstNonFinite":
    both = (self.step > 0) & (other.step > 0)
    return type(self)(step=jnp.where(both, jnp.minimum(self.step, other.step),
                                     jnp.maximum(self.step, other.step)))

  def compute(self) -> jax.Array:
    return self.step


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")
  accuracy: metrics.Accuracy
  grad_norm: metrics.Average.from_output("grad_norm")
  param_norm: metrics.LastValue.from_output("param_norm")
  learning_rate: metrics.LastValue.from_output("learning_rate")
  first_nonfinite_step: FirstNonFinite


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output("loss")  # Accuracy and the rest come from the logits (report).


class NonFiniteLossError(FloatingPointError):
  pass


# ---------------------------------------------------------------------------------------------
# Optimizer and loss.
# ---------------------------------------------------------------------------------------------


def _decay_mask(params):
  """Weight decay on kernels only: not on biases or normalisation scales (1-D leaves)."""
  return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def swa_start_step(train_config: ml_collections.ConfigDict, total_steps: int,
                   steps_per_epoch: int) -> int | None:
  """The step from which the evaluated parameters are a plain average (`train.swa_epochs`);
  None: the EMA throughout."""
  steps = int(round(float(train_config.get("swa_epochs") or 0.0) * steps_per_epoch))
  return max(total_steps - steps, 0) if steps > 0 else None


def create_optimizer(train_config: ml_collections.ConfigDict, total_steps: int,
                     steps_per_epoch: int, frozen: Callable[[Any], Any] | None = None
                     ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Warm-up + cosine schedule, the configured optimizer, clipping; parameters for which
  `frozen(params)` is True get no updates at all (not even weight decay)."""
  warmup = int(round(train_config.warmup_epochs * steps_per_epoch))
  swa_start = swa_start_step(train_config, total_steps, steps_per_epoch)
  swa_rate = train_config.get("swa_learning_rate")
  constant = swa_start is not None and swa_rate is not None
  # With SWA's constant rate, the cosine ends on that rate where the averaging starts.
  cosine_steps = swa_start if constant else total_steps
  warmup = min(warmup, max(cosine_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=train_config.learning_rate, warmup_steps=warmup,
      decay_steps=max(cosine_steps, warmup + 1), end_value=float(swa_rate) if constant else 0.0)
  if constant:
    schedule = optax.join_schedules([schedule, optax.constant_schedule(float(swa_rate))],
                                    boundaries=[cosine_steps])
  name = train_config.optimizer
  if name == "adamw":
    opt = optax.adamw(schedule, weight_decay=train_config.weight_decay, mask=_decay_mask)
  elif name == "sgd":
    opt = optax.chain(optax.add_decayed_weights(train_config.weight_decay, mask=_decay_mask),
                      optax.sgd(schedule, momentum=0.9, nesterov=True))
  elif name == "lamb":
    opt = optax.lamb(schedule, weight_decay=train_config.weight_decay, mask=_decay_mask)
  else:
    raise ValueError(f"config.train.optimizer={name!r}; use 'adamw', 'sgd' or 'lamb'.")
  if train_config.grad_clip_norm:
    opt = optax.chain(optax.clip_by_global_norm(train_config.grad_clip_norm), opt)
  if frozen is not None:
    def labels(params):
      return jax.tree_util.tree_map(lambda f: "frozen" if f else "trained", frozen(params))
    opt = optax.multi_transform({"trained": opt, "frozen": optax.set_to_zero()}, labels)
  return opt, schedule


def class_weights_for(train_config: ml_collections.ConfigDict, labels: np.ndarray) -> np.ndarray:
  """Per-class loss weights: 'balanced' = n / (classes * n_c), as scikit-learn defines it."""
  mode = train_config.class_weights
  if mode in ("none", "", None):
    return np.ones(NUM_CLASSES, np.float32)
  if mode != "balanced":
    raise ValueError(f"config.train.class_weights={mode!r}; use 'balanced' or 'none'.")
  counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
  weights = np.where(counts > 0, len(labels) / (NUM_CLASSES * np.maximum(counts, 1)), 0.0)
  return weights.astype(np.float32)


def per_example_loss(logits, labels, label_smoothing: float = 0.0, focal_gamma: float = 0.0):
  """Softmax cross-entropy, optionally label-smoothed and focal.

  With `focal_gamma` > 0 each example's loss is scaled by (1 - p)^gamma, p the probability of its
  true class (Lin et al. 2017, "Focal loss for dense object detection"): examples the model already
  gets right count less, the hard ones (often the rare class) more.
  """
  logits = logits.astype(jnp.float32)
  targets = jax.nn.one_hot(labels, logits.shape[-1])
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  loss = optax.softmax_cross_entropy(logits, targets)
  if focal_gamma:
    p_true = jnp.take_along_axis(jax.nn.softmax(logits), labels[:, None], axis=-1)[:, 0]
    loss = jax.lax.stop_gradient((1.0 - p_true) ** focal_gamma) * loss
  return loss


# ---------------------------------------------------------------------------------------------
# Steps (pure; jitted in `train_and_evaluate`).
# ---------------------------------------------------------------------------------------------


def _variables(params, batch_stats):
  return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}


def train_step(state: TrainState, batch: dict[str, jax.Array], *, model: nn.Module,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               class_weights: jax.Array, dropout_key: jax.Array, label_smoothing: float,
               ema_decay: float, value_range: tuple[float, float] | None, focal_gamma: float = 0.0,
               augmentation: augment.Augmentation = augment.Augmentation(),
               augment_key: jax.Array | None = None,
               branch_loss_weight: float = 0.0,
               swa_start: int | None = None) -> tuple[TrainState, TrainMetrics]:
  """One optimizer step. With `branch_loss_weight` w > 0 (a fused model trained with its backbones)
  the loss is (1 - w) x the fused output's cross-entropy + w x the mean of each backbone's own
  (`models.fusion.BRANCHES`): w = 1 trains the backbones independently, as separate runs would.
  From step `swa_start` on, `ema_params` is the plain average of the parameters after each step
  since (stochastic weight averaging) instead of their EMA."""
  if augmentation:  # The page images only; signals (config.data.input) are never augmented.
    batch = {**batch, "image": augmentation.apply(batch["image"],
                                                  jax.random.fold_in(augment_key, state.step))}
  images = pipeline.model_inputs(batch, value_range)
  labels = batch["label"]
  rng = jax.random.fold_in(dropout_key, state.step)

  def loss_fn(params):
    mutable = ["batch_stats", BRANCHES] if branch_loss_weight else ["batch_stats"]
    logits, updates = model.apply(_variables(params, state.batch_stats), images, train=True,
                                  mutable=mutable, rngs={"dropout": rng})
    weights = class_weights[labels]

    def loss_of(out):
      return jnp.mean(weights * per_example_loss(out, labels, label_smoothing, focal_gamma))

    loss = loss_of(logits)
    if branch_loss_weight:
      branches = jax.tree_util.tree_leaves(updates[BRANCHES])
      loss = ((1.0 - branch_loss_weight) * loss
              + branch_loss_weight * sum(loss_of(b) for b in branches) / len(branches))
    return loss, (logits, updates.get("batch_stats", {}))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  # The EMA warms up like TF's ExponentialMovingAverage(num_updates): early steps average less.
  decay = jnp.minimum(ema_decay, (1.0 + state.step) / (10.0 + state.step))
  if swa_start is not None:  # k steps after swa_start, the average of k + 1 parameter sets.
    since = (state.step - swa_start).astype(jnp.float32)
    decay = jnp.where(state.step >= swa_start, since / (since + 1.0), decay)
  ema_params = optax.incremental_update(params, state.ema_params, step_size=1.0 - decay)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, ema_params=ema_params)
  step_metrics = TrainMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=labels, grad_norm=optax.global_norm(grads),
      param_norm=optax.global_norm(params), learning_rate=schedule(state.step),
      step=state.step + 1)
  return new_state, step_metrics


def run_train_step(state: TrainState, batch: dict[str, jax.Array], run_inputs: dict[str, jax.Array],
                   **options) -> tuple[TrainState, TrainMetrics]:
  """`train_step` with a run's own arrays (`class_weights`, `dropout_key`, `augment_key`) as one
  argument, so that they are inputs of the compiled step rather than constants baked into it."""
  return train_step(state, batch, **run_inputs, **options)


def eval_step(variables: dict[str, Any], batch: dict[str, jax.Array], *, model: nn.Module,
              value_range: tuple[float, float] | None) -> tuple[jax.Array, EvalMetrics]:
  logits = model.apply(variables, pipeline.model_inputs(batch, value_range), train=False)
  loss = per_example_loss(logits, batch["label"])
  step_metrics = EvalMetrics.single_from_model_output(
      loss=loss, logits=logits, labels=batch["label"], mask=batch["mask"])
  return logits, step_metrics


def batch_stats_step(params: Any, batch_stats: Any, batch: dict[str, jax.Array], *,
                     model: nn.Module, value_range: tuple[float, float] | None) -> Any:
  """The BatchNorm statistics of one batch alone: `model` must be built with bn_momentum=0."""
  images = pipeline.model_inputs(batch, value_range)
  _, updates = model.apply(_variables(params, batch_stats), images, train=True,
                           mutable=["batch_stats"], rngs={"dropout": jax.random.key(0)})
  return updates["batch_stats"]


# ---------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------


def _init_variables(model, image_shape, key: jax.Array, skip: frozenset[str] = frozenset()
                    ) -> tuple[Any, Any]:
  """The model's initial (params, batch_stats), without the top-level subtrees named in `skip`.

  Jitted, a skipped subtree is dead code: its initialisation is neither compiled nor run. Flax
  draws each parameter from a key of its own path, so the others are the same values either way.
  """
  # One example of every input: (1, *shape), or a dict of them for a model of several inputs.
  dummy = ({k: jnp.zeros((1, *shape), jnp.float32) for k, shape in image_shape.items()}
           if isinstance(image_shape, dict) else jnp.zeros((1, *image_shape), jnp.float32))
  variables = model.init({"params": key, "dropout": key}, dummy, train=False)
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  return ({k: v for k, v in params.items() if k not in skip},
          {k: v for k, v in batch_stats.items() if k not in skip})


def _new_state(params: Any, batch_stats: Any, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params), ema_params=_copy(params),
                    eval_batch_stats=_copy(batch_stats))


def _init_state(model, tx, image_shape, key: jax.Array) -> TrainState:
  return _new_state(*_init_variables(model, image_shape, key), tx)


def _init_from(state: TrainState, workdir: str) -> TrainState:
  """Copies every parameter (and BN statistic) of another run whose path and shape match."""
  # The checkpoint that run reported; this run's compilation cache, not that run's.
  loaded = checkpoints.load_model(workdir, use_its_cache=False)
  source = flax.traverse_util.flatten_dict(loaded.variables, sep="/")
  copied, skipped = 0, []

  def take(collection, tree):
    nonlocal copied
    flat = flax.traverse_util.flatten_dict(tree, sep="/")
    for k, v in flat.items():
      src = source.get(f"{collection}/{k}")
      if src is not None and src.shape == v.shape:
        # Host values: `device_put` then replicates them over the devices of every process.
        flat[k] = np.asarray(src, v.dtype)
        copied += 1
      else:
        skipped.append(f"{collection}/{k}")
    return flax.traverse_util.unflatten_dict(flat, sep="/")

  params = take("params", state.params)
  batch_stats = take("batch_stats", state.batch_stats) if state.batch_stats else state.batch_stats
  if not copied:
    raise ValueError(f"config.init_from={workdir!r}: no parameter matches this model by name and "
                     "shape; is it the same architecture?")
  logging.info("init_from %s (step %d): copied %d arrays; kept fresh: %s", workdir, loaded.step,
               copied, skipped or "none")
  return state.replace(params=params, batch_stats=batch_stats, ema_params=_copy(params),
                       eval_batch_stats=_copy(batch_stats))


# Logged once the train step is compiled (or loaded from the persistent compilation cache); a sweep
# starts an arm's other runs on it (experiments/sweep.py).
TRAIN_STEP_READY = "Train step compiled"


class Trainer:
  """Holds what one run builds once: data sources, mesh, model, jitted steps."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    # A fused model's backbones as their trained runs describe them (what config.json records).
    config = fusion_backbones.resolve(config)
    self.config = config
    self.workdir = os.path.abspath(workdir)
    validate.check(config)  # Before any data work: a bad value fails at once, naming the field.
    self.augmentation = augment.parse(config.data.augment)
    mesh_lib.use_compilation_cache(config.get("compilation_cache_dir"))
    self.mesh = mesh_lib.make_mesh()
    self.replicated = mesh_lib.replicated(self.mesh)
    self.local_batch = mesh_lib.local_batch_size(config.train.batch_size, self.mesh)
    self.local_eval_batch = mesh_lib.local_batch_size(config.eval.batch_size, self.mesh,
                                                      "config.eval.batch_size")
    self.builder = mesh_lib.first_process_first(lambda: pipeline.prepare(config.dataset),
                                                "data set built")
    splits = pipeline.fold_splits(config.data)
    self.sources = {name: pipeline.Source(self.builder, s)
                    for name, s in (("train", splits.train), ("val", splits.val),
                                    ("test", splits.test)) if s}
    # Each page decoded and resized (or digitized, config.data.input) once, cached beside the data
    # set, gathered by index.
    self.data = mesh_lib.first_process_first(
        lambda: {name: pipeline.load(source, config)
                 for name, source in self.sources.items()}, "pages decoded")
    self.train_labels = self.data["train"].labels
    self.steps_per_epoch = len(self.sources["train"]) // config.train.batch_size
    if self.steps_per_epoch == 0:
      raise ValueError(f"The training folds hold {len(self.sources['train'])} examples, fewer than "
                       f"one batch (config.train.batch_size={config.train.batch_size}).")
    self.total_steps = self.steps_per_epoch * int(config.train.num_epochs)
    # What this model needs besides its config (for `fusion`: its trained backbones).
    self.model_setup = fusion_backbones.prepare(config)
    self.model = models.create_model(config.model, **self.model_setup.model_overrides)
    self.tx, self.schedule = create_optimizer(config.train, self.total_steps, self.steps_per_epoch,
                                              frozen=self.model_setup.frozen)
    self.value_range = pipeline.input_range(config)  # None: signals, fed as they are.
    # (H, W, C) of a page, (T, C) of signals, {"image": (H, W, C), "signals": (T, C)} of both.
    self.image_shape = self.data["train"].image_shape
    self.class_weights = class_weights_for(config.train, self.train_labels)

    self.state_sharding = jax.tree_util.tree_map(
        lambda _: self.replicated,
        jax.eval_shape(functools.partial(_init_state, self.model, self.tx, self.image_shape),
                       jax.random.key(config.seed)))
    batch_sharding = mesh_lib.batch_sharded(self.mesh)
    # What differs between the runs of a sweep (the class weights of the training folds, the seed's
    # keys) enters the step as arguments, not as constants of the compiled program: every seed of a
    # config, and every fold whose training split makes as many steps per epoch (the schedule's
    # lengths stay constants), compiles the same step, which the persistent compilation cache then
    # serves to all but the first (experiments/benchmark_compile.py, variant cache_other_seed).
    # Made by a jitted function so that they are global, replicated arrays on every host too.
    self.run_inputs = jax.jit(lambda: {
        "class_weights": jnp.asarray(self.class_weights),
        "dropout_key": jax.random.fold_in(jax.random.key(config.seed), 1),
        "augment_key": jax.random.fold_in(jax.random.key(config.seed), 2)},
        out_shardings=self.replicated)()
    self.train_step = jax.jit(
        functools.partial(
            run_train_step, model=self.model, tx=self.tx, schedule=self.schedule,
            label_smoothing=float(config.train.label_smoothing),
            focal_gamma=float(config.train.get("focal_gamma", 0.0)),
            ema_decay=float(config.train.ema_decay), value_range=self.value_range,
            augmentation=self.augmentation,
            branch_loss_weight=float(config.train.get("branch_loss_weight", 0.0)),
            swa_start=swa_start_step(config.train, self.total_steps, self.steps_per_epoch)),
        in_shardings=(self.state_sharding, batch_sharding, self.replicated),
        out_shardings=(self.state_sharding, self.replicated), donate_argnums=0)
    self.eval_step = jax.jit(
        functools.partial(eval_step, model=self.model, value_range=self.value_range),
        in_shardings=(self.replicated, batch_sharding),
        out_shardings=(batch_sharding, self.replicated))
    # Recomputing BatchNorm statistics needs the model to report one batch's statistics alone.
    self.stats_model = (self.model.clone(bn_momentum=0.0)
                        if "bn_momentum" in {f.name for f in dataclasses.fields(self.model)}
                        else None)
    if self.stats_model is not None:
      self.batch_stats_step = jax.jit(
          functools.partial(batch_stats_step, model=self.stats_model,
                            value_range=self.value_range),
          in_shardings=(self.replicated, self.replicated, batch_sharding),
          out_shardings=self.replicated)

  # -- state ---------------------------------------------------------------------------------

  def initial_state(self) -> TrainState:
    # The seed's key is an argument, not a constant of the program: every seed compiles the same.
    key = jax.random.key(self.config.seed)
    setup = self.model_setup
    if setup.restored:
      # A fused model initialises only what its backbones' runs do not give. Drawing the restored
      # backbones too, to replace them, compiled their initialisation, most of a fused run's start
      # (experiments/benchmark_compile.py, variant init_restored). As host values, like the
      # restored backbones, they replicate over every process's devices.
      init = jax.jit(functools.partial(_init_variables, self.model, self.image_shape,
                                       skip=setup.restored))
      params, batch_stats = setup.restore(*jax.device_get(init(key)))
      state = jax.device_put(_new_state(params, batch_stats, self.tx), self.state_sharding)
    else:
      init = jax.jit(functools.partial(_init_state, self.model, self.tx, self.image_shape),
                     out_shardings=self.state_sharding)
      state = init(key)
    if self.config.init_from:
      state = jax.device_put(_init_from(state, self.config.init_from), self.state_sharding)
    if setup.restore is not None and (self.config.init_from or not setup.restored):
      # Restored (again) where the state was not built from them: after init_from, so that the
      # backbones' runs win over it, as they always have, or after a whole initialisation (a setup
      # that names no `restored` subtrees).
      params, batch_stats = self.model_setup.restore(state.params, state.batch_stats)
      state = jax.device_put(
          state.replace(params=params, batch_stats=batch_stats, ema_params=_copy(params),
                        eval_batch_stats=_copy(batch_stats), opt_state=self.tx.init(params)),
          self.state_sharding)
    return state

  def abstract_state(self) -> TrainState:
    shapes = jax.eval_shape(functools.partial(_init_state, self.model, self.tx, self.image_shape),
                            jax.random.key(self.config.seed))
    return jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes,
        self.state_sharding)

  def train_iterator(self):
    ds = pipeline.train_dataset(self.data["train"], self.config.data,
                                local_batch_size=self.local_batch, seed=self.config.seed)
    return iter(ds)

  # -- evaluation ----------------------------------------------------------------------------

  def recompute_batch_stats(self, state: TrainState) -> TrainState:
    """Exact BatchNorm statistics of the EMA parameters over a fixed set of training batches."""
    n = int(self.config.train.bn_recompute_batches)
    if self.stats_model is None or not state.batch_stats or n <= 0:
      return state.replace(eval_batch_stats=_copy(state.batch_stats))  # Donated with the state.
    # A fixed, unaugmented stream (its own seed), so every recomputation sees the same pages.
    ds = pipeline.train_dataset(self.data["train"], self.config.data,
                                local_batch_size=self.local_batch, seed=self.config.seed + 7919)
    it = iter(ds)
    total = None
    for _ in range(n):
      batch = mesh_lib.to_global(next(it), self.mesh)
      stats = self.batch_stats_step(state.ema_params, state.batch_stats, batch)
      total = stats if total is None else jax.tree_util.tree_map(jnp.add, total, stats)
    _close(it)
    averaged = jax.tree_util.tree_map(lambda t: t / n, total)
    return state.replace(eval_batch_stats=averaged)

  def evaluate(self, variables: dict[str, Any], split: str
               ) -> tuple[dict[str, Any], EvalMetrics, np.ndarray]:
    """(the classification report, the metrics, the logits of each example in index order)."""
    logits_all, labels_all, masks_all, collected = [], [], [], None
    for batch in pipeline.eval_batches(self.data[split], local_batch_size=self.local_eval_batch):
      global_batch = mesh_lib.to_global(batch, self.mesh)
      logits, step_metrics = self.eval_step(variables, global_batch)
      collected = step_metrics if collected is None else collected.merge(step_metrics)
      logits_all.append(_gather(logits))
      labels_all.append(_gather(global_batch["label"]))
      masks_all.append(_gather(global_batch["mask"]))
    mask = np.concatenate(masks_all)
    logits = np.concatenate(logits_all)[mask]
    labels = np.concatenate(labels_all)[mask]
    order = pipeline.eval_order(len(self.data[split]), local_batch_size=self.local_eval_batch,
                                process_count=jax.process_count())[mask]
    by_example = np.empty_like(logits)
    by_example[order] = logits
    return report_lib.classification_report(labels, logits), collected, by_example

  # -- the loop ------------------------------------------------------------------------------

  def train(self) -> int:
    """Trains to `total_steps`, resuming from the latest readable checkpoint; returns the last step."""
    checkpoints.write_config(self.config, self.workdir)
    writer = writers.create(self.workdir, just_logging=jax.process_index() > 0)
    manager = checkpoints.make_manager(self.workdir, keep=int(self.config.train.keep_checkpoints))
    train_it = self.train_iterator()
    try:  # Whichever way the loop ends (done, stopped, an error), everything is closed once.
      return self._train_loop(self._restore_or_init(manager, train_it, writer), manager,
                              train_it, writer)
    finally:
      writer.flush()
      _close(train_it)
      manager.close()

  def _restore_or_init(self, manager, train_it, writer) -> TrainState:
    """The state at the latest readable checkpoint (the iterator restored in place), or a new one."""
    if manager.latest_step() is None:
      writer.write_hparams(_flat_hparams(self.config))
      return self.initial_state()
    abstract = self.abstract_state()
    restored, state = checkpoints.restore_first_readable(
        manager, "latest", lambda s: checkpoints.restore(manager, s, abstract, train_it))
    logging.info("Resuming from the checkpoint at step %d in %s.", restored, manager.directory)
    newer = [s for s in manager.all_steps() if s > restored]
    if newer:  # Unreadable: kept aside, so that training can save those steps again.
      mesh_lib.first_process_first(lambda: checkpoints.set_aside(self.workdir, newer),
                                   "setting unreadable checkpoints aside")
      manager.reload()
    return state

  def _train_loop(self, state: TrainState, manager, train_it, writer) -> int:
    config = self.config
    step = int(jax.device_get(state.step))
    logging.info("Training %s for %d steps (%d per epoch, global batch %d over %d devices); "
                 "now at step %d.", config.model.name, self.total_steps, self.steps_per_epoch,
                 config.train.batch_size, self.mesh.devices.size, step)
    hooks = []
    if jax.process_index() == 0:
      hooks.append(writers.progress(writer, num_train_steps=self.total_steps,
                                    every_steps=config.train.log_every_steps))
      hooks.append(writers.EpochBar(self.steps_per_epoch))
    train_metrics = None
    every = int(config.train.checkpoint_every_steps)
    started = (time.perf_counter(), step)
    compiled = False
    while step < self.total_steps:
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        batch = mesh_lib.to_global(next(train_it), self.mesh)
        state, step_metrics = self.train_step(state, batch, self.run_inputs)
      if not compiled:  # The call returns once the step is compiled; it runs asynchronously.
        compiled = True
        logging.info("%s (or loaded from the compilation cache) %.1f s after the start of training.",
                     TRAIN_STEP_READY, time.perf_counter() - started[0])
      step += 1
      # No transfer from the device here, so the host gathers the next batch while this step runs.
      train_metrics = step_metrics if train_metrics is None else train_metrics.merge(step_metrics)
      for hook in hooks:
        hook(step)
      epoch_end = step % self.steps_per_epoch == 0
      epoch = step // self.steps_per_epoch
      saving = epoch_end or (every and step % every == 0)
      if (step % config.train.log_every_steps == 0 or step == self.total_steps
          or saving):
        # Checked before anything is saved: a broken state never reaches a checkpoint.
        computed = train_metrics.compute()
        bad = int(computed.pop("first_nonfinite_step"))
        if bad:
          raise NonFiniteLossError(
              f"Non-finite training loss or parameters at step {bad}. The last good checkpoint "
              f"(step {manager.latest_step()}) in {manager.directory} is intact. Lower "
              "config.train.learning_rate, enable config.train.grad_clip_norm, or check the data; "
              "the run resumes from that checkpoint when started again.")
        if step % config.train.log_every_steps == 0 or step == self.total_steps:
          writer.write_scalars(step, {f"train/{k}": v for k, v in computed.items()})
          train_metrics = None
      shown = {"train/loss": float(computed["loss"])} if epoch_end else {}
      if epoch_end and (epoch % config.train.eval_every_epochs == 0 or step == self.total_steps):
        state = self.recompute_batch_stats(state)
        val_metrics = None
        if "val" in self.sources:
          rep, collected, _ = self.evaluate(checkpoints.inference_variables(_as_dict(state)),
                                            "val")
          val_metrics = {checkpoints.BEST_METRIC: rep["macro_f1"]}
          scalars = {"val/macro_f1": rep["macro_f1"], "val/accuracy": rep["accuracy"],
                     "val/balanced_accuracy": rep["balanced_accuracy"],
                     "val/loss": float(collected.loss.compute())}
          writer.write_scalars(step, scalars)
          shown.update(scalars)
        checkpoints.save(manager, step, state, train_it, val_metrics)
      elif saving:
        checkpoints.save(manager, step, state, train_it)
      if epoch_end:  # One line per epoch for a person; every value also went to the writer.
        logging.info("epoch %d step %d: %s, ETA %s", epoch, step,
                     ", ".join(f"{k}={v:.4f}" for k, v in shown.items()),
                     _eta(started, step, self.total_steps))
      if config.train.stop_at_step is not None and step >= config.train.stop_at_step:
        logging.warning("Stopping at step %d (config.train.stop_at_step), as if killed.", step)
        return step
    return step

  def test_report(self) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
    """Evaluates the chosen checkpoint (`config.eval.checkpoint`) on the test fold: (the report,
    its step, one row per test example: its `source_path`, true and predicted class and
    probabilities, as `ecgjax.evaluate` writes them)."""
    if "test" not in self.sources:
      raise ValueError("config.data.test_fold=None: this run has no test fold to report on; "
                       "evaluate it with `python -m ecgjax.evaluate`.")
    manager = checkpoints.make_manager(self.workdir, keep=int(self.config.train.keep_checkpoints))
    abstract = self.abstract_state()
    step, state = checkpoints.restore_first_readable(
        manager, self.config.eval.checkpoint, lambda s: checkpoints.restore(manager, s, abstract))
    name = checkpoints.resolved_name(manager, self.config.eval.checkpoint)
    manager.close()
    rep, _, logits = self.evaluate(checkpoints.inference_variables(_as_dict(state)), "test")
    rep.update({"checkpoint_step": int(step), "checkpoint": name,
                "split": ",".join(self.sources["test"].splits),
                "dataset": self.builder.info.full_name, "model": self.config.model.name})
    source, probabilities = self.sources["test"], np.asarray(jax.nn.softmax(logits, axis=-1))
    rows = []
    for i, p in enumerate(probabilities):
      record = source[i]
      path = record.get("source_path", record.get("image_id", str(i)))
      rows.append(report_lib.prediction_row(
          path.decode() if isinstance(path, bytes) else str(path),
          CLASS_NAMES[int(record["label"])], p))
    return rep, step, rows


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any] | None:
  """Trains (or resumes), evaluates the test fold, writes saliency maps; returns the test report.

  Returns None when the run stopped early at `config.train.stop_at_step`, and {} when there is no
  test fold (`config.data.test_fold=None`: a final model, evaluated elsewhere with
  `python -m ecgjax.evaluate`).
  """
  workdir = os.path.abspath(workdir)
  config = fusion_backbones.resolve(config)
  checkpoints.check_workdir(config, workdir)  # An existing run's record decides, before any work.
  trainer = Trainer(config, workdir)
  start = time.time()
  last = trainer.train()
  if last < trainer.total_steps:
    return None
  logging.info("Training done in %.0f s.", time.time() - start)
  if "test" not in trainer.sources:
    logging.info("No test fold (config.data.test_fold=None): no test report and no saliency maps. "
                 "Evaluate this model with `python -m ecgjax.evaluate --workdir=%s "
                 "--manual_dir=FOLDER`.", workdir)
    return {}
  rep, step, rows = trainer.test_report()
  outputs = {}
  if jax.process_index() == 0:
    outputs = report_lib.write(rep, os.path.join(workdir, "eval"),
                               title=f"{config.model.name} on {rep['dataset']} {rep['split']}: "
                                     f"macro-F1 {rep['macro_f1']:.3f}")
    # Per page, for analyses across runs (fusing or stacking their probabilities, which pages fail).
    outputs["predictions"] = report_lib.write_rows(rows, os.path.join(workdir, "eval",
                                                                      "predictions.csv"))
    logging.info("Test (%s, checkpoint %s at step %d): accuracy %.4f, balanced accuracy %.4f, "
                 "macro-F1 %.4f. Report: %s", rep["split"], rep["checkpoint"], step,
                 rep["accuracy"], rep["balanced_accuracy"], rep["macro_f1"], outputs["report"])
  if config.saliency.num_pages:
    from ecgjax import saliency  # pylint: disable=g-import-not-at-top
    # Every process takes part in restoring the model; process 0 alone draws and writes the maps.
    maps = saliency.write_test_maps(workdir, trainer.sources["test"], config)
    if jax.process_index() == 0:
      outputs["saliency"] = maps
  if jax.process_index() == 0:
    rep["outputs"] = outputs
  return rep


# ---------------------------------------------------------------------------------------------


def _eta(started: tuple[float, int], step: int, total_steps: int) -> str:
  """Time left at the pace since (`started` seconds, step), as 'XmYYs'."""
  seconds = (time.perf_counter() - started[0]) * (total_steps - step) / max(1, step - started[1])
  return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def _copy(tree):
  """Distinct buffers: the train step donates its state, and one buffer cannot be donated twice."""
  return jax.tree_util.tree_map(lambda x: jnp.array(x, copy=True), tree)


def _as_dict(state: TrainState) -> dict[str, Any]:
  return {"params": state.params, "ema_params": state.ema_params,
          "eval_batch_stats": state.eval_batch_stats}


def _gather(x: jax.Array) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _close(iterator) -> None:
  close = getattr(iterator, "close", None)
  if close is not None:
    close()


def _flat_hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  flat = flax.traverse_util.flatten_dict(config.to_dict(), sep=".")
  return {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in flat.items()}
