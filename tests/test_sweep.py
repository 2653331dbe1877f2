"""Sweeps and ablations: every ready-made ablation runs end to end on its smoke configs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from experiments import ablations
from experiments import sweep

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name", sorted(ablations.ABLATIONS))
def test_ablation_runs_end_to_end_and_resumes(name, tfds_data_dir, tmp_path):
  ablation = ablations.get(name)
  common = {"dataset.data_dir": tfds_data_dir, "saliency.num_pages": 0, "train.num_epochs": 1}
  runs = sweep.run_sweep(ablation, str(tmp_path), seeds=[0], folds=[0], smoke=True, processes=0,
                         common=common)
  assert runs and all(r.finished for r in runs)
  shown = [a.name for a in ablation.arms if a.name not in ablation.hidden]
  with open(tmp_path / name / "results.csv") as f:
    lines = f.read().splitlines()
  assert [line.split(",")[0] for line in lines[1:]] == shown
  table = (tmp_path / name / "results.md").read_text()
  assert all(f"| {arm} | 1 |" in table for arm in shown)
  assert os.path.getsize(tmp_path / name / "results.png") > 5000
  assert all(os.path.getsize(tmp_path / name / f"confusion_{arm}.png") > 5000 for arm in shown)
  # The reported numbers are the runs' own.
  first = next(r for r in runs if r.arm.name == shown[0])
  with open(os.path.join(first.workdir, "eval", "report.json")) as f:
    assert f"{json.load(f)['macro_f1']:.3f} +- 0.000" in table.splitlines()[6]
  # Dependencies reached their dependants: a fused model restores its backbones' runs.
  for r in runs:
    with open(os.path.join(r.workdir, "config.json")) as f:
      config = json.load(f)
    if r.fold is not None:  # Test fold 0 validates on fold 1, unless an override says None.
      said = {**sweep.own_overrides(ablation, True), **sweep.own_overrides(r.arm, True)}
      assert config["data"]["val_fold"] == (
          None if said.get("data.val_fold", 0) is None else 1), r.workdir
    # A run with no validation fold is shown as reporting its latest checkpoint.
    if r.arm.name in shown and config["data"]["val_fold"] is None:
      assert f"| {r.arm.name} | 1 | latest |" in table, table
    for field, arm in r.arm.needs.items():
      dep = next(d for d in runs if d.arm.name == arm)
      node = config
      for part in field.split("."):
        node = node[part]
      assert node == dep.workdir
  # Started again, a finished sweep runs nothing: every report stays as it was.
  stamps = {r.workdir: os.path.getmtime(os.path.join(r.workdir, "eval", "report.json"))
            for r in runs}
  sweep.run_sweep(ablation, str(tmp_path), seeds=[0], folds=[0], smoke=True, processes=0,
                  common=common)
  assert stamps == {r.workdir: os.path.getmtime(os.path.join(r.workdir, "eval", "report.json"))
                    for r in runs}


def test_grid_expands_to_the_product_of_values():
  arms = sweep.parse_grid(["model.dropout=0.1,0.5", "data.image_size=(48,80),(64,112)"])
  assert len(arms) == 4
  assert {a.name for a in arms} == {"dropout=0.1_image_size=48x80", "dropout=0.1_image_size=64x112",
                                    "dropout=0.5_image_size=48x80", "dropout=0.5_image_size=64x112"}
  assert arms[1].overrides == {"model.dropout": 0.1, "data.image_size": (64, 112)}
  assert [a.overrides["train.optimizer"] for a in sweep.parse_grid(["train.optimizer=adamw,sgd"])] \
      == ["adamw", "sgd"]


def test_command_line_sweep_in_parallel_processes_with_a_stopped_run(tfds_data_dir, tmp_path):
  args = [sys.executable, "experiments/sweep.py", "--name=grid", "--config=configs/cnn.py",
          "--grid=model.dropout=0.0,0.5", "--smoke", "--seeds=0", "--folds=0,1",
          f"--root={tmp_path}", "--processes=2", f"--data_dir={tfds_data_dir}",
          "--override=saliency.num_pages=0"]
  # One run is interrupted half-way first: the sweep resumes it instead of starting it over.
  stopped = tmp_path / "grid" / "dropout=0.0" / "seed0_fold1"
  out = subprocess.run(
      [sys.executable, "-m", "ecgjax.main", "--config=configs/cnn.py:smoke", f"--workdir={stopped}",
       f"--config.dataset.data_dir={tfds_data_dir}", "--config.model.dropout=0.0",
       "--config.seed=0", "--config.data.test_fold=1", "--config.data.val_fold=2",
       "--config.saliency.num_pages=0", "--config.train.stop_at_step=3"],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-2000:]
  assert not (stopped / "eval" / "report.json").exists()
  # Another holds a record of another run, so it fails at its start: the sweep runs the others,
  # writes the tables of what finished and then fails, naming it.
  refused = tmp_path / "grid" / "dropout=0.0" / "seed0_fold0"
  refused.mkdir(parents=True)
  (refused / "config.json").write_text('{"seed": 7}')
  out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert out.returncode == 1, out.stderr[-3000:]
  assert f"1 of 4 runs failed: {refused} (exit 1; see {refused / 'sweep.log'})" in out.stderr, \
      out.stderr[-3000:]
  assert "a run made with another config (seed: 7 -> 0)" in (refused / "sweep.log").read_text()
  assert "Resuming from the checkpoint at step 3" in (stopped / "sweep.log").read_text()
  # An arm's second run started once its first had compiled its train step.
  lines = out.stderr.splitlines()
  ready = [i for i, l in enumerate(lines) if "dropout=0.5: train step compiled" in l]
  second = [i for i, l in enumerate(lines)
            if l.endswith(f"Starting {tmp_path / 'grid' / 'dropout=0.5' / 'seed0_fold1'}")]
  assert len(ready) == 1 and len(second) == 1 and ready[0] < second[0], out.stderr[-3000:]
  rows = (tmp_path / "grid" / "results.csv").read_text().splitlines()
  assert [r.split(",")[:2] for r in rows[1:]] == [["dropout=0.0", "1"], ["dropout=0.5", "2"]]


def _processes_naming(text: str) -> list[int]:
  """The processes whose command line holds `text` (Linux's /proc)."""
  found = []
  for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
      with open(f"/proc/{pid}/cmdline", "rb") as f:
        if text.encode() in f.read():
          found.append(int(pid))
    except OSError:  # Gone meanwhile.
      pass
  return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the runs' processes in /proc")
@pytest.mark.parametrize("signum,group", [(signal.SIGTERM, False), (signal.SIGINT, True)],
                         ids=["sigterm_to_the_sweep", "ctrl_c_to_its_process_group"])
def test_a_signal_stops_the_sweeps_runs_and_starts_no_more(signum, group, tfds_data_dir,
                                                           tmp_path):
  # Runs long enough to be stopped mid-training; two at once, a third waiting for a slot.
  args = [sys.executable, "experiments/sweep.py", "--name=grid", "--config=configs/cnn.py",
          "--grid=model.dropout=0.0", "--smoke", "--seeds=0", "--folds=0,1,2",
          f"--root={tmp_path}", "--processes=2", f"--data_dir={tfds_data_dir}",
          "--override=saliency.num_pages=0", "--override=train.num_epochs=100000"]
  proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)
  arm = tmp_path / "grid" / "dropout=0.0"
  try:
    log, deadline = arm / "seed0_fold0" / "sweep.log", time.time() + 600
    while sweep.TRAIN_STEP_READY not in (log.read_text() if log.exists() else ""):
      assert proc.poll() is None and time.time() < deadline, proc.stderr.read()[-3000:]
      time.sleep(0.2)
    runs = [pid for pid in _processes_naming(str(arm)) if pid != proc.pid]
    assert runs  # The first run, in training; maybe the second, just started.
    # Runs side by side share a GPU: each allocates its memory as it needs it.
    if not any(name in os.environ for name in sweep.GPU_MEMORY_VARIABLES):
      for pid in runs:
        with open(f"/proc/{pid}/environ", "rb") as f:
          assert b"XLA_PYTHON_CLIENT_PREALLOCATE=false" in f.read().split(b"\0"), pid
    if group:  # As a terminal's Ctrl-C: the sweep and its runs at once.
      os.killpg(proc.pid, signum)
    else:
      proc.send_signal(signum)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signum, err[-3000:]
    assert f"Stopped by {signum.name}" in err, err[-3000:]
    # No run of the sweep is left running, and the third never started.
    assert _processes_naming(str(tmp_path)) == []
  finally:  # A failure leaves no 100000-epoch run behind.
    for pid in _processes_naming(str(tmp_path)):
      os.kill(pid, signal.SIGKILL)
  assert not (arm / "seed0_fold2").exists()
  assert not (arm / "seed0_fold0" / "eval" / "report.json").exists()


def test_a_run_keeps_the_users_gpu_memory_setting():
  env = sweep.run_environment({"PATH": "/usr/bin", "PYTHONPATH": "/elsewhere"})
  assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
  assert env["PATH"] == "/usr/bin"
  assert env["PYTHONPATH"].split(os.pathsep) == [REPO, "/elsewhere"]
  for name, value in (("XLA_PYTHON_CLIENT_MEM_FRACTION", ".2"),
                      ("XLA_PYTHON_CLIENT_PREALLOCATE", "true"),
                      ("XLA_PYTHON_CLIENT_ALLOCATOR", "platform")):
    env = sweep.run_environment({name: value})
    assert env[name] == value
    assert name == "XLA_PYTHON_CLIENT_PREALLOCATE" or "XLA_PYTHON_CLIENT_PREALLOCATE" not in env


def test_arms_run_only_those_and_what_they_need(tfds_data_dir, tmp_path):
  ablation = ablations.get("pretraining")
  common = {"dataset.data_dir": tfds_data_dir, "saliency.num_pages": 0, "train.num_epochs": 1}
  kwargs = dict(seeds=[0], folds=[0], smoke=True, processes=0, common=common)
  runs = sweep.run_sweep(ablation, str(tmp_path), arms=["finetune"], **kwargs)
  # The arm asked for and the pre-training it restores ran; the other arm did not.
  assert {r.arm.name for r in runs if r.finished} == {"pretrain_synth", "finetune"}
  assert not (tmp_path / "pretraining" / "scratch").exists()
  rows = (tmp_path / "pretraining" / "results.csv").read_text().splitlines()
  assert [r.split(",")[0] for r in rows[1:]] == ["finetune"]
  # A second sweep of another arm leaves the finished runs alone; the table shows every arm's.
  stamp = os.path.getmtime(runs[-1].workdir + "/eval/report.json")
  runs = sweep.run_sweep(ablation, str(tmp_path), arms=["scratch"], **kwargs)
  assert all(r.finished for r in runs)
  assert os.path.getmtime(runs[-1].workdir + "/eval/report.json") == stamp
  rows = (tmp_path / "pretraining" / "results.csv").read_text().splitlines()
  assert [r.split(",")[0] for r in rows[1:]] == ["scratch", "finetune"]
  with pytest.raises(ValueError, match="has no arm 'fine_tune'; its arms: pretrain_synth, "):
    sweep.run_sweep(ablation, str(tmp_path), arms=["fine_tune"], **kwargs)


def test_page_augmentation_arms_differ_only_in_augmentation():
  ablation = ablations.get("page_augmentation")
  arms = {a.name: a for a in ablation.arms}
  for name in ("cnn", "mobilenet_v2", "vgg16", "cnn_small"):
    config = sweep.apply_overrides(sweep.load_config(arms[f"{name}_augment"].config),
                                   arms[f"{name}_augment"].overrides)
    plain = sweep.apply_overrides(sweep.load_config(arms[f"{name}_none"].config),
                                  arms[f"{name}_none"].overrides)
    sharp = sweep.apply_overrides(sweep.load_config(arms[f"{name}_sharp"].config),
                                  arms[f"{name}_sharp"].overrides)
    assert config.data.augment == ablations.AUGMENT and plain.data.augment == ""
    assert sharp.data.augment == ablations.SHARP_AUGMENT
    plain.data.augment = sharp.data.augment = config.data.augment
    assert plain.to_dict() == config.to_dict() == sharp.to_dict()
  assert set(arms["fused_none"].needs.values()) == {"cnn_none", "mobilenet_v2_none", "vgg16_none"}
  assert set(arms["fused_augment"].needs.values()) == {
      "cnn_augment", "mobilenet_v2_augment", "vgg16_augment"}
