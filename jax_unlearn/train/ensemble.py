"""K models trained at once: the one generic step, vmapped over a leading model axis.

Every leaf of an ensemble state has a leading axis K (member k at index k); each member has its
own batches, order and rng key, and computes the update `make_train_step` computes for it alone,
up to float rounding. One compiled program serves all K members, so K small models cost about one
launch per step instead of K. `train.train_model` trains, checkpoints and resumes an ensemble
when given one seed per member; this module holds its pieces.
"""
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jax_unlearn import parallel
from jax_unlearn.data.loader import ArrayLoader
from jax_unlearn.errors import UserError
from jax_unlearn.train.step import LossFn, TrainState, make_train_step


def stack(trees: Sequence[Any]) -> Any:
  """One pytree whose leaves stack the members' leaves on a new leading axis K (copies)."""
  if not trees:
    raise UserError("an ensemble needs at least one member.", "pass one or more pytrees.")
  return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def fold_in(keys: jax.Array, data: int) -> jax.Array:
  """`jax.random.fold_in(key, data)` of each of the K member keys ([K] keys)."""
  return jax.vmap(lambda k: jax.random.fold_in(k, data))(keys)


def init_members(init_fn: Callable[[jax.Array], Any], keys: jax.Array) -> Any:
  """`init_fn(key)` of each of the K member keys, stacked (`stack`)."""
  return stack([init_fn(k) for k in keys])


def one(tree: Any) -> Any:
  """A lone model's pytree as an ensemble of one (a leading member axis of 1)."""
  return stack([tree])


def runs_vmapped(members: int) -> bool:
  """Whether a stage of `members` members runs its loss vmapped (`train.train_model`): several
  do; one runs the lone model's program."""
  return members > 1


def record_value(values: Sequence[Any]) -> Any:
  """The members' values of a statistic as a record keeps them: a list, or the value itself for
  one member (what a run of one seed reports)."""
  values = list(values)
  return values[0] if len(values) == 1 else values


def over_members(fn: Callable, k: int, *, in_turn: bool = False,
                 shared: Sequence[int] = ()) -> Callable:
  """`fn` of one model's arrays, jitted, applied to each of K stacked members: all at once
  (vmap) or one after the other (`in_turn`: `lax.map`, for programs that vmap badly). Arguments
  at the positions `shared` are the same for every member.

  One member runs `fn`'s own program on it (outside the program, the member axis is taken off
  and put back), so an ensemble of one computes the same bits as the model alone.
  """
  if k == 1:
    jitted = jax.jit(fn)

    def call(*args):
      args = [a if i in shared else member(a, 0) for i, a in enumerate(args)]
      return one(jitted(*args))
    return call

  def mapped(*args):
    if not in_turn:
      return jax.vmap(fn, in_axes=[None if i in shared else 0 for i in range(len(args))])(*args)

    def each(own):
      it = iter(own)
      return fn(*[a if i in shared else next(it) for i, a in enumerate(args)])

    return jax.lax.map(each, tuple(a for i, a in enumerate(args) if i not in shared))

  return jax.jit(mapped)


def member(tree: Any, k: int) -> Any:
  """Member k of a stacked pytree (its leaves at index k of the leading axis)."""
  return jax.tree_util.tree_map(lambda a: a[k], tree)


def take(tree: Any, members: Sequence[int]) -> Any:
  """The members `members` of a stacked pytree, in that order (a stacked pytree again)."""
  index = jnp.asarray(members)
  return jax.tree_util.tree_map(lambda a: a[index], tree)


def size(tree: Any) -> int:
  """K, the length of the leading model axis of a stacked pytree."""
  return len(jax.tree_util.tree_leaves(tree)[0])


def create_ensemble_state(variables: Mapping | Sequence[Mapping], tx: optax.GradientTransformation,
                          members: parallel.Members | None = None) -> TrainState:
  """A fresh state (step 0) of K members, each optimizer state initialised from its own params.

  `variables` is a stacked pytree (leading axis K) or a sequence of the K members' variables;
  the state is placed over `members` (one device by default) as the step returns it, so the
  second step reuses the first one's program.
  """
  if isinstance(variables, Mapping):
    variables = jax.tree_util.tree_map(jnp.array, dict(variables))  # a copy: the step donates
  else:
    variables = stack([dict(v) for v in variables])
  params = variables["params"]
  state = TrainState(step=jnp.zeros((size(params),), jnp.int32), params=params,
                     batch_stats=variables.get("batch_stats", {}),
                     opt_state=jax.vmap(tx.init)(params))
  return (members or parallel.Members.create(1)).put(state)


def make_ensemble_step(apply_fn: Callable, loss_fn: LossFn, tx: optax.GradientTransformation,
                       *, donate: bool = True, chunk: int | None = None,
                       members: parallel.Members | None = None, blocks: int | None = None,
                       param_hook=None, skip_empty: bool = False):
  """`step(state, batch, rng, frozen=None) -> (state, metrics)` over K members, jitted once.

  The per-member update is `make_train_step`'s own step, vmapped, so members train as single
  models do (up to float rounding). `batch` holds [K, B, ...] arrays, `rng` [K] keys, `frozen` a
  pytree with a leading K (or None); metrics come back [K]. Each device of `members` (one by
  default) runs its own K / d members (`shard_map` over "model"). With `chunk=c` a device runs
  its members c at a time (`lax.map` over [K / d / c, c]), so memory holds only c members'
  activations. `blocks` cuts each member's batch into fixed row blocks (`train.in_blocks`), as a
  single model's step with `batch_shards` does, so BatchNorm sees the same rows in both.
  `param_hook` as `make_train_step`'s (per member: its own frozen pytree and step).
  `skip_empty`: a member whose batch is all padding keeps its state (members of unequal lengths
  in `EnsembleBatches.ragged` pad their shorter epochs with such batches), and reports "active"
  0 then.
  """
  if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
    raise UserError(f"ensemble chunk must be a positive integer or None, got {chunk!r}.",
                    "use None (all members at once) or a divisor of the member count.")
  members = members or parallel.Members.create(1)
  one = make_train_step(apply_fn, loss_fn, tx, donate=False, blocks=blocks,
                        param_hook=param_hook).pure
  vmapped = jax.vmap(_skipping_empty(one) if skip_empty else one)

  def local(state: TrainState, batch, rng, frozen):
    k = size(state)  # this device's members
    if chunk is None or chunk >= k:
      return vmapped(state, batch, rng, frozen)
    split = lambda a: a.reshape((k // chunk, chunk) + a.shape[1:])  # [k / c, c, ...]
    merge = lambda a: a.reshape((k,) + a.shape[2:])  # [k, ...]
    args = jax.tree_util.tree_map(split, (state, batch, rng, frozen))
    out = jax.lax.map(lambda a: vmapped(*a), args)
    return jax.tree_util.tree_map(merge, out)

  spec = P(parallel.MODEL_AXIS)
  mapped = jax.shard_map(local, mesh=members.mesh, in_specs=spec, out_specs=spec,
                         check_vma=False)
  jitted = jax.jit(mapped, out_shardings=members.sharded,
                   donate_argnums=(0,) if donate else ())

  def check(state):
    k, d = size(state), members.devices
    if k % d or (chunk is not None and chunk < k // d and (k // d) % chunk):
      raise UserError(f"{k} ensemble members do not split into {d} device(s) and chunks of "
                      f"{chunk}.", f"use a chunk size dividing {k // max(d, 1)}, or None.")

  def call(state, batch, rng, frozen=None):
    check(state)
    return jitted(state, batch, rng, frozen)

  def pure(state, batch, rng, frozen=None):
    check(state)
    return mapped(state, batch, rng, frozen)

  call.jitted = jitted
  call.pure = pure  # unjitted, for callers that trace it into a larger program (`train.scan`)
  return call


def _skipping_empty(step: Callable) -> Callable:
  """`step`, except that a batch without real rows leaves the state as it was (no optimizer
  update, no step count), so a member with fewer batches trains as it would alone."""

  def call(state, batch, rng, frozen=None):
    active = jnp.sum(batch["mask"]) > 0
    new, metrics = step(state, batch, rng, frozen)
    keep = lambda n, o: jnp.where(active, n, o)  # noqa: E731
    metrics = {key: jnp.where(active, value, jnp.zeros_like(value))
               for key, value in metrics.items()}
    return (jax.tree_util.tree_map(keep, new, state),
            {**metrics, "active": active.astype(jnp.float32)})

  return call


def per_member(fn: Callable[[Any], float], k: int) -> Callable[[Any], np.ndarray]:
  """`fn` of one model's variables applied to each of K stacked members: [K] values (members
  held by other processes are gathered first)."""

  def each(stacked):
    stacked = parallel.gather(stacked)
    return np.asarray([fn(member(stacked, i)) for i in range(k)], np.float64)

  return each


class EnsembleBatches:
  """`batches(epoch)`: [K, B, ...] numpy batches, member k's rows in its own loader's order
  (only this process's members when several processes share the ensemble).

  Members may hold different numbers of rows: an epoch then has the longest member's
  batches, and a shorter member's epoch ends with batches of padding only, which a step made with
  `skip_empty` passes over.
  """

  seekable = True  # as ArrayLoader: `batches(epoch, start)` resumes at a batch

  def __init__(self, loaders: Sequence[ArrayLoader], shared: bool, counts: Sequence[int]):
    self.loaders = list(loaders)
    self.per_member_rows = not shared  # each member its own rows
    # Batches per epoch of every member of the whole ensemble (every process's members), so
    # all processes run the longest member's epoch and compile the same step.
    self.batches = max(counts)
    self.ragged = len(set(counts)) > 1  # then the step must skip padding-only batches

  def __len__(self) -> int:
    return self.batches

  @property
  def on_device(self) -> bool:
    return all(loader.on_device for loader in self.loaders)

  def device_rows(self) -> dict[str, np.ndarray]:
    """The rows batches are gathered from: shared, or [K, rows, ...] one set per member."""
    if not self.per_member_rows:
      return self.loaders[0].device_rows()
    per = [loader.device_rows() for loader in self.loaders]
    longest = max(len(p["x"]) for p in per)  # shorter members repeat their first row (unread)
    return {key: np.stack([np.concatenate([p[key]] + [p[key][:1]] * (longest - len(p[key])))
                           for p in per]) for key in per[0]}

  def plan(self, epoch: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each member's `ArrayLoader.plan`: [batches, K, padded] row indices and validity (a
    shorter member's extra batches: row 0, invalid)."""
    count = len(self) - start
    idx, valid = [], []
    for loader in self.loaders:
      i, v = loader.plan(epoch, min(start, len(loader)))
      extra = count - len(i)
      idx.append(np.concatenate([i, np.zeros((extra, loader.padded), i.dtype)]))
      valid.append(np.concatenate([v, np.zeros((extra, loader.padded), v.dtype)]))
    return np.stack(idx, axis=1), np.stack(valid, axis=1)

  def __call__(self, epoch: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
    empty = [loader.empty_batch() for loader in self.loaders]
    each = [loader(epoch, min(start, len(loader))) for loader in self.loaders]
    for _ in range(start, len(self)):
      parts = [next(it, e) for it, e in zip(each, empty)]
      yield {key: np.stack([p[key] for p in parts]) for key in parts[0]}


def ensemble_batches(arrays: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
                     batch_size: int, seeds: Sequence[int], *, augment=None,
                     blocks: int | None = None, members: Sequence[int] | None = None
                     ) -> EnsembleBatches:
  """Batches for K members, member k shuffled (and augmented) by seed `seeds[k]`.

  `arrays` are shared by every member, or one mapping per member (e.g. its own relabelled
  rows; members of different lengths share the longest one's epoch, and one with fewer rows
  than a batch trains on all of them at each step, padded to its fellows' batch shape).
  Each member's batches are exactly `ArrayLoader(arrays_k, batch_size, seed=seeds[k],
  augment=augment)`'s (padded and masked alike); with `blocks`, padded to whole fixed row blocks
  as a single model's loader on a `DataParallel` with those shards.
  `members`: the members to read (this process's, `Members.local_members`); all by default.
  """
  if len(seeds) == 0:
    raise UserError("an ensemble needs at least one member seed.", "pass one seed per member.")
  per = [arrays] * len(seeds) if isinstance(arrays, Mapping) else list(arrays)
  if len(per) != len(seeds):
    raise UserError(f"an ensemble of {len(seeds)} members got {len(per)} sets of arrays.",
                    "pass one mapping shared by all members, or one per member.")
  dp = parallel.DataParallel(parallel.resolve(None).mesh, blocks) if blocks else None
  # A member's batch is whole, on one device: the process holding it reads all of its rows.
  members = range(len(seeds)) if members is None else members
  counts = [-(-len(a["x"]) // batch_size) for a in per]  # as ArrayLoader's len
  return EnsembleBatches([ArrayLoader(per[k], batch_size, seed=int(seeds[k]), augment=augment,
                                      dp=dp, per_host=False, pad_to=batch_size)
                          for k in members],
                         shared=isinstance(arrays, Mapping), counts=counts)


def choose_chunk(members: int, member_bytes: int, budget_bytes: int) -> int | None:
  """Members a device should run at once so their step memory fits `budget_bytes`.

  `member_bytes` is one member's step memory (e.g. the compiled single step's
  `memory_analysis()`: temporaries, arguments and outputs). None when all `members` fit;
  otherwise the largest divisor of `members` that fits (at least 1: a member that does not fit
  alone needs a smaller batch, not chunks).
  """
  if members < 1 or member_bytes < 0 or budget_bytes <= 0:
    raise UserError(f"choose_chunk needs members >= 1, member bytes >= 0 and a positive budget, "
                    f"got {members}, {member_bytes}, {budget_bytes}.", "pass measured sizes.")
  if members * member_bytes <= budget_bytes:
    return None
  fits = [c for c in range(1, members + 1) if members % c == 0 and c * member_bytes <= budget_bytes]
  return max(fits) if fits else 1
