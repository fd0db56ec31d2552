"""Where and how steps run in parallel: one `DataParallel` object (a mesh and fixed row blocks).

Batches are sharded over the mesh axis "data"; states and frozen models are replicated. The same
code runs on 1 device (a mesh of one), N local devices, or several hosts after
`initialize_distributed`. Every function of the library that places, steps or predicts takes a
`DataParallel` (`dp=None` means one device), so no caller branches on "is there a mesh".

An ensemble of K models (`train.ensemble`) is placed by `Members` instead: whole members on the
devices of a "model" mesh axis, K / d per device, with nothing exchanged between them.
"""
import dataclasses
import functools
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from jax_unlearn.errors import UserError

DATA_AXIS = "data"
MODEL_AXIS = "model"


def make_mesh(num_devices: int | None = None) -> jax.sharding.Mesh:
  """A 1-D mesh over the first `num_devices` devices (all devices of all hosts by default)."""
  devices = jax.devices()
  n = len(devices) if num_devices is None else num_devices
  if not 1 <= n <= len(devices):
    raise UserError(f"asked for {n} devices but {len(devices)} are available.",
                    f"pass a device count between 1 and {len(devices)}.")
  return jax.make_mesh((n,), (DATA_AXIS,), devices=devices[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


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


@dataclasses.dataclass(frozen=True)
class DataParallel:
  """A device mesh and, optionally, fixed batch blocks.

  Attributes:
    mesh: the devices, with axis "data" (one device is a mesh of one).
    shards: None, or every batch is cut into this many fixed row blocks summed in a fixed order,
      so that any device count dividing it computes bitwise the same step and predictions
      (see `train.make_train_step`). Must be a positive multiple of the device count.
  """
  mesh: jax.sharding.Mesh
  shards: int | None = None

  def __post_init__(self):
    n, s = self.mesh.devices.size, self.shards
    if s is not None and (isinstance(s, bool) or not isinstance(s, int) or s < 1 or s % n):
      raise UserError(f"batch shards must be a positive multiple of the {n} device(s) in use, "
                      f"got {s!r}.",
                      f"use {n}, {2 * n}, ... (--config.batch_shards; 0 there means one block "
                      "per device, summed in no fixed order).")

  @classmethod
  def create(cls, devices: int | None = None, shards: int | None = None) -> "DataParallel":
    """Over the first `devices` devices of all hosts (all by default)."""
    return cls(make_mesh(devices), shards or None)

  @property
  def devices(self) -> int:
    return self.mesh.devices.size

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def data_sharded(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(DATA_AXIS))

  @property
  def batch_multiple(self) -> int:
    """Rows a global batch is padded to a multiple of: `shards` if set, else the device count."""
    return self.shards or self.devices

  @property
  def blocks_per_device(self) -> int:
    return self.batch_multiple // self.devices

  def padded(self, rows: int) -> int:
    """The padded size of a global batch of `rows` rows."""
    return round_up(rows, self.batch_multiple)

  def rows_per_block(self, batch_size: int) -> int:
    """Rows one program sees at a time: a fixed block, or a whole device's share."""
    return self.padded(batch_size) // self.batch_multiple

  def host_rows(self, padded: int) -> slice:
    """This process's rows of a padded global batch (each host loads only its own)."""
    per_host = padded // jax.process_count()
    return slice(jax.process_index() * per_host, (jax.process_index() + 1) * per_host)

  def replicate(self, tree: Any) -> Any:
    """`tree` on every device of the mesh. With several processes, host values must be the
    same on every process (each places its copy on its own devices)."""
    return place_tree(tree, self.replicated)

  def members(self, count: int) -> "Members":
    """Where an ensemble of `count` models trains: this process's devices of the mesh; with
    several processes, as many devices of each process, each process holding count / P whole
    members."""
    if jax.process_count() == 1:
      local = [d for d in self.mesh.devices.flat if d.process_index == jax.process_index()]
      return Members.create(count, local)
    return Members.across_processes(count, list(self.mesh.devices.flat))

  def put_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """Places this host's rows of a global batch on its devices, sharded over "data".

    Each host passes its own slice (`host_rows`); the result is one global array per key. Rows
    must already be a multiple of the local device count (see `pad_batch`).
    """
    sharding = self.data_sharded
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}

  def put_plan(self, plan: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """An epoch's batch indices, [batches, B] (`train.scan`): on every device."""
    return self.replicate(dict(plan))

  def constrain_state(self, tree: Any) -> Any:
    """Inside a traced program: a state placed as `jit_step` places it (replicated)."""
    return jax.lax.with_sharding_constraint(tree, self.replicated)

  def constrain_batch(self, tree: Any) -> Any:
    """Inside a traced program: a batch placed as `jit_step` places it (rows over "data")."""
    return jax.lax.with_sharding_constraint(tree, self.data_sharded)

  def jit_step(self, fn: Callable, *, donate: bool = True) -> Callable:
    """jit `fn(state, batch, rng, frozen)`: batch sharded, everything else replicated."""
    repl = self.replicated
    return jax.jit(fn, in_shardings=(repl, self.data_sharded, repl, repl),
                   out_shardings=(repl, repl), donate_argnums=(0,) if donate else ())

  def jit_rows(self, fn: Callable) -> Callable:
    """jit a row-wise `fn(variables, x) -> [B, ...]`: rows sharded, variables replicated."""
    return jax.jit(fn, in_shardings=(self.replicated, self.data_sharded),
                   out_shardings=self.data_sharded)


@dataclasses.dataclass(frozen=True)
class Members:
  """The devices an ensemble's members are spread over: a 1-D mesh with axis "model".

  Every leaf of an ensemble state, batch, key array or frozen pytree has a leading member axis,
  sharded over the mesh; each device trains its members whole (no batch split, no gradient
  exchange), so a member computes the same on any number of devices.
  """
  mesh: jax.sharding.Mesh
  count: int  # members

  @classmethod
  def create(cls, count: int, devices=None) -> "Members":
    """Over the most devices (of `devices`, this process's by default) that divide `count`."""
    devices = list(jax.local_devices() if devices is None else devices)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
      raise UserError(f"an ensemble needs a positive member count, got {count!r}.",
                      "pass one or more seeds.")
    d = _largest_divisor(count, len(devices))
    return cls(jax.make_mesh((d,), (MODEL_AXIS,), devices=devices[:d],
                             axis_types=(jax.sharding.AxisType.Auto,)), count)

  @property
  def devices(self) -> int:
    return self.mesh.devices.size

  @property
  def sharded(self) -> NamedSharding:
    return NamedSharding(self.mesh, P(MODEL_AXIS))

  @classmethod
  def across_processes(cls, count: int, devices) -> "Members":
    """Over the same number of devices of every process (process 0's first), so that each
    process holds count / P whole members; every process must call it alike."""
    processes = sorted({d.process_index for d in devices})
    if count % len(processes):
      raise UserError(f"{count} models per stage do not split over {len(processes)} processes.",
                      f"use a multiple of {len(processes)} seeds, or one process.")
    per_process = count // len(processes)
    local = min(sum(d.process_index == p for d in devices) for p in processes)
    d = _largest_divisor(per_process, local)
    chosen = [dev for p in processes for dev in [x for x in devices if x.process_index == p][:d]]
    return cls(jax.make_mesh((len(chosen),), (MODEL_AXIS,), devices=chosen,
                             axis_types=(jax.sharding.AxisType.Auto,)), count)

  def put(self, tree: Any) -> Any:
    """`tree` (leaves with a leading member axis) sharded over "model"; None stays None. With
    several processes, host values must be the same on every process (each places its own
    members' slices)."""
    return None if tree is None else place_tree(tree, self.sharded)

  def local_members(self) -> range:
    """The members this process holds: a contiguous range, as the mesh places count / devices
    members on each device in order."""
    per_device = self.count // self.devices
    mine = [i for i, d in enumerate(self.mesh.devices.flat)
            if d.process_index == jax.process_index()]
    return range(mine[0] * per_device, (mine[-1] + 1) * per_device)

  def put_batch(self, batch: Mapping[str, np.ndarray],
                member_axis: int = 0) -> dict[str, jax.Array]:
    """A batch whose axis `member_axis` is the members' ([K, B, ...] by default), each member's
    slice on its device. With several processes, `batch` holds only this process's members
    (`local_members`)."""
    sharding = NamedSharding(self.mesh, P(*[None] * member_axis, MODEL_AXIS))
    if jax.process_count() == 1:
      return jax.device_put(dict(batch), sharding)

    def global_shape(v):
      shape = list(np.shape(v))
      shape[member_axis] = self.count
      return tuple(shape)

    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v), global_shape(v))
            for k, v in batch.items()}

  def replicate(self, tree: Any) -> Any:
    """`tree` on every device of the members' mesh (e.g. rows every member reads)."""
    return place_tree(tree, NamedSharding(self.mesh, P()))

  def put_plan(self, plan: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """The members' batch indices of an epoch, [batches, K, B], each member's on its device."""
    return self.put_batch(plan, member_axis=1)

  def constrain_state(self, tree: Any) -> Any:
    """Inside a traced program: members' leaves over "model", as the ensemble step returns them."""
    return jax.lax.with_sharding_constraint(tree, self.sharded)

  constrain_batch = constrain_state  # a [K, B, ...] batch: each member's rows on its device


def _largest_divisor(count: int, limit: int) -> int:
  """The most devices, at most `limit`, that `count` members split over evenly."""
  return max(n for n in range(1, min(limit, count) + 1) if count % n == 0)


def place_tree(tree: Any, sharding: NamedSharding) -> Any:
  """Every leaf of `tree` placed by `sharding` (`place`; `device_put` in one process)."""
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree_util.tree_map(lambda leaf: place(leaf, sharding), tree)


def place(leaf: Any, sharding: NamedSharding) -> jax.Array:
  """One value as a global array of `sharding`, possibly spanning processes: a host value
  (the same on every process) gives each process its own slices; a global array is resharded;
  PRNG keys keep their type."""
  if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
    return jax.random.wrap_key_data(place(jax.random.key_data(leaf), sharding),
                                    impl=jax.random.key_impl(leaf))
  if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
    return jax.jit(lambda a: a, out_shardings=sharding)(leaf)
  value = np.asarray(leaf)
  return jax.make_array_from_callback(value.shape, sharding, lambda idx: value[idx])


def gather(tree: Any) -> Any:
  """`tree` as every process can read it: unchanged when all its arrays are this process's;
  otherwise numpy copies of the whole of every array, gathered from all processes (members of
  an ensemble held by other hosts)."""
  leaves = jax.tree_util.tree_leaves(tree)
  if all(not isinstance(a, jax.Array) or a.is_fully_addressable for a in leaves):
    return tree
  from jax.experimental import multihost_utils

  def one(a):
    if not isinstance(a, jax.Array) or a.is_fully_addressable:
      return a
    if a.is_fully_replicated:  # this process's copy is the whole
      return np.asarray(a.addressable_shards[0].data)
    if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(a)), impl=jax.random.key_impl(a))
    return np.asarray(multihost_utils.process_allgather(a, tiled=True))

  return jax.tree_util.tree_map(one, tree)


@functools.cache
def _single(device) -> DataParallel:
  mesh = jax.make_mesh((1,), (DATA_AXIS,), devices=[device],
                       axis_types=(jax.sharding.AxisType.Auto,))
  return DataParallel(mesh)


def resolve(dp: DataParallel | None) -> DataParallel:
  """`dp`, or one device of this process (the library's default)."""
  return dp if dp is not None else _single(jax.local_devices()[0])


# The clusters whose launchers tell every process its rank, detected from their variables as
# `jax.distributed.initialize()` detects them: name -> (variables that must be set, the count).
CLUSTERS = {
    "Slurm": (("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
               "SLURM_LOCALID"), "SLURM_NTASKS"),
    "Open MPI": (("OMPI_MCA_orte_hnp_uri", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"),
                 "OMPI_COMM_WORLD_SIZE"),
}


def detected_cluster(environ: Mapping[str, str] | None = None) -> tuple[str, int] | None:
  """(name, process count) of a multi-process Slurm or Open MPI launch, else None."""
  environ = os.environ if environ is None else environ
  for name, (required, count) in CLUSTERS.items():
    if all(v in environ for v in required) and int(environ[count]) > 1:
      return name, int(environ[count])
  return None


def initialize_distributed(coordinator_address: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None, *, auto: bool = False,
                           **kwargs: Any) -> None:
  """Joins a multi-host run (no-op for a single process); call before any other JAX work.

  `auto`: JAX finds the coordinator, the count and the rank itself (Slurm, Open MPI, Cloud TPU
  pod slices, Kubernetes). On CPU the cross-process collectives use gloo, so two processes on
  one machine work too.
  """
  if auto:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)
    return
  if num_processes is None or num_processes <= 1:
    return
  # Must not touch a backend before initialize(); gloo only matters for CPU devices.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id, **kwargs)
