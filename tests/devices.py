"""XLA_FLAGS for a subprocess that fakes `n` CPU devices, keeping the flags the tests set."""

import os


def xla_flags(n: int) -> str:
  """The process's XLA_FLAGS (conftest.py adds to them) and n host-platform devices."""
  return f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n}".strip()
