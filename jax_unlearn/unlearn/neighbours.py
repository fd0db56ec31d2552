"""Neighbour relabelling: the forget rows relabelled by what the retain data alone says of them.

A model retrained without the forget rows predicts, on them, whatever the retain rows near them
imply; it cannot know their own labels. A k-nearest-neighbour regressor fitted to the retain rows
says the same without any training: each forget row's label is replaced by the mean label of
its `neighbours` nearest retain rows (Euclidean distance of the inputs, flattened and
standardised by the retain rows' per-feature moments), and the original model is trained on
every row with those labels, as Gaussian fine-tuning trains on random ones. Unlike random
labels the targets carry the retrained model's kind of error (a smooth extrapolation from the
retain cohort), so the unlearned predictions on the forget set move toward the retrained
model's distribution instead of toward the label mean; the retain rows keep their labels.

`neighbour_weight` w < 1 blends the two answers: a forget row's target becomes w x the neighbour
mean + (1 - w) x the original model's own prediction (each member's own, in an ensemble), for a
retrained model that is pulled less far from the original than the neighbours alone would say
(point predictions only).

The neighbour search is exact, in row chunks ([chunk, retain rows] distances at a time), on the
host; its cost is one pass over forget x retain rows, next to no training.
"""
import time
from typing import Mapping

import numpy as np

from jax_unlearn import train
from jax_unlearn.errors import UserError
from jax_unlearn.unlearn import base

# Chosen on validation rows of the demo's scenario (jax_unlearn/configs/tune_rotdigits.py, 3
# seeds): 5 neighbours and 3 epochs had the lowest forget-cohort distance to the retrained
# model among 5, 20, 50 neighbours and 1, 3 epochs.
DEFAULTS = {"epochs": 3, "lr": 1e-3, "neighbours": 5, "neighbour_weight": 1.0, "keep_best": False}
# Bounded settings: name -> (low, high, low_open), checked with the others (base.settings).
RANGES = {"neighbour_weight": (0.0, 1.0, True)}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [3e-4, 1e-3, 3e-3], "epochs": [1, 3, 5], "neighbours": [5, 20, 50],
                "neighbour_weight": [0.6, 0.8, 1.0]}


def neighbour_labels(x: np.ndarray, y: np.ndarray, forget: np.ndarray, k: int, *,
                     chunk: int = 1024) -> np.ndarray:
  """`y` with each forget row's label replaced by the mean label of its k nearest retain rows."""
  if isinstance(k, bool) or not isinstance(k, int) or k < 1:
    raise UserError(f"neighbours must be a positive integer, got {k!r}.", "use e.g. 20.")
  forget = np.asarray(forget, bool)
  flat = np.asarray(x, np.float32).reshape(len(x), -1)
  retain_x, retain_y = flat[~forget], np.asarray(y, np.float32)[~forget]
  k = min(k, len(retain_x))
  mean, std = retain_x.mean(axis=0), retain_x.std(axis=0)
  scale = 1.0 / np.maximum(std, 1e-6)
  retain_z = (retain_x - mean) * scale
  retain_sq = np.sum(np.square(retain_z), axis=1)  # [R]
  forget_rows = np.flatnonzero(forget)
  out = np.array(y, np.float32, copy=True)
  for start in range(0, len(forget_rows), chunk):
    rows = forget_rows[start:start + chunk]
    z = (flat[rows] - mean) * scale
    d = retain_sq[None, :] - 2.0 * z @ retain_z.T  # + |z|^2, the same for every retain row
    nearest = np.argpartition(d, k - 1, axis=1)[:, :k]  # [chunk, k]
    out[rows] = retain_y[nearest].mean(axis=1)
  return out


def blend_with_prediction(ctx: base.Context, predict_fn: train.PredictFn, variables: Mapping,
                          data: base.UnlearnData, labels: np.ndarray,
                          weight: float) -> np.ndarray:
  """`labels` with each forget row's target weight x itself + (1 - weight) x the prediction of
  `variables` (one model, through `predict_fn`) on that row."""
  pred = train.predict(predict_fn, variables, data.x[data.forget],
                       batch_size=ctx.predict_batch_size)
  if pred.shape[1:] != labels.shape[1:]:
    raise UserError(f"neighbour_weight < 1 blends predictions into labels, but the model predicts "
                    f"{pred.shape[1:]} per row for labels of {labels.shape[1:]}.",
                    "keep neighbour_weight=1 for quantile or other non-point models.")
  out = labels.copy()
  out[data.forget] = weight * labels[data.forget] + (1.0 - weight) * pred
  return out


def neighbours(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
               config: Mapping | None = None) -> base.MethodResult:
  """The original trained on every row, forget labels replaced by their retain neighbours'."""
  s = base.settings("neighbours", config, DEFAULTS, RANGES)
  t = time.perf_counter()
  labels = neighbour_labels(data.x, data.y, data.forget, s["neighbours"])
  weight = s["neighbour_weight"]
  if weight >= 1.0:
    arrays = data.arrays(y=labels)
  else:  # each member blends its own predictions, through one compiled function
    predict_fn = train.make_predict_fn(ctx.apply_fn, ctx.dp)

    def blend(variables):
      return data.arrays(y=blend_with_prediction(ctx, predict_fn, variables, data, labels, weight))

    arrays = [blend(train.ensemble.member(original_variables, k)) for k in range(ctx.members)]
  search = time.perf_counter() - t
  outcome = base.fit(
      ctx, original_variables,
      train.Objective(train.supervised_loss(ctx.loss), {"neighbours": s["neighbours"]}), arrays,
      train.Recipe.from_settings(s), name="neighbours", augment=data.augment,
      validate=base.validation_loss(ctx, data, s["keep_best"]))
  rec = base.record(outcome, search_seconds=search)
  rec["seconds"] += search
  return base.MethodResult(outcome.variables, rec)
