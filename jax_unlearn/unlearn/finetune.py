"""Fine-tuning: keep training the original model on the retain set only (Adam 1e-3, 5 epochs).

Forgetting relies on catastrophic forgetting alone; the paper's weakest baseline.
"""
from typing import Mapping

from jax_unlearn import train
from jax_unlearn.unlearn import base

DEFAULTS = {"epochs": 5, "lr": 1e-3}


def finetune(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
             config: Mapping | None = None) -> base.MethodResult:
  """The original trained on the retain rows; the final variables are returned."""
  s = base.settings("finetune", config, DEFAULTS)
  outcome = base.fit(
      ctx, original_variables, train.supervised_loss(ctx.loss), data.arrays(retain_only=True),
      train.Recipe.from_settings(s), loss_settings={}, name="finetune", stage="unlearn",
      train_key=base.SEED_TRAIN, order_key=base.SEED_ORDER, augment=data.augment)
  return base.MethodResult(outcome.variables, base.record(outcome))
