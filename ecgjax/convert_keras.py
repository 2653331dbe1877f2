r"""Command line: Keras MobileNetV2 / VGG16 weights -> a run directory that ecgjax restores.

  python -m ecgjax.convert_keras --model=mobilenet_v2 --weights=FILE.h5 --workdir=DIR \
      [--alpha=1.0] [--image_size=224] [--channels=3] [--drop_top] [--rename=dense=predictions]

FILE may be a whole saved model (`.keras`, or `.h5` written by `model.save`), possibly with the
application nested inside it, or a weights-only `.h5` such as Keras' ImageNet files (with or without
the classifier top), for which the Keras application is built first. DIR gets the converted
variables as checkpoint step 0 and a config.json: the model's experiment config
(`configs/<model>.py`) with the converted model's fields, so `--config.init_from=DIR`,
`ecgjax.predict`, `ecgjax.evaluate` and `ecgjax.saliency` use it like a trained run. A DIR that
already holds a checkpoint is refused.

The conversion itself (layer mapping, shape checks, gray first convolution, `--drop_top`) is
`ecgjax.models.keras_import`, which needs neither the experiment configs nor the checkpoint code;
this module joins it to them. Keras and TensorFlow (the `keras` extra) are imported only when a file
is converted. Not for: exporting Flax weights back to Keras.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from absl import app
from absl import flags

from ecgjax.classes import NUM_CLASSES

FLAGS = flags.FLAGS

MODEL_NAMES = ("mobilenet_v2", "vgg16")


def _define_flags() -> None:
  """Defined only when run as a command, so importing this module defines no global flags (the
  names are those of `ecgjax.main` and `ecgjax.predict`, which a process may also import)."""
  flags.DEFINE_enum("model", None, MODEL_NAMES, "Architecture of the Keras model.")
  flags.DEFINE_string("weights", None, "The Keras file: .keras, or .h5 (whole model or weights).")
  flags.DEFINE_string("workdir", None, "The run directory to write (must hold no checkpoint).")
  flags.DEFINE_float("alpha", 1.0, "MobileNetV2 width multiplier.")
  flags.DEFINE_integer("image_size", None,
                       "Input size of the Flax model (default: the Keras model's).", lower_bound=1)
  flags.DEFINE_integer("channels", 3, "Input channels of the Flax model: 3 (RGB) or 1 (gray).")
  flags.DEFINE_integer("num_classes", NUM_CLASSES, "Classes of the Flax model's classifier.",
                       lower_bound=1)
  flags.DEFINE_enum("vgg_head", "classifier", ["classifier", "gap"], "VGG16's head.")
  flags.DEFINE_bool("drop_top", False,
                    "Ignore Keras' predictions layer (e.g. ImageNet's 1000 classes).")
  flags.DEFINE_multi_string("rename", [], "KERAS=FLAX: map a Keras layer name onto ours, e.g. "
                            "dense=predictions (repeatable).")
  flags.register_validator("channels", lambda c: c in (1, 3), message="--channels must be 1 or 3.")
  flags.mark_flags_as_required(["model", "weights", "workdir"])


def parse_rename(items: Iterable[str]) -> dict[str, str]:
  """['KERAS=FLAX', ...] -> {KERAS: FLAX}."""
  rename = {}
  for item in items:
    if item.count("=") != 1:
      raise ValueError(f"--rename {item!r}: expected KERAS_NAME=FLAX_NAME.")
    keras_name, flax_name = item.split("=")
    rename[keras_name] = flax_name
  return rename


def save_variables(variables: dict[str, Any], model_config: Mapping[str, Any],
                   workdir: str, *, image_size: tuple[int, int] | None = None,
                   channels: int = 3) -> str:
  """Writes `variables` as a run directory that training, evaluation and saliency use.

  The run's config.json is the model's experiment config (`configs/<name>.py`) with the converted
  model's fields, so `config.init_from=WORKDIR`, `ecgjax.predict` and `ecgjax.saliency` work on it
  like on a trained run. Returns the checkpoint directory.
  """
  import importlib  # pylint: disable=import-outside-toplevel
  from ecgjax import checkpoints  # pylint: disable=import-outside-toplevel

  model_config = dict(model_config)
  config = importlib.import_module(f"configs.{model_config['name']}").get_config()
  for key, value in model_config.items():
    config.model[key] = value
  if image_size is not None:
    config.data.image_size = tuple(image_size)
  config.data.grayscale = channels == 1
  return checkpoints.save_inference_variables(os.path.abspath(workdir), config, variables)


def convert(model_name: str, weights: str, workdir: str, *, alpha: float = 1.0,
            image_size: int | None = None, channels: int = 3, num_classes: int = NUM_CLASSES,
            vgg_head: str = "classifier", drop_top: bool = False,
            rename: Mapping[str, str] | None = None) -> tuple[str, dict[str, Any]]:
  """Converts the Keras file `weights` and writes it as the run directory `workdir`.

  The arguments are the command's flags. Returns (the checkpoint directory, the Flax variables).
  """
  if model_name not in MODEL_NAMES:
    raise ValueError(f"--model={model_name!r}: expected one of {', '.join(MODEL_NAMES)}.")
  from ecgjax.models import keras_import  # pylint: disable=import-outside-toplevel

  keras_model = keras_import.load_keras_model(weights, model_name, alpha=alpha,
                                              image_size=image_size)
  size = image_size or keras_model.input_shape[1]
  if model_name == "mobilenet_v2":
    from ecgjax.models.mobilenet_v2 import MobileNetV2  # pylint: disable=import-outside-toplevel
    model_config = {"name": "mobilenet_v2", "alpha": alpha}
    model = MobileNetV2(num_classes=num_classes, alpha=alpha)
  else:
    from ecgjax.models.vgg16 import VGG16  # pylint: disable=import-outside-toplevel
    fc1 = [layer for layer in keras_import.iter_layers(keras_model) if layer.name == "fc1"]
    dense_units = fc1[0].units if fc1 else 4096
    # Keras' VGG16: no BatchNorm (configs/vgg16.py trains torchvision's vgg16_bn from scratch).
    model_config = {"name": "vgg16", "head": vgg_head, "dense_units": dense_units,
                    "batch_norm": False, "kernel_init": "lecun"}
    model = VGG16(num_classes=num_classes, head=vgg_head, dense_units=dense_units)
  variables = keras_import.from_keras(keras_model, model, image_shape=(size, size, channels),
                                      drop_top=drop_top, rename=rename)
  # The classifier head fixes the input size; pooling heads keep the config's page-shaped input.
  fixed_size = (size, size) if model_config.get("head") == "classifier" else None
  path = save_variables(variables, model_config, workdir, image_size=fixed_size,
                        channels=channels)
  return path, variables


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  import jax  # pylint: disable=import-outside-toplevel
  from ecgjax import checkpoints  # pylint: disable=import-outside-toplevel
  from ecgjax import quiet  # pylint: disable=import-outside-toplevel
  quiet.hide_library_info()
  try:
    path, variables = convert(
        FLAGS.model, FLAGS.weights, FLAGS.workdir, alpha=FLAGS.alpha, image_size=FLAGS.image_size,
        channels=FLAGS.channels, num_classes=FLAGS.num_classes, vgg_head=FLAGS.vgg_head,
        drop_top=FLAGS.drop_top, rename=parse_rename(FLAGS.rename))
  except ModuleNotFoundError as e:
    sys.exit(f"ecgjax.convert_keras: {e}; reading Keras files needs the keras extra "
             "(pip install -e '.[keras]').")
  except (OSError, ValueError, checkpoints.CheckpointError) as e:  # For the user: one line.
    sys.exit(f"ecgjax.convert_keras: {' '.join(str(e).split())}")
  print(f"Wrote {path} ({FLAGS.model}, {sum(x.size for x in jax.tree.leaves(variables)):,} "
        f"values) and {os.path.join(os.path.abspath(FLAGS.workdir), 'config.json')}.")


def run() -> None:
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines.
  _define_flags()
  app.run(main)


if __name__ == "__main__":
  run()
