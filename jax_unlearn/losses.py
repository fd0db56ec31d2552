"""Regression losses as per-example functions: no hidden reduction, the caller masks and sums.

Each takes `pred` and `y` and returns a [B] array (mean over every non-batch axis), so padded rows
can be masked out exactly and sums reduced once on the host.
"""
from typing import Callable, Sequence

import jax.numpy as jnp

from jax_unlearn.errors import unknown_name

LossFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def _per_example_mean(values: jnp.ndarray) -> jnp.ndarray:
  return values.reshape(values.shape[0], -1).mean(axis=1)


def _point(pred: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
  """Difference for point predictions; y may lack the trailing output axis of size 1."""
  if pred.ndim == y.ndim + 1 and pred.shape[-1] == 1:
    pred = pred[..., 0]
  if pred.shape != y.shape:
    raise ValueError(f"prediction shape {pred.shape} does not match label shape {y.shape}")
  return pred - y


def l1(pred, y):
  """Mean absolute error per example: [B]."""
  return _per_example_mean(jnp.abs(_point(pred, y)))


def mse(pred, y):
  """Mean squared error per example: [B]."""
  return _per_example_mean(jnp.square(_point(pred, y)))


def huber(pred, y, delta: float = 1.0):
  """Huber loss per example: quadratic within `delta`, linear beyond. [B]."""
  a = jnp.abs(_point(pred, y))
  return _per_example_mean(jnp.where(a <= delta, 0.5 * a * a, delta * (a - 0.5 * delta)))


def quantile(pred, y, quantiles: Sequence[float] = (0.1, 0.5, 0.9)):
  """Pinball loss per example, averaged over quantiles and outputs.

  Args:
    pred: [B, ..., Q] one prediction per quantile.
    y: [B, ...] labels.
  Returns:
    [B] mean over outputs and quantiles of max(q * e, (q - 1) * e) with e = y - pred.
  """
  q = jnp.asarray(quantiles, pred.dtype)
  if pred.shape[:-1] != y.shape or pred.shape[-1] != q.shape[0]:
    raise ValueError(f"quantile loss needs pred {y.shape + (q.shape[0],)}, got {pred.shape}")
  e = y[..., None] - pred
  return _per_example_mean(jnp.maximum(q * e, (q - 1.0) * e))


def point_prediction(pred, quantiles: Sequence[float] | None = None):
  """The point forecast of a prediction: the median quantile if `quantiles` is given."""
  if quantiles is None:
    return pred
  i = min(range(len(quantiles)), key=lambda k: abs(quantiles[k] - 0.5))
  return pred[..., i]


def masked_mean(values: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
  """Mean of `values` [B] over rows where `mask` [B] is 1; 0 when no row counts (never NaN)."""
  mask = mask.astype(values.dtype)
  return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


_LOSSES = {"l1": l1, "mae": l1, "mse": mse, "huber": huber, "quantile": quantile}


def get_loss(name: str, **kwargs) -> LossFn:
  """Per-example loss by name (l1/mae, mse, huber, quantile), with its keyword settings bound."""
  if name not in _LOSSES:
    raise unknown_name("loss", name, _LOSSES)
  fn = _LOSSES[name]
  if not kwargs:
    return fn
  return lambda pred, y: fn(pred, y, **kwargs)
