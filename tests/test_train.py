"""End-to-end training on the smoke config: outputs, resumption, sharding, failure modes."""

import csv
import functools
import json
import os
import shutil
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import checkpoints
from ecgjax import mesh as mesh_lib
from ecgjax import train

from devices import xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Every augmentation op, so that resumption and sharding are checked with all of them drawing keys.
AUGMENT = "rotate(2)|scale(0.05)|translate(0.02)|perspective(0.02)|brightness(0.15)|contrast(0.15)|blur(1)|noise(3)"


def _params(workdir, which="latest"):
  loaded = checkpoints.load_model(workdir, which)
  return loaded.step, jax.tree_util.tree_leaves(loaded.variables)


def test_train_and_evaluate_end_to_end(smoke_config, tmp_path):
  workdir = str(tmp_path / "run")
  report = train.train_and_evaluate(smoke_config, workdir)
  # The report on disk is the one returned, with every field the issue names.
  with open(os.path.join(workdir, "eval", "report.json")) as f:
    on_disk = json.load(f)
  for key in ("accuracy", "balanced_accuracy", "macro_f1", "per_class", "confusion_matrix",
              "macro_roc_auc"):
    assert key in on_disk
  assert on_disk["macro_f1"] == pytest.approx(report["macro_f1"])
  assert os.path.getsize(os.path.join(workdir, "eval", "confusion_matrix.png")) > 1000
  cm = np.asarray(on_disk["confusion_matrix"])
  assert cm.sum() == on_disk["num_examples"] > 0
  for name, row in zip(on_disk["class_names"], cm):
    assert on_disk["per_class"][name]["support"] == row.sum()
  # TensorBoard events, config, checkpoints and saliency maps are in the workdir.
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(workdir))
  assert os.path.exists(os.path.join(workdir, "config.json"))
  steps = sorted(int(s) for s in os.listdir(checkpoints.checkpoint_dir(workdir)) if s.isdigit())
  assert steps and steps[-1] == report["checkpoint_step"] or report["checkpoint"] == "best"
  assert report["outputs"]["saliency"]
  # One row per test page, whose classes give the report's confusion matrix back.
  with open(os.path.join(workdir, "eval", "predictions.csv")) as f:
    rows = list(csv.DictReader(f))
  names = on_disk["class_names"]
  from_rows = np.zeros_like(cm)
  for row in rows:
    from_rows[names.index(row["true_class"]), names.index(row["predicted_class"])] += 1
    assert sum(float(row[f"p_{n}"]) for n in names) == pytest.approx(1.0, abs=1e-5)
  np.testing.assert_array_equal(from_rows, cm)
  assert len({row["source_path"] for row in rows}) == len(rows) == on_disk["num_examples"]
  # Started again on a finished workdir, nothing retrains and the report is the same.
  again = train.train_and_evaluate(smoke_config, workdir)
  assert again["macro_f1"] == report["macro_f1"]
  assert again["confusion_matrix"] == report["confusion_matrix"]


def test_interrupted_run_resumes_to_identical_parameters(smoke_config, tmp_path):
  smoke_config.data.augment = AUGMENT
  smoke_config.train.num_epochs = 2
  smoke_config.train.checkpoint_every_steps = 3
  smoke_config.saliency.num_pages = 0
  straight = str(tmp_path / "straight")
  train.Trainer(smoke_config, straight).train()

  interrupted = str(tmp_path / "interrupted")
  trainer = train.Trainer(smoke_config, interrupted)
  assert trainer.total_steps >= 5
  # Killed two steps after a checkpoint: those steps are lost and must be replayed identically.
  smoke_config.train.stop_at_step = 5
  assert train.Trainer(smoke_config, interrupted).train() == 5
  saved = checkpoints.make_manager(interrupted).all_steps()
  assert max(saved) == 3, saved
  smoke_config.train.stop_at_step = None
  assert train.Trainer(smoke_config, interrupted).train() == trainer.total_steps

  step_a, leaves_a = _params(straight)
  step_b, leaves_b = _params(interrupted)
  assert step_a == step_b == trainer.total_steps
  for a, b in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_same_seed_same_numbers_other_seed_other_numbers(smoke_config, tmp_path):
  smoke_config.train.num_epochs = 1
  smoke_config.saliency.num_pages = 0
  runs = {}
  for name, seed in (("a", 0), ("b", 0), ("c", 1)):
    smoke_config.seed = seed
    train.Trainer(smoke_config, str(tmp_path / name)).train()
    runs[name] = _params(str(tmp_path / name))[1]
  for a, b in zip(runs["a"], runs["b"]):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert any(not np.array_equal(np.asarray(a), np.asarray(c)) for a, c in zip(runs["a"], runs["c"]))


_LOSS_SCRIPT = textwrap.dedent("""
    import sys, json
    import jax
    from configs import cnn_small
    from ecgjax import train, mesh as mesh_lib
    config = cnn_small.get_config("smoke")
    config.dataset.data_dir = sys.argv[1]
    config.train.batch_size = config.eval.batch_size = 8
    config.model.dropout = 0.5  # Partitionable threefry: the same masks however the batch is split.
    config.data.augment = sys.argv[3]  # The same augmentation too.
    trainer = train.Trainer(config, sys.argv[2])
    state = trainer.initial_state()
    it = trainer.train_iterator()
    losses = []
    for _ in range(4):
      state, m = trainer.train_step(state, mesh_lib.to_global(next(it), trainer.mesh),
                                    trainer.run_inputs)
      losses.append(float(m.loss.compute()))
    print(json.dumps({"devices": jax.device_count(), "losses": losses}))
""")


def _losses(data_dir, workdir, devices):
  env = dict(os.environ, XLA_FLAGS=xla_flags(devices),
             JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", _LOSS_SCRIPT, data_dir, workdir, AUGMENT], env=env,
                       capture_output=True, text=True, cwd=REPO, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_eight_devices_reach_the_same_loss_as_one(tfds_data_dir, tmp_path):
  one = _losses(tfds_data_dir, str(tmp_path / "one"), 1)
  eight = _losses(tfds_data_dir, str(tmp_path / "eight"), 8)
  assert one["devices"] == 1 and eight["devices"] == 8
  assert one["losses"][0] != one["losses"][-1]  # Training moved.
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=1e-4)


def test_batch_that_does_not_divide_over_devices_is_an_error(tfds_data_dir, tmp_path):
  script = textwrap.dedent("""
      import sys
      from configs import cnn_small
      from ecgjax import train
      config = cnn_small.get_config("smoke")
      config.dataset.data_dir = sys.argv[1]
      config.train.batch_size = 6
      train.Trainer(config, sys.argv[2])
  """)
  env = dict(os.environ, XLA_FLAGS=xla_flags(4),
             JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  out = subprocess.run([sys.executable, "-c", script, tfds_data_dir, str(tmp_path)], env=env,
                       capture_output=True, text=True, cwd=REPO, timeout=300)
  assert out.returncode != 0
  assert "config.train.batch_size=6 does not divide over the 4 devices" in out.stderr


def test_non_finite_loss_stops_with_step_and_keeps_checkpoint(smoke_config, tmp_path):
  workdir = str(tmp_path / "run")
  smoke_config.saliency.num_pages = 0
  smoke_config.train.checkpoint_every_steps = 2
  smoke_config.train.stop_at_step = 2
  train.Trainer(smoke_config, workdir).train()
  before = _params(workdir)
  smoke_config.train.stop_at_step = None
  smoke_config.train.learning_rate = 1e38  # Overflows the parameters within a step or two.
  with pytest.raises(train.NonFiniteLossError, match=r"at step \d+.*step 2\)"):
    train.Trainer(smoke_config, workdir).train()
  after = _params(workdir)
  assert after[0] == before[0] == 2
  for a, b in zip(before[1], after[1]):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _damage(step_dir, kind):
  """Damages a saved checkpoint the ways disks and interrupted copies do."""
  state = os.path.join(step_dir, "state")
  arrays = [os.path.join(root, f) for root, _, files in os.walk(state) for f in files
            if os.sep + "d" + os.sep in os.path.join(root, f)]
  biggest = max(arrays, key=os.path.getsize)
  metadata = os.path.join(state, "_METADATA")
  if kind == "truncated_array":
    os.truncate(biggest, os.path.getsize(biggest) // 2)
  elif kind == "flipped_bit":
    with open(biggest, "r+b") as f:
      f.seek(os.path.getsize(biggest) // 2)
      byte = f.read(1)[0]
      f.seek(-1, os.SEEK_CUR)
      f.write(bytes([byte ^ 0x10]))
  elif kind == "missing_metadata":
    os.remove(metadata)
  elif kind == "truncated_metadata":
    os.truncate(metadata, os.path.getsize(metadata) // 2)
  elif kind == "missing_state":
    shutil.rmtree(state)


DAMAGE = ("truncated_array", "flipped_bit", "missing_metadata", "truncated_metadata",
          "missing_state")


def test_a_damaged_newest_checkpoint_is_skipped_and_the_run_resumes(smoke_config, tmp_path):
  smoke_config.saliency.num_pages = 0
  smoke_config.train.checkpoint_every_steps = 2
  original = str(tmp_path / "original")
  report = train.train_and_evaluate(smoke_config, original)
  steps = sorted(int(s) for s in os.listdir(checkpoints.checkpoint_dir(original)))
  last, previous = steps[-1], steps[-2]
  for kind in DAMAGE:
    workdir = str(tmp_path / kind)
    shutil.copytree(original, workdir)
    _damage(os.path.join(checkpoints.checkpoint_dir(workdir), str(last)), kind)
    # Prediction and saliency fall back to the previous checkpoint,
    assert checkpoints.load_model(workdir, "latest").step == previous, kind
    # and so does training: it resumes there and trains the same steps again, to the same model.
    again = train.train_and_evaluate(smoke_config, workdir)
    assert again["confusion_matrix"] == report["confusion_matrix"], kind
    np.testing.assert_allclose(again["macro_roc_auc"], report["macro_roc_auc"], rtol=1e-6)
    assert os.listdir(os.path.join(workdir, "damaged_checkpoints")) == [str(last)], kind
    assert checkpoints.load_model(workdir, "latest").step == last, kind
  # With every checkpoint unreadable, one error names the directory and each step's reason.
  for step in steps:
    _damage(os.path.join(checkpoints.checkpoint_dir(original), str(step)), "missing_state")
  with pytest.raises(checkpoints.CheckpointError, match="No readable checkpoint.*step"):
    checkpoints.load_model(original, "best")


def test_class_weights_balanced():
  from configs import cnn_small  # pylint: disable=g-import-not-at-top
  config = cnn_small.get_config("smoke")
  labels = np.array([0] * 6 + [1] * 2 + [2] * 2 + [3] * 2)
  w = train.class_weights_for(config.train, labels)
  # Every class then carries the same total weight.
  totals = np.bincount(labels, weights=w[labels], minlength=4)
  np.testing.assert_allclose(totals, totals[0])
  config.train.class_weights = "none"
  np.testing.assert_array_equal(train.class_weights_for(config.train, labels), np.ones(4))
  config.train.class_weights = "inverse"
  with pytest.raises(ValueError, match="class_weights='inverse'"):
    train.class_weights_for(config.train, labels)


def test_focal_loss_scales_cross_entropy_by_the_miss_probability():
  logits = jnp.array([[4.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
  labels = jnp.array([0, 0])
  ce = train.per_example_loss(logits, labels)
  p_true = jax.nn.softmax(logits)[:, 0]
  np.testing.assert_allclose(train.per_example_loss(logits, labels, focal_gamma=2.0),
                             (1 - p_true) ** 2 * ce, rtol=1e-6)
  # The confident right example loses far more of its weight than the wrong one.
  focal = train.per_example_loss(logits, labels, focal_gamma=2.0)
  assert focal[0] / ce[0] < 0.01 < 0.5 < focal[1] / ce[1]


def test_recomputed_batch_stats_are_plain_averages_of_batch_statistics(smoke_config, tmp_path):
  smoke_config.train.bn_recompute_batches = 3
  trainer = train.Trainer(smoke_config, str(tmp_path))
  state = trainer.initial_state()
  recomputed = trainer.recompute_batch_stats(state).eval_batch_stats
  # Against a direct computation: the first layer's per-channel mean over the same batches.
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top
  it = iter(pipeline.train_dataset(trainer.data["train"], smoke_config.data,
                                   local_batch_size=trainer.local_batch,
                                   seed=smoke_config.seed + 7919))
  means = []
  for _ in range(3):
    images = pipeline.normalize(next(it)["image"], trainer.value_range)
    _, inter = trainer.model.apply({"params": state.ema_params, "batch_stats": state.batch_stats},
                                   images, train=False, capture_intermediates=True,
                                   mutable=["intermediates"])
    conv = inter["intermediates"]["stage0_conv0"]["__call__"][0]
    means.append(np.asarray(conv).mean(axis=(0, 1, 2)))
  np.testing.assert_allclose(recomputed["stage0_bn0"]["mean"], np.mean(means, 0), rtol=1e-4,
                             atol=1e-6)
  # The moving averages (still at their initial zeros) are not what evaluation uses.
  assert not np.allclose(recomputed["stage0_bn0"]["mean"], state.batch_stats["stage0_bn0"]["mean"])


def test_weight_averaging_evaluates_the_plain_mean_of_the_last_epochs_parameters(smoke_config,
                                                                                 tmp_path):
  # SWA over the last epoch (train.swa_epochs): what evaluation uses is the mean of the parameters
  # after each of its steps, at the constant rate the cosine ends on where the averaging starts.
  smoke_config.train.swa_epochs = 1.0
  smoke_config.train.swa_learning_rate = 1e-3
  trainer = train.Trainer(smoke_config, str(tmp_path))
  start = trainer.total_steps - trainer.steps_per_epoch
  assert start == train.swa_start_step(smoke_config.train, trainer.total_steps,
                                       trainer.steps_per_epoch) > 1
  rates = [float(trainer.schedule(s)) for s in range(trainer.total_steps)]
  assert rates[start - 1] > 1e-3 and rates[start:] == pytest.approx([1e-3] * (len(rates) - start))
  assert max(rates) == pytest.approx(smoke_config.train.learning_rate)
  state, it = trainer.initial_state(), trainer.train_iterator()
  after = []  # The trained parameters after each step (the state is donated: copied out).
  for _ in range(trainer.total_steps):
    state, _ = trainer.train_step(state, mesh_lib.to_global(next(it), trainer.mesh),
                                  trainer.run_inputs)
    after.append([np.asarray(p) for p in jax.tree_util.tree_leaves(state.params)])
  averaged = [np.asarray(p) for p in jax.tree_util.tree_leaves(state.ema_params)]
  for i, leaf in enumerate(averaged):
    np.testing.assert_allclose(leaf, np.mean([a[i] for a in after[start:]], axis=0), rtol=1e-5,
                               atol=1e-6)
  # Not the EMA, nor the last parameters, nor a mean that starts a step early.
  assert not np.allclose(averaged[0], after[-1][0])
  assert not np.allclose(averaged[0], np.mean([a[0] for a in after[start - 1:]], axis=0),
                         rtol=1e-5, atol=1e-6)


def test_fusion_restores_frozen_backbones_from_their_runs(tfds_data_dir, tmp_path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from configs import cnn, fusion, mobilenet_v2  # pylint: disable=g-import-not-at-top
  runs = {}
  for key, module in (("cnn", cnn), ("mobilenet_v2", mobilenet_v2)):
    config = module.get_config("smoke")
    config.dataset.data_dir = tfds_data_dir
    config.train.num_epochs = 1
    runs[key] = str(tmp_path / key)
    train.Trainer(config, runs[key]).train()
  config = fusion.get_config("smoke")
  config.dataset.data_dir = tfds_data_dir
  config.train.num_epochs = 1
  config.saliency.num_pages = 0
  config.model.backbones = ml_collections.ConfigDict(
      {k: v for k, v in config.model.backbones.items() if k in runs})
  config.fusion.workdirs = ml_collections.ConfigDict(runs)
  report = train.train_and_evaluate(config, str(tmp_path / "fusion"))
  assert report["model"] == "fusion" and report["num_examples"] > 0
  fused = checkpoints.load_model(str(tmp_path / "fusion"), "latest")
  for key, workdir in runs.items():
    own = checkpoints.load_model(workdir, "best").variables
    # Frozen: bit-identical to the backbone's own run, after a whole epoch of fusion training.
    for collection in ("params", "batch_stats"):
      for a, b in zip(jax.tree_util.tree_leaves(own[collection]),
                      jax.tree_util.tree_leaves(fused.variables[collection][f"backbone_{key}"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # The fusion head did train.
  # Backbones' runs that named another compilation cache: the fused run keeps its own.
  theirs = str(tmp_path / "their_cache")
  for workdir in runs.values():
    with open(os.path.join(workdir, "config.json")) as f:
      record = json.load(f)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      json.dump({**record, "compilation_cache_dir": theirs}, f)
  trainer = train.Trainer(config, str(tmp_path / "unused"))
  assert jax.config.jax_compilation_cache_dir != theirs
  fresh = trainer.initial_state()
  assert not np.allclose(fresh.params["fusion_hidden"]["kernel"],
                         fused.variables["params"]["fusion_hidden"]["kernel"])
  # Only the head was initialised, to the values it takes when the whole model is (the backbones
  # drawn too, then replaced, as before); the backbones start as their runs left them.
  whole = jax.jit(functools.partial(train._init_state, trainer.model, trainer.tx,  # pylint: disable=protected-access
                                    trainer.image_shape))(jax.random.key(config.seed))
  assert set(whole.params) == set(fresh.params)
  for name in ("fusion_hidden", "fusion_logits"):
    for a, b in zip(jax.tree_util.tree_leaves(whole.params[name]),
                    jax.tree_util.tree_leaves(fresh.params[name])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for key, workdir in runs.items():
    own = checkpoints.load_model(workdir, "best").variables["params"]
    for a, b in zip(jax.tree_util.tree_leaves(own),
                    jax.tree_util.tree_leaves(fresh.params[f"backbone_{key}"])):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # A frozen backbone with no run to restore it from is an error naming the field.
  config.fusion.workdirs.cnn = ""
  with pytest.raises(ValueError, match="config.fusion.workdirs.cnn"):
    train.Trainer(config, str(tmp_path / "bad"))


def test_trains_and_reports_on_the_real_sample(tmp_path):
  from configs import cnn_small  # pylint: disable=g-import-not-at-top
  from sample_data import SAMPLE_DIR  # pylint: disable=g-import-not-at-top
  config = cnn_small.get_config("smoke")
  config.dataset.name = "ecg_images"
  config.dataset.config = "w1024"
  config.dataset.manual_dir = str(SAMPLE_DIR)
  config.dataset.data_dir = str(tmp_path / "tfds")
  config.saliency.num_pages = 1
  # The preprocessing for printed pages (the default), on real pages: grid removed, min-pooled, grey.
  config.data.remove_grid = True
  config.data.downscale = "min_pool"
  config.data.grayscale = True
  report = train.train_and_evaluate(config, str(tmp_path / "run"))
  assert report["dataset"].startswith("ecg_images/w1024")
  # 16 distinct pages (two files are copies) dealt into 5 folds: the test fold holds 3 or 4.
  assert report["num_examples"] in (3, 4)
  assert report["outputs"]["saliency"]["pages"]


def test_every_seed_and_fold_of_a_config_compiles_the_same_train_step(smoke_config, tmp_path):
  # The class weights of the training folds and the seed's keys are inputs of the step, not
  # constants of it, so a sweep's runs share one program (and the persistent compilation cache).
  smoke_config.data.augment = AUGMENT
  smoke_config.train.batch_size = 4
  texts, losses = [], []
  for seed, fold in ((0, 0), (1, 2)):
    config = smoke_config.copy_and_resolve_references()
    config.seed, config.data.test_fold, config.data.val_fold = seed, fold, (fold + 1) % 5
    trainer = train.Trainer(config, str(tmp_path / f"seed{seed}_fold{fold}"))
    batch = mesh_lib.to_global(next(trainer.train_iterator()), trainer.mesh)
    inputs = trainer.run_inputs
    texts.append(trainer.train_step.lower(trainer.initial_state(), batch, inputs).as_text())
    _, metrics = trainer.train_step(trainer.initial_state(), batch, inputs)
    losses.append(float(metrics.loss.compute()))
  assert texts[0] == texts[1]  # One program for both runs,
  assert losses[0] != losses[1]  # which compute differently (the seed's keys)...
  # ...and the class weights are an input of it too: other weights, the same program, another loss.
  compiled = trainer.train_step.lower(trainer.initial_state(), batch, inputs).compile()
  weighted = dict(inputs, class_weights=jnp.asarray([1.0, 2.0, 3.0, 4.0]))
  loss = [float(compiled(trainer.initial_state(), batch, i)[1].loss.compute())
          for i in (inputs, weighted)]
  assert loss[0] == pytest.approx(losses[1]) and loss[1] != pytest.approx(loss[0])
