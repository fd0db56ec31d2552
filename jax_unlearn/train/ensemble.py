"""K models trained at once: the one generic step, vmapped over a leading model axis.

Every leaf of an ensemble state has a leading axis K (member k at index k); each member has its
own batches, order and rng key, and computes the update `make_train_step` computes for it alone,
up to float rounding. One compiled program serves all K members, so K small models cost about one
launch per step instead of K.
"""
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_unlearn import parallel
from jax_unlearn.data.loader import ArrayLoader
from jax_unlearn.errors import UserError
from jax_unlearn.train.loop import NonFiniteLossError
from jax_unlearn.train.step import LossFn, TrainState, make_train_step


def stack(trees: Sequence[Any]) -> Any:
  """One pytree whose leaves stack the members' leaves on a new leading axis K (copies)."""
  if not trees:
    raise UserError("an ensemble needs at least one member.", "pass one or more pytrees.")
  return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def member(tree: Any, k: int) -> Any:
  """Member k of a stacked pytree (its leaves at index k of the leading axis)."""
  return jax.tree_util.tree_map(lambda a: a[k], tree)


def size(tree: Any) -> int:
  """K, the length of the leading model axis of a stacked pytree."""
  return len(jax.tree_util.tree_leaves(tree)[0])


def create_ensemble_state(variables_list: Sequence[Mapping],
                          tx: optax.GradientTransformation) -> TrainState:
  """A fresh state (step 0) of K members; each optimizer state initialised from its own params."""
  variables = stack([dict(v) for v in variables_list])  # a copy: the step donates its state
  params = variables["params"]
  state = TrainState(step=jnp.zeros((len(variables_list),), jnp.int32), params=params,
                     batch_stats=variables.get("batch_stats", {}),
                     opt_state=jax.vmap(tx.init)(params))
  # Placed as the step returns it, so the second step reuses the first one's program.
  return parallel.resolve(None).replicate(state)


def make_ensemble_step(apply_fn: Callable, loss_fn: LossFn, tx: optax.GradientTransformation,
                       *, donate: bool = True, chunk: int | None = None):
  """`step(state, batch, rng, frozen=None) -> (state, metrics)` over K members, jitted once.

  The per-member update is `make_train_step`'s own jitted step, vmapped, so members train as
  single models do (up to float rounding), on one device. `batch` holds [K, B, ...] arrays,
  `rng` [K] keys, `frozen` a pytree with a leading K (or None); metrics come back [K]. With
  `chunk=c` the members run c at a time (`lax.map` over [K / c, c]), so memory holds only c
  members' activations.
  """
  if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
    raise UserError(f"ensemble chunk must be a positive integer or None, got {chunk!r}.",
                    "use None (all members at once) or a divisor of the member count.")
  single = make_train_step(apply_fn, loss_fn, tx, donate=False).jitted
  members = jax.vmap(single)

  def step(state: TrainState, batch, rng, frozen=None):
    if chunk is None:
      return members(state, batch, rng, frozen)
    k = size(state)
    if k % chunk:
      raise UserError(f"{k} ensemble members do not split into chunks of {chunk}.",
                      f"use a chunk size dividing {k}, or None.")
    split = lambda a: a.reshape((k // chunk, chunk) + a.shape[1:])  # [K/c, c, ...]
    merge = lambda a: a.reshape((k,) + a.shape[2:])  # [K, ...]
    args = jax.tree_util.tree_map(split, (state, batch, rng, frozen))
    out = jax.lax.map(lambda a: members(*a), args)
    return jax.tree_util.tree_map(merge, out)

  repl = parallel.resolve(None).replicated
  jitted = jax.jit(step, out_shardings=(repl, repl), donate_argnums=(0,) if donate else ())

  def call(state, batch, rng, frozen=None):
    return jitted(state, batch, rng, frozen)

  call.jitted = jitted
  return call


class EnsembleBatches:
  """`batches(epoch)`: [K, B, ...] numpy batches, member k's rows in its own loader's order."""

  def __init__(self, loaders: Sequence[ArrayLoader]):
    self.loaders = list(loaders)

  def __len__(self) -> int:
    return len(self.loaders[0])

  def __call__(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
    for parts in zip(*(loader(epoch) for loader in self.loaders)):
      yield {key: np.stack([p[key] for p in parts]) for key in parts[0]}


def ensemble_batches(arrays: Mapping[str, np.ndarray], batch_size: int,
                     seeds: Sequence[int]) -> EnsembleBatches:
  """Batches of the same arrays for K members, member k shuffled by seed `seeds[k]`.

  Each member's batches are exactly `ArrayLoader(arrays, batch_size, seed=seeds[k])`'s (padded
  and masked alike), so every member has the same number of batches per epoch.
  """
  if len(seeds) == 0:
    raise UserError("an ensemble needs at least one member seed.", "pass one seed per member.")
  return EnsembleBatches([ArrayLoader(arrays, batch_size, seed=int(s)) for s in seeds])


def fit_ensemble(state: TrainState, step_fn, batches: Callable[[int], Any], *, epochs: int,
                 rngs: jax.Array, frozen: Any = None) -> tuple[TrainState, np.ndarray]:
  """Runs `epochs` epochs of an ensemble step; returns the final state and the per-epoch mean
  train loss of every member, [epochs, K]. Each member's rng is its own base key, folded with
  its step as in `train.fit`."""
  if epochs < 0:
    raise UserError(f"epochs must be >= 0, got {epochs}.", "set a positive number of epochs.")
  history = []
  for epoch in range(epochs):
    pending = []
    for batch in batches(epoch):
      state, metrics = step_fn(state, {k: jnp.asarray(v) for k, v in batch.items()}, rngs, frozen)
      pending.append(metrics["loss"])  # [K]
    values = np.asarray(jax.device_get(pending), np.float64)  # [steps, K]
    if not np.all(np.isfinite(values)):
      raise NonFiniteLossError(
          f"ensemble: a member's loss became non-finite in epoch {epoch + 1}. Lower the learning "
          "rate (train.lr) or enable gradient clipping (train.clip_norm).")
    history.append(values.mean(axis=0) if len(values) else np.zeros(size(state)))
  return state, np.asarray(history).reshape(len(history), size(state))
