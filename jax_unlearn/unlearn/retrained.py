"""Retraining from scratch on the retain set: the gold reference every method is compared to.

The original training recipe (the paper's code): Adam lr 0.01, learning rate x0.1 after 10
epochs without improvement of the retain-cohort validation loss, best-validation variables kept.
"""
from typing import Mapping

from jax_unlearn import published, train
from jax_unlearn.unlearn import base

# The published recipe (one place: `published.TRAIN_RECIPE`); its batch size is the base
# config's `train.batch_size`, its optimizer every method's default.
DEFAULTS = {k: published.TRAIN_RECIPE[k]
            for k in ("epochs", "lr", "plateau_factor", "plateau_patience")}


def retrained(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
              config: Mapping | None = None) -> base.MethodResult:
  """A fresh model of the original's architecture trained on the retain rows only."""
  s = base.settings("retrained", config, DEFAULTS)
  variables = base.fresh_variables(ctx, original_variables, base.PURPOSE_INIT, "retrained model")
  outcome = base.fit(
      ctx, variables, train.supervised_loss(ctx.loss), data.arrays(retain_only=True),
      train.Recipe.from_settings(s), name="retrained", augment=data.augment,
      validate=base.validation_loss(ctx, data))
  return base.MethodResult(outcome.variables, base.record(outcome))
