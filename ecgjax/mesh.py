"""Data parallelism with `jax.jit` over a device `Mesh`: the batch sharded, the rest replicated.

One code path for 1 CPU, N faked CPU devices, a GPU node or a TPU pod. (pmap is in maintenance mode
in JAX; nothing here uses it.) For multi-host runs call `initialize_distributed()` first: each
process then loads its own slice of every global batch.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"
T = TypeVar("T")


def initialize_distributed() -> None:
  """Joins a multi-process run when launched as one of several processes; a single one needs nothing.

  With JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID set (e.g. two processes on one
  machine, or a cluster without auto-detection), they are passed to `jax.distributed.initialize`
  explicitly (jax 0.10 does not read the last two itself). Otherwise, in a cluster JAX recognises
  (SLURM, TPU pods, GKE), JAX detects the processes itself. On CPU the processes talk over gloo.
  """
  if jax.distributed.is_initialized():
    return
  env = os.environ
  explicit = {k: env.get(k) for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES",
                                       "JAX_PROCESS_ID")}
  cluster = any(env.get(k) for k in ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES",
                                     "MEGASCALE_COORDINATOR_ADDRESS"))
  if not any(explicit.values()) and not cluster:
    return
  # CPU devices of several processes need a collectives library; it does not touch accelerators.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if all(explicit.values()):
    try:
      num, index = int(explicit["JAX_NUM_PROCESSES"]), int(explicit["JAX_PROCESS_ID"])
    except ValueError as e:
      raise ValueError(f"JAX_NUM_PROCESSES={explicit['JAX_NUM_PROCESSES']!r} and JAX_PROCESS_ID="
                       f"{explicit['JAX_PROCESS_ID']!r} must be integers.") from e
    if not 0 <= index < num:
      raise ValueError(f"JAX_PROCESS_ID={index} must be in 0..{num - 1} (JAX_NUM_PROCESSES={num}).")
    jax.distributed.initialize(explicit["JAX_COORDINATOR_ADDRESS"], num, index)
  elif any(explicit.values()) and not cluster:
    missing = [k for k, v in explicit.items() if not v]
    raise ValueError(f"Set all of JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID for "
                     f"a multi-process run; missing {missing}.")
  else:
    jax.distributed.initialize()


def use_compilation_cache(directory: str | None) -> None:
  """Keeps compiled computations in `directory` (jax's persistent compilation cache).

  A later run that compiles the same step loads it instead (`experiments/benchmark_compile.py`,
  variant cache_warm, measures what that saves). Only computations that took over a second to
  compile are kept. '' or None leaves it off; jax reads the directory once per process, at the
  first compilation.
  """
  if directory:
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(directory))


def first_process_first(fn: Callable[[], T], what: str) -> T:
  """Runs `fn` in process 0, then, after a barrier, in every other process.

  For work whose result lands on a shared disk (building a data set, decoding its pages): process 0
  does it, the others then find it done. A single process just calls `fn`.
  """
  if jax.process_count() == 1:
    return fn()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  result = fn() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices(f"ecgjax: {what}")
  return fn() if jax.process_index() != 0 else result


def make_mesh() -> Mesh:
  """A 1-D mesh over all devices of all processes, axis `data`."""
  return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def local_batch_size(global_batch_size: int, mesh: Mesh, what: str = "config.train.batch_size") -> int:
  """This process's share of a global batch; an error unless it divides over the devices."""
  devices = mesh.devices.size
  if global_batch_size <= 0 or global_batch_size % devices:
    raise ValueError(
        f"{what}={global_batch_size} does not divide over the {devices} devices of the mesh; "
        f"use a multiple of {devices}.")
  return global_batch_size // jax.process_count()


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's local batch into global arrays sharded along `data`."""
  sharding = batch_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}
