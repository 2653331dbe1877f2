"""Shared fixtures: a built tiny synthetic data set and the smoke config pointing at it."""

import os

import pytest

# Tests run on the CPU with whatever devices the process has; subprocess tests fake more.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("JAX_PLATFORMS", "cpu")


@pytest.fixture(scope="session")
def tfds_data_dir(tmp_path_factory):
  """A TFDS data_dir holding `ecg_synth/tiny`, built once per test process."""
  from configs import default  # pylint: disable=g-import-not-at-top
  from ecgjax.data import pipeline  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  config = default.get_config("smoke")
  config.dataset.data_dir = data_dir
  pipeline.prepare(config.dataset)
  return data_dir


@pytest.fixture
def smoke_config(tfds_data_dir):
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config("smoke")
  config.dataset.data_dir = tfds_data_dir
  return config
