"""Every metric for a set of named models, and the results table a person reads.

`evaluate_models` predicts each model once on the training and test splits and derives all its
metrics from those predictions (errors, distances, the membership attack), plus one compiled
relearning run per model for AIN. `write_markdown` renders the per-model results as one table
whose header says, per column, which direction is better.
"""
import dataclasses
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jax_unlearn import losses, train
from jax_unlearn.errors import UserError, unknown_name
from jax_unlearn.metrics import ain as ain_lib
from jax_unlearn import files
from jax_unlearn.metrics import distances, errors, mia

REQUIRED_KEYS = ("retain_train_error", "forget_train_error", "retain_test_error",
                 "forget_test_error", "wasserstein_to_retrained", "mia_forget", "ain")
METRICS = ("errors", "wasserstein", "activation_distance", "mia", "ain")
DEFAULTS = {
    "which": METRICS,
    "mia_samples": 2000,
    "mia_holdout": 0.3,
    "ain_alpha": 0.05,
    "ain_lr": 1e-3,
    "ain_batch_size": 64,
    "ain_max_epochs": 10,
    "ain_check_every": 1,
    "ain_steps_per_call": 4,  # relearning steps per compiled call (unrolled)
    "activation_layer": None,  # None: the deepest activation the model exposes.
    "predict_batch_size": 1024,
}
_COHORTS = ("retain_train", "forget_train", "retain_test", "forget_test")


@dataclasses.dataclass
class EvalData:
  """The splits every metric reads; `forget_*` are boolean row masks of their split.

  Labels are [N, D] float32; the test and validation forget cohorts may be empty.
  """
  train_x: np.ndarray
  train_y: np.ndarray
  forget_train: np.ndarray  # [N] bool
  test_x: np.ndarray
  test_y: np.ndarray
  forget_test: np.ndarray  # [M] bool
  val_x: np.ndarray
  val_y: np.ndarray
  forget_val: np.ndarray  # [V] bool

  def __post_init__(self):
    for split in ("train", "test", "val"):
      x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
      forget = np.asarray(getattr(self, f"forget_{split}"))
      if not len(x) == len(y) == len(forget):
        raise UserError(f"the {split} split has {len(x)} inputs, {len(y)} labels and "
                        f"{len(forget)} forget flags.", "give one label and flag per sample.")
      if forget.dtype != bool:
        raise UserError(f"forget_{split} must be a boolean mask, got {forget.dtype}.",
                        f"pass forget_{split}=flags.astype(bool).")
      if not np.all(np.isfinite(y)):
        raise UserError(f"the {split} labels contain NaN or infinite values.",
                        "clean or drop those samples.")
      setattr(self, f"forget_{split}", forget)
    if len(self.train_x) == 0 or len(self.test_x) == 0:
      raise UserError(f"evaluation needs training and test samples, got {len(self.train_x)} and "
                      f"{len(self.test_x)}.", "check the data splits.")
    if not self.forget_train.any():
      raise UserError("the forget set is empty.", "check the forget specification.")
    if self.forget_train.all():
      raise UserError("the forget set is the whole training set; nothing is retained.",
                      "forget a subset of the training data.")


@dataclasses.dataclass
class Evaluation:
  """Results of `evaluate_models`.

  results: model name -> metric name -> value (None where undefined, e.g. an empty cohort).
  predictions: model name -> point predictions on the forget-train rows [F, D] (for plots).
  seconds: model name -> seconds spent on that model's predictions and metrics; the retrained
    model is measured first, so its time includes compiling the relearning loop.
  info: settings every model shares: the AIN target, the activation layer, setup seconds.
  """
  results: dict[str, dict[str, Any]]
  predictions: dict[str, np.ndarray]
  seconds: dict[str, float]
  info: dict[str, Any]


def _settings(config) -> dict:
  """DEFAULTS overridden by `config` (a mapping or ml_collections.ConfigDict)."""
  settings = dict(DEFAULTS)
  if config is not None:
    for key in config.keys():
      if key not in DEFAULTS:
        raise unknown_name("metrics setting", key, DEFAULTS)
      if config[key] is not None:
        settings[key] = config[key]
  which = settings["which"]
  settings["which"] = (which,) if isinstance(which, str) else tuple(which)
  for name in settings["which"]:
    if name not in METRICS:
      raise unknown_name("metric", name, METRICS)
  for key, least in (("mia_samples", 2), ("predict_batch_size", 1)):
    if int(settings[key]) < least:
      raise UserError(f"metrics.{key} must be >= {least}, got {settings[key]}.",
                      f"raise metrics.{key}.")
  return settings


def _error_metrics(pred_train, pred_test, data: EvalData, error: str, quantiles) -> dict:
  """Errors and R^2 on the four cohorts (and the median's MAE for quantile models)."""
  masks = {"retain_train": ~data.forget_train, "forget_train": data.forget_train,
           "retain_test": ~data.forget_test, "forget_test": data.forget_test}
  splits = {"train": (pred_train, data.train_y), "test": (pred_test, data.test_y)}
  out = {}
  for split, (pred, y) in splits.items():
    cohorts = {c: m for c, m in masks.items() if c.endswith(split)}
    out.update({f"{c}_error": v for c, v in
                errors.cohort_errors(pred, y, error, cohorts, quantiles=quantiles).items()})
    if quantiles:
      out.update({f"{c}_median_mae": v for c, v in
                  errors.cohort_errors(pred, y, "mae", cohorts, quantiles=quantiles).items()})
    out.update({f"{c}_r2": errors.r2_score(pred, y, m, quantiles=quantiles)
                for c, m in cohorts.items()})
  return out


def evaluate_models(apply_fn: Callable, models: Mapping[str, Any], data: EvalData, *,
                    task_loss: Callable, error: str, quantiles: Sequence[float] | None = None,
                    config=None, seed: int = 0, mesh=None, shards: int | None = None,
                    progress: Callable | None = None) -> Evaluation:
  """Computes the chosen metrics for every named model.

  Args:
    apply_fn: the model contract `apply_fn(variables, x, *, train) -> (pred, acts)`.
    models: name -> variables; must include "original" and "retrained" (the references).
    data: the splits and forget masks.
    task_loss: per-example loss `loss(pred, y) -> [B]` (e.g. `losses.l1`): the membership
      attack's feature, and relearning's objective and forget-validation error for AIN.
    error: the reported error, one of errors.ERRORS.
    quantiles: the quantiles of a quantile model (its point forecast is the median).
    config: optional settings, keys of DEFAULTS (mia_samples, ain_alpha, which, ...).
    seed: seeds the attack's sampling and relearning's data order, the same for every model.
    mesh: data-parallel mesh for predictions and relearning.
    shards: fixed row blocks of every prediction and relearning step, for results that do not
      depend on the device count (see `train.make_train_step`).
    progress: optional `progress(iterable, description) -> iterable`, e.g. a tqdm wrapper.
  Returns:
    An Evaluation whose results hold, per model, at least REQUIRED_KEYS (None for a metric not
    computed or undefined); the retrained model's AIN is 1 by definition.
  """
  for ref in ("original", "retrained"):
    if ref not in models:
      raise UserError(f"evaluation needs a model named {ref!r}; got {', '.join(models)}.",
                      f"pass the {ref} model's variables under the name {ref!r}.")
  errors.check_error(error, quantiles)
  s = _settings(config)
  which = s["which"]
  forget, batch = data.forget_train, int(s["predict_batch_size"])
  start = time.perf_counter()
  predict_fn = train.make_predict_fn(apply_fn, mesh, shards)
  info: dict[str, Any] = {"error": error, "which": list(which)}

  relearner = None
  if "ain" in which:
    relearner = ain_lib.Relearner(apply_fn, task_loss, lr=float(s["ain_lr"]),
                                  batch_size=int(s["ain_batch_size"]),
                                  check_every=int(s["ain_check_every"]),
                                  eval_batch_size=batch,
                                  steps_per_call=int(s["ain_steps_per_call"]), mesh=mesh,
                                  shards=shards)
    if data.forget_val.any():
      relearn_eval = (data.val_x[data.forget_val], data.val_y[data.forget_val])
    else:  # e.g. a time window inside the training period: no held-out forget rows exist
      relearn_eval = (data.train_x[forget], data.train_y[forget])
      info["ain_note"] = ("no forget-validation samples: relearning is measured on the forget "
                          "training rows")
    ain_data = relearner.prepare((data.train_x, data.train_y), relearn_eval,
                                 max_epochs=int(s["ain_max_epochs"]), seed=seed)
    info["ain_original_error"] = relearner.error(models["original"], ain_data)
    info["ain_target_error"] = target = ain_lib.relearn_target(info["ain_original_error"],
                                                               float(s["ain_alpha"]))
  layer = distance_fn = None
  if "activation_distance" in which:
    names = distances.layer_names(apply_fn, models["original"], data.train_x)
    layer = s["activation_layer"] or (names[-1] if names else None)
    if layer is not None and layer not in names:
      raise unknown_name("activation layer", layer, names)
    if layer is not None:
      distance_fn = distances.make_activation_distance_fn(apply_fn, layer, mesh, shards)
  info["activation_layer"] = layer
  info["setup_seconds"] = time.perf_counter() - start

  results, predictions, seconds = {}, {}, {}
  order = ["retrained"] + [n for n in models if n != "retrained"]
  for name in (progress(order, "metrics") if progress is not None else order):
    t0 = time.perf_counter()
    variables = models[name]
    pred_train = train.predict(apply_fn, variables, data.train_x, batch_size=batch, mesh=mesh,
                               shards=shards, predict_fn=predict_fn)
    pred_test = train.predict(apply_fn, variables, data.test_x, batch_size=batch, mesh=mesh,
                              shards=shards, predict_fn=predict_fn)
    predictions[name] = np.asarray(losses.point_prediction(pred_train[forget], quantiles))
    res: dict[str, Any] = dict.fromkeys(REQUIRED_KEYS)
    if "errors" in which:
      res.update(_error_metrics(pred_train, pred_test, data, error, quantiles))
    if "wasserstein" in which:
      res["wasserstein_to_retrained"] = distances.wasserstein(predictions[name],
                                                              predictions["retrained"])
    if "activation_distance" in which:
      res["activation_distance_to_retrained"] = None if layer is None else (
          distances.model_activation_distance(
              apply_fn, variables, models["retrained"], data.train_x[forget], layer=layer,
              batch_size=batch, mesh=mesh, shards=shards, distance_fn=distance_fn))
    if "mia" in which:
      train_losses = mia.loss_values(pred_train, data.train_y, task_loss)  # [N]
      res.update(mia.membership_attack(
          train_losses[~forget], mia.loss_values(pred_test, data.test_y, task_loss),
          train_losses[forget], samples=int(s["mia_samples"]), holdout=float(s["mia_holdout"]),
          seed=seed))
    if relearner is not None:
      res["ain_steps"], res["ain_hit_cap"] = relearner.steps(variables, ain_data, target)
    results[name] = res
    seconds[name] = time.perf_counter() - t0

  if relearner is not None:
    for name, res in results.items():
      res["ain"] = 1.0 if name == "retrained" else ain_lib.anamnesis_index(
          res["ain_steps"], results["retrained"]["ain_steps"])
  ordered = list(models)
  return Evaluation({n: results[n] for n in ordered}, {n: predictions[n] for n in ordered},
                    {n: seconds[n] for n in ordered}, info)


LOWER, HIGHER, RETRAINED = "↓", "↑", "≈ retrained"
COLUMNS: dict[str, tuple[str, str]] = {
    **{f"{c}_error": (f"{c.replace('_', ' ')} error",
                      RETRAINED if c.startswith("forget") else LOWER) for c in _COHORTS},
    **{f"{c}_median_mae": (f"{c.replace('_', ' ')} median MAE",
                           RETRAINED if c.startswith("forget") else LOWER) for c in _COHORTS},
    **{f"{c}_r2": (f"{c.replace('_', ' ')} R²",
                   RETRAINED if c.startswith("forget") else HIGHER) for c in _COHORTS},
    "wasserstein_to_retrained": ("Wasserstein to retrained", LOWER),
    "activation_distance_to_retrained": ("activation distance to retrained", LOWER),
    "mia_forget": ("MIA forget", RETRAINED),
    "mia_attack_accuracy": ("MIA attack accuracy", RETRAINED),
    "mia_attack_auc": ("MIA attack AUC", RETRAINED),
    "ain": ("AIN", RETRAINED),
    "ain_steps": ("AIN relearn steps", RETRAINED),
}
DEFAULT_COLUMNS = REQUIRED_KEYS + ("mia_attack_auc",)
LEGEND = ("↓ lower is better, ↑ higher is better, ≈ retrained: closer to the retrained model "
          "is better. AIN marked (cap) hit the relearning epoch cap (a lower bound).")


def format_value(value) -> str:
  """Deterministic cell text: 4 significant digits, "n/a" for a missing value."""
  if value is None:
    return "n/a"
  if isinstance(value, (bool, np.bool_)):
    return "yes" if value else "no"
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  return f"{float(value):.4g}"


def write_markdown(results: Mapping[str, Mapping[str, Any]], path: str | None = None,
                   columns: Sequence[str] = DEFAULT_COLUMNS) -> str:
  """The results as one markdown table (rows = models, in the given order); written atomically
  to `path` if given. Returns the text."""
  header = ["model"]
  for key in columns:
    label, arrow = COLUMNS.get(key, (key, ""))
    header.append(f"{label} {arrow}".strip())
  lines = ["| " + " | ".join(header) + " |", "|:--" + "|--:" * len(columns) + "|"]
  for name, row in results.items():
    cells = [name]
    for key in columns:
      cell = format_value(row.get(key))
      if key == "ain" and row.get("ain_hit_cap"):
        cell += " (cap)"
      cells.append(cell)
    lines.append("| " + " | ".join(cells) + " |")
  text = "\n".join(lines) + "\n\n" + LEGEND + "\n"
  if path is not None:
    files.write_text(path, text)
  return text
