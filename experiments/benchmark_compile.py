r"""Seconds to compile each model's real train step, and what each way of compiling costs in speed.

  python experiments/benchmark_compile.py --models=mobilenet_v2 \
      --variants=default,no_triton_gemm,pointwise_conv,autotune_off,cache_warm

Each (model, variant) runs in a fresh process, since XLA reads XLA_FLAGS once and caches its
autotuning results per process. The process builds the `ecgjax.train.Trainer` a run builds from
configs/NAME.py (with `--override`s), then times its initial state (the jitted initialisation,
mostly compiling it), the compilation of its train step and eval step
(`jit(...).lower(...).compile()`) and the train step's images/s on one device-resident batch.
Variants:
  default          the code as shipped
  no_triton_gemm   XLA_FLAGS=--xla_gpu_enable_triton_gemm=false: matrix products in cuBLAS rather
                   than in Triton kernels compiled and autotuned one by one
  pointwise_conv   MobileNetV2's 1x1 convolutions as `lax.conv_general_dilated` (cuDNN on a GPU)
                   rather than the `dot_general` that `ecgjax.models.pointwise` writes
  autotune_off     XLA_FLAGS=--xla_gpu_autotune_level=0
  llvm_o1          XLA_FLAGS=--xla_backend_optimization_level=1 (tests/conftest.py sets it for the
                   test suite): LLVM optimises the compiled CPU code less than at XLA's default 2
  init_restored    a fused model (`--models=fusion` with `--override=fusion.workdirs.KEY=RUN` for
                   its trained backbones) initialised whole, in one program with its optimizer
                   state, and then its backbones replaced by theirs, as the trainer did before
                   2026-11-27: its init column against `default`'s is what initialising only the
                   fusion head saves
  cache_warm       the default again, from the persistent compilation cache (`jax_compilation_cache_dir`)
                   that the `default` variant's process filled (its figure includes writing it):
                   what a second run of the same config costs with a cache directory set
  cache_other_seed the same from that cache, as the config's run at another seed (`seed=1`): what
                   the other runs of a sweep cost (other folds too, where their training splits
                   make as many steps per epoch: the schedule's lengths are constants of the step)
Not a test: compile-time targets are read from this table.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import types

from absl import app
from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

VARIANTS = ("default", "no_triton_gemm", "pointwise_conv", "autotune_off", "llvm_o1",
            "init_restored", "cache_warm", "cache_other_seed")
_CACHED = ("cache_warm", "cache_other_seed")  # Read the cache that `default` fills.
_OTHER_SEED = ("seed=1",)
_XLA_FLAGS = {"no_triton_gemm": "--xla_gpu_enable_triton_gemm=false",
              "autotune_off": "--xla_gpu_autotune_level=0",
              "llvm_o1": "--xla_backend_optimization_level=1"}

FLAGS = flags.FLAGS
_FLAG_NAMES = ("models", "variants", "dataset", "manual_dir", "data_dir", "override", "steps",
               "repeats", "worker", "cache_dir")


def _define_flags() -> None:
  """Defined only when run as a script, so importing this module defines no global flags."""
  flags.DEFINE_string("models", "cnn,mobilenet_v2,vgg16", "Comma-separated configs/NAME.py names.")
  flags.DEFINE_string("variants", "default", f"Comma-separated, of: {', '.join(VARIANTS)}.")
  flags.DEFINE_string("dataset", "ecg_synth/small", "TFDS NAME/CONFIG.")
  flags.DEFINE_string("manual_dir", None, "ecg_images: where the release (or dev set) is.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
  flags.DEFINE_multi_string("override", [], "Config override FIELD=VALUE (repeatable).")
  flags.DEFINE_integer("steps", 5, "Timed steps per repeat.")
  flags.DEFINE_integer("repeats", 3, "Repeats; the best is kept.")
  flags.DEFINE_bool("worker", False, "Internal: the subprocess measuring one variant.")
  flags.DEFINE_string("cache_dir", None, "Internal: the worker's compilation cache.")


def _pointwise_as_conv():
  from jax import lax  # pylint: disable=g-import-not-at-top
  from ecgjax.models import pointwise  # pylint: disable=g-import-not-at-top

  def conv(x, kernel, impl="auto"):
    del impl
    return lax.conv_general_dilated(x, kernel, (1, 1), "VALID",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))
  pointwise.pointwise_conv = conv


def _initialise_restored_backbones():
  import dataclasses  # pylint: disable=g-import-not-at-top
  from ecgjax import fusion_backbones  # pylint: disable=g-import-not-at-top
  prepare = fusion_backbones.prepare
  fusion_backbones.prepare = lambda config: dataclasses.replace(prepare(config),
                                                                restored=frozenset())


def _measure(args) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  from ecgjax import mesh as mesh_lib  # pylint: disable=g-import-not-at-top
  from ecgjax import train  # pylint: disable=g-import-not-at-top
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top
  from experiments import benchmark_pipeline  # pylint: disable=g-import-not-at-top
  if args.cache_dir:
    jax.config.update("jax_compilation_cache_dir", args.cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  if args.variant == "pointwise_conv":
    _pointwise_as_conv()
  if args.variant == "init_restored":
    _initialise_restored_backbones()
  config = benchmark_pipeline.config_for(args.models, args.dataset, args.manual_dir,
                                         args.data_dir, args.override)
  # The Trainer sets the cache the config names: this variant's, or none (not the user's own).
  config.compilation_cache_dir = args.cache_dir or ""
  workdir = tempfile.mkdtemp(prefix="ecgjax-compile-")
  trainer = train.Trainer(config, workdir)
  start = time.perf_counter()
  state = jax.block_until_ready(trainer.initial_state())  # Compiles the model's initialisation.
  init_s = time.perf_counter() - start
  batch = mesh_lib.to_global(next(trainer.train_iterator()), trainer.mesh)
  start = time.perf_counter()
  compiled = trainer.train_step.lower(state, batch, trainer.run_inputs).compile()
  compile_s = time.perf_counter() - start
  variables = checkpoints.inference_variables(train._as_dict(state))  # pylint: disable=protected-access
  eval_batch = next(iter(pipeline.eval_batches(trainer.data["test"],
                                               local_batch_size=trainer.local_eval_batch)))
  start = time.perf_counter()
  trainer.eval_step.lower(variables, mesh_lib.to_global(eval_batch, trainer.mesh)).compile()
  eval_compile_s = time.perf_counter() - start
  best, _ = benchmark_pipeline.time_step(lambda s, b: compiled(s, b, trainer.run_inputs), state,
                                         batch, args.steps, args.repeats)
  return {"model": args.models, "variant": args.variant, "init_s": init_s, "compile_s": compile_s,
          "eval_compile_s": eval_compile_s, "train_img_s": config.train.batch_size / best,
          "device": jax.devices()[0].device_kind}


def _spawn(model: str, variant: str, args, cache_dir: str | None) -> dict:
  command = [sys.executable, os.path.abspath(__file__), "--worker", "--models", model,
             "--variants", variant, "--dataset", args.dataset, "--steps", str(args.steps),
             "--repeats", str(args.repeats)]
  for name in ("manual_dir", "data_dir", "cache_dir"):
    value = cache_dir if name == "cache_dir" else getattr(args, name)
    if value:
      command += [f"--{name}", value]
  for item in (*args.override, *(_OTHER_SEED if variant == "cache_other_seed" else ())):
    command += ["--override", item]
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
             TF_CPP_MIN_LOG_LEVEL="2")
  if variant in _XLA_FLAGS:
    env["XLA_FLAGS"] = " ".join(filter(None, [env.get("XLA_FLAGS"), _XLA_FLAGS[variant]]))
  proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  if proc.returncode or not lines:
    return {"model": model, "variant": variant, "error": proc.stderr[-1500:]}
  return json.loads(lines[-1][len("RESULT "):])


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  args = types.SimpleNamespace(**{name: FLAGS[name].value for name in _FLAG_NAMES})
  if args.worker:
    args.variant = args.variants
    print("RESULT " + json.dumps(_measure(args)), flush=True)
    return
  variants = sorted(args.variants.split(","), key=lambda v: v in _CACHED)  # Fill it first.
  unknown = sorted(set(variants) - set(VARIANTS))
  if unknown:
    raise SystemExit(f"Unknown --variants {unknown}; choose from {', '.join(VARIANTS)}.")
  rows = []
  for model in args.models.split(","):
    cache_dir = tempfile.mkdtemp(prefix="ecgjax-jit-cache-")
    if "default" not in variants and set(variants) & set(_CACHED):
      _spawn(model, "default", args, cache_dir)  # Fills the cache; not reported.
    for variant in variants:
      row = _spawn(model, variant, args, cache_dir if variant in ("default", *_CACHED) else None)
      rows.append(row)
      print(json.dumps(row), flush=True)
  print("\n| model | variant | init s | train step compile s | eval step compile s "
        "| train step img/s |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    if "error" in r:
      print(f"| {r['model']} | {r['variant']} | failed: {r['error'].splitlines()[-1][:80]} | | | |")
    else:
      print(f"| {r['model']} | {r['variant']} | {r['init_s']:.1f} | {r['compile_s']:.1f} "
            f"| {r['eval_compile_s']:.1f} | {r['train_img_s']:.0f} |")


def run() -> None:
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
