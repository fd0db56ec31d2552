"""Gradient statistics of a model over a set of rows, per parameter, and the pieces the
weight-editing methods share.

The methods that edit weights instead of (or before) training read them: SSD and LFSSD compare
importances on the forget and the full data, Fisher forgetting scales noise by the retain
Fisher, SalUn and masked small gradients select weights by gradient magnitude. One jitted
function serves every batch (fixed, padded shapes); it maps over the members in turn, so each
member's statistic is its own (`train.ensemble.over_members`, which also maps a weight edit
over them).
"""
import time
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import losses, train
from jax_unlearn.data.loader import ArrayLoader
from jax_unlearn.train.step import make_variables
from jax_unlearn.unlearn import base

# objective(pred, batch) -> [B] per-example values (the task loss to the labels, an output
# norm, ...); padded rows are masked out here.
Objective = Callable[[jax.Array, Mapping[str, jax.Array]], jax.Array]


def task_objective(per_example: losses.LossFn) -> Objective:
  """The task loss to the labels as a gradient-statistic objective."""
  return lambda pred, batch: per_example(pred, batch["y"])


def squared_output_norm(pred: jax.Array, batch: Mapping[str, jax.Array]) -> jax.Array:
  """The squared L2 norm of each row's output, a label-free objective (MAS, LFSSD)."""
  del batch
  flat = pred.reshape(pred.shape[0], -1).astype(jnp.float32)
  return jnp.sum(jnp.square(flat), axis=1)


def _mean_over_batches(ctx: base.Context, variables: Mapping, arrays: Mapping[str, np.ndarray],
                       objective: Objective, batch_size: int, scale: float,
                       transform: Callable | None) -> tuple[dict, float]:
  """Mean over the batches of `arrays` of `transform` (elementwise) of each batch's gradient."""
  t0 = time.perf_counter()
  # On the host, so each batch's program runs on one device: an ensemble's members spread over
  # a mesh made every batch a program with a cross-device gather, and those programs, dispatched
  # ahead of each other, stalled XLA's CPU collectives (8 members on 4 devices, audit_rotdigits).
  params, batch_stats = jax.device_get((variables["params"], variables.get("batch_stats", {})))

  def one(params, stats, batch):
    def mean_objective(p):
      pred = ctx.apply_fn(make_variables(p, stats), batch["x"], train=False)[0]
      return scale * losses.masked_mean(objective(pred, batch), batch["mask"])
    g = jax.grad(mean_objective)(params)
    return g if transform is None else jax.tree_util.tree_map(transform, g)

  # Members in turn: a vmapped convolution gradient becomes a grouped one, which XLA's CPU
  # backend runs slowly and rejects for some shapes (batches of one row).
  fn = train.ensemble.over_members(one, ctx.members, in_turn=True, shared=(2,))
  loader = ArrayLoader(dict(arrays), min(batch_size, len(arrays["x"])), seed=0, shuffle=False)
  total, batches = None, 0
  for batch in loader(0):
    g = fn(params, batch_stats, batch)
    total = g if total is None else jax.tree_util.tree_map(jnp.add, total, g)
    batches += 1
  out = jax.tree_util.tree_map(lambda a: a / batches, total)
  jax.block_until_ready(out)
  return out, time.perf_counter() - t0


def gradient_statistic(ctx: base.Context, variables: Mapping, arrays: Mapping[str, np.ndarray],
                       objective: Objective, *, batch_size: int, squared: bool,
                       scale: float = 1.0) -> tuple[dict, float]:
  """Per-parameter mean over the batches of `arrays` of the gradient of `scale` x the batch's
  mean objective (`squared`: of its elementwise square, the diagonal importance of SSD and the
  batch Fisher), evaluation-mode forward (BatchNorm running statistics).

  Rows are taken in order (no shuffle); the last batch is padded and its padding masked, and
  each batch counts once, as the published SSD code averages. Returns (a pytree shaped like
  `variables["params"]`, stacked over the members; seconds taken).
  """
  return _mean_over_batches(ctx, variables, arrays, objective, batch_size, scale,
                            jnp.square if squared else None)


def gradient_magnitude(ctx: base.Context, variables: Mapping, arrays: Mapping[str, np.ndarray],
                       objective: Objective, *, batch_size: int) -> tuple[dict, float]:
  """As `gradient_statistic`, of the absolute value of each batch's gradient: the sensitivity of
  memory aware synapses (Aljundi et al. 2018) that LFSSD uses in place of the Fisher."""
  return _mean_over_batches(ctx, variables, arrays, objective, batch_size, 1.0, jnp.abs)


def top_mask(scores: jax.Array, count: int) -> jax.Array:
  """Boolean mask of the `count` largest entries of `scores` (ties: the earlier entry first)."""
  flat = scores.ravel()
  order = jnp.argsort(-flat, stable=True)
  return jnp.zeros(flat.shape, bool).at[order[:count]].set(True).reshape(scores.shape)


def scale_gradients(params, weights):
  """`params` whose gradients are scaled by `weights` (same tree, in [0, 1]): the forward value
  is exactly p, stop_gradient(p) + w * (p - stop_gradient(p)). Weight 0 fixes a parameter: its
  gradient is zero, and a fresh Adam or SGD state then never moves it."""

  def scaled(p, w):
    fixed = jax.lax.stop_gradient(p)
    return fixed + w * (p - fixed)

  return jax.tree_util.tree_map(scaled, params, weights)


def gradient_scale_hook(params, weights, step):
  """The train step's `param_hook` of `scale_gradients`, the weights travelling in `frozen`."""
  del step
  return scale_gradients(params, weights), None


def member_mean(tree, members: int) -> float | list[float]:
  """The mean of every entry of each member's `tree` (of a mask: its selected share), as a
  record keeps it (`ensemble.record_value`)."""
  leaves = [jnp.asarray(leaf, jnp.float32) for leaf in jax.tree_util.tree_leaves(tree)]
  size = sum(a[0].size for a in leaves)
  return train.ensemble.record_value(
      [float(sum(jnp.sum(a[k]) for a in leaves) / size) for k in range(members)])


def layer_leaves(tree) -> list[tuple[str, jax.Array]]:
  """(path, leaf) of every parameter array, in a fixed order: what "per layer" ranks over."""
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return [(jax.tree_util.keystr(path), leaf) for path, leaf in flat]
