"""Distances between a model and the retrained model: prediction distributions and activations.

The paper compares the distribution of the unlearned model's predictions on the forget set with
the retrained model's (Wasserstein-1), shows the per-sample relative difference as a histogram,
and peers report an activation distance; all three are here, the first and the last also as
metrics of the evaluator.
"""
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import parallel, train
from jax_unlearn.errors import unknown_name
from jax_unlearn.metrics import base


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
  """Exact Wasserstein-1 distance between the empirical distributions of two samples.

  The integral of |F_u - F_v| over the merged sorted support, in float64 (as
  scipy.stats.wasserstein_distance). The samples may differ in length.
  """
  u = np.sort(np.asarray(u, np.float64).ravel())
  v = np.sort(np.asarray(v, np.float64).ravel())
  if u.size == 0 or v.size == 0:
    raise ValueError("the Wasserstein distance needs two non-empty samples")
  support = np.sort(np.concatenate([u, v]))
  widths = np.diff(support)  # [n_u + n_v - 1]
  cdf_u = np.searchsorted(u, support[:-1], side="right") / u.size
  cdf_v = np.searchsorted(v, support[:-1], side="right") / v.size
  return float(np.sum(np.abs(cdf_u - cdf_v) * widths))


def wasserstein(a: np.ndarray, b: np.ndarray) -> float:
  """Mean over output dimensions of the 1-D Wasserstein-1 distance of [N, ...] and [M, ...]."""
  a, b = np.asarray(a), np.asarray(b)
  if a.shape[1:] != b.shape[1:]:
    raise ValueError(f"output shapes differ: {a.shape[1:]} and {b.shape[1:]}")
  a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)  # [N, D], [M, D]
  return float(np.mean([wasserstein_1d(a2[:, d], b2[:, d]) for d in range(a2.shape[1])]))


def relative_difference(pred: np.ndarray, pred_retrained: np.ndarray, y: np.ndarray,
                        eps: float = 1e-6) -> np.ndarray:
  """|pred - pred_retrained| / |y| elementwise (the paper's histogram), same shape as `y`.

  Labels with |y| < eps are divided by eps instead, so a zero label gives a large finite value
  rather than inf or NaN.
  """
  pred, pred_retrained, y = (np.asarray(a, np.float64) for a in (pred, pred_retrained, y))
  if not pred.shape == pred_retrained.shape == y.shape:
    raise ValueError(f"shapes differ: {pred.shape}, {pred_retrained.shape}, {y.shape}")
  return np.abs(pred - pred_retrained) / np.maximum(np.abs(y), eps)


def row_distances(a: jax.Array, b: jax.Array) -> jax.Array:
  """L2 distance per row between activations [B, ...] and [B, ...]: [B]."""
  d = (a.astype(jnp.float32) - b.astype(jnp.float32)).reshape(a.shape[0], -1)
  return jnp.sqrt(jnp.sum(jnp.square(d), axis=1))


def activation_distance(acts_a: np.ndarray, acts_b: np.ndarray) -> float:
  """Mean over rows of the L2 distance between two models' activations of the same inputs."""
  if np.shape(acts_a) != np.shape(acts_b):
    raise ValueError(f"activation shapes differ: {np.shape(acts_a)} and {np.shape(acts_b)}")
  if len(acts_a) == 0:
    raise ValueError("the activation distance needs at least one row")
  return float(np.mean(np.asarray(row_distances(jnp.asarray(acts_a), jnp.asarray(acts_b)),
                                  np.float64)))


def layer_names(apply_fn: Callable, variables, x: np.ndarray) -> list[str]:
  """Names of the activations a model exposes, in the order it fills them (shape-only trace)."""
  names: list[str] = []

  def record(v, xb):
    names.extend(apply_fn(v, xb, train=False)[1])
    return 0

  jax.eval_shape(record, variables, x[:1])
  return names


def make_activation_distance_fn(apply_fn: Callable, layer: str,
                                dp: parallel.DataParallel | None = None) -> train.PredictFn:
  """Jitted `fn((variables_a, variables_b), x) -> [B]` per-row distances at `layer`.

  Only the per-row distances leave the device, not the activations (which can be large).
  """

  def pair_distances(pair, x):
    acts_a = apply_fn(pair[0], x, train=False)[1]
    acts_b = apply_fn(pair[1], x, train=False)[1]
    return row_distances(acts_a[layer], acts_b[layer])

  return train.make_row_fn(pair_distances, dp)


def model_activation_distance(apply_fn: Callable, variables_a, variables_b, x: np.ndarray, *,
                              layer: str, batch_size: int = 512,
                              dp: parallel.DataParallel | None = None,
                              distance_fn: train.PredictFn | None = None) -> float:
  """Mean L2 distance at `layer` between two models on the rows of `x`.

  Pass a `distance_fn` from `make_activation_distance_fn` to reuse its compilation (it runs on
  its own `dp`).
  """
  distance_fn = distance_fn or make_activation_distance_fn(apply_fn, layer, dp)
  per_row = train.predict(distance_fn, (variables_a, variables_b), x,
                          batch_size=batch_size)  # [N]
  return float(np.mean(per_row.astype(np.float64)))


class Wasserstein(base.Metric):
  """Wasserstein-1 between the model's and the retrained model's forget-set predictions."""
  name = "wasserstein"
  keys = required = ("wasserstein_to_retrained",)
  columns = (base.Column("wasserstein_to_retrained", "Wasserstein to retrained", base.LOWER,
                         base.HEADLINE),)

  def evaluate(self, state, model: base.ModelContext) -> dict[str, Any]:
    return {"wasserstein_to_retrained": wasserstein(model.forget_pred,
                                                    model.retrained.forget_pred)}


class ActivationDistance(base.Metric):
  """Mean L2 distance to the retrained model's activations on the forget-train rows.

  `activation_layer` None picks the deepest activation the model exposes; a model exposing none
  has no distance (None).
  """
  name = "activation_distance"
  defaults = {"activation_layer": None}
  keys = ("activation_distance_to_retrained",)
  columns = (base.Column("activation_distance_to_retrained", "activation distance to retrained",
                         base.LOWER),)

  def prepare(self, run: base.Run) -> tuple[str | None, train.PredictFn | None]:
    names = layer_names(run.apply_fn, run.models["original"], run.data.train_x)
    layer = run.settings["activation_layer"] or (names[-1] if names else None)
    if layer is not None and layer not in names:
      raise unknown_name("activation layer", layer, names)
    run.info["activation_layer"] = layer
    if layer is None:
      return None, None
    return layer, make_activation_distance_fn(run.apply_fn, layer, run.dp)

  def evaluate(self, state, model: base.ModelContext) -> dict[str, Any]:
    layer, distance_fn = state
    if layer is None:
      return {"activation_distance_to_retrained": None}
    data = model.data
    return {"activation_distance_to_retrained": model_activation_distance(
        model.run.apply_fn, model.variables, model.retrained.variables,
        data.train_x[data.forget_train], layer=layer, batch_size=model.run.batch_size,
        distance_fn=distance_fn)}
