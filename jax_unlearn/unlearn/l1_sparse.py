"""L1-sparse unlearning: fine-tune on the retain set with a decaying L1 penalty on the weights.

Jia, Liu, Ram, Yao, Liu, Liu, Sharma, Liu, "Model sparsity can simplify machine unlearning",
NeurIPS 2023 (code: github.com/OPTML-Group/Unlearn-Sparse, method "FT_prune"/"FT_l1"). The loss
is the retain task loss plus gamma_t * sum |theta| over every parameter, gamma_t decaying
linearly from `l1_gamma` to 0 over the run: sparsity first pushes the weights the retain set
does not need towards zero, then the fading penalty lets fine-tuning restore the retain fit.

Published: gamma 5e-4, 10 epochs, SGD (momentum 0.9) at lr 0.01, gamma decayed per epoch
(gamma * (1 - epoch / epochs)). Here the decay is per step, gamma * (1 - step / steps) with
steps = epochs x batches per epoch of the retain rows, and the optimizer Adam at 1e-3 (the
library's fine-tuning recipe): momentum SGD's step size does not carry over to Adam. With Adam
the penalty acts through the direction of the total gradient (Adam normalises its scale per
weight): a weight whose task gradient is small next to gamma moves towards zero at about lr per
step. The penalty competes with the task loss, whose scale in regression is that of the labels
(squared, for MSE): gamma 5e-4 was set next to a cross-entropy of order 1, so rescaled labels
call for a rescaled gamma.
"""
import math
from typing import Mapping

import jax
import jax.numpy as jnp

from jax_unlearn import train
from jax_unlearn.unlearn import base

DEFAULTS = {"epochs": 10, "lr": 1e-3, "l1_gamma": 5e-4}
# Bounded settings: name -> (low, high, low_open), checked with the others (base.settings).
RANGES = {"l1_gamma": (0.0, math.inf, False)}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [3e-4, 1e-3, 3e-3], "epochs": [5, 10],
                "l1_gamma": [1e-4, 5e-4, 2e-3]}


def l1_weight(step: jax.Array, gamma: float, total_steps: int) -> jax.Array:
  """gamma_t = gamma * (1 - step / total_steps), 0 from the last step on."""
  return gamma * jnp.maximum(1.0 - step / total_steps, 0.0)


def l1_penalty_hook(gamma: float, total_steps: int):
  """The train step's `param_hook` adding gamma_t * sum |theta| (no frozen pytree)."""

  def hook(params, frozen, step):
    del frozen
    norm = sum(jnp.sum(jnp.abs(p)) for p in jax.tree_util.tree_leaves(params))
    return params, l1_weight(step, gamma, total_steps) * norm

  return hook


def l1_sparse(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
              config: Mapping | None = None) -> base.MethodResult:
  """The original fine-tuned on the retain rows under a linearly decaying L1 penalty."""
  s = base.settings("l1_sparse", config, DEFAULTS, RANGES)
  gamma = float(s["l1_gamma"])
  total_steps = s["epochs"] * math.ceil(int((~data.forget).sum()) / s["batch_size"])
  outcome = base.fit(
      ctx, original_variables,
      train.Objective(train.supervised_loss(ctx.loss), {"l1_gamma": gamma, "l1_steps": total_steps},
                      param_hook=l1_penalty_hook(gamma, total_steps)),
      data.arrays(retain_only=True), train.Recipe.from_settings(s), name="l1_sparse",
      augment=data.augment)
  return base.MethodResult(outcome.variables, base.record(outcome, l1_steps=total_steps))
