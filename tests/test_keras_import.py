"""Keras -> Flax weight import: random-weight Keras models and the converted Flax models agree.

Also the command that writes the conversion as a run directory (`ecgjax.convert_keras`)."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import keras  # Keras 3 on TensorFlow, pinned in setup.py: a real dependency, never skipped.
import numpy as np
import pytest

from ecgjax import checkpoints
from ecgjax import convert_keras
from ecgjax.models import keras_import
from ecgjax.models.mobilenet_v2 import MobileNetV2
from ecgjax.models.vgg16 import VGG16

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _randomise(keras_model, seed=0):
  """He-scaled kernels, nonzero biases and BatchNorm statistics, so every weight matters."""
  rng = np.random.default_rng(seed)
  for layer in keras_import.iter_layers(keras_model):
    new = []
    for w in layer.get_weights():
      if isinstance(layer, keras.layers.BatchNormalization):
        new.append(rng.uniform(0.5, 1.5, w.shape) if len(new) in (0, 3) else
                   rng.normal(0, 0.1, w.shape))
      elif w.ndim > 1:
        fan_in = np.prod(w.shape[:-1]) if not isinstance(layer, keras.layers.DepthwiseConv2D) \
            else np.prod(w.shape[:2])
        new.append(rng.normal(0, np.sqrt(2 / fan_in), w.shape))
      else:
        new.append(rng.normal(0, 0.1, w.shape))
    layer.set_weights([w.astype(np.float32) for w in new])
  return keras_model


def _images(size, seed=1):
  return np.random.default_rng(seed).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)


def _assert_same_logits(keras_model, model, variables, images):
  want = np.asarray(keras_model(images, training=False))
  got = np.asarray(jax.jit(model.apply)(variables, images))
  assert np.abs(want).max() > 0.05, "logits too small for the comparison to mean anything"
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("alpha,size", [(0.35, 40), (0.5, 32)])
def test_mobilenet_v2_logits_match(alpha, size):
  keras_model = _randomise(keras.applications.MobileNetV2(
      weights=None, alpha=alpha, input_shape=(size, size, 3), classes=4,
      classifier_activation=None))
  model = MobileNetV2(num_classes=4, alpha=alpha)
  _assert_same_logits(keras_model, model, keras_import.from_keras(keras_model, model),
                      _images(size))


def test_vgg16_logits_match():
  keras_model = _randomise(keras.applications.VGG16(
      weights=None, input_shape=(32, 32, 3), classes=4, classifier_activation=None))
  model = VGG16(num_classes=4)
  _assert_same_logits(keras_model, model, keras_import.from_keras(keras_model, model),
                      _images(32))


@pytest.fixture(scope="module")
def tiny_keras_mobilenet():
  return _randomise(keras.applications.MobileNetV2(
      weights=None, alpha=0.35, input_shape=(32, 32, 3), classes=4, classifier_activation=None))


def test_mismatches_name_the_layer(tiny_keras_mobilenet):
  with pytest.raises(ValueError, match="Layer 'Conv1' kernel: Keras shape"):
    keras_import.from_keras(tiny_keras_mobilenet, MobileNetV2(num_classes=4, alpha=1.0))
  with pytest.raises(ValueError, match=r"\['Conv1'.*no counterpart"):
    keras_import.from_keras(tiny_keras_mobilenet, VGG16(num_classes=4))
  with pytest.raises(ValueError, match="Layer 'predictions' (bias|kernel): Keras shape"):
    keras_import.from_keras(tiny_keras_mobilenet, MobileNetV2(num_classes=3, alpha=0.35))


def test_gray_model_and_dropped_top(tiny_keras_mobilenet):
  model = MobileNetV2(num_classes=3, alpha=0.35)
  variables = keras_import.from_keras(tiny_keras_mobilenet, model, image_shape=(32, 32, 1),
                                      drop_top=True)
  gray = _images(32)[..., :1]
  features = model.apply(variables, gray, return_features=True)[1]
  # The gray model on one channel sees what Keras sees on that channel repeated three times.
  pooled = keras.Model(tiny_keras_mobilenet.input,
                       tiny_keras_mobilenet.get_layer("out_relu").output)
  want = np.asarray(pooled(np.repeat(gray, 3, axis=-1), training=False)).mean(axis=(1, 2))
  np.testing.assert_allclose(features, want, rtol=1e-4, atol=1e-4)
  assert variables["params"]["predictions"]["kernel"].shape == (1280, 3)


def _convert_cli(*args):
  return subprocess.run([sys.executable, "-m", "ecgjax.convert_keras", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"})


def test_cli_writes_a_checkpoint_that_restores(tiny_keras_mobilenet, tmp_path):
  path = str(tmp_path / "seed.keras")
  tiny_keras_mobilenet.save(path)
  workdir = str(tmp_path / "work")
  out = _convert_cli("--model=mobilenet_v2", f"--weights={path}", "--alpha=0.35",
                     f"--workdir={workdir}")
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Wrote " in out.stdout
  # The workdir is a run like any other: load_model (used by init_from, predict, saliency) restores it.
  loaded = checkpoints.load_model(workdir)
  assert loaded.config.model.name == "mobilenet_v2" and loaded.config.model.alpha == 0.35
  assert loaded.step == 0
  _assert_same_logits(tiny_keras_mobilenet, loaded.model, loaded.variables, _images(32))
  with pytest.raises(FileExistsError, match="choose a new --workdir"):
    convert_keras.convert("mobilenet_v2", path, workdir, alpha=0.35)


def test_cli_user_errors_are_one_line(tmp_path):
  out = _convert_cli("--model=mobilenet_v2", f"--weights={tmp_path / 'missing.h5'}",
                     f"--workdir={tmp_path / 'work'}")
  assert out.returncode == 1 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      f"ecgjax.convert_keras: Keras weights file {str(tmp_path / 'missing.h5')!r} does not exist.")
  with pytest.raises(ValueError, match="expected KERAS_NAME=FLAX_NAME"):
    convert_keras.parse_rename(["dense"])
