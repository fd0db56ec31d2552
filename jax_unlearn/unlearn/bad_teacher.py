"""Bad-Teacher unlearning (Chundawat, Tarun, Mandal and Kankanhalli, AAAI 2023, "Can Bad Teaching
Induce Forgetting? Unlearning in Deep Networks using an Incompetent Teacher").

The student, started from the original, is distilled on the forget rows and a random
`retain_fraction` of the retain rows, shuffled together: towards the competent teacher (the
original, frozen) on retain rows and towards an incompetent teacher on forget rows,

    loss = mean over rows of d(student, target),  target = competent or incompetent output.

The incompetent teacher is `bad_teacher` = "random", a freshly initialised model of the
original's architecture (the paper's), or "gaussian", Gaussian labels of the training labels'
moments as in `gaussian.py` (the forget rows' targets are then labels, scored by the task loss).

Changed for regression: d is the output distance of blindspot's `prediction_distance` (the task
loss between the two outputs for point models) instead of the KL divergence of softmax outputs
(the paper's temperature, 1, has no counterpart). Defaults are the published ones: 1 epoch, Adam
lr 1e-4, 30% of the retain rows. Both teachers travel as the step's frozen argument (stacked over
the members of an ensemble, each member with its own incompetent teacher and retain subset).
"""
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import losses, train
from jax_unlearn.errors import unknown_name
from jax_unlearn.unlearn import base, gaussian
from jax_unlearn.unlearn.blindspot import prediction_distance

PURPOSE_BAD_TEACHER_INIT = 22
PURPOSE_BAD_TEACHER_DATA = 23

INCOMPETENT_TEACHERS = ("random", "gaussian")

DEFAULTS = {"epochs": 1, "lr": 1e-4, "bad_teacher": "random", "retain_fraction": 0.3}
# Bounded settings: name -> (low, high, low_open), checked with the others (base.settings).
RANGES = {"retain_fraction": (0.0, 1.0, True)}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [3e-5, 1e-4, 3e-4], "epochs": [1, 2],
                "retain_fraction": [0.1, 0.3, 1.0]}


def make_bad_teacher_loss(apply_fn: Callable, per_example: losses.LossFn) -> train.LossFn:
  """The bad-teacher objective as a train-step loss; frozen = (competent teacher's variables,
  incompetent teacher's variables, or None when the forget rows' labels are the targets).

  Returns loss_fn giving (loss, {"retain_distance", "forget_distance"}); padded rows (mask 0)
  count nowhere.
  """
  distance = prediction_distance(per_example)

  def loss_fn(pred, acts, batch, rng, frozen):
    del acts, rng
    competent, incompetent = frozen
    x, y = batch["x"], batch["y"]
    mask = batch["mask"].astype(jnp.float32)
    forget = mask * batch["forget"].astype(jnp.float32)
    retain_d = distance(pred, base.frozen_prediction(apply_fn, competent, x), y)
    forget_d = (per_example(pred, y) if incompetent is None
                else distance(pred, base.frozen_prediction(apply_fn, incompetent, x), y))
    loss = losses.masked_mean(jnp.where(forget > 0, forget_d, retain_d), mask)
    return loss, {"retain_distance": losses.masked_mean(retain_d, mask - forget),
                  "forget_distance": losses.masked_mean(forget_d, forget)}

  return loss_fn


def distillation_arrays(data: base.UnlearnData, retain_fraction: float, key: jax.Array,
                        y: np.ndarray | None = None) -> dict:
  """Every forget row and a random `retain_fraction` of the retain rows (at least one), in
  training order, with their forget flags; `y` replaces the labels."""
  retain = np.flatnonzero(~data.forget)
  count = max(1, int(round(retain_fraction * len(retain))))
  chosen = np.asarray(jax.random.choice(key, len(retain), (count,), replace=False))
  rows = np.sort(np.concatenate([np.flatnonzero(data.forget), retain[chosen]]))
  arrays = data.arrays(y=y)
  return {name: a[rows] for name, a in arrays.items()}


def bad_teacher(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
                config: Mapping | None = None) -> base.MethodResult:
  """The original distilled from itself on retain rows and from an incompetent teacher on
  forget rows; a random incompetent teacher comes back as `auxiliary["bad_teacher"]`."""
  s = base.settings("bad_teacher", config, DEFAULTS, RANGES)
  if s["bad_teacher"] not in INCOMPETENT_TEACHERS:
    raise unknown_name("incompetent teacher (methods.bad_teacher.bad_teacher)", s["bad_teacher"],
                       INCOMPETENT_TEACHERS)
  fraction, labels = float(s["retain_fraction"]), s["bad_teacher"] == "gaussian"

  def member_arrays(key):
    subset_key, label_key = jax.random.split(key)
    y = gaussian.gaussian_labels(data.y, data.forget, label_key) if labels else None
    return distillation_arrays(data, fraction, subset_key, y)

  incompetent = None if labels else base.fresh_variables(
      ctx, original_variables, PURPOSE_BAD_TEACHER_INIT, "incompetent teacher")
  arrays = ctx.each(member_arrays, PURPOSE_BAD_TEACHER_DATA)
  rows = len(arrays[0]["x"])
  outcome = base.fit(
      ctx, original_variables,
      train.Objective(make_bad_teacher_loss(ctx.apply_fn, ctx.loss),
                      {k: s[k] for k in ("bad_teacher", "retain_fraction")},
                      frozen=(original_variables, incompetent)),
      arrays, base.capped_recipe(s, rows), name="bad_teacher", augment=data.augment)
  auxiliary = {} if incompetent is None else {"bad_teacher": incompetent}
  return base.MethodResult(outcome.variables, base.record(outcome), auxiliary)
