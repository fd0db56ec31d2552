"""Device mesh, shardings and batch placement for data parallelism on one or many hosts.

Batches are sharded over the mesh axis "data"; states and frozen models are replicated. The same
code runs on 1 device, N local devices, or several hosts after `initialize_distributed`.
"""
from typing import Any, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jax_unlearn.errors import UserError

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first `num_devices` devices (all devices of all hosts by default)."""
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise UserError(f"asked for {n} devices but {len(devices)} are available.",
                    f"pass a device count between 1 and {len(devices)}.")
  return jax.make_mesh((n,), (DATA_AXIS,), devices=devices[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def pad_batch(batch: Mapping[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
  """Pads every array of a host batch along axis 0 to `size` rows; padded rows get mask 0.

  Padding repeats the first row (not zeros), so running statistics such as BatchNorm's see real
  data, while the mask removes the padded rows from every loss and metric.
  """
  n = len(next(iter(batch.values())))
  mask = np.asarray(batch.get("mask", np.ones(n, np.float32)), np.float32)
  if n == size:
    return {**batch, "mask": mask}
  if n > size:
    raise ValueError(f"batch of {n} rows does not fit in {size}")
  idx = np.concatenate([np.arange(n), np.zeros(size - n, np.int64)])
  out = {k: np.asarray(v)[idx] for k, v in batch.items() if k != "mask"}
  out["mask"] = np.concatenate([mask, np.zeros(size - n, np.float32)])
  return out


def shard_batch(batch: Mapping[str, np.ndarray], mesh) -> dict[str, jax.Array]:
  """Places this host's rows of a global batch on its devices, sharded over "data".

  Each host passes its own slice (global batch / process count rows); the result is one global
  array per key. Rows must already be a multiple of the local device count (see `pad_batch`).
  """
  sharding = data_sharded(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def batch_multiple(mesh=None, shards: int | None = None) -> int:
  """Rows a global batch is padded to a multiple of: `shards` if given, else the device count.

  `shards` (fixed row blocks, see `train.make_train_step`) must be a multiple of the device
  count, so that every device holds whole blocks.
  """
  devices = mesh.devices.size if mesh is not None else 1
  if shards is None:
    return devices
  if isinstance(shards, bool) or not isinstance(shards, int) or shards < 1 or shards % devices:
    raise UserError(f"batch shards must be a positive multiple of the {devices} device(s) in "
                    f"use, got {shards!r}.",
                    f"use {devices}, {2 * devices}, ... (--config.batch_shards; 0 there means one "
                    "block per device, summed in no fixed order).")
  return shards


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, **kwargs: Any) -> None:
  """Joins a multi-host run (no-op for a single process); call before any other JAX work.

  On CPU the cross-process collectives use gloo, so two processes on one machine work too.
  """
  if num_processes is None or num_processes <= 1:
    return
  # Must not touch a backend before initialize(); gloo only matters for CPU devices.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id, **kwargs)
