r"""Is the accelerator ever left waiting on data? The input path's images/s beside the train step's.

  python experiments/benchmark_pipeline.py --models=cnn,mobilenet_v2,vgg16

On the real development pages (built once):
  python experiments/benchmark_pipeline.py --models=cnn --dataset=ecg_images/w1024 \
      --manual_dir=../shared/data/ecg_images_dev --override=data.image_size='(256,448)'

For each model config (configs/NAME.py, at its own image size and batch, with any `--override`),
it builds the `ecgjax.train.Trainer` a run builds and times, with nothing else running:
  - decoding: the pages decoded and resized once into the cache (`ecgjax.data.decoded`), pages/s;
  - the input path: the trainer's own train iterator (grain order, gather by index) and the transfer
    to the device (`mesh.to_global`), as the training loop calls them, with 0 and N workers;
  - the order alone: grain's per-example shuffle against the whole-epoch shuffles the input path
    uses (`pipeline.ShuffledBatches`), in microseconds per batch of indices;
  - the real train step (`Trainer.train_step`: AdamW, EMA, class weights, clipping, metrics) with the
    config's on-device augmentation and without it, so the augmentation's share of a step shows,
    and the seconds it takes to compile;
  - the loop: batches from the iterator, transferred and stepped as `Trainer.train` does, with no
    host sync between steps; the step's share of the loop's time is how busy a GPU is kept;
and prints a table with the rates and the input path's margin over the step (the target is >= 20x).
Not a test: speed targets are read from this table, never asserted in the test suite.
"""

import importlib
import json
import os
import shutil
import sys
import tempfile
import time

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_list("models", ["cnn", "mobilenet_v2", "vgg16"], "Config names under configs/.")
  flags.DEFINE_list("workers", ["0", "2"], "grain worker counts to time the input path with.")
  flags.DEFINE_integer("batches", 50, "Batches timed per input-path measurement (after a warm-up).")
  flags.DEFINE_integer("steps", 3, "Train steps timed per measurement (after compilation).")
  flags.DEFINE_integer("repeats", 3, "Repeats of each step measurement; the best is kept.")
  flags.DEFINE_string("dataset", "ecg_synth/small", "TFDS data set NAME/CONFIG to read.")
  flags.DEFINE_string("manual_dir", None, "ecg_images: where the release (or dev set) is.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir (the data set is built there if missing).")
  flags.DEFINE_multi_string("override", [], "Config overrides FIELD=VALUE for every model.")
  flags.DEFINE_string("out", None, "Directory for results.json (optional).")


def config_for(name: str, dataset: str, manual_dir=None, data_dir=None, overrides=()):
  """configs/NAME.py on data set NAME/CONFIG, with FIELD=VALUE overrides (Python literals)."""
  config = importlib.import_module(f"configs.{name}").get_config()
  config.dataset.name, config.dataset.config = dataset.split("/")
  config.dataset.manual_dir = manual_dir
  config.dataset.data_dir = data_dir
  from experiments import sweep  # pylint: disable=g-import-not-at-top
  return sweep.apply_overrides(config, overrides)


def _config(name):
  return config_for(name, FLAGS.dataset, FLAGS.manual_dir, FLAGS.data_dir, FLAGS.override)


def _time_input(trainer, batches: int) -> float:
  from ecgjax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  it = trainer.train_iterator()
  mesh_lib.to_global(next(it), trainer.mesh)  # Start-up (workers, first reads) is not throughput.
  start = time.perf_counter()
  for _ in range(batches):
    batch = mesh_lib.to_global(next(it), trainer.mesh)
  batch["image"].block_until_ready()
  elapsed = time.perf_counter() - start
  if hasattr(it, "close"):
    it.close()
  return batches * trainer.config.train.batch_size / elapsed


def _compile_step(trainer):
  """(the trainer's jitted train step compiled for its batches, a state, seconds to compile)."""
  from ecgjax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  state = trainer.initial_state()
  batch = mesh_lib.to_global(next(trainer.train_iterator()), trainer.mesh)
  start = time.perf_counter()
  compiled = trainer.train_step.lower(state, batch, trainer.run_inputs).compile()
  seconds = time.perf_counter() - start
  return (lambda s, b: compiled(s, b, trainer.run_inputs)), state, batch, seconds


def time_step(step, state, batch, steps: int, repeats: int):
  """(seconds per call of the compiled train `step` on one device-resident batch, the best of
  `repeats` runs of `steps` calls; the state after, since the step donates its input state)."""
  import jax  # pylint: disable=g-import-not-at-top
  state, m = step(state, batch)
  jax.block_until_ready(m)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(steps):
      state, m = step(state, batch)
    jax.block_until_ready((state, m))
    best = min(best, (time.perf_counter() - start) / steps)
  return best, state


def _time_loop(trainer, step, state, steps: int) -> float:
  """Seconds per step of the training loop's body as `Trainer.train` runs it: the next batch from
  the train iterator, its transfer, the step and the metrics merge, with no host sync between."""
  import jax  # pylint: disable=g-import-not-at-top
  from ecgjax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  it = trainer.train_iterator()
  state, metrics = step(state, mesh_lib.to_global(next(it), trainer.mesh))
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(steps):
    state, m = step(state, mesh_lib.to_global(next(it), trainer.mesh))
    metrics = metrics.merge(m)
  jax.block_until_ready((state, metrics))
  elapsed = time.perf_counter() - start
  if hasattr(it, "close"):
    it.close()
  return elapsed / steps


def time_order(num_examples: int, batch: int, batches: int = 300) -> dict:
  """Microseconds per batch of indices: grain's per-example shuffle against whole-epoch shuffles
  (`pipeline.ShuffledBatches`, what the input path uses)."""
  import grain  # pylint: disable=g-import-not-at-top
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top
  per_example = (grain.MapDataset.range(num_examples).seed(0).shuffle().repeat(None)
                 .batch(batch, drop_remainder=True))
  per_epoch = grain.MapDataset.source(pipeline.ShuffledBatches(num_examples, batch, seed=0))
  result = {}
  for name, ds in (("grain_shuffle_us", per_example), ("epoch_shuffle_us", per_epoch)):
    it = iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=0)))
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
      next(it)
    result[name] = (time.perf_counter() - start) / batches * 1e6
  return result


def measure(name: str) -> dict:
  from ecgjax import train  # pylint: disable=g-import-not-at-top
  from ecgjax.data import decoded, pipeline  # pylint: disable=g-import-not-at-top
  config = _config(name)
  row = {"model": name, "image_size": list(config.data.image_size),
         "batch": config.train.batch_size, "augment": config.data.augment}
  # Decoding once: into a fresh folder, so it is timed even when the cache exists.
  builder = pipeline.prepare(config.dataset)
  source = pipeline.Source(builder, pipeline.fold_splits(config.data).train)
  folder = tempfile.mkdtemp(prefix="ecgjax-decode-")
  start = time.perf_counter()
  decoded.load(source, config.data, folder=folder)
  row["decode_pages_s"] = len(source) / (time.perf_counter() - start)
  shutil.rmtree(folder)
  row.update(time_order(len(source), config.train.batch_size))

  workdir = tempfile.mkdtemp(prefix="ecgjax-bench-")
  batch_size = config.train.batch_size
  try:
    trainer = train.Trainer(config, workdir)
    step, state, batch, row["compile_s"] = _compile_step(trainer)
    step_s, state = time_step(step, state, batch, FLAGS.steps, FLAGS.repeats)
    row["train_img_s"] = batch_size / step_s
    for w in FLAGS.workers:
      config.data.worker_count = int(w)
      row[f"input_img_s_w{w}"] = _time_input(trainer, FLAGS.batches)
    # The loop with the last worker count listed: the step's share of its wall time is the device's
    # busy share wherever the step is device-bound (a GPU's), and input_img_s says why not.
    row["loop_img_s"] = batch_size / _time_loop(trainer, step, state, FLAGS.batches)
    row["busy_share"] = row["loop_img_s"] / row["train_img_s"]
    config.data.worker_count = 0
    if config.data.augment:
      config.data.augment = ""
      plain = train.Trainer(config, workdir)
      plain_step, plain_state, plain_batch, _ = _compile_step(plain)
      row["train_img_s_no_augment"] = batch_size / time_step(plain_step, plain_state, plain_batch,
                                                             FLAGS.steps, FLAGS.repeats)[0]
      row["augment_cost"] = row["train_img_s_no_augment"] / row["train_img_s"] - 1.0
  finally:
    shutil.rmtree(workdir, ignore_errors=True)
  return row


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  rows = []
  for name in FLAGS.models:
    row = measure(name)
    rows.append(row)
    print(json.dumps(row), flush=True)
  print(f"\n{jax.devices()[0].device_kind} x{jax.device_count()}, {os.cpu_count()} CPU cores, "
        f"{FLAGS.dataset}")
  worker_cols = [f"input_img_s_w{w}" for w in FLAGS.workers]
  header = (["model", "input", "batch", "decode once pages/s", "train step img/s",
             "augmentation cost (of the plain step)", "compile s"]
            + [f"input path img/s ({w} workers)" for w in FLAGS.workers]
            + ["input / step (best)", "loop img/s (step's share of the loop)",
               "order us/batch (grain / epoch)"])
  print("| " + " | ".join(header) + " |")
  print("|" + "---|" * len(header))
  for r in rows:
    best = max(r[c] for c in worker_cols)
    share = f"{100 * r['augment_cost']:.1f}%" if "augment_cost" in r else "no augmentation"
    cells = ([r["model"], "x".join(map(str, r["image_size"])), str(r["batch"]),
              f"{r['decode_pages_s']:.1f}", f"{r['train_img_s']:.1f}", share,
              f"{r['compile_s']:.1f}"] + [f"{r[c]:.0f}" for c in worker_cols]
             + [f"{best / r['train_img_s']:.0f}x",
                f"{r['loop_img_s']:.1f} ({100 * r['busy_share']:.0f}%)",
                f"{r['grain_shuffle_us']:.0f} / {r['epoch_shuffle_us']:.0f}"])
    print("| " + " | ".join(cells) + " |")
  if FLAGS.out:
    os.makedirs(FLAGS.out, exist_ok=True)
    with open(os.path.join(FLAGS.out, "results.json"), "w") as f:
      json.dump(rows, f, indent=2)


def run() -> None:
  from ecgjax.kernels import hugepages  # pylint: disable=g-import-not-at-top
  hugepages.ensure()  # As the ecgjax commands do: the step timed is the step users run.
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
