"""Transparent huge pages for XLA:CPU's buffers: a process-wide setting made at start-up.

XLA:CPU allocates every large intermediate buffer with malloc, and glibc serves each one with fresh
4 KiB pages: every train step touches hundreds of MB of new pages, one page fault per 4 KiB. With
2 MiB transparent huge pages the faults are 512 times fewer. `python experiments/benchmark.py` times
whole train steps; run it with ``ECGJAX_HUGE_PAGES=0`` and without to see what this is worth on a
machine (the README's "Benchmarks" has the figures of this project's 2-core machine).

glibc (2.35 and later) asks the kernel for huge pages when the tunable ``glibc.malloc.hugetlb=1`` is
in ``GLIBC_TUNABLES``, which glibc reads only when a process starts. So the command-line entry points
call `ensure()` first: on Linux, when the kernel offers transparent huge pages ('always' or
'madvise') and the variable does not already set ``glibc.malloc.hugetlb``, it runs the same command
again with the tunable added (`os.execve`: same process id, arguments and environment otherwise).
``ECGJAX_HUGE_PAGES=0`` turns this off. It is harmless on GPU and TPU hosts (only host memory is
affected) and a no-op elsewhere.
"""

from __future__ import annotations

import os
import sys

TUNABLE = "glibc.malloc.hugetlb=1"
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"


def available() -> bool:
  """Whether the kernel offers transparent huge pages to a process that asks (madvise or always)."""
  try:
    with open(_THP, encoding="utf-8") as f:
      mode = f.read()
  except OSError:
    return False
  return "[always]" in mode or "[madvise]" in mode


def environment(env: dict[str, str] | None = None) -> dict[str, str]:
  """`env` (default: this process's) with the huge-page tunable added to GLIBC_TUNABLES.

  Unchanged when `env` turns huge pages off (``ECGJAX_HUGE_PAGES=0``) or already sets the tunable.
  """
  env = dict(os.environ if env is None else env)
  tunables = env.get("GLIBC_TUNABLES", "")
  if env.get("ECGJAX_HUGE_PAGES", "1") != "0" and "glibc.malloc.hugetlb" not in tunables:
    env["GLIBC_TUNABLES"] = ":".join(t for t in (tunables, TUNABLE) if t)
  return env


def ensure() -> None:
  """Re-executes this command with huge pages enabled, once, when they help and are not set yet.

  Call it first thing in a command-line entry point, never from library code or tests: it replaces
  the running process.
  """
  env = environment()
  if sys.platform != "linux" or env == dict(os.environ) or not available():
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
