"""Times ecgjax's real train and eval steps against the same Keras models on TensorFlow.

Run (about 5-10 minutes on 2 cores for the three models)::

  .venv/bin/python experiments/benchmark.py --models cnn,mobilenet_v2,vgg16 --size 224

For each model, one subprocess per framework (so peak memory and threads are not shared):
  - ecgjax: the `ecgjax.train.Trainer` built from the model's config (configs/NAME.py) at SIZE x SIZE,
    and its jitted `train_step` and `eval_step`, the code a run executes: uint8 images normalised in
    the step, AdamW or SGD as the config says with masked weight decay, global-norm clipping, class
    weights, the EMA of the parameters, BatchNorm statistics and the clu metrics, over the device
    mesh. Augmentation is left out (Keras has none here; `--augment` keeps the config's, and
    `experiments/benchmark_pipeline.py` prints its cost). The Trainer reads `ecg_synth/tiny` (built
    in --data_dir if missing) only to exist; the timed batch is random.
  - Keras: the same architecture with the same head, a Rescaling layer for the uint8 input, the
    config's optimizer with weight decay, `global_clipnorm` and `use_ema`, and class weights, through
    `train_on_batch` and `predict_on_batch`.
Each compiles, then times `--steps` steps on the same batch `--repeats` times and keeps the best
repeat (the machine is shared: the best is the least disturbed). It prints images/s for both, the
ecgjax/Keras ratio, compile time (JAX: lower+compile; Keras: the first call) and the peak resident
memory of each process. XLA flags go in the XLA_FLAGS environment variable as usual; they reach the
JAX subprocess only.

Not a test: speed targets are checked by reading this table, never in the test suite.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from ecgjax.kernels import hugepages  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_BATCH = {"cnn": 16, "mobilenet_v2": 16, "vgg16": 8}
NUM_CLASSES = 4

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_string("models", "cnn,mobilenet_v2,vgg16", "Comma-separated configs/NAME.py names.")
  flags.DEFINE_integer("batch", None, f"Batch size (default per model: {DEFAULT_BATCH}).")
  flags.DEFINE_integer("size", 224, "Image height and width.")
  flags.DEFINE_integer("steps", 3, "Timed steps per repeat.")
  flags.DEFINE_integer("repeats", 3, "Repeats; the best is kept.")
  flags.DEFINE_string("frameworks", "jax,keras", "Comma-separated: jax, keras.")
  flags.DEFINE_bool("augment", False, "Keep the config's on-device augmentation in ecgjax's step.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir holding (or to build) ecg_synth/tiny.")
  flags.DEFINE_string("worker", None, "Internal: the subprocess measuring one framework.")


def _config(model_name: str, batch: int, size: int, augment: bool = False, data_dir=None):
  """The model's experiment config at SIZE x SIZE and this batch, reading ecg_synth/tiny."""
  config = importlib.import_module(f"configs.{model_name}").get_config()
  config.dataset.name, config.dataset.config = "ecg_synth", "tiny"
  config.dataset.data_dir = data_dir
  config.data.val_fold = None  # Four folds of tiny train: 16 pages, one batch of 16.
  config.data.image_size = (size, size)
  config.data.resize_mode = "stretch"
  # The seed's Keras models, which the keras worker builds: RGB input, and Keras' plain VGG16.
  config.data.grayscale = False
  if config.model.name == "vgg16":
    config.model.batch_norm, config.model.kernel_init = False, "lecun"
  config.train.batch_size = config.eval.batch_size = batch
  if not augment:
    config.data.augment = ""
  return config


def _data(batch: int, size: int, seed: int = 0):
  import numpy as np  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
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


def run_jax(model_name: str, batch: int, size: int, steps: int, repeats: int,
            augment: bool = False, data_dir=None) -> dict:
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from ecgjax import checkpoints, train  # pylint: disable=import-outside-toplevel
  from ecgjax import mesh as mesh_lib  # pylint: disable=import-outside-toplevel

  config = _config(model_name, batch, size, augment, data_dir)
  trainer = train.Trainer(config, tempfile.mkdtemp(prefix="ecgjax-benchmark-"))
  images, labels = _data(batch, size)
  train_batch = mesh_lib.to_global({"image": images, "label": labels}, trainer.mesh)
  eval_batch = mesh_lib.to_global({"image": images, "label": labels,
                                   "mask": np.ones(batch, bool)}, trainer.mesh)
  state = trainer.initial_state()
  # A copy: the train step donates (deletes) the state it is given.
  variables = jax.tree_util.tree_map(
      lambda x: x.copy(), checkpoints.inference_variables(train._as_dict(state)))  # pylint: disable=protected-access
  start = time.perf_counter()
  train_step = trainer.train_step.lower(state, train_batch, trainer.run_inputs).compile()
  eval_step = trainer.eval_step.lower(variables, eval_batch).compile()
  compile_s = time.perf_counter() - start

  holder = [state]

  def one_train():
    holder[0], metrics = train_step(holder[0], train_batch, trainer.run_inputs)
    jax.block_until_ready(metrics)

  one_train()
  train_s = _time(one_train, steps, repeats)
  eval_fn = lambda: jax.block_until_ready(eval_step(variables, eval_batch))
  eval_fn()
  eval_s = _time(eval_fn, steps, repeats)
  return {"train_ips": batch / train_s, "eval_ips": batch / eval_s, "compile_s": compile_s}


def _keras_model(config, size: int):
  """The Keras model of `config.model` at SIZE x SIZE, taking uint8 images as ecgjax's step does."""
  import keras  # pylint: disable=import-outside-toplevel
  layers = keras.layers
  m = config.model
  inputs = keras.Input((size, size, 3), dtype="uint8")
  lo, hi = config.data.value_range
  x = layers.Rescaling((hi - lo) / 255.0, offset=lo)(inputs)
  if m.name == "cnn":
    for width in m.filters:
      for _ in range(m.convs_per_stage):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization(momentum=m.bn_momentum, epsilon=1e-3)(x)
        x = layers.ReLU()(x)
      x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(m.dropout)(x)
    if m.dense_units:
      x = layers.Dense(m.dense_units, activation="relu")(x)
      x = layers.Dropout(m.dropout)(x)
  else:
    kwargs = dict(weights=None, include_top=False, pooling="avg", input_shape=(size, size, 3))
    if m.name == "mobilenet_v2":
      backbone = keras.applications.MobileNetV2(alpha=m.alpha, **kwargs)
    elif m.name == "vgg16" and m.head == "gap" and m.width == 1.0:
      backbone = keras.applications.VGG16(**kwargs)
    else:
      raise ValueError(f"No Keras twin for config.model={m}.")
    x = layers.Dropout(m.dropout)(backbone(x))
  return keras.Model(inputs, layers.Dense(NUM_CLASSES)(x))


def _keras_optimizer(config):
  import keras  # pylint: disable=import-outside-toplevel
  t = config.train
  common = dict(learning_rate=t.learning_rate, weight_decay=t.weight_decay,
                global_clipnorm=t.grad_clip_norm or None, use_ema=bool(t.ema_decay),
                ema_momentum=t.ema_decay or 0.99)
  if t.optimizer == "adamw":
    return keras.optimizers.AdamW(**common)
  if t.optimizer == "sgd":
    return keras.optimizers.SGD(momentum=0.9, nesterov=True, **common)
  raise ValueError(f"No Keras twin for config.train.optimizer={t.optimizer!r}.")


def run_keras(model_name: str, batch: int, size: int, steps: int, repeats: int,
              augment: bool = False, data_dir=None) -> dict:
  import keras  # pylint: disable=import-outside-toplevel
  del augment, data_dir
  config = _config(model_name, batch, size)
  model = _keras_model(config, size)
  model.compile(optimizer=_keras_optimizer(config),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"])
  images, labels = _data(batch, size)
  class_weight = {c: 1.0 + 0.1 * c for c in range(NUM_CLASSES)}  # Any: the cost is the same.
  train = lambda: model.train_on_batch(images, labels, class_weight=class_weight)
  start = time.perf_counter()
  train()
  model.predict_on_batch(images)
  compile_s = time.perf_counter() - start
  train_s = _time(train, steps, repeats)
  eval_s = _time(lambda: model.predict_on_batch(images), steps, repeats)
  return {"train_ips": batch / train_s, "eval_ips": batch / eval_s, "compile_s": compile_s}


def _worker(args) -> None:
  measure = run_jax if args.worker == "jax" else run_keras
  result = measure(args.models, args.batch, args.size, args.steps, args.repeats, args.augment,
                   args.data_dir)
  result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
  print("RESULT " + json.dumps(result))


def _spawn(framework: str, model: str, batch: int, args) -> dict:
  command = [sys.executable, os.path.abspath(__file__), "--worker", framework, "--models", model,
             "--batch", str(batch), "--size", str(args.size), "--steps", str(args.steps),
             "--repeats", str(args.repeats)]
  if args.augment:
    command.append("--augment")
  if args.data_dir:
    command += ["--data_dir", args.data_dir]
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


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if FLAGS.worker:
    _worker(FLAGS)
    return

  print(f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}  "
        f"GLIBC_TUNABLES={hugepages.environment().get('GLIBC_TUNABLES', '')!r}  "
        f"size={FLAGS.size}  steps={FLAGS.steps}  "
        f"repeats={FLAGS.repeats} (best kept; shared machine: figures are noisy)")
  header = (f"{'model':13} {'batch':>5} {'fw':6} {'train img/s':>11} {'eval img/s':>10} "
            f"{'compile s':>9} {'peak GB':>7}")
  print(header)
  for model in FLAGS.models.split(","):
    if model not in DEFAULT_BATCH:
      raise ValueError(f"--models: unknown model {model!r}; expected some of {list(DEFAULT_BATCH)}.")
    batch = FLAGS.batch or DEFAULT_BATCH[model]
    results = {}
    for framework in FLAGS.frameworks.split(","):
      results[framework] = r = _spawn(framework, model, batch, FLAGS)
      print(f"{model:13} {batch:5d} {framework:6} {r['train_ips']:11.2f} {r['eval_ips']:10.2f} "
            f"{r['compile_s']:9.1f} {r['peak_rss_gb']:7.2f}", flush=True)
    if {"jax", "keras"} <= set(results):
      print(f"{model:13} {'':5} {'ratio':6} {results['jax']['train_ips'] / results['keras']['train_ips']:11.2f} "
            f"{results['jax']['eval_ips'] / results['keras']['eval_ips']:10.2f}", flush=True)


def run() -> None:
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
