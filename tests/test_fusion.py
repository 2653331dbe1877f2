"""FusedModel: the three fusion methods, frozen and fine-tuned backbones, configs or modules."""

from __future__ import annotations

import copy
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models.cnn import CustomCNN
from ecgjax.models.fusion import FusedModel
from ecgjax.models.mobilenet_v2 import MobileNetV2
from ecgjax.models.vgg16 import VGG16

NUM_CLASSES = 4


def _backbones(mobilenet: bool = True):
  backbones = {
      "cnn": CustomCNN(NUM_CLASSES, filters=(4, 8), dense_units=0),
      "mobilenet_v2": MobileNetV2(NUM_CLASSES, alpha=0.35),
      "vgg16": VGG16(NUM_CLASSES, width=1 / 16, head="gap"),
  }
  if not mobilenet:  # Compiling MobileNetV2 once (in the concat_mlp case) is enough.
    del backbones["mobilenet_v2"]
  return backbones


@pytest.fixture(scope="module")
def images():
  return jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)


def _init(model, images):
  return jax.jit(model.init)({"params": jax.random.key(1), "dropout": jax.random.key(2)}, images)


@pytest.mark.parametrize("method", ["concat_mlp", "mean_probs", "learned_logit_weights"])
def test_methods_shapes_and_frozen_gradients(method, images):
  backbones = _backbones(mobilenet=method == "concat_mlp")
  model = FusedModel(NUM_CLASSES, backbones=backbones, method=method, mlp_units=8)
  variables = _init(model, images)
  assert {f"backbone_{key}" for key in backbones} <= set(variables["params"])
  logits, features = jax.jit(lambda v: model.apply(v, images, return_features=True))(variables)
  assert logits.shape == (2, NUM_CLASSES) and features.ndim == 2

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, images, train=True,
                            mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})
    return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

  grads = jax.jit(jax.grad(loss))(variables["params"])
  for key in backbones:
    assert all(not jnp.any(g) for g in jax.tree.leaves(grads[f"backbone_{key}"])), key
  head = {k: v for k, v in grads.items() if not k.startswith("backbone_")}
  assert (method == "mean_probs") == (not head)
  if head:
    assert any(jnp.any(g) for g in jax.tree.leaves(head))


def test_mean_probs_averages_backbone_probabilities(images):
  backbones = _backbones(mobilenet=False)
  model = FusedModel(NUM_CLASSES, backbones=backbones, method="mean_probs")
  variables = _init(model, images)
  probs = []
  for key, backbone in backbones.items():
    sub = {c: tree[f"backbone_{key}"] for c, tree in variables.items() if f"backbone_{key}" in tree}
    probs.append(jax.nn.softmax(backbone.apply(sub, images)))
  np.testing.assert_allclose(jax.nn.softmax(model.apply(variables, images)),
                             np.mean(probs, axis=0), rtol=1e-5, atol=1e-6)


def test_fine_tuning_reaches_backbones_and_configs_build_backbones(images):
  backbones = {"cnn": {"name": "cnn", "filters": (4, 8), "dense_units": 0},
               "vgg": {"name": "vgg16", "width": 1 / 16, "head": "gap"}}
  model = FusedModel(NUM_CLASSES, backbones=backbones, method="learned_logit_weights",
                     freeze_backbones=False)
  variables = _init(model, images)

  def loss(params):
    logits, _ = model.apply({**variables, "params": params}, images, train=True,
                            mutable=["batch_stats"], rngs={"dropout": jax.random.key(3)})
    return jnp.sum(jax.nn.log_softmax(logits)[:, 0])

  grads = jax.jit(jax.grad(loss))(variables["params"])
  assert any(jnp.any(g) for g in jax.tree.leaves(grads["backbone_vgg"]))


def test_errors_name_the_field(images):
  with pytest.raises(ValueError, match="method='vote'"):
    _init(FusedModel(NUM_CLASSES, backbones=_backbones(False), method="vote"), images)
  with pytest.raises(ValueError, match="at least two backbones"):
    _init(FusedModel(NUM_CLASSES, backbones={"cnn": CustomCNN(NUM_CLASSES)}), images)


def test_backbones_read_their_own_input(images):
  from ecgjax.models.resnet1d import ResNet1D  # pylint: disable=g-import-not-at-top
  signals = jax.random.normal(jax.random.key(4), (2, 64, 13))
  backbones = {"page": {"name": "cnn", "filters": (4, 8), "dense_units": 0},
               "leads": {"name": "resnet1d", "stem_width": 4, "widths": (4, 8)}}
  model = FusedModel(NUM_CLASSES, backbones=backbones, method="mean_probs")
  inputs = {"image": images, "signals": signals}
  variables = _init(model, inputs)
  probs = []
  for key, module, x in (("page", CustomCNN(NUM_CLASSES, filters=(4, 8), dense_units=0), images),
                         ("leads", ResNet1D(NUM_CLASSES, stem_width=4, widths=(4, 8)), signals)):
    sub = {c: tree[f"backbone_{key}"] for c, tree in variables.items()}
    probs.append(jax.nn.softmax(module.apply(sub, x)))
  np.testing.assert_allclose(jax.nn.softmax(model.apply(variables, inputs)),
                             np.mean(probs, axis=0), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="reads 'signals'.*image\\+signals"):
    model.apply(variables, {"image": images})


def test_a_page_and_a_signal_model_fuse_end_to_end(tfds_data_dir, tmp_path):
  """Trained page and signal runs fused by averaging: the run trains, reports, records its
  backbones' own architectures, predicts page files, and its logits are the two models' average."""
  from configs import cnn_small  # pylint: disable=g-import-not-at-top
  from configs import fusion  # pylint: disable=g-import-not-at-top
  from configs import signals  # pylint: disable=g-import-not-at-top
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  from ecgjax import predict  # pylint: disable=g-import-not-at-top
  from ecgjax import train  # pylint: disable=g-import-not-at-top
  from ecgjax import validate  # pylint: disable=g-import-not-at-top
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top
  from ecgjax.data import synth  # pylint: disable=g-import-not-at-top
  from PIL import Image  # pylint: disable=g-import-not-at-top

  runs = {}
  for key, config in (("cnn_small", cnn_small.get_config("smoke")),
                      ("signals", signals.get_config("smoke"))):
    config.dataset.data_dir = tfds_data_dir
    config.dataset.name = "ecg_synth"
    config.saliency.num_pages = 0
    config.train.num_epochs = 1
    if key == "cnn_small":
      config.model.filters = (6, 8)  # Not the fused config's own guess: its run's must be used.
    else:  # No validation fold (so 'best' would be the latest) and its first step reported.
      config.data.val_fold = None
      config.eval.checkpoint = "1"
      config.train.checkpoint_every_steps = 1
      config.train.keep_checkpoints = 100
    runs[key] = str(tmp_path / key)
    train.train_and_evaluate(config, runs[key])

  config = fusion.get_config("cnn_small,signals,smoke")
  assert config.data.input == "image+signals" and config.saliency.num_pages == 0
  config.dataset.data_dir = tfds_data_dir
  config.model.method = "mean_probs"
  config.train.num_epochs = 1
  wrong = fusion.get_config("cnn_small,signals,smoke")
  wrong.data.input = "image"
  with pytest.raises(validate.ConfigError, match="data.input='image'.*'image\\+signals'"):
    validate.check(wrong)
  for key, workdir in runs.items():
    config.fusion.workdirs[key] = workdir
  # A backbone that trained on a fold this run holds out is refused, naming the fold.
  leaky = copy.deepcopy(config)
  leaky.data.test_fold, leaky.data.val_fold = 1, 0
  with pytest.raises(ValueError, match="'signals'.*trained on fold 1.*data.test_fold=1"):
    train.train_and_evaluate(leaky, str(tmp_path / "leaky"))
  config.data.val_fold = None  # The signal run trained on fold 1.
  fused_dir = str(tmp_path / "fused")
  report = train.train_and_evaluate(config, fused_dir)
  assert report["model"] == "fusion" and report["num_examples"] == 4
  # With no validation fold there is no best checkpoint: the report names the one it used.
  assert config.eval.checkpoint == "best" and report["checkpoint"] == "latest"

  fused = checkpoints.load_model(fused_dir)
  assert tuple(fused.config.model.backbones.cnn_small.filters) == (6, 8)
  # Each backbone is the checkpoint its run reported (the signal run's step 1, not its latest).
  assert checkpoints.load_model(runs["signals"]).step == 1
  assert checkpoints.load_model(runs["signals"], "latest").step > 1
  source = pipeline.Source(pipeline.dataset_builder(config.dataset), ("fold0",))
  batch = pipeline.load(source, config).gather(np.arange(len(source)))
  assert batch["image"].shape[1:] == (48, 80, 1) and batch["signals"].shape[1:] == (1250, 13)
  value_range = pipeline.input_range(config)
  own = [jax.nn.softmax(checkpoints.load_model(runs["cnn_small"]).logit_fn(
             pipeline.normalize(batch["image"], value_range))),
         jax.nn.softmax(checkpoints.load_model(runs["signals"]).logit_fn(
             jnp.asarray(batch["signals"])))]
  np.testing.assert_allclose(
      jax.nn.softmax(fused.logit_fn(pipeline.model_inputs(batch, value_range))),
      np.mean(own, axis=0), rtol=1e-4, atol=1e-5)

  page = str(tmp_path / "page.png")
  Image.fromarray(synth.render(synth.simulate("mi", 3), 3)).save(page)
  (result,) = predict.predict_files(fused_dir, [page])
  assert "error" not in result and result["note"].endswith("whole page digitized")


def test_the_signal_model_as_a_fourth_backbone():
  from configs import fusion  # pylint: disable=g-import-not-at-top
  from ecgjax import models  # pylint: disable=g-import-not-at-top
  from ecgjax import validate  # pylint: disable=g-import-not-at-top
  config = fusion.get_config("cnn,mobilenet_v2,vgg16,signals,smoke")
  assert set(config.model.backbones) == {"cnn", "mobilenet_v2", "vgg16", "signals"}
  assert set(config.fusion.workdirs) == set(config.model.backbones)
  assert config.data.input == "image+signals" and config.model.backbones.signals.name == "resnet1d"
  validate.check(config)
  model = models.create_model(config.model, backbones=config.model.backbones.to_dict())
  inputs = {"image": jnp.zeros((2, *config.data.image_size, 1)),
            "signals": jnp.zeros((2, 1250, 13))}
  variables = jax.eval_shape(
      lambda: model.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, inputs))
  assert {f"backbone_{k}" for k in config.model.backbones} <= set(variables["params"])
  logits = jax.eval_shape(lambda v: model.apply(v, inputs), variables)
  assert logits.shape == (2, NUM_CLASSES)
  assert fusion.get_config("cnn_small,signals").data.input == "image+signals"
  assert fusion.get_config().data.input == "image"
  with pytest.raises(ValueError, match="two or more backbones"):
    fusion.get_config("signals")
  with pytest.raises(ValueError, match="Unknown config argument"):
    fusion.get_config("cnn,resnet")


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_branch_loss_is_each_backbones_own_cross_entropy(weight, images):
  """Backbones trained with the fused model: the step's loss is (1 - w) x the fused output's
  cross-entropy + w x the mean of the backbones' own; the BRANCHES collection carries their logits."""
  import optax  # pylint: disable=g-import-not-at-top
  from ecgjax import train  # pylint: disable=g-import-not-at-top
  from ecgjax.models.fusion import BRANCHES  # pylint: disable=g-import-not-at-top
  backbones = {"a": CustomCNN(NUM_CLASSES, filters=(4,), dense_units=0, dropout=0.0),
               "b": CustomCNN(NUM_CLASSES, filters=(6,), dense_units=0, dropout=0.0)}
  model = FusedModel(NUM_CLASSES, backbones, method="mean_probs", freeze_backbones=False,
                     bn_momentum=0.5)
  variables = _init(model, images)
  assert set(variables) == {"params", "batch_stats"}  # Nothing sown at init.
  tx = optax.sgd(0.0)
  state = train.TrainState(step=jnp.zeros((), jnp.int32), params=variables["params"],
                           batch_stats=variables["batch_stats"],
                           opt_state=tx.init(variables["params"]),
                           ema_params=variables["params"], eval_batch_stats=variables["batch_stats"])
  labels = jnp.array([2, 0])
  batch = {"image": images, "label": labels}
  _, metrics = train.train_step(
      state, batch, model=model, tx=tx, schedule=optax.constant_schedule(0.0),
      class_weights=jnp.ones(NUM_CLASSES), dropout_key=jax.random.key(3), label_smoothing=0.0,
      ema_decay=0.0, value_range=None, branch_loss_weight=weight)
  fused, updates = model.apply(variables, images, train=True, mutable=["batch_stats", BRANCHES])
  branches = updates[BRANCHES]["logits"]
  assert len(branches) == 2 and branches[0].shape == (2, NUM_CLASSES)
  # The BatchNorm momentum reached the backbones: their statistics move otherwise than with their own.
  _, own = model.clone(bn_momentum=None).apply(variables, images, train=True,
                                               mutable=["batch_stats"])
  for a, b in zip(jax.tree_util.tree_leaves(updates["batch_stats"]),
                  jax.tree_util.tree_leaves(own["batch_stats"])):
    assert not np.allclose(a, b)

  def ce(logits):
    return float(jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels)))

  expected = (1 - weight) * ce(fused) + weight * (ce(branches[0]) + ce(branches[1])) / 2
  assert float(metrics.compute()["loss"]) == pytest.approx(expected, rel=1e-5)
  assert ce(branches[0]) != pytest.approx(ce(fused), rel=1e-3)  # The two losses differ here.


def test_backbones_trained_together_in_one_run(tfds_data_dir, tmp_path):
  """`configs/fusion.py:cnn_small,signals,joint`: no trained runs, both backbones learn from scratch
  in one run (BatchNorm statistics recomputed for both); the branch loss needs unfrozen backbones."""
  from configs import fusion  # pylint: disable=g-import-not-at-top
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  from ecgjax import train  # pylint: disable=g-import-not-at-top
  from ecgjax import validate  # pylint: disable=g-import-not-at-top
  config = fusion.get_config("cnn_small,signals,joint,smoke")
  assert not config.model.freeze_backbones and config.train.branch_loss_weight > 0
  assert config.train.bn_recompute_batches > 0
  config.dataset.data_dir = tfds_data_dir
  workdir = str(tmp_path / "joint")
  report = train.train_and_evaluate(config, workdir)
  assert report["model"] == "fusion" and report["num_examples"] == 4
  loaded = checkpoints.load_model(workdir)
  initial = fusion.get_config("cnn_small,signals,joint,smoke")
  model = FusedModel(NUM_CLASSES, initial.model.backbones.to_dict(), method="mean_probs",
                     freeze_backbones=False)
  init = jax.eval_shape(lambda: model.init(
      {"params": jax.random.key(0), "dropout": jax.random.key(0)},
      {"image": jnp.zeros((1, 48, 80, 1)), "signals": jnp.zeros((1, 1250, 13))}))
  assert (jax.tree_util.tree_structure(loaded.variables["params"])
          == jax.tree_util.tree_structure(init["params"]))
  for key in ("backbone_cnn_small", "backbone_signals"):  # Both trained: not their init.
    fresh = jax.jit(model.init)({"params": jax.random.key(0), "dropout": jax.random.key(0)},
                                {"image": jnp.zeros((1, 48, 80, 1)),
                                 "signals": jnp.zeros((1, 1250, 13))})["params"][key]
    moved = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()),
                                   loaded.variables["params"][key], fresh)
    assert max(jax.tree_util.tree_leaves(moved)) > 0, key
  config.model.freeze_backbones = True
  with pytest.raises(validate.ConfigError, match="branch_loss_weight.*freeze_backbones=False"):
    validate.check(config)


def test_copies_of_one_model_trained_together_are_an_ensemble(tfds_data_dir, tmp_path):
  """`configs/fusion.py:signals,signals,joint`: two copies of the signal model under their own keys,
  with the signal model's recipe, each from its own initialisation on its own cross-entropy only;
  they end apart, and the run reports their averaged probabilities."""
  from configs import fusion  # pylint: disable=g-import-not-at-top
  from configs import signals  # pylint: disable=g-import-not-at-top
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  from ecgjax import train  # pylint: disable=g-import-not-at-top
  config = fusion.get_config("signals,signals,joint,smoke")
  assert list(config.model.backbones) == ["signals", "signals_2"]
  assert config.data.input == "signals" and config.train.branch_loss_weight == 1.0
  own = signals.get_config("smoke")
  assert config.train.learning_rate == own.train.learning_rate
  assert config.eval.checkpoint == own.eval.checkpoint
  with pytest.raises(ValueError, match="one named n times"):
    fusion.get_config("signals,nope")
  config.dataset.data_dir = tfds_data_dir
  workdir = str(tmp_path / "ensemble")
  report = train.train_and_evaluate(config, workdir)
  assert report["model"] == "fusion" and report["num_examples"] == 4
  # The ensemble is explained as a signal model is, on the test pages' digitized traces.
  maps = sorted(os.listdir(os.path.join(workdir, "saliency")))
  assert len([m for m in maps if m.endswith(".png")]) >= config.saliency.num_pages > 0, maps
  params = checkpoints.load_model(workdir).variables["params"]
  first, second = params["backbone_signals"], params["backbone_signals_2"]
  assert jax.tree_util.tree_structure(first) == jax.tree_util.tree_structure(second)
  gaps = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), first, second)
  assert min(jax.tree_util.tree_leaves(gaps)) > 0  # Every tensor its own, not one model twice.
