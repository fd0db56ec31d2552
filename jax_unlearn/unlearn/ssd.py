"""Selective synaptic dampening (SSD) and its label-free variant (LFSSD): unlearning without
training, by shrinking the weights the forget set relies on far more than the training set.

SSD: Foster, Schoepf, Brintrup, "Fast machine unlearning without retraining through selective
synaptic dampening", AAAI 2024 (code: github.com/if-loops/selective-synaptic-dampening).
LFSSD: Foster, Schoepf, Brintrup, "Loss-free machine unlearning", ICLR 2024 Tiny Papers.

Each parameter's importance is measured on every training row (I_D) and on the forget rows
(I_f); a parameter with I_f > alpha * I_D is multiplied by min(lambda * I_D / I_f, 1).

  ssd    I = mean over batches of the squared gradient of the batch's mean task loss (the
         diagonal of the empirical Fisher), as the published code with its cross-entropy
         replaced by the task loss (L1, MSE, pinball: whatever `ctx.loss` is).
  lfssd  I = mean over batches of the absolute gradient of the batch's mean squared L2 norm of
         the output (memory aware synapses), as the published code: no labels are read, so
         the same definition serves classifiers and regressors.

Regression: a small model whose weights all serve every row may have no weight ten times more
important to the forget rows, and then SSD changes nothing (the toy of the tests). The output
norm grows with the prediction's magnitude, so for a forget set of larger-than-usual targets
LFSSD finds weights that every row uses important to it, and dampening them costs the retain
fit as much as the forget fit.

Both share DEFAULTS, the published ones: selection weighting (alpha) 10, dampening constant
(lambda) 1, batches of 128 rows (both loaders of the published runs). As published, only
parameters are dampened; BatchNorm running statistics are left as they are. The record gives
the share of parameters dampened, "dampened_fraction" (one per member for an ensemble).
"""
import math
import time
from typing import Callable, Mapping

import jax
import jax.numpy as jnp

from jax_unlearn.unlearn import base, importance

DEFAULTS = {"batch_size": 128, "selection_weighting": 10.0, "dampening_constant": 1.0}
# Bounded settings: name -> (low, high, low_open), checked with the others (base.settings).
RANGES = {"selection_weighting": (0.0, math.inf, True),
          "dampening_constant": (0.0, math.inf, False)}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"selection_weighting": [1.0, 3.0, 10.0, 30.0],
                "dampening_constant": [0.1, 0.5, 1.0]}


def dampen(params, full_importance, forget_importance, selection_weighting: float,
           dampening_constant: float) -> tuple[dict, dict]:
  """(dampened params, boolean mask of the selected ones); elementwise, so the stacked pytrees
  of an ensemble are dampened member by member."""
  selected = jax.tree_util.tree_map(lambda full, forget: forget > selection_weighting * full,
                                    full_importance, forget_importance)

  def one(p, full, forget, chosen):
    factor = jnp.minimum(dampening_constant * full / jnp.where(chosen, forget, 1.0), 1.0)
    return jnp.where(chosen, p * factor, p).astype(p.dtype)

  return (jax.tree_util.tree_map(one, params, full_importance, forget_importance, selected),
          selected)


def _selective_dampening(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
                         s: Mapping, importance_of: Callable) -> base.MethodResult:
  """Dampening by `importance_of(arrays) -> (importance pytree, seconds)` of the two row sets."""
  t0 = time.perf_counter()
  alpha = float(s["selection_weighting"])
  lam = float(s["dampening_constant"])
  full, _ = importance_of(data.arrays())
  forget, _ = importance_of(data.arrays(forget_only=True))
  params, selected = dampen(original_variables["params"], full, forget, alpha, lam)
  variables = {**original_variables, "params": params}
  jax.block_until_ready(variables)
  return base.MethodResult(variables, {
      "steps": 0, "seconds": time.perf_counter() - t0, "reused": False,
      "dampened_fraction": importance.member_mean(selected, ctx.members)})


def ssd(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
        config: Mapping | None = None) -> base.MethodResult:
  """The original with the weights specialised to the forget rows dampened (task-loss Fisher)."""
  s = base.settings("ssd", config, DEFAULTS, RANGES)
  objective = importance.task_objective(ctx.loss)
  return _selective_dampening(
      ctx, original_variables, data, s,
      lambda arrays: importance.gradient_statistic(ctx, original_variables, arrays, objective,
                                                   batch_size=s["batch_size"], squared=True))


def lfssd(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
          config: Mapping | None = None) -> base.MethodResult:
  """As `ssd`, importances from the output norm's gradient instead of the loss's (no labels)."""
  s = base.settings("lfssd", config, DEFAULTS, RANGES)
  return _selective_dampening(
      ctx, original_variables, data, s,
      lambda arrays: importance.gradient_magnitude(ctx, original_variables, arrays,
                                                   importance.squared_output_norm,
                                                   batch_size=s["batch_size"]))
