r"""Sweeps and ablations from the shell: arms x seeds x test folds, resumable, aggregated into tables.

A ready-made ablation (see experiments/ablations.py for the list):

  python experiments/sweep.py --ablation=models --root=runs/ablations \
      --manual_dir=$HOME/ecg_release --seeds=0,1,2 --folds=0,1,2,3,4

A grid of your own over any config (every combination of the --grid values is an arm):

  python experiments/sweep.py --name=dropout --config=configs/cnn.py --root=runs/sweeps \
      --grid='model.dropout=0.1,0.3,0.5' --grid='data.grayscale=False,True' --folds=0,1,2,3,4

Each run is `python -m ecgjax.main` in its own workdir ROOT/NAME/ARM/seedS_foldF (or in-process with
--processes=0). With --processes=N > 1 an arm's other runs start once its first has compiled its
train step (which they then load from the persistent compilation cache). A run whose workdir
already holds eval/report.json is skipped and a half-finished one resumes from its checkpoint, so
a sweep stopped half-way is simply started again. Ctrl-C or SIGTERM (`kill`, a scheduler's
preemption) stops the sweep's runs with it and starts no more. A failed run does not stop the
others (except with --processes=0); the sweep names it at the end (exit 1). At the end the
report.json files are aggregated per arm into ROOT/NAME/results.{md,csv,png}: mean +- std over
seeds and folds of accuracy, balanced accuracy and macro-F1 (and per-class F1).

--smoke runs every arm with its config's :smoke variant on ecg_synth/tiny (seconds per run); the
tests do that for every ablation.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import importlib.util
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent import futures
from typing import Any

from absl import app
from absl import flags
from absl import logging

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
  sys.path.insert(0, REPO)

from experiments import ablations  # pylint: disable=g-import-not-at-top,wrong-import-position
from experiments.ablations import Arm  # pylint: disable=g-import-not-at-top,wrong-import-position
from ecgjax.kernels import hugepages  # pylint: disable=g-import-not-at-top,wrong-import-position

METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: an arm at a seed and a test fold."""
  arm: Arm
  seed: int
  fold: int | None  # None for arms that do not depend on the fold (pre-training on synthetic data).
  workdir: str

  @property
  def finished(self) -> bool:
    return os.path.exists(os.path.join(self.workdir, "eval", "report.json"))


def parse_grid(items: Sequence[str]) -> list[Arm]:
  """'--grid=field=v1,v2' items -> one Arm per combination, named by its values."""
  axes = []
  for item in items:
    if "=" not in item:
      raise ValueError(f"--grid {item!r}: expected FIELD=VALUE1,VALUE2,...")
    field, values = item.split("=", 1)
    parsed = _literal(f"[{values}]") if values.strip() else [""]
    if not isinstance(parsed, list):
      parsed = [parsed]
    axes.append([(field.strip(), v) for v in parsed])
  arms = []
  for combo in itertools.product(*axes) if axes else [()]:
    name = "_".join(f"{f.split('.')[-1]}={_short(v)}" for f, v in combo) or "base"
    arms.append(Arm(name=name, overrides=dict(combo)))
  return arms


def _literal(text: str) -> Any:
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    # Bare words (e.g. 'adamw,sgd') are strings.
    return [v.strip() for v in text.strip("[]").split(",")]


def _short(value: Any) -> str:
  text = "x".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
  return text.replace("/", "-").replace(" ", "").replace("|", "+")[:40] or "none"


def plan(ablation: ablations.Ablation, root: str, seeds: Sequence[int],
         folds: Sequence[int]) -> list[Run]:
  """Every run of the ablation, dependencies (arms other arms need) first, then by seed and fold,
  arms interleaved: a sweep stopped early has every arm at its first seeds and folds."""
  runs = []
  for arm in ablation.arms:
    for seed in seeds:
      for fold in (folds if arm.per_fold else [None]):
        tag = f"seed{seed}" + (f"_fold{fold}" if fold is not None else "")
        runs.append(Run(arm, seed, fold, os.path.join(root, ablation.name, arm.name, tag)))
  order = {arm.name: (ablations.depth(arm, ablation.arms), i)
           for i, arm in enumerate(ablation.arms)}
  return sorted(runs, key=lambda r: (order[r.arm.name][0], r.seed, -1 if r.fold is None else r.fold,
                                     order[r.arm.name][1]))


def own_overrides(owner: ablations.Ablation | Arm, smoke: bool = False) -> dict[str, Any]:
  """The overrides an ablation or an arm applies (its smoke ones in a --smoke run)."""
  return owner.smoke_overrides if smoke and owner.smoke_overrides is not None else owner.overrides


def run_overrides(run: Run, runs: Sequence[Run], ablation: ablations.Ablation,
                  common: dict[str, Any], smoke: bool = False) -> dict[str, Any]:
  """The config overrides of one run: common ones, the arm's, seed, fold, dependency workdirs."""
  overrides = {**common, **own_overrides(ablation, smoke), **own_overrides(run.arm, smoke),
               "seed": run.seed}
  if run.fold is not None:
    overrides["data.test_fold"] = run.fold
    # The next fold validates, unless an override says None: no validation fold, the run trains
    # on the other four folds and reports its latest checkpoint.
    if overrides.get("data.val_fold", 0) is not None:
      overrides["data.val_fold"] = (run.fold + 1) % 5
  for field, needed in run.arm.needs.items():
    dep = next((r for r in runs if r.arm.name == needed and r.seed == run.seed
                and r.fold in (run.fold, None)), None)
    if dep is None:
      raise ValueError(f"Arm {run.arm.name!r} needs arm {needed!r}, which the ablation lacks.")
    overrides[field] = dep.workdir
  return overrides


def config_file(arm: Arm, ablation: ablations.Ablation, smoke: bool) -> str:
  path = arm.config or ablation.config
  if not smoke:
    return path
  return f"{path},smoke" if ":" in path else f"{path}:smoke"  # 'fusion.py:cnn_small,signals,smoke'.


def _flag_value(value: Any) -> str:
  return repr(value) if isinstance(value, (tuple, list)) else str(value)


def command(run: Run, config: str, overrides: dict[str, Any]) -> list[str]:
  args = [sys.executable, "-m", "ecgjax.main", f"--config={config}", f"--workdir={run.workdir}"]
  args += [f"--config.{k}={_flag_value(v)}" for k, v in overrides.items()]
  return args


def load_config(config: str):
  """A config file (`path[:arg]`) loaded as ml_collections' config_flags would."""
  path, _, arg = config.partition(":")
  spec = importlib.util.spec_from_file_location("sweep_config", os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None)


def parse_override(item: str) -> tuple[str, Any]:
  """'FIELD=VALUE' -> (FIELD, VALUE): a Python literal, or the bare word as a string."""
  if "=" not in item:
    raise ValueError(f"Override {item!r}: expected FIELD=VALUE.")
  field, text = item.split("=", 1)
  try:
    return field.strip(), ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return field.strip(), text


def apply_overrides(config, overrides: Mapping[str, Any] | Sequence[str]):
  """Sets FIELD -> VALUE overrides (or 'FIELD=VALUE' strings, `parse_override`) on `config` with
  ml_collections' `update_from_flattened_dict` (which casts as the command line does, e.g. a list
  to a tuple field); a field the config lacks is a KeyError naming it. Returns `config`."""
  if not isinstance(overrides, Mapping):
    overrides = dict(parse_override(item) for item in overrides)
  for field, value in overrides.items():
    node = config
    *parents, leaf = field.split(".")
    for p in parents:
      node = node.get(p) if hasattr(node, "get") else None
    if not hasattr(node, "get") or leaf not in node:
      raise KeyError(f"Override {field}={value!r}: the config has no field {field!r}.")
  config.update_from_flattened_dict(dict(overrides))
  return config


class Stopped(Exception):
  """The sweep was sent SIGINT or SIGTERM: its runs were stopped and resume when it is started
  again."""


class RunFailed(RuntimeError):
  """A run's process ended with an error (its sweep.log says which)."""


# The runs in progress as subprocesses, and the signal that stops the sweep (`stop_on_signals`).
_RUNNING: set[subprocess.Popen] = set()
_STOPPING = threading.Event()
_STOPPED_BY: list[signal.Signals] = []


def stop_on_signals() -> None:
  """From now on SIGINT (Ctrl-C) and SIGTERM (`kill`, a scheduler) stop the runs in progress too,
  each resuming from its last checkpoint when the sweep is started again, and start no more.
  Without this, SIGTERM to the sweep alone left its runs going, and after Ctrl-C (which reaches
  the runs too) a parallel sweep still started the runs waiting for a slot. Call it from a
  command's main thread.

  The runs are sent SIGTERM whichever signal came: SIGINT becomes a KeyboardInterrupt in a run,
  which Python drops when it is raised in a weakref callback or `__del__` ("Exception ignored
  in: <function WeakSet.__init__.<locals>._remove ...> KeyboardInterrupt"; a run trained on
  after Ctrl-C in the tests, 2026-11-27). SIGTERM's default action ends the process wherever it
  is; a run resumes from its last complete checkpoint after any kill."""
  def stop(signum, frame):
    del frame
    _STOPPED_BY.append(signal.Signals(signum))
    _STOPPING.set()
    running = list(_RUNNING)
    for proc in running:
      proc.send_signal(signal.SIGTERM)
    if not running:  # Between runs, or in a run of this process (--processes=0): stop here.
      raise Stopped("between runs, or in a run of this process")
  for signum in (signal.SIGINT, signal.SIGTERM):
    signal.signal(signum, stop)


# How JAX sizes its GPU memory pool (https://docs.jax.dev/en/latest/gpu_memory_allocation.html).
GPU_MEMORY_VARIABLES = ("XLA_PYTHON_CLIENT_PREALLOCATE", "XLA_PYTHON_CLIENT_MEM_FRACTION",
                        "XLA_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_ALLOCATOR")


def run_environment(environ: Mapping[str, str]) -> dict[str, str]:
  """The environment of a run the sweep starts as a subprocess: `environ`, the repository on
  PYTHONPATH, and GPU memory allocated as the run needs it unless one of GPU_MEMORY_VARIABLES says
  otherwise. By default each JAX process takes 75% of a GPU's memory at its first operation, so a
  second run on the same GPU (--processes > 1, or two sweeps side by side) failed with
  CUDA_ERROR_OUT_OF_MEMORY while autotuning its step (seen on an H200, 2026-11-27)."""
  env = dict(environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, environ.get("PYTHONPATH")) if p)
  if not any(name in environ for name in GPU_MEMORY_VARIABLES):
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
  return env


def execute(run: Run, config: str, overrides: dict[str, Any], in_process: bool) -> None:
  if _STOPPING.is_set():
    raise Stopped(f"{run.workdir} was not started")
  logging.info("Starting %s", run.workdir)
  os.makedirs(run.workdir, exist_ok=True)
  if in_process:
    from ecgjax import train  # pylint: disable=g-import-not-at-top
    cfg = apply_overrides(load_config(config), overrides)
    cfg.lock()
    train.train_and_evaluate(cfg, run.workdir)
    return
  log = os.path.join(run.workdir, "sweep.log")
  with open(log, "a") as f:
    proc = subprocess.Popen(command(run, config, overrides), cwd=REPO, stdout=f,
                            stderr=subprocess.STDOUT, env=run_environment(os.environ))
    _RUNNING.add(proc)
    if _STOPPING.is_set():  # The signal came between the check above and the start.
      proc.terminate()
    try:
      returncode = proc.wait()
    finally:
      _RUNNING.discard(proc)
  if returncode and _STOPPING.is_set():
    logging.warning("Stopped %s; it resumes from its last checkpoint.", run.workdir)
    raise Stopped(f"{run.workdir} was stopped")
  if returncode:
    logging.error("Run %s failed (exit %d); see %s.", run.workdir, returncode, log)
    raise RunFailed(f"{run.workdir} (exit {returncode}; see {log})")


def run_sweep(ablation: ablations.Ablation, root: str, seeds: Sequence[int],
              folds: Sequence[int], *, smoke: bool = False, processes: int = 1,
              common: dict[str, Any] | None = None,
              arms: Sequence[str] | None = None) -> list[Run]:
  """Runs every unfinished run (dependencies first), then writes the aggregate tables.

  `arms` runs only those arms and the arms they need; the tables still show every arm's finished
  runs (so two sweeps of one ablation can run different arms side by side, e.g. on one GPU)."""
  common = dict(common or {})
  if smoke:
    common.setdefault("dataset.name", "ecg_synth")
    common.setdefault("dataset.config", "tiny")
  runs = plan(ablation, root, seeds, folds)
  selected = ablations.with_needs(ablation, arms) if arms else {a.name for a in ablation.arms}
  mine = [r for r in runs if r.arm.name in selected]
  todo = [r for r in mine if not r.finished]
  logging.info("%s: %d runs%s, %d finished, %d to do.", ablation.name, len(mine),
               f" of {len(selected)} arms" if arms else "", len(mine) - len(todo), len(todo))
  # Runs wait for the arms they need; within a wave they are independent.
  waves: list[list[Run]] = []
  for run in todo:
    depth = ablations.depth(run.arm, ablation.arms)
    while len(waves) <= depth:
      waves.append([])
    waves[depth].append(run)
  # A failed run does not stop the others of its wave (in-process runs, --processes=0, raise
  # at once); the waves after it (which may need it) do not start. The tables show what
  # finished, then the sweep fails naming every failed run.
  failed: list[str] = []
  for wave in waves:
    if failed:
      break
    jobs = [(r, config_file(r.arm, ablation, smoke),
             run_overrides(r, runs, ablation, common, smoke)) for r in wave]
    if processes == 0:
      for r, config, overrides in jobs:
        execute(r, config, overrides, in_process=True)
    elif processes == 1:
      for r, config, overrides in jobs:
        try:
          execute(r, config, overrides, in_process=False)
        except RunFailed as e:
          failed.append(str(e))
    else:
      failed += _run_parallel(jobs, processes)
  aggregate(ablation, runs, os.path.join(root, ablation.name))
  if failed:
    raise RunFailed(f"{len(failed)} of {len(todo)} runs failed: {'; '.join(failed)}. The tables "
                    "show the runs that finished; once their logs' errors are dealt with, the "
                    "same command runs the rest.")
  return runs


# What a run logs once its train step is compiled (ecgjax.train.TRAIN_STEP_READY; not imported, so
# that the sweep's own process needs no JAX).
TRAIN_STEP_READY = "Train step compiled"


def _log_size(run: Run) -> int:
  log = os.path.join(run.workdir, "sweep.log")
  return os.path.getsize(log) if os.path.exists(log) else 0


def _step_ready(run: Run, offset: int) -> bool:
  """Whether the run's log says, past `offset`, that its train step is compiled."""
  log = os.path.join(run.workdir, "sweep.log")
  if not os.path.exists(log):
    return False
  with open(log, errors="replace") as f:
    f.seek(offset)
    return TRAIN_STEP_READY in f.read()


def _run_parallel(jobs: Sequence[tuple[Run, str, dict[str, Any]]], processes: int,
                  poll_s: float = 1.0) -> list[str]:
  """Runs `jobs` in `processes` subprocesses at a time, an arm's first run ahead of the others.

  The runs of an arm compile one train step (the seed's keys and the folds' class weights are its
  arguments), so its other runs start once the first has logged that its step is compiled, into
  the persistent compilation cache, which they load instead of compiling it side by side; or once
  the first has ended. Ten MobileNetV2 runs compiling at once on a 16-core GPU host took 5 minutes
  to their first step (docs/results/mobilenet_v2_schedule.md). Returns the failed runs.
  """
  by_arm: dict[str, list[tuple[Run, str, dict[str, Any]]]] = {}
  for job in jobs:
    by_arm.setdefault(job[0].arm.name, []).append(job)
  with futures.ThreadPoolExecutor(processes) as pool:
    started, waiting = [], {}
    for name, (first, *others) in by_arm.items():
      offset = _log_size(first[0])  # A resumed run's log holds its earlier attempts.
      started.append(pool.submit(execute, *first, False))
      if others:
        waiting[name] = (first[0], offset, started[-1], others)
    while waiting:
      for name, (first, offset, future, others) in list(waiting.items()):
        ready = _step_ready(first, offset)
        if ready or future.done():
          logging.info("%s: %s; its %d other runs start as processes come free.", name,
                       "train step compiled" if ready else "first run ended", len(others))
          for job in others:
            started.append(pool.submit(execute, *job, False))
          del waiting[name]
      if waiting:
        time.sleep(poll_s)
    failed = []
    for future in started:
      try:
        future.result()
      except RunFailed as e:
        failed.append(str(e))
  return failed


# ---------------------------------------------------------------------------------------------
# Aggregation.
# ---------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
  import numpy as np  # pylint: disable=g-import-not-at-top
  values = np.asarray(values, np.float64)
  return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def reported_checkpoint(workdir: str, report: dict[str, Any]) -> str:
  """'best' (on the run's validation fold), 'latest' or a step: the checkpoint of its test report.
  A run without a validation fold has no best; reports written before they said so name 'best'."""
  with open(os.path.join(workdir, "config.json")) as f:
    if json.load(f).get("data", {}).get("val_fold", 0) is None:
      return "latest"
  return str(report.get("checkpoint", "best"))


def aggregate(ablation: ablations.Ablation, runs: Sequence[Run], out_dir: str) -> list[dict]:
  """Per-arm mean +- std of the metrics over the finished runs; writes results.{md,csv,png} and
  confusion_ARM.png, each arm's confusion matrix summed over its runs."""
  rows, confusions = [], []
  for arm in ablation.arms:
    if arm.name in ablation.hidden:
      continue
    reports, checkpoints = [], set()
    for r in runs:
      if r.arm.name == arm.name and r.finished:
        with open(os.path.join(r.workdir, "eval", "report.json")) as f:
          reports.append(json.load(f))
        checkpoints.update(reported_checkpoint(r.workdir, reports[-1]).split("/"))
    if not reports:
      continue
    row = {"arm": arm.name, "runs": len(reports), "checkpoint": "/".join(sorted(checkpoints))}
    confusions.append((arm.name, reports))
    for m in METRICS:
      row[f"{m}_mean"], row[f"{m}_std"] = _mean_std([rep[m] for rep in reports])
    for name in reports[0]["class_names"]:
      row[f"f1_{name}_mean"], _ = _mean_std([rep["per_class"][name]["f1"] for rep in reports])
    rows.append(row)
  os.makedirs(out_dir, exist_ok=True)
  if not rows:
    return rows
  with open(os.path.join(out_dir, "results.csv"), "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
  class_cols = [k for k in rows[0] if k.startswith("f1_")]
  lines = [f"# {ablation.name}", "", ablation.description, "",
           "| arm | runs | checkpoint | accuracy | balanced accuracy | macro-F1 | "
           + " | ".join(f"F1 {c[3:-5]}" for c in class_cols) + " |",
           "|---|---|---|---|---|---|" + "---|" * len(class_cols)]
  for r in rows:
    cells = [r["arm"], str(r["runs"]), r["checkpoint"]] + [
        f"{r[m + '_mean']:.3f} +- {r[m + '_std']:.3f}" for m in METRICS] + [
            f"{r[c]:.3f}" for c in class_cols]
    lines.append("| " + " | ".join(cells) + " |")
  lines += ["", "mean +- sample std over seeds x test folds. Each run reports its test fold with "
            "its checkpoint column's: 'best', the best macro-F1 on its validation fold (the fold "
            "after the test fold); 'latest', its last (a run with data.val_fold=None trains on the "
            "four other folds and has no validation fold). A fused run's column is its own "
            "checkpoint; its backbones are loaded at theirs."]
  with open(os.path.join(out_dir, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
  _plot(rows, ablation.name, os.path.join(out_dir, "results.png"))
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ecgjax import report as report_lib  # pylint: disable=g-import-not-at-top
  for arm_name, reports in confusions:
    summed = {"class_names": reports[0]["class_names"],
              "confusion_matrix": sum(np.asarray(r["confusion_matrix"]) for r in reports)}
    report_lib.plot_confusion_matrix(
        summed, os.path.join(out_dir, f"confusion_{arm_name}.png"),
        f"{ablation.name} / {arm_name}: summed over {len(reports)} test folds")
  print("\n".join(lines))
  return rows


def _plot(rows: list[dict], title: str, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  x = np.arange(len(rows))
  width = 0.8 / len(METRICS)
  fig, ax = plt.subplots(figsize=(max(5, 1.4 * len(rows) + 2), 4), dpi=110)
  for i, m in enumerate(METRICS):
    ax.bar(x + (i - 1) * width, [r[f"{m}_mean"] for r in rows], width,
           yerr=[r[f"{m}_std"] for r in rows], capsize=3, label=m.replace("_", " "))
  ax.set_xticks(x, [r["arm"] for r in rows], rotation=20, ha="right")
  ax.set_ylim(0, 1)
  ax.set_ylabel("test score (mean +- std)")
  ax.set_title(title)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


# ---------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------

def _define_flags() -> None:
  """Defined only when run as a command: importing this module (the tests do) defines none."""
  flags.DEFINE_string("ablation", None, f"A ready-made ablation: {', '.join(ablations.ABLATIONS)}.")
  flags.DEFINE_string("name", None, "Name of a custom sweep (with --config and --grid).")
  flags.DEFINE_string("config", None, "Base config file of a custom sweep.")
  flags.DEFINE_multi_string("grid", [], "FIELD=V1,V2,... (repeatable: the product is swept).")
  flags.DEFINE_multi_string("override", [], "FIELD=VALUE applied to every run (repeatable).")
  flags.DEFINE_string("root", "runs/ablations", "Where the sweep's workdirs and tables go.")
  flags.DEFINE_list("seeds", ["0"], "Seeds.")
  flags.DEFINE_list("folds", ["0", "1", "2", "3", "4"], "Test folds (validation: the next fold).")
  flags.DEFINE_list("arms", None, "Run only these arms of the ablation (and the arms they need); "
                    "the tables show every arm's finished runs.")
  flags.DEFINE_string("manual_dir", None, "The real release, for ablations on ecg_images.")
  flags.DEFINE_string("data_dir", None, "TFDS data_dir.")
  flags.DEFINE_bool("smoke", False, "Smoke variants of every config on ecg_synth/tiny.")
  flags.DEFINE_integer("processes", 1, "Runs at once (subprocesses); 0: one after another in-process.")


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  if bool(FLAGS.ablation) == bool(FLAGS.name):
    raise app.UsageError("Give either --ablation=NAME or --name=NAME with --config and --grid.")
  if FLAGS.ablation:
    ablation = ablations.get(FLAGS.ablation)
  else:
    if not FLAGS.config:
      raise app.UsageError("A custom sweep needs --config.")
    ablation = ablations.Ablation(name=FLAGS.name, description=f"Sweep over {FLAGS.grid}.",
                                  config=FLAGS.config, arms=parse_grid(FLAGS.grid))
  common = dict(parse_override(item) for item in FLAGS.override)
  if FLAGS.manual_dir:  # The real release, at w1024 unless --override=dataset.config=... says.
    common.setdefault("dataset.name", "ecg_images")
    common.setdefault("dataset.config", "w1024")
    common["dataset.manual_dir"] = os.path.abspath(os.path.expanduser(FLAGS.manual_dir))
  if FLAGS.data_dir:
    common["dataset.data_dir"] = os.path.abspath(FLAGS.data_dir)
  if FLAGS.arms:
    try:
      ablations.with_needs(ablation, FLAGS.arms)
    except ValueError as e:
      raise app.UsageError(str(e)) from e
  stop_on_signals()
  try:
    run_sweep(ablation, FLAGS.root, [int(s) for s in FLAGS.seeds], [int(f) for f in FLAGS.folds],
              smoke=FLAGS.smoke, processes=FLAGS.processes, common=common, arms=FLAGS.arms)
  except Stopped as e:
    signum = _STOPPED_BY[0]
    logging.error("Stopped by %s (%s); the same command resumes the sweep.", signum.name, e)
    sys.exit(128 + signum)
  except RunFailed as e:
    logging.error("%s", e)
    sys.exit(1)


if __name__ == "__main__":
  hugepages.ensure()  # in-process runs (--processes=0) get the setting too
  _define_flags()
  app.run(main)
