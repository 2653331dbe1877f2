"""Data parallelism with `jax.jit` over a device `Mesh`: the batch sharded, the rest replicated.

One code path for 1 CPU, N faked CPU devices, a GPU node or a TPU pod. (pmap is in maintenance mode
in JAX; nothing here uses it.) For multi-host runs call `initialize_distributed()` first: each
process then loads its own slice of every global batch.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def initialize_distributed() -> None:
  """Calls `jax.distributed.initialize()` when launched as one of several processes.

  Cluster environments (SLURM, TPU pods, or JAX_COORDINATOR_ADDRESS/JAX_NUM_PROCESSES/
  JAX_PROCESS_ID) are detected by JAX itself; a single process needs nothing.
  """
  multi = any(os.environ.get(k) for k in ("JAX_COORDINATOR_ADDRESS", "SLURM_NTASKS",
                                          "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS"))
  if multi and not jax.distributed.is_initialized():
    jax.distributed.initialize()


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
