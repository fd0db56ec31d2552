"""The one generic train step: a state pytree, a loss function, optax, jitted over a mesh.

A loss function has the signature

    loss_fn(pred, acts, batch, rng, frozen) -> (loss, metrics)

where `batch` holds "x", "y", "forget" and "mask" ([B], 0 on padded rows), `frozen` is one pytree
of fixed arguments of the step (e.g. a frozen model's variables; None when unused), `loss` is a
scalar and `metrics` a dict of scalars. Frozen variables travel as a step argument, never in a
closure, so they are not baked into the compiled program.

A parameter hook `param_hook(params, frozen, step) -> (forward_params, penalty)` (optional) lets
a method act on the weights themselves: the forward runs on `forward_params` (e.g. with
`stop_gradient` on weights that must stay fixed, which then get zero gradients) and the scalar
`penalty` (e.g. an L1 norm of the weights) is added to the loss.
"""
import math
from typing import Any, Callable, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jax_unlearn import losses, parallel
from jax_unlearn.errors import UserError, unknown_name
from jax_unlearn.models.adapters import accepts_mask, split_outputs

LossFn = Callable[..., tuple[jax.Array, dict]]
ParamHook = Callable[[Any, Any, jax.Array], tuple[Any, jax.Array]]
OPTIMIZERS = {"adam": optax.adam, "sgd": optax.sgd}


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; a pytree, donated to the step."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict:
    return make_variables(self.params, self.batch_stats)


def make_variables(params, batch_stats) -> dict:
  """The model's variables dict; "batch_stats" only when the model has any."""
  if batch_stats:
    return {"params": params, "batch_stats": batch_stats}
  return {"params": params}


def make_optimizer(lr: float, *, clip_norm: float | None = None,
                   name: str = "adam") -> optax.GradientTransformation:
  """Adam (the paper's optimizer) or SGD with an injectable learning rate for plateau decay."""
  if not (lr > 0 and math.isfinite(lr)):
    raise UserError(f"learning rate must be positive, got {lr}.", "set train.lr > 0, e.g. 1e-3.")
  if name not in OPTIMIZERS:
    raise unknown_name("optimizer", name, OPTIMIZERS)
  tx = optax.inject_hyperparams(OPTIMIZERS[name])(learning_rate=lr)
  if clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
  return tx


def _find_hyperparams(opt_state):
  """The inject_hyperparams dict inside a (possibly chained) optimizer state, or None."""
  if hasattr(opt_state, "hyperparams"):
    return opt_state.hyperparams
  if isinstance(opt_state, tuple):
    for s in opt_state:
      found = _find_hyperparams(s)
      if found is not None:
        return found
  return None


def _replace_lr(opt_state, lr: float):
  if hasattr(opt_state, "hyperparams"):
    old = opt_state.hyperparams["learning_rate"]
    new = parallel.place(np.asarray(lr, old.dtype), old.sharding)
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": new})
  if isinstance(opt_state, tuple) and not hasattr(opt_state, "_fields"):
    return tuple(_replace_lr(s, lr) for s in opt_state)
  return opt_state


def learning_rate(state: TrainState) -> float | np.ndarray:
  """The state's learning rate; for an ensemble state, one per member ([K] numpy)."""
  hp = _find_hyperparams(state.opt_state)
  if hp is None:
    raise ValueError("optimizer state has no injectable learning rate; use make_optimizer")
  lr = np.asarray(jax.device_get(parallel.gather(hp["learning_rate"])), np.float64)
  return float(lr) if lr.ndim == 0 else lr


def set_learning_rate(state: TrainState, lr) -> TrainState:
  """The state with a new learning rate (host side, between epochs; [K] for an ensemble)."""
  return state.replace(opt_state=_replace_lr(state.opt_state, lr))


def create_state(variables: Mapping, tx: optax.GradientTransformation,
                 dp: parallel.DataParallel | None = None) -> TrainState:
  """A fresh train state (step 0) for `variables`, replicated over `dp`'s mesh."""
  # A copy: the step donates its state, which must never delete the caller's arrays.
  variables = jax.tree_util.tree_map(jnp.array, dict(variables))
  params = variables["params"]
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))
  return parallel.resolve(dp).replicate(state)


def supervised_loss(per_example: losses.LossFn) -> LossFn:
  """Loss function of plain supervised training: masked mean of a per-example loss to the labels."""

  def loss_fn(pred, acts, batch, rng, frozen):
    del acts, rng, frozen
    return losses.masked_mean(per_example(pred, batch["y"]), batch["mask"]), {}

  return loss_fn


def make_train_step(apply_fn: Callable, loss_fn: LossFn, tx: optax.GradientTransformation,
                    dp: parallel.DataParallel | None = None, *, donate: bool = True,
                    blocks: int | None = None, param_hook: ParamHook | None = None):
  """The one generic step `(state, batch, rng, frozen) -> (state, metrics)`, jitted.

  The batch is sharded over "data" and everything else replicated; XLA inserts the gradient
  all-reduce, so N devices compute the single-device update up to the order of float sums. The
  rng is folded with the state's step, so every step draws fresh randomness from one base key.

  With `dp.shards` the batch is cut into that many fixed row blocks, summed in a fixed order
  (see `_in_fixed_shards`): every device count dividing `shards` then computes bitwise the same
  step. `blocks` (with `dp` None) cuts the batch into fixed row blocks within one program
  (`in_blocks`): the same arithmetic for a batch that never leaves its device, as an ensemble
  member's. `param_hook` (see the module docstring) gets the frozen pytree and the step count.
  """
  dp = parallel.resolve(dp)
  takes_mask = accepts_mask(apply_fn)

  def gradients(params, batch_stats, batch, rng, frozen):
    """((loss, (metrics, new batch_stats)), grads) of the loss on `batch`.

    With a parameter hook, `frozen` is (the step's frozen pytree, the step count).
    """
    model_rng, loss_rng = jax.random.split(rng)
    mask_kw = {"mask": batch["mask"]} if takes_mask else {}

    def objective(params):
      forward, penalty = params, None
      if param_hook is not None:
        frozen_, step = frozen
        forward, penalty = param_hook(params, frozen_, step)
      else:
        frozen_ = frozen
      out = apply_fn(make_variables(forward, batch_stats), batch["x"], train=True,
                     rngs={"dropout": model_rng}, **mask_kw)
      pred, acts, new_state = split_outputs(out, {"batch_stats": batch_stats})
      loss, metrics = loss_fn(pred, acts, batch, loss_rng, frozen_)
      if penalty is not None:
        # Scaled by the rows' share like the loss when the batch runs in blocks: a block of
        # padding only adds nothing, the blocks' shares sum to one penalty.
        loss, metrics = loss + penalty, {**metrics, "penalty": penalty}
      return loss, (metrics, new_state.get("batch_stats", batch_stats))

    return jax.value_and_grad(objective, has_aux=True)(params)

  if dp.shards is not None:
    gradients = _in_fixed_shards(gradients, dp)
  elif blocks is not None:
    gradients = in_blocks(gradients, blocks)

  def step(state: TrainState, batch, rng, frozen=None):
    rng = jax.random.fold_in(rng, state.step)
    if param_hook is not None:
      frozen = (frozen, state.step)
    (loss, (metrics, batch_stats)), grads = gradients(state.params, state.batch_stats, batch,
                                                      rng, frozen)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, {"loss": loss, **metrics}

  jitted = dp.jit_step(step, donate=donate)

  def call(state, batch, rng, frozen=None):
    return jitted(state, batch, rng, frozen)

  call.jitted = jitted
  call.pure = step  # unjitted, for callers that transform it (the ensemble's vmap)
  return call


def _in_fixed_shards(gradients: Callable, dp: parallel.DataParallel) -> Callable:
  """`gradients(params, batch_stats, batch, rng, frozen)` computed on `dp.shards` row blocks.

  Float sums depend on their order, and XLA's gradient all-reduce orders them by device; trained
  models then drift apart between device counts, as training amplifies rounding. Here each
  device runs the one per-block program on its blocks in turn (`lax.map`), scaling each block's
  results by its share of the batch's unmasked rows; the results of all blocks are gathered and
  every device adds them up in block order. Loss and gradients equal the whole batch's for any
  masked-mean loss; BatchNorm takes its statistics per block; memory holds `shards` gradient
  copies. Bitwise equality also needs a model free of `array / broadcast scalar`, which XLA
  turns into a multiplication by the reciprocal in some programs and not in others (the
  library's BatchNorm and blindspot loss multiply by a reciprocal themselves).
  """
  shards, per_device = dp.shards, dp.blocks_per_device
  axis = parallel.DATA_AXIS

  def local(params, batch_stats, batch, rng, frozen):
    blocks, rows = _blocks(batch, per_device)
    total = jax.lax.psum(jnp.sum(rows), axis)  # a count: exact in float32
    first = jax.lax.axis_index(axis) * per_device
    out = _block_gradients(gradients, params, batch_stats, blocks, rows, total, first, rng,
                           frozen)
    out = jax.tree_util.tree_map(lambda a: jax.lax.all_gather(a, axis, tiled=True), out)
    return jax.tree_util.tree_map(lambda a: _ordered_sum(a, shards), out)

  def call(params, batch_stats, batch, rng, frozen):
    _check_blocks(batch, shards)
    specs = (P(), P(), P(axis), P(), P())
    return jax.shard_map(local, mesh=dp.mesh, in_specs=specs, out_specs=P(), check_vma=False)(
        params, batch_stats, batch, rng, frozen)

  return call


def in_blocks(gradients: Callable, shards: int) -> Callable:
  """`gradients` on `shards` fixed row blocks of the batch, one program, no collectives: what
  `_in_fixed_shards` computes, for a batch that stays on one device (an ensemble's member)."""

  def call(params, batch_stats, batch, rng, frozen):
    _check_blocks(batch, shards)
    blocks, rows = _blocks(batch, shards)
    out = _block_gradients(gradients, params, batch_stats, blocks, rows, jnp.sum(rows), 0, rng,
                           frozen)
    return jax.tree_util.tree_map(lambda a: _ordered_sum(a, shards), out)

  return call


def _check_blocks(batch, shards: int) -> None:
  rows = len(batch["mask"])
  if rows % shards:
    raise ValueError(f"a batch of {rows} rows does not split into {shards} shards; pad it "
                     "with parallel.pad_batch to DataParallel.padded(rows)")


def _blocks(batch, count: int):
  """The batch as [count, rows / count, ...] blocks and each block's unmasked rows [count]."""
  blocks = jax.tree_util.tree_map(lambda a: a.reshape((count, -1) + a.shape[1:]), batch)
  return blocks, jnp.sum(blocks["mask"].astype(jnp.float32), axis=1)


def _block_gradients(gradients, params, batch_stats, blocks, rows, total, first, rng, frozen):
  """Each block's gradients in turn, scaled by its share of the `total` rows: [blocks, ...]."""
  shapes = jax.eval_shape(lambda b: gradients(params, batch_stats, b, rng, frozen),
                          jax.tree_util.tree_map(lambda a: a[0], blocks))

  def one(args):
    index, block, n = args

    def weighted(_):
      out = gradients(params, batch_stats, block, jax.random.fold_in(rng, index), frozen)
      return jax.tree_util.tree_map(lambda a: (a * (n / total)).astype(a.dtype), out)

    def skipped(_):  # padding rows only (end of an epoch): BatchNorm of no rows is not finite
      return jax.tree_util.tree_map(lambda sd: jnp.zeros(sd.shape, sd.dtype), shapes)

    return jax.lax.cond(n > 0, weighted, skipped, None)

  return jax.lax.map(one, (first + jnp.arange(len(rows)), blocks, rows))


def _ordered_sum(stacked, shards: int):
  """The blocks' results added in block order (a fixed order of float sums)."""
  acc = stacked[0]
  for s in range(1, shards):
    acc = acc + stacked[s]
  return acc
