"""NegGrad+ (Kurmanji, Triantafillou, Hayes and Triantafillou, NeurIPS 2023, "Towards Unbounded
Machine Unlearning"): the SCRUB paper's gradient-ascent baseline, descent on the retain rows and
ascent on the forget rows at once,

    loss = alpha * L_retain - (1 - alpha) * L_forget,
    L_retain = mean task loss over the batch's retain rows,
    L_forget = mean over the batch's forget rows of min(task loss, bound).

Changed for regression: a regression loss is unbounded above, so plain ascent diverges (the
published cross-entropy is unbounded too, but a class is at worst wrong, while a regression output
runs off without limit and takes the retain rows with it). Each forget row is pushed only until its
loss reaches `bound = forget_bound` x the original model's mean loss on the retain-cohort validation
rows (its retain training rows when there are none); past it the row has no gradient. The bound is
computed once, per member of an ensemble, and travels as the step's frozen argument. Batches are
drawn from all training rows with their forget flags, instead of a retain batch zipped with a cycled
forget batch.

Defaults: the SCRUB repository's NegGrad+ runs SGD at lr 0.01 with alpha 0.95 for 10 epochs on its
small benchmarks, alpha 0.9999 for 5 epochs on its large ones. Here 5 epochs and alpha 0.9: a
squared loss has no gradient at a perfect fit, so ascent on it starts slowly, and with the forget
loss capped a larger share is safe (0.99 barely moved the forget error of the tests' toy problem in
80 steps). SGD becomes Adam (the library's optimizer) at 1e-4, a tenth of fine-tuning's rate, as
ascent is unstable. forget_bound 4 lets a forget row err four times as much as the original does on
unseen retain-cohort rows: about what a model that never saw it makes when the forget rows are like
the others, less than that when they are a cohort the retain rows miss.
"""
import math
from typing import Mapping

import jax.numpy as jnp
import numpy as np

from jax_unlearn import losses, train
from jax_unlearn.unlearn import base

DEFAULTS = {"epochs": 5, "lr": 1e-4, "alpha": 0.9, "forget_bound": 4.0}
# Bounded settings: name -> (low, high, low_open), checked with the others (base.settings).
RANGES = {"alpha": (0.0, 1.0, False), "forget_bound": (0.0, math.inf, True)}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [3e-5, 1e-4, 3e-4], "epochs": [1, 3, 5], "alpha": [0.5, 0.9, 0.99]}


def reference_loss(ctx: base.Context, original_variables: Mapping,
                   data: base.UnlearnData) -> np.ndarray:
  """The original's mean task loss on the retain-cohort validation rows (the retain training rows
  when there are none): the scale forget losses are bounded on, [K]."""
  x, y = (data.val_x, data.val_y) if len(data.val_x) else (data.retain_x, data.retain_y)
  validate = train.make_validation_loss(ctx.apply_fn, ctx.loss, x, y,
                                        batch_size=ctx.predict_batch_size, dp=ctx.dp)
  return train.ensemble.per_member(validate, ctx.members)(original_variables).astype(np.float32)


def make_neggrad_loss(per_example: losses.LossFn, alpha: float) -> train.LossFn:
  """The NegGrad+ objective as a train-step loss; its frozen argument is the forget bound.

  Returns loss_fn giving (loss, {"retain_loss", "forget_loss"}), "forget_loss" being the bounded
  mean; padded rows (mask 0) count in neither term.
  """

  def loss_fn(pred, acts, batch, rng, bound):
    del acts, rng
    mask = batch["mask"].astype(jnp.float32)
    forget = mask * batch["forget"].astype(jnp.float32)
    per_row = per_example(pred, batch["y"])
    retain_loss = losses.masked_mean(per_row, mask - forget)
    forget_loss = losses.masked_mean(jnp.minimum(per_row, bound), forget)
    loss = alpha * retain_loss - (1.0 - alpha) * forget_loss
    return loss, {"retain_loss": retain_loss, "forget_loss": forget_loss}

  return loss_fn


def neggrad(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
            config: Mapping | None = None) -> base.MethodResult:
  """The original trained on every row, descending the retain loss and ascending the bounded
  forget loss; the record holds the bound (one per member of an ensemble)."""
  s = base.settings("neggrad", config, DEFAULTS, RANGES)
  bound = float(s["forget_bound"]) * reference_loss(ctx, original_variables, data)
  outcome = base.fit(
      ctx, original_variables,
      train.Objective(make_neggrad_loss(ctx.loss, float(s["alpha"])),
                      {k: s[k] for k in ("alpha", "forget_bound")}, frozen=jnp.asarray(bound)),
      data.arrays(), train.Recipe.from_settings(s), name="neggrad", augment=data.augment)
  return base.MethodResult(outcome.variables, base.record(
      outcome, forget_bound=train.ensemble.record_value(bound.tolist())))
