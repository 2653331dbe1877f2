r"""Command-line entry point: parses flags and calls `train.train_and_evaluate`.

  python -m ecgjax.main --config=configs/default.py --workdir=runs/default \
      [--config.train.num_epochs=30 ...]
"""

from absl import app
from absl import flags
from absl import logging
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
  from ecgjax import mesh  # pylint: disable=g-import-not-at-top
  from ecgjax import train  # pylint: disable=g-import-not-at-top
  mesh.initialize_distributed()
  logging.info("Config:\n%s", FLAGS.config)
  train.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def run():
  hugepages.ensure()
  app.run(main)


if __name__ == "__main__":
  run()
