r"""Is the model ever left waiting on data? Input pipeline images/s beside train-step images/s.

  python experiments/benchmark_pipeline.py --models=cnn,mobilenet_v2,vgg16 --out=runs/bench_pipeline

For each model config (configs/NAME.py, at its own image size and batch), it times
  - the grain pipeline (decode from ecg_synth/small, resize, augment, batch) with 0 and N workers;
  - the jitted train step (forward, backward, update) on one device, batches already on device;
and prints a table with both rates and their ratio (>1 means the pipeline keeps up). Pass config
overrides as `--override=data.image_size=(224,384)` (repeatable) to time other settings.
"""

import functools
import json
import os
import time

from absl import app
from absl import flags

flags.DEFINE_list("models", ["cnn", "mobilenet_v2", "vgg16"], "Config names under configs/.")
flags.DEFINE_list("workers", ["0", "2"], "grain worker counts to time.")
flags.DEFINE_integer("batches", 8, "Batches timed per measurement (after one warm-up batch).")
flags.DEFINE_integer("steps", 3, "Train steps timed per model (after compilation).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir (ecg_synth/small is built there if missing).")
flags.DEFINE_multi_string("override", [], "Config overrides FIELD=VALUE for every model.")
flags.DEFINE_string("out", None, "Directory for results.json (optional).")
FLAGS = flags.FLAGS


def _config(name):
  import importlib  # pylint: disable=g-import-not-at-top
  import ast  # pylint: disable=g-import-not-at-top
  config = importlib.import_module(f"configs.{name}").get_config()
  config.dataset.config = "small"
  if FLAGS.data_dir:
    config.dataset.data_dir = FLAGS.data_dir
  for item in FLAGS.override:
    field, value = item.split("=", 1)
    node = config
    *parents, leaf = field.split(".")
    for p in parents:
      node = node[p]
    try:
      value = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      pass
    node[leaf] = value
  return config


def time_pipeline(config, workers: int) -> float:
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top
  builder = pipeline.prepare(config.dataset)
  source = pipeline.Source(builder, pipeline.fold_splits(config.data).train)
  config.data.worker_count = workers
  it = iter(pipeline.train_dataset(source, config.data, local_batch_size=config.train.batch_size,
                                   seed=0))
  next(it)  # Start-up (workers, first reads) is not throughput.
  start = time.perf_counter()
  for _ in range(FLAGS.batches):
    next(it)
  elapsed = time.perf_counter() - start
  if hasattr(it, "close"):
    it.close()
  return FLAGS.batches * config.train.batch_size / elapsed


def time_train_step(config) -> tuple[float, float]:
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ecgjax import models, train  # pylint: disable=g-import-not-at-top
  model = models.create_model(config.model)
  tx, schedule = train.create_optimizer(config.train, 1000, 100)
  channels = 1 if config.data.grayscale else 3
  state = train._init_state(config, model, tx, (*config.data.image_size, channels))  # pylint: disable=protected-access
  step = jax.jit(functools.partial(
      train.train_step, model=model, tx=tx, schedule=schedule, class_weights=jnp.ones(4),
      dropout_key=jax.random.key(1), label_smoothing=0.0, ema_decay=0.99,
      value_range=tuple(config.data.value_range)), donate_argnums=0)
  rng = np.random.default_rng(0)
  batch = {"image": jnp.asarray(rng.integers(0, 256, (config.train.batch_size,
                                                       *config.data.image_size, channels),
                                              dtype=np.uint8)),
           "label": jnp.asarray(rng.integers(0, 4, config.train.batch_size), jnp.int32)}
  start = time.perf_counter()
  state, m = step(state, batch)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    state, m = step(state, batch)
  jax.block_until_ready(m)
  return FLAGS.steps * config.train.batch_size / (time.perf_counter() - start), compile_s


def main(argv):
  del argv
  rows = []
  for name in FLAGS.models:
    config = _config(name)
    train_rate, compile_s = time_train_step(config)
    row = {"model": name, "image_size": list(config.data.image_size),
           "batch": config.train.batch_size, "train_img_s": train_rate, "compile_s": compile_s}
    for w in FLAGS.workers:
      row[f"pipeline_img_s_w{w}"] = time_pipeline(_config(name), int(w))
    rows.append(row)
    print(json.dumps(row), flush=True)
  print()
  worker_cols = [f"pipeline_img_s_w{w}" for w in FLAGS.workers]
  header = ["model", "input", "batch", "train img/s"] + [
      f"pipeline img/s ({w} workers)" for w in FLAGS.workers] + ["pipeline/train (best)"]
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for r in rows:
    best = max(r[c] for c in worker_cols)
    cells = [r["model"], "x".join(map(str, r["image_size"])), str(r["batch"]),
             f"{r['train_img_s']:.1f}"] + [f"{r[c]:.1f}" for c in worker_cols] + [
                 f"{best / r['train_img_s']:.1f}x"]
    print("| " + " | ".join(cells) + " |")
  if FLAGS.out:
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "results.json"), "w") as f:
      json.dump(rows, f, indent=2)


if __name__ == "__main__":
  app.run(main)
