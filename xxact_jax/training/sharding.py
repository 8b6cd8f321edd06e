"""Data-parallel mesh, parameter/batch shardings and multi-host batch assembly."""

import os
from typing import Sequence

from absl import logging
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed():
  """Initialises jax.distributed when launched as one of several processes (SLURM / env vars)."""
  if jax.distributed.is_initialized():
    return
  if int(os.environ.get("SLURM_NTASKS", "1")) > 1 or "JAX_COORDINATOR_ADDRESS" in os.environ:
    jax.distributed.initialize()
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D data-parallel mesh over `devices` (default: all devices of all processes)."""
  devices = np.asarray(devices if devices is not None else jax.devices())
  return Mesh(devices.reshape(-1), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def state_shardings(mesh: Mesh, abstract_state, fsdp: bool = False):
  """Replicated parameters, or with fsdp=True each array split along its largest divisible axis."""
  n = mesh.shape[DATA_AXIS]

  def rule(leaf):
    shape = getattr(leaf, "shape", ())
    if fsdp and n > 1 and len(shape) >= 1 and np.prod(shape) >= 2 ** 14:
      for axis in np.argsort(shape)[::-1]:
        if shape[axis] % n == 0:
          spec = [None] * len(shape)
          spec[axis] = DATA_AXIS
          return NamedSharding(mesh, P(*spec))
    return NamedSharding(mesh, P())

  return jax.tree.map(rule, abstract_state)


def global_batch(local_batch: dict, sharding: NamedSharding) -> dict:
  """Assembles each process's local numpy batch into one global array sharded along `data`."""
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in local_batch.items()}


def check_batch_divisible(global_batch_size: int, mesh: Mesh, grad_accum_steps: int = 1):
  n = mesh.shape[DATA_AXIS]
  if global_batch_size % (n * grad_accum_steps) or global_batch_size % jax.process_count():
    raise ValueError(
        f"Batch size {global_batch_size} must be divisible by the number of devices ({n}) "
        f"times grad_accum_steps ({grad_accum_steps}) and by the process count "
        f"({jax.process_count()})")
