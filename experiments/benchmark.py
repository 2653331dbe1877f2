"""Times ecgjax models against the same Keras models on TensorFlow: train step and eval step.

Run (about 5-10 minutes on 2 cores for the three models)::

  .venv/bin/python experiments/benchmark.py --models cnn,mobilenet_v2,vgg16 --size 224

For each model, one subprocess per framework (so peak memory and threads are not shared) builds
the model at SIZE x SIZE x 3 with 4 classes, compiles a full train step (forward, backward,
SGD-momentum update, BatchNorm statistics; `jax.jit` with the state donated, Keras
`train_on_batch`) and an eval step, then times `--steps` steps of each on the same random batch,
`--repeats` times, keeping the best repeat (the machine is shared: the best is the least disturbed).
It prints images/s for both, the ecgjax/Keras ratio, compile time (JAX: lower+compile; Keras: the
first call) and the peak resident memory of each process. XLA flags go in the XLA_FLAGS
environment variable as usual; they reach the JAX subprocess only.

Not a test: speed targets are checked by reading this table, never in the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from ecgjax.kernels import hugepages  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_BATCH = {"cnn": 16, "mobilenet_v2": 16, "vgg16": 8}
NUM_CLASSES = 4


def _data(batch: int, size: int, seed: int = 0):
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
  labels = rng.integers(0, NUM_CLASSES, (batch,)).astype(np.int32)
  return images, labels


def _time(step, steps: int, repeats: int) -> float:
  """Best seconds per step over `repeats` runs of `steps` calls of `step()`."""
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      step()
    best = min(best, (time.perf_counter() - start) / steps)
  return best


def run_jax(model_name: str, batch: int, size: int, steps: int, repeats: int) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from ecgjax.models import cnn, mobilenet_v2, vgg16  # pylint: disable=import-outside-toplevel

  model = {"cnn": lambda: cnn.CustomCNN(NUM_CLASSES),
           "mobilenet_v2": lambda: mobilenet_v2.MobileNetV2(NUM_CLASSES),
           "vgg16": lambda: vgg16.VGG16(NUM_CLASSES)}[model_name]()
  images, labels = (jnp.asarray(a) for a in _data(batch, size))
  variables = jax.jit(model.init)(jax.random.key(0), images[:1])
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  tx = optax.sgd(0.01, momentum=0.9)
  state = (params, batch_stats, tx.init(params), jax.random.key(1))

  def train_step(state, images, labels):
    params, batch_stats, opt_state, key = state
    key, dropout_key = jax.random.split(key)

    def loss_fn(params):
      logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, images,
                                    train=True, mutable=["batch_stats"],
                                    rngs={"dropout": dropout_key})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates.get("batch_stats", {})

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state, key), loss

  def eval_step(params, batch_stats, images):
    return model.apply({"params": params, "batch_stats": batch_stats}, images)

  start = time.perf_counter()
  train = jax.jit(train_step, donate_argnums=0).lower(state, images, labels).compile()
  evaluate = jax.jit(eval_step).lower(params, batch_stats, images).compile()
  compile_s = time.perf_counter() - start

  holder = [state]

  def one_train():
    holder[0], loss = train(holder[0], images, labels)
    loss.block_until_ready()

  one_train()
  train_s = _time(one_train, steps, repeats)
  eval_fn = lambda: evaluate(holder[0][0], holder[0][1], images).block_until_ready()
  eval_fn()
  eval_s = _time(eval_fn, steps, repeats)
  return {"train_ips": batch / train_s, "eval_ips": batch / eval_s, "compile_s": compile_s}


def keras_custom_cnn(size: int, filters=(32, 64, 128, 256), dense_units=128, dropout=0.3):
  """The Keras equivalent of `ecgjax.models.cnn.CustomCNN` with its default fields."""
  import keras  # pylint: disable=import-outside-toplevel
  layers = keras.layers
  inputs = keras.Input((size, size, 3))
  x = inputs
  for width in filters:
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-3)(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D(2, padding="same")(x)
  x = layers.GlobalAveragePooling2D()(x)
  x = layers.Dropout(dropout)(x)
  x = layers.Dense(dense_units, activation="relu")(x)
  x = layers.Dropout(dropout)(x)
  return keras.Model(inputs, layers.Dense(NUM_CLASSES)(x))


def run_keras(model_name: str, batch: int, size: int, steps: int, repeats: int) -> dict:
  import keras  # pylint: disable=import-outside-toplevel

  kwargs = dict(weights=None, input_shape=(size, size, 3), classes=NUM_CLASSES,
                classifier_activation=None)
  model = {"cnn": lambda: keras_custom_cnn(size),
           "mobilenet_v2": lambda: keras.applications.MobileNetV2(**kwargs),
           "vgg16": lambda: keras.applications.VGG16(**kwargs)}[model_name]()
  model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  images, labels = _data(batch, size)
  start = time.perf_counter()
  model.train_on_batch(images, labels)
  model.predict_on_batch(images)
  compile_s = time.perf_counter() - start
  train_s = _time(lambda: model.train_on_batch(images, labels), steps, repeats)
  eval_s = _time(lambda: model.predict_on_batch(images), steps, repeats)
  return {"train_ips": batch / train_s, "eval_ips": batch / eval_s, "compile_s": compile_s}


def _worker(args) -> None:
  run = run_jax if args.worker == "jax" else run_keras
  result = run(args.models, args.batch, args.size, args.steps, args.repeats)
  result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print("RESULT " + json.dumps(result))


def _spawn(framework: str, model: str, batch: int, args) -> dict:
  command = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--models", model,
             "--batch", str(batch), "--size", str(args.size), "--steps", str(args.steps),
             "--repeats", str(args.repeats)]
  # Both frameworks run with transparent huge pages, as ecgjax's commands do (see
  # ecgjax/kernels/hugepages.py); ECGJAX_HUGE_PAGES=0 runs both without.
  env = dict(hugepages.environment(), TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=os.pathsep.join(filter(None, [
                 os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                 os.environ.get("PYTHONPATH")])))
  if framework == "keras":
    env.pop("XLA_FLAGS", None)
    env["KERAS_BACKEND"] = "tensorflow"
  proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    raise RuntimeError(f"{framework} benchmark of {model} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-3000:]}")
  return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--models", default="cnn,mobilenet_v2,vgg16")
  parser.add_argument("--batch", type=int, default=None,
                      help=f"batch size (default per model: {DEFAULT_BATCH})")
  parser.add_argument("--size", type=int, default=224)
  parser.add_argument("--steps", type=int, default=3, help="timed steps per repeat")
  parser.add_argument("--repeats", type=int, default=3, help="repeats; the best is kept")
  parser.add_argument("--frameworks", default="jax,keras")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:
    _worker(args)
    return

  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}  "
        f"GLIBC_TUNABLES={hugepages.environment().get('GLIBC_TUNABLES', '')!r}  "
        f"size={args.size}  steps={args.steps}  "
        f"repeats={args.repeats} (best kept; shared machine: figures are noisy)")
  header = (f"{'model':13} {'batch':>5} {'fw':6} {'train img/s':>11} {'eval img/s':>10} "
            f"{'compile s':>9} {'peak GB':>7}")
  print(header)
  for model in args.models.split(","):
    if model not in DEFAULT_BATCH:
      raise ValueError(f"--models: unknown model {model!r}; expected some of {list(DEFAULT_BATCH)}.")
    batch = args.batch or DEFAULT_BATCH[model]
    results = {}
    for framework in args.frameworks.split(","):
      results[framework] = r = _spawn(framework, model, batch, args)
      print(f"{model:13} {batch:5d} {framework:6} {r['train_ips']:11.2f} {r['eval_ips']:10.2f} "
            f"{r['compile_s']:9.1f} {r['peak_rss_gb']:7.2f}", flush=True)
    if {"jax", "keras"} <= set(results):
      print(f"{model:13} {'':5} {'ratio':6} {results['jax']['train_ips'] / results['keras']['train_ips']:11.2f} "
            f"{results['jax']['eval_ips'] / results['keras']['eval_ips']:10.2f}", flush=True)


if __name__ == "__main__":
  main()
