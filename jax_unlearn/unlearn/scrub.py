"""SCRUB (Kurmanji, Triantafillou, Hayes and Triantafillou, NeurIPS 2023, "Towards Unbounded
Machine Unlearning"): a student, started from the original, moves away from the original (the
frozen teacher) on the forget rows and stays close to it on the retain rows.

Each of `epochs` epochs is, in its first `max_epochs` epochs, a max pass over the forget rows,

    loss = - mean over forget rows of min(d(student, teacher), bound),

then a min pass over the retain rows,

    loss = gamma * task loss + alpha * mean d(student, teacher).

Changed for regression: d is the output distance of blindspot's `prediction_distance` (the task
loss between the two outputs for point models) instead of the KL divergence of temperature-scaled
softmax outputs; as a distance it grows without limit, so each forget row is pushed only until it
reaches `bound = forget_bound` x the original's retain-cohort validation loss (see
`neggrad.reference_loss`), on the distance's scale. A model without dropout or BatchNorm starts
exactly at its teacher, where the distance has no gradient (a KL divergence has none either): its
first max pass leaves it unchanged, and ascent starts once a min pass has moved it (the published
models differ from their evaluation-mode teacher through dropout and BatchNorm from the first step).

Each pass is one `base.fit` call, checkpointed in its own stage directory ("max0", "min0", ...),
so a rerun reuses finished passes; its optimizer state (Adam moments) starts afresh, where the
published code keeps one optimizer through all passes. Every pass draws its keys and data order
from its own stream, folded with its epoch, so the passes of later epochs see other orders.

Defaults from the SCRUB repository's large-scale setting: msteps 2 (`max_epochs`), alpha 0.001,
gamma 0.99, lr 5e-4; 3 epochs (the repository runs 3 to 5). Its SGD with momentum becomes Adam,
the library's optimizer, at the same rate. Its temperature (kd_T 4) has no counterpart in an
output distance.
"""
import math
import dataclasses
from typing import Callable, Mapping

import jax.numpy as jnp

from jax_unlearn import losses, train
from jax_unlearn.unlearn import base, neggrad
from jax_unlearn.unlearn.blindspot import prediction_distance

PURPOSE_SCRUB_MAX = 20
PURPOSE_SCRUB_MIN = 21

DEFAULTS = {"epochs": 3, "lr": 5e-4, "max_epochs": 2, "alpha": 0.001, "gamma": 0.99,
            "forget_bound": 4.0}
# Bounded settings: name -> (low, high, low_open), checked with the others (base.settings).
RANGES = {"alpha": (0.0, math.inf, False), "gamma": (0.0, math.inf, False),
          "forget_bound": (0.0, math.inf, True)}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [1e-4, 5e-4, 1e-3], "epochs": [1, 3], "max_epochs": [1, 2],
                "alpha": [1e-4, 1e-3, 1e-2]}


def make_max_loss(apply_fn: Callable, per_example: losses.LossFn) -> train.LossFn:
  """The max pass as a train-step loss; frozen = (teacher variables, forget bound).

  Returns loss_fn giving (loss, {"distance"}), "distance" the bounded mean distance.
  """
  distance = prediction_distance(per_example)

  def loss_fn(pred, acts, batch, rng, frozen):
    del acts, rng
    teacher, bound = frozen
    d = distance(pred, base.frozen_prediction(apply_fn, teacher, batch["x"]), batch["y"])
    bounded = losses.masked_mean(jnp.minimum(d, bound), batch["mask"])
    return -bounded, {"distance": bounded}

  return loss_fn


def make_min_loss(apply_fn: Callable, per_example: losses.LossFn, *, alpha: float,
                  gamma: float) -> train.LossFn:
  """The min pass as a train-step loss; frozen = the teacher's variables.

  Returns loss_fn giving (loss, {"task_loss", "distance"}).
  """
  distance = prediction_distance(per_example)

  def loss_fn(pred, acts, batch, rng, teacher):
    del acts, rng
    mask = batch["mask"]
    task = losses.masked_mean(per_example(pred, batch["y"]), mask)
    d = losses.masked_mean(
        distance(pred, base.frozen_prediction(apply_fn, teacher, batch["x"]), batch["y"]), mask)
    return gamma * task + alpha * d, {"task_loss": task, "distance": d}

  return loss_fn


def _stream(ctx: base.Context, purpose: int) -> base.Context:
  """`ctx` whose keys fold from the purpose's key: a pass's keys per epoch, apart from others."""
  return dataclasses.replace(ctx, rng=ctx.key(purpose))


def scrub(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
          config: Mapping | None = None) -> base.MethodResult:
  """SCRUB of the original model; the record's steps and seconds sum every pass."""
  s = base.settings("scrub", config, DEFAULTS, RANGES)
  bound = float(s["forget_bound"]) * neggrad.reference_loss(ctx, original_variables, data)
  max_loss = make_max_loss(ctx.apply_fn, ctx.loss)
  min_loss = make_min_loss(ctx.apply_fn, ctx.loss, alpha=float(s["alpha"]),
                           gamma=float(s["gamma"]))
  forget_arrays = data.arrays(forget_only=True)
  max_recipe = base.capped_recipe(s, len(forget_arrays["x"]), epochs=1)
  max_ctx, min_ctx = _stream(ctx, PURPOSE_SCRUB_MAX), _stream(ctx, PURPOSE_SCRUB_MIN)
  variables, outcomes, max_steps = original_variables, [], 0
  for epoch in range(s["epochs"]):
    if epoch < s["max_epochs"]:
      out = base.fit(max_ctx, variables,
                     train.Objective(max_loss, {"forget_bound": s["forget_bound"]},
                                     frozen=(original_variables, jnp.asarray(bound))),
                     forget_arrays, max_recipe, name=f"scrub max {epoch + 1}",
                     stage=f"max{epoch}", purposes=(2 * epoch, 2 * epoch + 1),
                     augment=data.augment)
      variables, max_steps = out.variables, max_steps + out.steps
      outcomes.append(out)
    out = base.fit(min_ctx, variables,
                   train.Objective(min_loss, {"alpha": s["alpha"], "gamma": s["gamma"]},
                                   frozen=original_variables),
                   data.arrays(retain_only=True), train.Recipe.from_settings(s, epochs=1),
                   name=f"scrub min {epoch + 1}", stage=f"min{epoch}",
                   purposes=(2 * epoch, 2 * epoch + 1), augment=data.augment)
    variables = out.variables
    outcomes.append(out)
  rec = base.record(out, max_steps=int(max_steps),
                    forget_bound=train.ensemble.record_value(bound.tolist()))
  rec["steps"] = sum(int(o.steps) for o in outcomes)
  rec["seconds"] = sum(float(o.seconds) for o in outcomes)
  rec["reused"] = all(o.reused for o in outcomes)
  return base.MethodResult(variables, rec)
