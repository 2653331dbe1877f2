r"""Times the hand-written layers against the library ones they replace, inside whole model steps.

  python experiments/benchmark_layers.py [--models=cnn,mobilenet_v2,vgg16] [--size=224] [--batch=16]

ecgjax hand-writes three layers because XLA:CPU runs the library forms slowly:
- 2x2 max pooling (`models/pooling.py`) against `flax.linen.max_pool`,
- BatchNorm with a closed-form backward pass (`models/batch_norm.py`) against `flax.linen.BatchNorm`,
- the 1x1 convolution as a matrix product (`models/pointwise.py`) against a 1x1 `lax.conv`.
For each model it times the train step (forward, backward, no optimizer) and the evaluation forward
pass as ecgjax builds the model ('ecgjax'), and with one layer swapped for the library's in the
model's module ('flax max_pool', 'flax BatchNorm', '1x1 lax.conv'), each the best of `--repeats`
runs of `--steps` steps, and prints images per second. The numbers hold for the machine it runs on;
on GPU and TPU XLA compiles every variant alike, and the hand-written forms are there for the CPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from ecgjax.kernels import hugepages  # pylint: disable=g-import-not-at-top,wrong-import-position

MODEL_CONFIGS = {"cnn": "configs/cnn.py", "mobilenet_v2": "configs/mobilenet_v2.py",
                 "vgg16": "configs/vgg16.py"}


def _flax_pool(x, padding="VALID"):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn.max_pool(x, (2, 2), strides=(2, 2), padding=padding)


def _conv_pointwise(x, kernel, impl="auto"):
  from jax import lax  # pylint: disable=g-import-not-at-top
  del impl
  return lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _flax_batch_norm(**kwargs):
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  return nn.BatchNorm(**kwargs)


# variant -> (module attribute to swap, replacement), per model module that uses the layer.
def _swaps(variant: str):
  from ecgjax.models import cnn, mobilenet_v2, pointwise, vgg16  # pylint: disable=g-import-not-at-top
  return {
      "ecgjax": [],
      "flax max_pool": [(cnn, "max_pool_2x2", _flax_pool), (vgg16, "max_pool_2x2", _flax_pool)],
      "flax BatchNorm": [(cnn, "BatchNorm", _flax_batch_norm),
                         (mobilenet_v2, "BatchNorm", _flax_batch_norm),
                         (vgg16, "BatchNorm", _flax_batch_norm)],
      "1x1 lax.conv": [(pointwise, "pointwise_conv", _conv_pointwise)],
  }[variant]


@contextlib.contextmanager
def swapped(variant: str):
  saved = []
  for module, name, replacement in _swaps(variant):
    saved.append((module, name, getattr(module, name)))
    setattr(module, name, replacement)
  try:
    yield
  finally:
    for module, name, original in saved:
      setattr(module, name, original)


def variants_for(model: str) -> list[str]:
  return {"cnn": ["ecgjax", "flax max_pool", "flax BatchNorm"],
          "mobilenet_v2": ["ecgjax", "flax BatchNorm", "1x1 lax.conv"],
          "vgg16": ["ecgjax", "flax max_pool"]}[model]


def time_model(model_name: str, variant: str, size: int, batch: int, steps: int,
               repeats: int) -> tuple[float, float]:
  """(train step img/s, eval forward img/s) of the model built as its config says, swapped."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ecgjax import models  # pylint: disable=g-import-not-at-top
  from experiments import sweep  # pylint: disable=g-import-not-at-top
  config = sweep.load_config(MODEL_CONFIGS[model_name])
  channels = 1 if config.data.grayscale else 3
  with swapped(variant):
    model = models.create_model(config.model)
    images = jax.random.uniform(jax.random.key(0), (batch, size, size, channels), minval=-1,
                                maxval=1)
    labels = jnp.arange(batch) % 4
    variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(1), images)

    def loss(params, stats, images):
      out, _ = model.apply({"params": params, **stats}, images, train=True,
                           mutable=["batch_stats"], rngs={"dropout": jax.random.key(2)})
      return -jnp.mean(jax.nn.log_softmax(out)[jnp.arange(batch), labels])

    stats = {k: v for k, v in variables.items() if k != "params"}
    train = jax.jit(jax.grad(loss))
    evaluate = jax.jit(lambda v, x: model.apply(v, x, train=False))
    rates = []
    for fn, args in ((train, (variables["params"], stats, images)), (evaluate, (variables, images))):
      jax.block_until_ready(fn(*args))
      best = float("inf")
      for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
          out = fn(*args)
        jax.block_until_ready(out)
        best = min(best, (time.perf_counter() - start) / steps)
      rates.append(batch / best)
  return rates[0], rates[1]


def main(argv):
  del argv
  f = flags.FLAGS
  import jax  # pylint: disable=g-import-not-at-top
  print(f"{jax.devices()[0].device_kind}, {os.cpu_count()} cores, batch {f.batch}, "
        f"{f.size}x{f.size}; img/s, best of {f.repeats} x {f.steps} steps")
  print("| model | layers | train step img/s | evaluation img/s |")
  print("|---|---|---|---|")
  for name in f.models:
    for variant in variants_for(name):
      train, evaluate = time_model(name, variant, f.size, f.batch, f.steps, f.repeats)
      print(f"| {name} | {variant} | {train:.1f} | {evaluate:.1f} |", flush=True)


def _define_flags() -> None:
  flags.DEFINE_list("models", ["cnn", "mobilenet_v2", "vgg16"], "Models to time.")
  flags.DEFINE_integer("size", 224, "Square input size.")
  flags.DEFINE_integer("batch", 16, "Batch size.")
  flags.DEFINE_integer("steps", 3, "Timed steps per repeat.")
  flags.DEFINE_integer("repeats", 3, "Repeats; the best is kept.")


if __name__ == "__main__":
  hugepages.ensure()
  _define_flags()
  app.run(main)
