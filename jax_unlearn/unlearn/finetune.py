"""Fine-tuning: keep training the original model on the retain set only (Adam 1e-3, 5 epochs).

Forgetting relies on catastrophic forgetting alone; the paper's weakest baseline. `keep_best`
returns the epoch with the lowest retain-cohort validation loss, as the published code does;
the default keeps the final variables (the method's own result, not one picked on data).
"""
from typing import Mapping

from jax_unlearn import train
from jax_unlearn.unlearn import base

DEFAULTS = {"epochs": 5, "lr": 1e-3, "keep_best": False}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [3e-4, 1e-3, 3e-3], "epochs": [1, 3, 5, 10]}


def finetune(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
             config: Mapping | None = None) -> base.MethodResult:
  """The original trained on the retain rows; the final (or best-validation) variables."""
  s = base.settings("finetune", config, DEFAULTS)
  outcome = base.fit(
      ctx, original_variables, train.supervised_loss(ctx.loss), data.arrays(retain_only=True),
      train.Recipe.from_settings(s), name="finetune", augment=data.augment,
      validate=base.validation_loss(ctx, data, s["keep_best"]))
  return base.MethodResult(outcome.variables, base.record(outcome))
