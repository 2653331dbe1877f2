"""Shared fixtures: a built tiny synthetic data set, the smoke config pointing at it, and an
untrained smoke run directory."""

import os

import pytest

from configs import default  # ml_collections only: jax is not imported yet.

# Tests run on the CPU with whatever devices the process has; subprocess tests fake more.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

# The suite's time is mostly XLA compiling small programs. With the three settings below it took
# 13m52s instead of 23m25s on a 2-core CPU with an empty compilation cache (a fresh machine: `HOME=
# $(mktemp -d) bash scripts/test.sh`), and 7m38s instead of 13m44s with the cache that run left.
# Set here, they reach every pytest-xdist worker and every subprocess (tests that set XLA_FLAGS
# add to these: devices.py).
# - LLVM's optimisation level 1 instead of 2 for the programs XLA compiles: a model's
#   initialisation compiles 1.5-3 times as fast, its train step up to a fifth faster
#   (experiments/benchmark_compile.py, variant llvm_o1). The suite, its bit-exact resume and
#   Keras-import tests included, passes at either level. Runs outside the tests keep XLA's
#   default.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_backend_optimization_level=1"
# - The persistent compilation cache that runs use (configs/default.py), from the first
#   compilation of every process on, not only once a run sets it ...
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.expanduser(default.base_config().compilation_cache_dir))
# - ... and keeping every program, not only those that took over a second to compile: tests
#   compile many small ones again and again (an operation at a time, outside jit).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
  """A TFDS data_dir holding `ecg_synth/tiny`, built once per test process."""
  from configs import cnn_small  # pylint: disable=g-import-not-at-top
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  config = cnn_small.get_config("smoke")
  config.dataset.data_dir = data_dir
  pipeline.prepare(config.dataset)
  return data_dir


@pytest.fixture
def smoke_config(tfds_data_dir):
  from configs import cnn_small  # pylint: disable=g-import-not-at-top
  config = cnn_small.get_config("smoke")
  config.dataset.data_dir = tfds_data_dir
  return config


def write_untrained_run(path: str, config, variables) -> str:
  """A run directory as training leaves it: `config` and one checkpoint holding `variables`."""
  from ecgjax import checkpoints  # pylint: disable=g-import-not-at-top
  checkpoints.write_config(config, path)
  state = {"params": variables["params"], "ema_params": variables["params"],
           "eval_batch_stats": variables["batch_stats"]}
  manager = checkpoints.make_manager(path)
  checkpoints.save(manager, 1, state, None)
  manager.close()
  return path


@pytest.fixture(scope="session")
def run_writer():
  """`write_untrained_run`, for test modules (conftest is not importable from them)."""
  return write_untrained_run


@pytest.fixture(scope="session")
def smoke_run_dir(tmp_path_factory):
  """A run directory as training leaves it: the smoke config and one checkpoint (untrained)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from configs import cnn_small  # pylint: disable=g-import-not-at-top
  from ecgjax import models  # pylint: disable=g-import-not-at-top
  config = cnn_small.get_config("smoke")
  model = models.create_model(config.model)
  channels = 1 if config.data.grayscale else 3
  variables = model.init(jax.random.key(0), jnp.zeros((1, *config.data.image_size, channels)))
  return write_untrained_run(str(tmp_path_factory.mktemp("run")), config, variables)
