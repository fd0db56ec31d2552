"""Regression errors over cohorts: per-example values, masked sums, one divide on the host.

A cohort (retain-train, forget-train, retain-test, forget-test) is a boolean mask over the rows
of one prediction array, so every cohort of a split is reduced from the same per-example values
and a ragged or empty cohort is exact: an empty cohort has no error (None), never NaN.
"""
from typing import Mapping, Sequence

import numpy as np

from jax_unlearn import losses
from jax_unlearn.errors import UserError, unknown_name

ERRORS = ("mae", "mse", "rmse", "quantile")


def check_error(error: str, quantiles: Sequence[float] | None = None) -> None:
  """Raises a UserError for an unknown error name or a quantile error without quantiles."""
  if error not in ERRORS:
    raise unknown_name("error", error, ERRORS)
  if error == "quantile" and not quantiles:
    raise UserError("the quantile error needs the model's quantiles.",
                    "pass quantiles=(0.1, 0.5, 0.9) (those the model predicts).")


def per_example_error(pred: np.ndarray, y: np.ndarray, error: str,
                      quantiles: Sequence[float] | None = None) -> np.ndarray:
  """[N] float64 values whose cohort mean is the error (the squared error for "rmse").

  Args:
    pred: [N, D] point predictions, or [N, D, Q] for a quantile model (then `quantiles` is set
      and every error but "quantile" scores the median forecast).
    y: [N, D] labels.
  """
  check_error(error, quantiles)
  if error == "quantile":
    values = losses.quantile(pred, y, quantiles)
  else:
    point = losses.point_prediction(pred, quantiles)
    values = (losses.l1 if error == "mae" else losses.mse)(point, y)
  return np.asarray(values, np.float64)


def reduce_error(values: np.ndarray, mask: np.ndarray | None, error: str) -> float | None:
  """The error of the rows of `values` [N] where `mask` [N] is true; None for an empty cohort."""
  mask = np.ones(len(values), bool) if mask is None else np.asarray(mask, bool)
  if mask.shape != values.shape:
    raise ValueError(f"cohort mask of shape {mask.shape} for {values.shape} values")
  count = int(mask.sum())
  if count == 0:
    return None
  mean = float(np.sum(values, where=mask)) / count
  return float(np.sqrt(mean)) if error == "rmse" else mean


def cohort_error(pred: np.ndarray, y: np.ndarray, error: str, mask: np.ndarray | None = None,
                 *, quantiles: Sequence[float] | None = None) -> float | None:
  """The error over the rows where `mask` is true (all rows without a mask)."""
  return reduce_error(per_example_error(pred, y, error, quantiles), mask, error)


def cohort_errors(pred: np.ndarray, y: np.ndarray, error: str,
                  cohorts: Mapping[str, np.ndarray], *,
                  quantiles: Sequence[float] | None = None) -> dict[str, float | None]:
  """name -> error for each boolean row mask in `cohorts`, from one pass of per-example values."""
  values = per_example_error(pred, y, error, quantiles)
  return {name: reduce_error(values, mask, error) for name, mask in cohorts.items()}


def r2_score(pred: np.ndarray, y: np.ndarray, mask: np.ndarray | None = None, *,
             quantiles: Sequence[float] | None = None) -> float | None:
  """Coefficient of determination over the masked rows, averaged over output dimensions.

  Matches sklearn's r2_score(multioutput="uniform_average"). None where it is undefined: fewer
  than two rows, or a constant label in some output dimension.
  """
  point = np.asarray(losses.point_prediction(pred, quantiles), np.float64)
  y = np.asarray(y, np.float64)
  y2, p2 = y.reshape(len(y), -1), point.reshape(len(point), -1)  # [N, D]
  if y2.shape != p2.shape:
    raise ValueError(f"prediction shape {point.shape} does not match label shape {y.shape}")
  rows = np.ones(len(y), bool) if mask is None else np.asarray(mask, bool)
  count = int(rows.sum())
  if count < 2:
    return None
  y2, p2 = y2[rows], p2[rows]
  ss_res = np.sum(np.square(y2 - p2), axis=0)  # [D]
  ss_tot = np.sum(np.square(y2 - np.sum(y2, axis=0) / count), axis=0)  # [D]
  if np.any(ss_tot == 0):
    return None
  return float(np.mean(1.0 - ss_res / ss_tot))
