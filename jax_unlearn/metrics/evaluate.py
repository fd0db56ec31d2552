"""The evaluator: every selected metric for a set of named models, from one prediction each.

`evaluate_models` resolves the settings in one place (`settings.merge` over `base.defaults()`),
lets each selected metric `prepare` once, predicts each model once on the training and test
splits, hands every metric the model's `ModelContext`, and at the end calls each metric's
`finish` over all models. Metrics come from the registry (`base.register`), so a new metric needs
no change here.
"""
import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jax_unlearn import losses, parallel, settings as settings_lib, train
from jax_unlearn.errors import UserError
from jax_unlearn.metrics import base, errors
from jax_unlearn.metrics.base import EvalData, ModelContext, Run


@dataclasses.dataclass
class Evaluation:
  """Results of `evaluate_models`.

  results: model name -> result key -> value (None where undefined, e.g. an empty cohort).
  predictions: model name -> point predictions on the forget-train rows [F, D] (for plots).
  seconds: model name -> seconds spent on that model's predictions and metrics; the retrained
    model is measured first, so its time includes compiling the relearning loop.
  info: settings every model shares: the AIN target, the activation layer, setup seconds.
  """
  results: dict[str, dict[str, Any]]
  predictions: dict[str, np.ndarray]
  seconds: dict[str, float]
  info: dict[str, Any]


def resolve_settings(config=None) -> dict[str, Any]:
  """`base.defaults()` updated by `config` (a mapping or ConfigDict), every value checked.

  Callers may run it before any training, so a bad metrics config fails in seconds.
  """
  s = settings_lib.merge(base.defaults(), config, "metrics")
  which = s["which"]
  s["which"] = (which,) if isinstance(which, str) else tuple(which)
  for name in s["which"]:
    base.get(name, base.Metric)
  # Whether selected or not: a config is valid or it is not.
  for metric in base.registered(base.Metric):
    metric.check(s)
  return s


def evaluate_models(apply_fn: Callable, models: Mapping[str, Any], data: EvalData, *,
                    task_loss: Callable, error: str, quantiles: Sequence[float] | None = None,
                    config=None, seed: int = 0, dp: parallel.DataParallel | None = None,
                    progress: Callable | None = None) -> Evaluation:
  """Computes the selected metrics for every named model.

  Args:
    apply_fn: the model contract `apply_fn(variables, x, *, train) -> (pred, acts)`.
    models: name -> variables; must include "original" and "retrained" (the references).
    data: the splits and forget masks (and the training augmentation, `EvalData.train_augment`:
      only a metric that asks for it reads it; the membership attack with mia_members="train"
      scores augmented training rows, one extra prediction per model).
    task_loss: per-example loss `loss(pred, y) -> [B]` (e.g. `losses.l1`): the membership
      attack's feature, and relearning's objective and forget-validation error for AIN.
    error: the reported error, one of errors.ERRORS.
    quantiles: the quantiles of a quantile model (its point forecast is the median).
    config: optional settings, keys of `base.defaults()` (which, mia_samples, ain_alpha, ...).
    seed: seeds the attack's sampling and relearning's data order, the same for every model.
    dp: where predictions and relearning run; its fixed row blocks make results independent of
      the device count (see `train.make_train_step`).
    progress: optional `progress(iterable, description) -> iterable`, e.g. a tqdm wrapper.
  Returns:
    An Evaluation whose results hold, per model, at least every registered metric's required
    keys (None for a metric not selected or undefined); the retrained model's AIN is 1.
  """
  for ref in ("original", "retrained"):
    if ref not in models:
      raise UserError(f"evaluation needs a model named {ref!r}; got {', '.join(models)}.",
                      f"pass the {ref} model's variables under the name {ref!r}.")
  errors.check_error(error, quantiles)
  s = resolve_settings(config)
  selected = [m for m in base.registered(base.Metric) if m.name in s["which"]]
  start = time.perf_counter()
  dp = parallel.resolve(dp)
  run = Run(apply_fn=apply_fn, models=models, data=data, task_loss=task_loss, error=error,
            quantiles=quantiles, settings=s, seed=seed, dp=dp,
            predict_fn=train.make_predict_fn(apply_fn, dp),
            info={"error": error, "which": list(s["which"])})
  states = {m.name: m.prepare(run) for m in selected}
  run.info["setup_seconds"] = time.perf_counter() - start

  contexts: dict[str, ModelContext] = {}
  results: dict[str, dict[str, Any]] = {}
  seconds: dict[str, float] = {}
  required = base.required_keys()
  order = ["retrained"] + [n for n in models if n != "retrained"]
  for name in (progress(order, "metrics") if progress is not None else order):
    t0 = time.perf_counter()
    model = _context(run, name, contexts.get("retrained"))
    res: dict[str, Any] = dict.fromkeys(required)
    for metric in selected:
      res.update(base.checked(metric, metric.evaluate(states[metric.name], model)))
    contexts[name], results[name] = model, res
    seconds[name] = time.perf_counter() - t0

  for metric in selected:
    for name, more in metric.finish(states[metric.name], contexts, results).items():
      results[name].update(base.checked(metric, more))
  ordered = list(models)
  return Evaluation({n: results[n] for n in ordered},
                    {n: contexts[n].forget_pred for n in ordered},
                    {n: seconds[n] for n in ordered}, run.info)


def _context(run: Run, name: str, retrained: ModelContext | None) -> ModelContext:
  """The model's context from its one prediction per split."""
  variables, data = run.models[name], run.data
  pred_train = train.predict(run.predict_fn, variables, data.train_x, batch_size=run.batch_size)
  pred_test = train.predict(run.predict_fn, variables, data.test_x, batch_size=run.batch_size)
  forget_pred = np.asarray(losses.point_prediction(pred_train[data.forget_train], run.quantiles))
  model = ModelContext(name, variables, pred_train, pred_test, forget_pred, run, retrained)
  if name == "retrained":
    model.retrained = model
  return model
