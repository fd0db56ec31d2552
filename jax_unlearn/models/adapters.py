"""Adapters that turn a network into the one model contract the library uses.

An apply function is `apply_fn(variables, x, *, train, rngs=None)` returning `(pred, acts)`:
`pred` the regression output and `acts` a dict name -> activation. A model that keeps running
statistics (BatchNorm) returns `(pred, acts, new_state)` in train mode, `new_state` being the dict
of updated non-parameter collections, e.g. {"batch_stats": ...}. Variables are a dict with
"params" and optionally "batch_stats".

An apply function may also take a keyword `mask` ([B], 0 on padded rows): the train step then
passes the batch's padding mask, so that BatchNorm statistics ignore padding and a padded batch
trains exactly like the unpadded one.
"""
import functools
import inspect
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn
from flax import nnx

ApplyFn = Callable[..., tuple]


def split_outputs(out: tuple, old_state: dict) -> tuple[Any, dict, dict]:
  """(pred, acts[, new_state]) -> (pred, acts, new_state); new_state defaults to `old_state`."""
  if len(out) == 3:
    return out[0], out[1], out[2]
  if len(out) == 2:
    return out[0], out[1], old_state
  raise ValueError("an apply_fn must return (pred, acts) or (pred, acts, new_state)")


def accepts_mask(fn: Callable) -> bool:
  """Whether `fn` takes a `mask` keyword (the padding mask of the batch)."""
  try:
    return "mask" in inspect.signature(fn).parameters
  except (TypeError, ValueError):
    return False


def row_mask(mask, x):
  """A [B] padding mask shaped to broadcast over `x` [B, ...] (None stays None), as bool."""
  if mask is None:
    return None
  return jnp.reshape(mask > 0, (-1,) + (1,) * (x.ndim - 1))


def from_linen(module: nn.Module) -> ApplyFn:
  """Apply function of a flax.linen module whose __call__(x, *, train) returns (pred, acts).

  If the module's __call__ takes `mask`, the padding mask is passed on in train mode.
  """
  takes_mask = accepts_mask(module.__call__)

  def apply_fn(variables, x, *, train: bool, rngs=None, mask=None):
    kwargs = {"mask": mask} if takes_mask and train and mask is not None else {}
    if train and "batch_stats" in variables:
      (pred, acts), updates = module.apply(variables, x, train=True, rngs=rngs,
                                           mutable=["batch_stats"], **kwargs)
      return pred, acts, dict(updates)
    return module.apply(variables, x, train=train, rngs=rngs, **kwargs)

  return apply_fn


def init_linen(module: nn.Module, rng: jax.Array, x: jnp.ndarray) -> dict:
  """Variables of a linen module for inputs shaped like `x` (dropout seeded from `rng` too)."""
  p_rng, d_rng = jax.random.split(rng)
  try:
    init = _init_program(module)
  except TypeError:  # a module with unhashable fields: compiled for this call only
    init = _init_program.__wrapped__(module)
  return dict(init({"params": p_rng, "dropout": d_rng}, jnp.asarray(x)))


@functools.lru_cache(maxsize=32)
def _init_program(module: nn.Module):
  """One compiled init per module (linen modules compare by their fields), instead of hundreds
  of small eager ops, and instead of compiling again for every member's key."""
  return jax.jit(lambda rngs, x: module.init(rngs, x, train=False))


def from_nnx(module: nnx.Module) -> tuple[ApplyFn, dict]:
  """(apply_fn, variables) for a flax.nnx module whose __call__(x) returns (pred, acts).

  Parameters become variables["params"]; any other state (BatchNorm statistics) becomes
  variables["batch_stats"] and is returned updated in train mode.
  """
  graphdef, params, rest = nnx.split(module, nnx.Param, ...)
  has_state = bool(jax.tree_util.tree_leaves(rest))

  def apply_fn(variables, x, *, train: bool, rngs=None):
    del rngs  # nnx modules own their rng streams
    model = nnx.merge(graphdef, variables["params"], variables.get("batch_stats", rest))
    if train:
      model.train()
    else:
      model.eval()
    pred, acts = model(x)
    if train and has_state:
      _, _, new_rest = nnx.split(model, nnx.Param, ...)
      return pred, acts, {"batch_stats": new_rest}
    return pred, acts

  variables = {"params": params}
  if has_state:
    variables["batch_stats"] = rest
  return apply_fn, variables


def from_function(fn: Callable[[Any, jnp.ndarray], jnp.ndarray]) -> ApplyFn:
  """Apply function of a plain pure function `fn(params, x) -> pred` (no activations exposed)."""

  def apply_fn(variables, x, *, train: bool, rngs=None):
    del train, rngs
    return fn(variables["params"], x), {}

  return apply_fn
