"""Regression errors over cohorts: per-example values, masked sums, one divide on the host.

A cohort (retain-train, forget-train, retain-test, forget-test) is a boolean mask over the rows
of one prediction array, so every cohort of a split is reduced from the same per-example values
and a ragged or empty cohort is exact: an empty cohort has no error (None), never NaN. The
"errors" metric reports each cohort's error and R² (and a quantile model's median MAE).
"""
from typing import Any, Mapping, Sequence

import numpy as np

from jax_unlearn import losses
from jax_unlearn.errors import UserError, unknown_name
from jax_unlearn.metrics import base

ERRORS = ("mae", "mse", "rmse", "quantile")
COHORTS = ("retain_train", "forget_train", "retain_test", "forget_test")


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


def _cohort_columns(suffix: str, label: str, retain: str, show: int) -> list[base.Column]:
  """One column per cohort; on forget cohorts the retrained model's value is the goal."""
  return [base.Column(f"{c}_{suffix}", f"{c.replace('_', ' ')} {label}",
                      base.RETRAINED if c.startswith("forget") else retain, show)
          for c in COHORTS]


class CohortErrors(base.Metric):
  """The task error and R² of each cohort; for a quantile model also its median's MAE."""
  name = "errors"
  keys = tuple(f"{c}_{k}" for k in ("error", "median_mae", "r2") for c in COHORTS)
  required = tuple(f"{c}_error" for c in COHORTS)
  columns = tuple(_cohort_columns("error", "error", base.LOWER, base.HEADLINE)
                  + _cohort_columns("median_mae", "median MAE", base.LOWER, base.HIDDEN)
                  + _cohort_columns("r2", "R²", base.HIGHER, base.HIDDEN))

  def evaluate(self, state, model: base.ModelContext) -> dict[str, Any]:
    data, run = model.data, model.run
    masks = {"retain_train": ~data.forget_train, "forget_train": data.forget_train,
             "retain_test": ~data.forget_test, "forget_test": data.forget_test}
    splits = {"train": (model.pred_train, data.train_y), "test": (model.pred_test, data.test_y)}
    q, out = run.quantiles, {}
    for split, (pred, y) in splits.items():
      cohorts = {c: m for c, m in masks.items() if c.endswith(split)}
      out.update({f"{c}_error": v for c, v in
                  cohort_errors(pred, y, run.error, cohorts, quantiles=q).items()})
      if q:
        out.update({f"{c}_median_mae": v for c, v in
                    cohort_errors(pred, y, "mae", cohorts, quantiles=q).items()})
      out.update({f"{c}_r2": r2_score(pred, y, m, quantiles=q) for c, m in cohorts.items()})
    return out
