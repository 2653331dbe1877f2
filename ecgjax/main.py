r"""Command-line entry point: parses flags and calls `train.train_and_evaluate`.

  python -m ecgjax.main --config=configs/default.py --workdir=runs/default \
      [--config.train.num_epochs=30 ...]
"""

import ast
import os
import sys
import traceback

from absl import app
from absl import flags
from ml_collections import config_flags

from ecgjax.kernels import hugepages

FLAGS = flags.FLAGS

flags.DEFINE_string("workdir", None, "Directory for checkpoints, TensorBoard events and reports.")
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/NAME.py[:arg]).", lock_config=True)
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  # Imported here so that --help is instant and flags parse before JAX initialises.
  from ecgjax import validate  # pylint: disable=g-import-not-at-top
  try:
    validate.check(FLAGS.config)  # First, before the libraries that training needs load.
  except validate.ConfigError as e:
    sys.exit(f"ecgjax.main: {e}")
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  from ecgjax import mesh  # pylint: disable=g-import-not-at-top
  from ecgjax import quiet  # pylint: disable=g-import-not-at-top
  from ecgjax import train  # pylint: disable=g-import-not-at-top
  quiet.hide_library_info()
  mesh.initialize_distributed()
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (checkpoints.WorkdirConfigError, checkpoints.CheckpointError,
          checkpoints.CheckpointMismatchError) as e:  # For the user to act on: one line, no traceback.
    sys.exit(f"ecgjax.main: {e}")


def _unknown_field(e: BaseException) -> str | None:
  """The message of an unknown --config.FIELD that ml_collections raised while parsing flags."""
  if not any("config_flags" in frame.filename for frame in traceback.extract_tb(e.__traceback__)):
    return None
  text = str(e.args[0] if e.args else e)
  for _ in range(2):  # ml_collections nests the KeyError's repr in the AttributeError's.
    try:
      value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      break
    text = value if isinstance(value, str) else text
  return " ".join(text.split())


def run():
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO lines, if it is there.
  hugepages.ensure()
  try:
    app.run(main)
  except (AttributeError, KeyError) as e:  # Raised while flags parse, before `main` runs.
    unknown = _unknown_field(e)
    if unknown is None:
      raise
    sys.exit(f"ecgjax.main: no such config field: {unknown} Check the --config.FIELD=VALUE "
             "overrides against the config file.")


if __name__ == "__main__":
  run()
