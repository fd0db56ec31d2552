"""SalUn: random-label unlearning restricted to the weights most salient to the forget set.

Fan, Liu, Zhang, Wei, Wong, Liu, "SalUn: empowering machine unlearning via gradient-based
weight saliency in both image classification and generation", ICLR 2024
(code: github.com/OPTML-Group/Unlearn-Saliency).

The saliency of a weight is |gradient of the forget loss| at the original weights; the mask
holds the `sparsity` share of all weights with the largest saliency, one threshold over every
parameter array (global, as the published mask, whose default share is 0.5). The original is
then trained on every row with the forget rows relabelled, updating masked weights only: the
other weights get zero gradients (`importance.scale_gradients`), so with a fresh optimizer
state they keep their values exactly.

Regression: random labels become Gaussian draws from the labels' mean and standard deviation
(`gaussian.gaussian_labels`, drawn once, per member for an ensemble), the regression analogue
of SalUn's random labelling that the gaussian method also uses; retain and relabelled forget
rows are shuffled together (the published CIFAR-100 loop). The published recipe trains 10
epochs of SGD (momentum 0.9) at lr 0.1; the step size of momentum SGD does not carry over to
Adam, so the learning rate is the gaussian method's Adam 1e-3, with the published 10 epochs.
The published mask is computed while the model takes SGD steps on the negated forget loss;
here it is the gradient at the original weights, as the paper defines it. The record gives the
masked share, "masked_fraction".
"""
from typing import Mapping

import jax
import jax.numpy as jnp

from jax_unlearn import train
from jax_unlearn.unlearn import base, gaussian, importance

DEFAULTS = {"epochs": 10, "lr": 1e-3, "sparsity": 0.5, "keep_best": False}
# Bounded settings: name -> (low, high, low_open), checked with the others (base.settings).
RANGES = {"sparsity": (0.0, 1.0, True)}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [3e-4, 1e-3, 3e-3], "epochs": [3, 10], "sparsity": [0.3, 0.5, 0.7]}


def saliency_mask(saliency, share: float):
  """1.0 on the `share` of all entries of the pytree with the largest values, 0.0 elsewhere
  (one global ranking over every array; ties: the earlier entry)."""
  leaves, treedef = jax.tree_util.tree_flatten(saliency)
  flat = jnp.concatenate([a.ravel() for a in leaves])
  chosen = importance.top_mask(flat, int(flat.size * share))
  ends = [0]
  for a in leaves:
    ends.append(ends[-1] + a.size)
  return jax.tree_util.tree_unflatten(treedef, [
      chosen[start:end].reshape(a.shape).astype(a.dtype)
      for a, start, end in zip(leaves, ends[:-1], ends[1:])])


def salun(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
          config: Mapping | None = None) -> base.MethodResult:
  """The original trained on Gaussian-relabelled forget rows and the retain rows, updating only
  the weights most salient to the forget loss."""
  s = base.settings("salun", config, DEFAULTS, RANGES)
  share = float(s["sparsity"])
  gradient, mask_seconds = importance.gradient_statistic(
      ctx, original_variables, data.arrays(forget_only=True),
      importance.task_objective(ctx.loss), batch_size=s["batch_size"], squared=False)
  mask = train.ensemble.over_members(lambda g: saliency_mask(
      jax.tree_util.tree_map(jnp.abs, g), share), ctx.members)(gradient)
  arrays = ctx.each(lambda key: data.arrays(y=gaussian.gaussian_labels(data.y, data.forget, key)),
                    base.PURPOSE_LABELS)
  outcome = base.fit(
      ctx, original_variables,
      train.Objective(train.supervised_loss(ctx.loss), {"sparsity": share}, frozen=mask,
                      param_hook=importance.gradient_scale_hook),
      arrays, train.Recipe.from_settings(s), name="salun", augment=data.augment,
      validate=base.validation_loss(ctx, data, s["keep_best"]))
  rec = base.record(outcome, masked_fraction=importance.member_mean(mask, ctx.members),
                    mask_seconds=float(mask_seconds))
  rec["seconds"] += rec["mask_seconds"]
  return base.MethodResult(outcome.variables, rec)
