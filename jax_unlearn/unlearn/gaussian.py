"""Gaussian fine-tuning ("Gaussian-Amnesiac"): relabel the forget rows with random labels.

The labels of the forget rows are replaced by draws from N(mean, std) of all training labels
(per output dimension for multi-output targets), and the original model is trained on the full
set for one epoch (Adam 1e-3): the forget rows lose their information, the retain rows keep it.
`keep_best` returns the epoch with the lowest retain-cohort validation loss (the published
STS-B notebook trains 5 epochs and keeps the best); the default keeps the final variables.
"""
from typing import Mapping

import jax
import numpy as np

from jax_unlearn import train
from jax_unlearn.unlearn import base

DEFAULTS = {"epochs": 1, "lr": 1e-3, "keep_best": False}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [3e-4, 1e-3, 3e-3], "epochs": [1, 2, 4]}


def label_moments(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Mean and standard deviation of labels per output dimension (over axis 0).

  The standard deviation is the unbiased one (ddof=1, the sample standard deviation).
  """
  y = np.asarray(y, np.float64)
  return y.mean(axis=0), y.std(axis=0, ddof=1 if len(y) > 1 else 0)


def gaussian_labels(y: np.ndarray, forget: np.ndarray, key: jax.Array) -> np.ndarray:
  """`y` with the forget rows replaced by seeded draws from N(mean, std) of all rows of `y`."""
  y = np.asarray(y, np.float32)
  mean, std = label_moments(y)
  noise = np.asarray(jax.random.normal(key, (int(forget.sum()),) + y.shape[1:]), np.float32)
  out = y.copy()
  out[forget] = (mean + std * noise).astype(np.float32)
  return out


def gaussian(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
             config: Mapping | None = None) -> base.MethodResult:
  """The original trained on every row, forget labels replaced by Gaussian draws."""
  s = base.settings("gaussian", config, DEFAULTS)
  mean, std = label_moments(data.y)
  arrays = ctx.each(lambda key: data.arrays(y=gaussian_labels(data.y, data.forget, key)),
                    base.PURPOSE_LABELS)
  outcome = base.fit(
      ctx, original_variables, train.supervised_loss(ctx.loss), arrays,
      train.Recipe.from_settings(s), name="gaussian", augment=data.augment,
      validate=base.validation_loss(ctx, data, s["keep_best"]))
  return base.MethodResult(outcome.variables, base.record(
      outcome, label_mean=mean.ravel().tolist(), label_std=std.ravel().tolist()))
