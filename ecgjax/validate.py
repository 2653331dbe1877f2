"""Every config value a run uses, checked before any work starts; an error names field and value.

`check(config)` runs first in `train.train_and_evaluate` and `train.Trainer`: a bad value fails in
about a second, as one `ConfigError` line of the form "config.FIELD=VALUE: what is allowed", which
the command line prints without a traceback. Checks that need the data or the devices (a batch that
does not divide over them, a training split smaller than a batch) come later, named the same way.
"""

from __future__ import annotations

from typing import Any

import ml_collections


class ConfigError(ValueError):
  """A config value that no run can use."""


def _fail(field: str, value: Any, allowed: str):
  raise ConfigError(f"config.{field}={value!r}: {allowed}.")


def _int(config, field: str, low: int, what: str) -> None:
  group, name = field.split(".")
  value = config[group][name]
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    _fail(field, value, what)


def _number(config, field: str, low: float, high: float, what: str, optional=False) -> None:
  group, name = field.split(".")
  value = config[group].get(name)
  if value is None and optional:
    return
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
    _fail(field, value, what)


def _choice(config, field: str, choices) -> None:
  group, name = field.split(".")
  value = config[group][name]
  if value not in choices:
    _fail(field, value, f"use one of {', '.join(repr(c) for c in choices)}")


def check(config: ml_collections.ConfigDict) -> None:
  """Raises `ConfigError` for the first unusable value of `config`."""
  # Imported here: this module is imported by the command line before JAX starts.
  from ecgjax import models  # pylint: disable=g-import-not-at-top
  from ecgjax import saliency  # pylint: disable=g-import-not-at-top
  from ecgjax.data import augment  # pylint: disable=g-import-not-at-top
  from ecgjax.data import decoded  # pylint: disable=g-import-not-at-top
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top
  from ecgjax.data import transforms  # pylint: disable=g-import-not-at-top

  _int(config, "train.num_epochs", 1, "train for at least 1 epoch")
  _int(config, "train.batch_size", 1, "use a positive number of examples per global batch")
  _int(config, "eval.batch_size", 1, "use a positive number of examples per global batch")
  _int(config, "train.log_every_steps", 1, "log every 1 or more steps")
  _int(config, "train.checkpoint_every_steps", 0, "use 0 (epoch ends only) or a step count")
  _int(config, "train.keep_checkpoints", 1, "keep at least the latest checkpoint")
  _int(config, "train.eval_every_epochs", 1, "evaluate every 1 or more epochs")
  _int(config, "data.worker_count", 0, "use 0 (no worker processes) or more")
  _int(config, "data.read_threads", 1, "use 1 or more threads")
  _int(config, "data.prefetch", 1, "prefetch 1 or more batches")
  _int(config, "saliency.num_pages", 0, "use 0 (no maps) or a page count")
  _number(config, "train.learning_rate", 1e-12, float("inf"), "use a positive learning rate")
  _number(config, "train.weight_decay", 0.0, float("inf"), "use 0 or more")
  _number(config, "train.warmup_epochs", 0.0, float("inf"), "use 0 or more epochs")
  _number(config, "train.ema_decay", 0.0, 0.999999, "use 0 (off) up to below 1")
  epochs = config.train.num_epochs
  _number(config, "train.swa_epochs", 0.0, float(epochs) - 1e-9,
          f"use 0 (off) or fewer epochs than train.num_epochs={epochs}", optional=True)
  _number(config, "train.swa_learning_rate", 1e-12, float("inf"),
          "use a positive learning rate, or None to decay to 0", optional=True)
  if config.train.get("swa_learning_rate") is not None and not config.train.get("swa_epochs"):
    _fail("train.swa_learning_rate", config.train.swa_learning_rate, "it is the rate while "
          "weights are averaged, so it needs train.swa_epochs > 0; use None")
  _number(config, "train.label_smoothing", 0.0, 0.999, "use 0 up to below 1")
  _number(config, "train.focal_gamma", 0.0, 10.0, "use 0 (plain cross-entropy) up to 10")
  _number(config, "train.grad_clip_norm", 1e-12, float("inf"),
          "use a positive norm, or None for no clipping", optional=True)
  _choice(config, "model.name", tuple(sorted(models.MODELS)))
  _number(config, "train.branch_loss_weight", 0.0, 1.0, "use a share from 0 to 1", optional=True)
  branch = config.train.get("branch_loss_weight")
  if branch and (config.model.name != "fusion" or config.model.get("freeze_backbones", True)):
    _fail("train.branch_loss_weight", branch, "it trains a fused model's backbones on their own "
            "outputs, so it needs model.name='fusion' with model.freeze_backbones=False; use 0")
  _choice(config, "train.optimizer", ("adamw", "sgd", "lamb"))
  _choice(config, "train.class_weights", ("balanced", "none"))
  _choice(config, "data.resize_mode", ("pad", "stretch"))
  if config.data.get("sampling") is not None:
    _choice(config, "data.sampling", pipeline.SAMPLING)
  _choice(config, "data.downscale", transforms.RESIZE_METHODS)
  if config.data.get("crop", "panel") != "panel":
    _choice(config, "data.crop", ("panel", "leads"))
    if config.saliency.num_pages:
      _fail("saliency.num_pages", config.saliency.num_pages, "maps are drawn over whole panels, "
            "and config.data.crop='leads' cuts the panel into its leads; use 0")
  _choice(config, "saliency.method", saliency.METHODS)
  size = config.data.image_size
  if (not isinstance(size, (tuple, list)) or len(size) != 2
      or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 16 for s in size)):
    _fail("data.image_size", size, "use (height, width), two integers of at least 16")
  which = config.eval.checkpoint
  if not (which in ("best", "latest") or (isinstance(which, int) and which >= 0)
          or (isinstance(which, str) and which.isdigit())):
    _fail("eval.checkpoint", which, "use 'best', 'latest' or a step number")
  _check_input(config, models, pipeline)
  try:
    augment.parse(config.data.augment)
    decoded.cache_mode(config.data)
    pipeline.fold_splits(config.data)
  except ConfigError:
    raise
  except ValueError as e:
    raise ConfigError(str(e)) from e


def _check_input(config, models, pipeline) -> None:
  """The model, data set and page-only features agree with `config.data.input`."""
  kind = config.data.get("input", "image")
  _choice(config, "data.input", pipeline.INPUTS)
  if config.model.name == "fusion":  # What its backbones read, together.
    from ecgjax.models.fusion import input_of  # pylint: disable=g-import-not-at-top
    reads = {input_of(spec) for spec in config.model.get("backbones", {}).values()}
    needed = "image+signals" if len(reads) == 2 else (reads.pop() if reads else kind)
  else:
    needed = "signals" if config.model.name in models.SIGNAL_MODELS else "image"
  if kind != "image":
    from ecgjax.data import digitized  # pylint: disable=g-import-not-at-top
    try:
      digitized.check_rate(config.data.signal_hz)
    except ValueError as e:
      raise ConfigError(str(e)) from e
    if config.saliency.num_pages and kind != "signals":
      _fail("saliency.num_pages", config.saliency.num_pages, "a fused page and signal model has "
            "no maps of its own (explain its backbones' runs); use 0")
    from ecgjax.saliency.signals import SIGNAL_METHODS  # pylint: disable=g-import-not-at-top
    if config.saliency.num_pages and config.saliency.method not in SIGNAL_METHODS:
      _fail("saliency.method", config.saliency.method, "a signal run's maps are drawn on its "
            f"digitized traces; use one of {', '.join(SIGNAL_METHODS)} (or saliency.num_pages=0)")
  if kind != needed:
    if config.model.name == "fusion":
      _fail("data.input", kind, f"the backbones of this fused model read {needed!r}; set "
            f"config.data.input={needed!r}")
    if kind == "signals":
      _fail("model.name", config.model.name, "a page-image model cannot read "
            f"config.data.input='signals'; use one of {sorted(models.SIGNAL_MODELS)}")
    if needed == "signals":
      _fail("model.name", config.model.name, "this model reads digitized signals; set "
            "config.data.input='signals'")
    _fail("data.input", kind, f"model {config.model.name!r} reads {needed!r}; 'image+signals' is "
          "for a fused model with page and signal backbones")
  from ecgjax.data import augment  # pylint: disable=g-import-not-at-top
  try:
    on_signals = augment.parse(config.data.augment).on_signals
  except ValueError:
    on_signals = None  # `check` reports the spec itself.
  if kind == "signals" and on_signals is False and config.data.augment:
    _fail("data.augment", config.data.augment, "these ops act on page images; a signal run takes "
          "signal ops (amplitude, lead_amplitude, time_shift, signal_noise, drop_leads) or ''")
  if kind != "signals" and on_signals:
    _fail("data.augment", config.data.augment, "these ops act on digitized leads; a page-image "
          f"run (config.data.input={kind!r}) takes page ops (rotate, scale, translate, ...)")
  if kind != "signals" and config.dataset.name == "ecg_signals_sim":
    _fail("dataset.name", config.dataset.name, "it holds signals only; set "
          "config.data.input='signals' and a signal model")
