"""The command line: config files, overrides, and the unknown-field error."""

import glob
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(p for p in glob.glob(os.path.join(REPO, "configs", "*.py"))
                 if not p.endswith("__init__.py"))


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _run_main(*args, timeout=300, module="ecgjax.main", pythonpath=REPO):
  env = dict(os.environ, PYTHONPATH=pythonpath, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def test_unknown_field_override_fails_naming_the_field(tmp_path):
  out = _run_main("--config=configs/cnn_small.py:smoke", f"--workdir={tmp_path}",
                  "--config.train.batch_sizee=8")
  assert out.returncode != 0
  assert out.stderr.strip().splitlines() == [
      "ecgjax.main: no such config field: 'batch_sizee' Did you mean \"batch_size\" instead of "
      "\"batch_sizee\"? Check the --config.FIELD=VALUE overrides against the config file."]
  assert not os.path.exists(os.path.join(tmp_path, "config.json"))  # Nothing ran.


def test_bad_value_fails_before_any_work(tmp_path):
  # A valid field with an unusable value is reported by name before data or models are built,
  # in one line without a traceback.
  out = _run_main("--config=configs/cnn_small.py:smoke", f"--workdir={tmp_path}",
                  "--config.train.num_epochs=0")
  assert out.returncode != 0
  assert "config.train.num_epochs=0" in out.stderr.strip().splitlines()[-1]
  assert "Traceback" not in out.stderr
  assert not os.path.exists(tmp_path / "config.json")


@pytest.mark.parametrize("field,value", [
    ("train.num_epochs", -1), ("train.batch_size", 0), ("eval.batch_size", 0),
    ("data.image_size", (48,)), ("data.image_size", (0, 80)),
    ("data.resize_mode", "crop"), ("eval.checkpoint", "newest"), ("saliency.method", "lime"),
    ("train.optimizer", "adam"), ("train.class_weights", "inverse"),
    ("train.learning_rate", 0.0), ("train.ema_decay", 1.0), ("data.read_threads", 0),
    ("train.swa_epochs", 2.0), ("train.swa_epochs", -1.0), ("train.swa_learning_rate", 1e-3),
    ("data.test_fold", 5), ("data.val_fold", 0), ("data.val_fold", "none"),
    ("data.augment", "rotate(200)"),
    ("data.cache", "disk"), ("model.name", "resnet"), ("data.sampling", "oversample")])
def test_every_bad_value_names_its_field(field, value):
  from ecgjax import validate  # pylint: disable=g-import-not-at-top
  config = _load(os.path.join(REPO, "configs", "cnn_small.py")).get_config("smoke")
  validate.check(config)  # The config as shipped is fine.
  group, name = field.split(".")
  with config.unlocked():
    config[group][name] = value
  with pytest.raises(validate.ConfigError, match=f"config.{field}="):
    validate.check(config)


def test_no_test_fold_and_no_validation_fold_are_valid():
  from ecgjax import validate  # pylint: disable=g-import-not-at-top
  config = _load(os.path.join(REPO, "configs", "cnn_small.py")).get_config("smoke")
  for test_fold, val_fold in ((None, None), (None, 1), (0, None)):
    config.data.test_fold, config.data.val_fold = test_fold, val_fold
    validate.check(config)


def test_worker_processes_from_the_command_line_give_the_same_report(tfds_data_dir, tmp_path):
  reports = {}
  for workers in (0, 2):
    workdir = tmp_path / f"w{workers}"
    out = _run_main("--config=configs/cnn.py:smoke", f"--workdir={workdir}",
                    f"--config.dataset.data_dir={tfds_data_dir}",
                    f"--config.data.worker_count={workers}", "--config.saliency.num_pages=0",
                    "--config.train.num_epochs=1")
    assert out.returncode == 0, out.stderr[-3000:]
    with open(workdir / "eval" / "report.json") as f:
      reports[workers] = json.load(f)
  for key in ("confusion_matrix", "macro_f1", "per_class", "checkpoint_step", "num_examples"):
    assert reports[2][key] == reports[0][key], key
  # Ranking quality follows the logits themselves: equal only if training saw the same batches.
  np.testing.assert_allclose(reports[2]["macro_roc_auc"], reports[0]["macro_roc_auc"], rtol=1e-6)


def test_a_final_model_without_test_or_validation_fold_trains_on_every_fold(tfds_data_dir,
                                                                            tmp_path):
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "final"
  out = _run_main("--config=configs/cnn_small.py:smoke", f"--workdir={workdir}",
                  f"--config.dataset.data_dir={tfds_data_dir}", "--config.train.num_epochs=1",
                  "--config.data.test_fold=None", "--config.data.val_fold=None")
  assert out.returncode == 0, out.stderr[-3000:]
  with open(workdir / "config.json") as f:
    data = json.load(f)["data"]
  assert data["test_fold"] is None and data["val_fold"] is None
  # All five folds train: one epoch is every page of the data set, in batches of 4.
  config = _load(os.path.join(REPO, "configs", "cnn_small.py")).get_config("smoke")
  config.dataset.data_dir = tfds_data_dir
  info = pipeline.dataset_builder(config.dataset).info
  pages = sum(info.splits[f"fold{i}"].num_examples for i in range(5))
  assert f"({pages // 4} per epoch" in out.stderr
  assert os.listdir(workdir / "checkpoints")
  # No test fold: no test report and no saliency maps of test pages, and a line saying so.
  assert "No test fold (config.data.test_fold=None)" in out.stderr
  assert not (workdir / "eval").exists() and not (workdir / "saliency").exists()
  assert "Traceback" not in out.stderr


def test_the_default_config_is_the_signal_recipe_end_to_end(tfds_data_dir, tmp_path):
  """configs/default.py trains the 1-D model on each page's digitized leads (configs/signals.py):
  from the command line it digitizes the pages, trains, reports and draws maps on the traces."""
  default = _load(os.path.join(REPO, "configs", "default.py"))
  signals = _load(os.path.join(REPO, "configs", "signals.py"))
  for arg in (None, "smoke"):
    assert default.get_config(arg).to_dict() == signals.get_config(arg).to_dict()
  workdir = tmp_path / "default"
  out = _run_main("--config=configs/default.py:smoke", f"--workdir={workdir}",
                  f"--config.dataset.data_dir={tfds_data_dir}", "--config.train.num_epochs=1",
                  "--config.saliency.num_pages=1")
  assert out.returncode == 0, out.stderr[-3000:]
  with open(workdir / "eval" / "report.json") as f:
    report = json.load(f)
  assert report["model"] == "resnet1d" and report["num_examples"] == 4
  with open(workdir / "config.json") as f:
    assert json.load(f)["data"]["input"] == "signals"
  assert glob.glob(str(workdir / "saliency" / "*.png"))


def test_a_base_install_without_tensorflow_trains_predicts_and_explains(tmp_path):
  # tests/no_tensorflow hides TensorFlow and Keras from every import, as a base install lacks them.
  no_tf = os.pathsep.join([os.path.join(REPO, "tests", "no_tensorflow"), REPO])
  workdir = tmp_path / "run"
  out = _run_main("--config=configs/cnn.py:smoke", f"--workdir={workdir}",
                  "--config.saliency.num_pages=1", "--verbosity=1",
                  f"--config.compilation_cache_dir={tmp_path / 'jit'}", pythonpath=no_tf)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "No TensorBoard summaries" in out.stderr and "steps_per_sec=" in out.stderr
  # The train step went into the persistent compilation cache that the config names.
  assert glob.glob(str(tmp_path / "jit" / "jit_run_train_step-*"))
  assert not glob.glob(str(workdir / "**" / "events.out.tfevents*"), recursive=True)
  assert glob.glob(str(workdir / "saliency" / "*.png"))
  with open(workdir / "eval" / "report.json") as f:
    assert json.load(f)["num_examples"] > 0
  page = sorted(glob.glob(os.path.join(REPO, "..", "shared", "data", "ecg_images_sample", "*",
                                       "*.jpg")))[0]
  out = _run_main(f"--workdir={workdir}", "--json", page, module="ecgjax.predict",
                  pythonpath=no_tf)
  assert out.returncode == 0, out.stderr[-3000:]
  assert json.loads(out.stdout)


def test_a_run_made_with_another_config_is_refused_and_its_record_kept(tmp_path):
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  config = _load(os.path.join(REPO, "configs", "cnn.py")).get_config("smoke")
  checkpoints.write_config(config, str(tmp_path))
  record = (tmp_path / "config.json").read_bytes()
  out = _run_main("--config=configs/cnn.py:smoke", f"--workdir={tmp_path}",
                  "--config.train.learning_rate=0.1", "--config.data.image_size=(64,96)",
                  "--config.train.log_every_steps=7")
  assert out.returncode != 0
  message = out.stderr.strip().splitlines()[-1]
  assert "Traceback" not in out.stderr
  assert "train.learning_rate: 0.002 -> 0.1" in message and "data.image_size" in message
  assert "log_every_steps" not in message.split("only")[0]  # Resumable: not among the reasons.
  assert (tmp_path / "config.json").read_bytes() == record  # The record is untouched,
  assert sorted(os.listdir(tmp_path)) == ["config.json"]  # and nothing else was written.
  # Fields that only change how a run is fed, watched or saved may change when it resumes.
  config.train.log_every_steps = 7
  config.data.read_threads = 3
  config.saliency.num_pages = 0
  fixed, resumable = checkpoints.config_changes(config, str(tmp_path))
  assert not fixed and len(resumable) == 3
  checkpoints.check_workdir(config, str(tmp_path))
  config.model.dense_units = 9
  with pytest.raises(checkpoints.WorkdirConfigError, match="model.dense_units: 8 -> 9"):
    checkpoints.check_workdir(config, str(tmp_path))


@pytest.mark.parametrize("path", CONFIGS, ids=os.path.basename)
def test_every_config_documents_its_command_and_has_a_smoke_variant(path):
  module = _load(path)
  doc = module.__doc__.strip().splitlines()
  command = next(line.strip() for line in doc if "python -m ecgjax" in line)
  assert f"configs/{os.path.basename(path)}" in command
  assert "--workdir=" in command
  config = module.get_config()
  smoke = module.get_config("smoke")
  assert config.model.name and smoke.model.name == config.model.name
  # The smoke variant is smaller: fewer pixels, no more epochs.
  assert (smoke.data.image_size[0] * smoke.data.image_size[1]
          < config.data.image_size[0] * config.data.image_size[1])
  assert smoke.train.num_epochs <= config.train.num_epochs
  with pytest.raises(ValueError):
    module.get_config("no-such-variant")
