"""The functional training core: one state pytree, one generic jitted step, one fit loop.

Every training in the library (original model, retraining, fine-tuning, every unlearning
objective, relearning for AIN) is `fit` over `make_train_step(apply_fn, loss_fn, tx, dp)`.

  step     TrainState, optimizers, the generic step (with fixed batch blocks)
  predict  batched, jitted predictions over a DataParallel, validation losses
  loop     Recipe, Stage, fit (Validation, Watch), train_model (checkpoints, resume, stage
           fingerprints)
  ensemble K models at once: the step vmapped over a leading model axis (`train.ensemble`)
"""
from jax_unlearn.train import ensemble
from jax_unlearn.train.loop import (FitResult, NonFiniteLossError, Objective, Plateau, Recipe,
                                    Resume, Stage, TrainOutcome, Validation, Watch, changes,
                                    fingerprint, fit, train_model)
from jax_unlearn.train.predict import (PredictFn, make_predict_fn, make_row_fn,
                                       make_validation_loss, predict)
from jax_unlearn.train.step import (OPTIMIZERS, LossFn, TrainState, create_state, in_blocks,
                                    learning_rate, make_optimizer, make_train_step,
                                    make_variables, set_learning_rate, supervised_loss)

__all__ = [
    "ensemble", "FitResult", "NonFiniteLossError", "Objective", "Plateau", "Recipe", "Resume",
    "Stage", "TrainOutcome", "Validation", "Watch",
    "changes", "fingerprint", "fit", "train_model", "PredictFn", "make_predict_fn", "make_row_fn",
    "make_validation_loss", "predict", "OPTIMIZERS", "LossFn", "TrainState", "create_state",
    "in_blocks", "learning_rate", "make_optimizer", "make_train_step", "make_variables",
    "set_learning_rate", "supervised_loss",
]
