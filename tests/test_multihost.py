"""Multi-process runs as on a pod: two processes on localhost (gloo), against one with two devices.

Each test launches `python -m ecgjax.main` the way a user would (JAX_COORDINATOR_ADDRESS,
JAX_NUM_PROCESSES, JAX_PROCESS_ID), waits for every process with a time limit (a hang fails the test
instead of stalling CI), and compares what the processes wrote with a one-process run over two
faked CPU devices.
"""

import csv
import json
import os
import re
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

from devices import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME_LIMIT_S = 420
_LOSS = re.compile(r"\] \[(\d+)\] .*train/loss=([-+0-9.e]+|nan|inf)")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _launch(workdir, data_dir, processes: int, devices_per_process: int, *overrides):
  """Runs the smoke config in `processes` processes; returns each process's stderr."""
  command = [sys.executable, "-m", "ecgjax.main", "--config=configs/cnn_small.py:smoke",
             f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
             "--config.data.augment=rotate(2)|scale(0.05)|brightness(0.1)|noise(2)",
             "--config.model.dropout=0.5", "--verbosity=1", *overrides]  # Each step's loss line.
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS=xla_flags(devices_per_process))
  if processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}",
               JAX_NUM_PROCESSES=str(processes))
  procs, logs = [], []
  for index in range(processes):
    if processes > 1:
      env = dict(env, JAX_PROCESS_ID=str(index))
    # To files, not pipes: a process blocked on a full pipe would stall the other at a barrier.
    logs.append(f"{workdir}.process{index}.log")
    with open(logs[-1], "w") as log:
      procs.append(subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                                    stderr=log))
  try:
    for proc in procs:
      proc.wait(timeout=TIME_LIMIT_S)
  except subprocess.TimeoutExpired:
    for proc in procs:
      proc.kill()
    pytest.fail(f"{processes} processes did not finish within {TIME_LIMIT_S} s (a hang).")
  outputs = []
  for path in logs:
    with open(path) as f:
      outputs.append(f.read())
  for index, (proc, err) in enumerate(zip(procs, outputs)):
    assert proc.returncode == 0, f"process {index} exited {proc.returncode}:\n{err[-4000:]}"
  return outputs


def _losses(log: str) -> dict[int, float]:
  return {int(step): float(loss) for step, loss in _LOSS.findall(log)}


def _report(workdir):
  with open(os.path.join(workdir, "eval", "report.json")) as f:
    return json.load(f)


def _same_report(a, b):
  for key in ("num_examples", "confusion_matrix", "checkpoint_step", "split"):
    assert a[key] == b[key], key
  for key in ("accuracy", "macro_f1", "macro_roc_auc"):
    np.testing.assert_allclose(a[key], b[key], rtol=1e-5, err_msg=key)


def _same_predictions(workdir, reference):
  def rows(path):
    with open(os.path.join(path, "eval", "predictions.csv")) as f:
      return {r.pop("source_path"): r for r in csv.DictReader(f)}
  got, want = rows(workdir), rows(reference)
  assert got.keys() == want.keys() and len(got) > 2
  for page, row in want.items():
    assert got[page]["true_class"] == row["true_class"], page
    np.testing.assert_allclose([float(v) for k, v in got[page].items() if k.startswith("p_")],
                               [float(v) for k, v in row.items() if k.startswith("p_")],
                               rtol=1e-4, atol=1e-6)


def test_two_processes_equal_one_with_two_devices_and_resume_after_a_stop(tfds_data_dir, tmp_path):
  one = str(tmp_path / "one")
  two = str(tmp_path / "two")
  (log_one,) = _launch(one, tfds_data_dir, 1, 2, "--config.saliency.num_pages=0")
  logs_two = _launch(two, tfds_data_dir, 2, 1)
  losses_one, losses_two = _losses(log_one), _losses(logs_two[0])
  assert len(losses_one) >= 6 and losses_two.keys() == losses_one.keys()
  steps = sorted(losses_one)
  np.testing.assert_allclose([losses_two[s] for s in steps], [losses_one[s] for s in steps],
                             rtol=1e-5)
  _same_report(_report(two), _report(one))
  # Each test page's probabilities under its own name, whichever process evaluated it.
  _same_predictions(two, one)
  # Process 0 alone writes what is shared; both took part in training, checkpoints and evaluation.
  assert "Test (fold0" in logs_two[0] and "Test (fold0" not in logs_two[1]
  assert os.path.exists(os.path.join(two, "config.json"))
  assert os.listdir(os.path.join(two, "saliency"))
  checkpoint = os.path.join(two, "checkpoints", str(max(steps)))
  assert {"process_0-of-2.json", "process_1-of-2.json"} <= set(
      os.listdir(os.path.join(checkpoint, "data")))  # Each process's iterator position.

  # Stopped in both processes at step 5, one step after the checkpoint at step 4, as if killed,
  # then started again: the same losses from step 5 on and the same report as the straight run.
  resumed = str(tmp_path / "resumed")
  _launch(resumed, tfds_data_dir, 2, 1, "--config.saliency.num_pages=0",
          "--config.train.stop_at_step=5")
  assert not os.path.exists(os.path.join(resumed, "eval"))
  logs_resumed = _launch(resumed, tfds_data_dir, 2, 1, "--config.saliency.num_pages=0")
  assert "Resuming from the checkpoint at step 4" in logs_resumed[0]
  assert "Resuming from the checkpoint at step 4" in logs_resumed[1]
  after = _losses(logs_resumed[0])
  assert min(after) == 5 and max(after) == max(steps)
  np.testing.assert_allclose([after[s] for s in sorted(after)],
                             [losses_two[s] for s in sorted(after)], rtol=1e-6)
  _same_report(_report(resumed), _report(two))


_FUSION_SCRIPT = """
import sys
import ml_collections
from configs import fusion
from ecgjax import mesh, train
mesh.initialize_distributed()
config = fusion.get_config("smoke")
config.dataset.data_dir = sys.argv[1]
config.train.num_epochs = 1
config.saliency.num_pages = 0
keys = ("cnn", "vgg16")
config.model.backbones = ml_collections.ConfigDict({k: config.model.backbones[k] for k in keys})
config.fusion.workdirs = ml_collections.ConfigDict(
    {k: f"{sys.argv[2]}/{k}" for k in keys})
train.train_and_evaluate(config, sys.argv[3])
"""


def test_fusion_restores_its_backbones_in_two_processes(tfds_data_dir, tmp_path):
  from configs import cnn, vgg16  # pylint: disable=g-import-not-at-top
  from ecgjax import checkpoints, train  # pylint: disable=g-import-not-at-top
  for module in (cnn, vgg16):
    config = module.get_config("smoke")
    config.dataset.data_dir = tfds_data_dir
    config.train.num_epochs = 1
    train.Trainer(config, str(tmp_path / config.model.name)).train()
  backbone = str(tmp_path / "cnn")
  fused = str(tmp_path / "fusion")
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu",
             XLA_FLAGS=xla_flags(1),
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{_free_port()}", JAX_NUM_PROCESSES="2")
  procs = [subprocess.Popen([sys.executable, "-c", _FUSION_SCRIPT, tfds_data_dir, str(tmp_path), fused],
                            env=dict(env, JAX_PROCESS_ID=str(i)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  try:
    errors = [p.communicate(timeout=TIME_LIMIT_S)[1] for p in procs]
  except subprocess.TimeoutExpired:
    for p in procs:
      p.kill()
    pytest.fail(f"Two fusion processes did not finish within {TIME_LIMIT_S} s (a hang).")
  for p, err in zip(procs, errors):
    assert p.returncode == 0, err[-4000:]
  assert _report(fused)["model"] == "fusion"
  own = checkpoints.load_model(backbone, "best").variables["params"]
  restored = checkpoints.load_model(fused, "latest").variables["params"]["backbone_cnn"]
  for a, b in zip(jax.tree_util.tree_leaves(own), jax.tree_util.tree_leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # Frozen, bit-identical.
