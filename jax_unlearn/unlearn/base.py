"""What every unlearning method takes and returns, and the helpers they share.

A method is `method(ctx, original_variables, data, config) -> MethodResult`: `ctx` says how to run
the model (any apply function, an init function for fresh models of the same architecture, the
task's per-example loss, the run's key, the parallel context, where to checkpoint), `data` the
training rows with the forget mask and the retain-cohort validation rows, `config` the method's
settings (its module's DEFAULTS over COMMON_DEFAULTS; see `settings`).
"""
import dataclasses
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np

from jax_unlearn import checkpoint, parallel, settings as settings_lib, train
from jax_unlearn.data import records
from jax_unlearn.errors import UserError

# Per-purpose constants folded into the run's key: one independent stream per use.
PURPOSE_INIT = 1
PURPOSE_TRAIN = 2
PURPOSE_ORDER = 3
PURPOSE_LABELS = 4
PURPOSE_BLINDSPOT_INIT = 5
PURPOSE_BLINDSPOT_TRAIN = 6
PURPOSE_BLINDSPOT_ORDER = 7

# Settings every method understands, with their defaults: the recipe of its training stages.
COMMON_DEFAULTS = {"epochs": 1, "batch_size": 64, "lr": 1e-3, "clip_norm": None,
                   "optimizer": "adam"}


def _check_finite(name: str, y: np.ndarray) -> None:
  if not np.all(np.isfinite(y)):
    bad = int(np.size(y) - np.count_nonzero(np.isfinite(y)))
    raise UserError(f"{name} contain {bad} NaN or infinite value(s).",
                    "drop or impute those rows before unlearning.")


@dataclasses.dataclass
class UnlearnData:
  """The training set with its forget mask, and validation rows of the retain cohort.

  Attributes:
    x, y: every training row (numpy), y float [N, D].
    forget: bool [N], True for the rows to forget.
    val_x, val_y: validation rows of the retain cohort, for best-checkpoint selection (may be
      empty, then the final model is kept).
    augment: optional host-side augmentation of "x" for the loaders (see data.loader).
    group: optional [N] group ids of the training rows (a person, a customer), for methods
      that keep a group's rows together (sisa).
  """
  x: np.ndarray
  y: np.ndarray
  forget: np.ndarray
  val_x: np.ndarray
  val_y: np.ndarray
  augment: Callable | None = None
  group: np.ndarray | None = None

  def __post_init__(self):
    self.x, self.y = records.as_rows(self.x), np.asarray(self.y, np.float32)
    self.val_x, self.val_y = records.as_rows(self.val_x), np.asarray(self.val_y, np.float32)
    forget = np.asarray(self.forget)
    n = len(self.x)
    if len(self.y) != n:
      raise UserError(f"training inputs and labels differ in length: {n} vs {len(self.y)}.",
                      "give one label row per training sample.")
    if len(self.val_x) != len(self.val_y):
      raise UserError(f"validation inputs and labels differ in length: {len(self.val_x)} vs "
                      f"{len(self.val_y)}.", "give one label row per validation sample.")
    if forget.shape != (n,):
      raise UserError(
          f"forget set not contained in the training set: the forget mask has shape "
          f"{forget.shape}, the training set {n} rows.",
          "give a boolean mask with one entry per training row.")
    if forget.dtype != bool:
      if not np.all(np.isin(forget, (0, 1))):
        raise UserError("the forget mask must be boolean (or 0/1), one entry per training row.",
                        "pass e.g. y[:, 0] > threshold, not indices.")
      forget = forget.astype(bool)
    self.forget = forget
    if not forget.any():
      raise UserError("the forget set is empty: no training row is marked to forget.",
                      "check the forget specification (label range, groups, indices).")
    if forget.all():
      raise UserError("the retain set is empty: every training row is marked to forget.",
                      "forget a strict subset of the training set.")
    if self.group is not None and len(self.group) != n:
      raise UserError(f"the group ids have {len(self.group)} rows, the training set {n}.",
                      "give one group id per training row.")
    _check_finite("training labels", self.y)
    _check_finite("validation labels", self.val_y)

  @property
  def retain_x(self) -> np.ndarray:
    return self.x[~self.forget]

  @property
  def retain_y(self) -> np.ndarray:
    return self.y[~self.forget]

  def arrays(self, *, retain_only: bool = False, forget_only: bool = False,
             y: np.ndarray | None = None) -> dict:
    """Loader arrays: the retain rows, the forget rows, or every row with its "forget" flag
    (and labels `y`)."""
    if retain_only:
      return {"x": self.retain_x, "y": self.retain_y}
    if forget_only:
      return {"x": self.x[self.forget], "y": self.y[self.forget]}
    return {"x": self.x, "y": self.y if y is None else y,
            "forget": self.forget.astype(np.float32)}


@dataclasses.dataclass
class Context:
  """How to run the model and where a method keeps its state.

  Attributes:
    apply_fn: the model contract `apply_fn(variables, x, *, train, rngs=None) -> (pred, acts)`.
    init_fn: rng -> fresh variables of the original's architecture (retraining, blindspot).
    loss: the task's per-example loss (pred, y) -> [B].
    rng: the method's keys, [K]; every random choice is folded from them.
    dp: where and how to run in parallel (None: one device).
    checkpoint_dir: this method's directory; each stage checkpoints in a subdirectory, so a
      rerun reuses finished stages (of the same fingerprint) and resumes unfinished ones.
    identity: what determines the method's result that its stages cannot see themselves (model
      and data configuration); each stage adds the method's settings (`train.train_model`).
    progress: progress-bar factory passed to `train.train_model`.
    predict_batch_size: rows per prediction call (validation losses).

  A method runs on K models at once: `rng` holds K keys, one per member; the variables it
  receives and returns are stacked with a leading member axis K (`train.ensemble.one` makes a
  lone model an ensemble of one), and every stage trains the K members at once, member k as a
  lone run of key k.
  """
  apply_fn: Callable
  init_fn: Callable[[jax.Array], dict]
  loss: Callable
  rng: jax.Array
  dp: parallel.DataParallel | None = None
  checkpoint_dir: str | None = None
  identity: Mapping[str, Any] | None = None
  progress: Callable | None = None
  predict_batch_size: int = 512

  def __post_init__(self):
    if np.ndim(self.rng) != 1:
      raise UserError(f"a method's Context needs one key per member ([K] keys), got keys of "
                      f"shape {np.shape(self.rng)}.",
                      "stack them, e.g. jax.random.key(0)[None] for one model.")

  @property
  def members(self) -> int:
    """K, the models the method runs on at once."""
    return len(self.rng)

  def key(self, purpose: int) -> jax.Array:
    """The [K] keys of one purpose."""
    return train.ensemble.fold_in(self.rng, purpose)

  def seed(self, purpose: int) -> list[int]:
    """K host integer seeds (data order) drawn from the members' keys."""
    return [int(jax.random.randint(key, (), 0, 2**31 - 1)) for key in self.key(purpose)]

  def each(self, fn: Callable[[jax.Array], Any], purpose: int) -> list:
    """`fn(key_k)` of each member's key of the purpose (e.g. its own relabelled arrays)."""
    return [fn(key) for key in self.key(purpose)]

  def stage_dir(self, stage: str) -> str | None:
    return os.path.join(self.checkpoint_dir, stage) if self.checkpoint_dir else None


@dataclasses.dataclass
class MethodResult:
  """Unlearned variables and a JSON-able record ("steps", "seconds" and method entries).

  `auxiliary`: models the method built on the way (e.g. the blindspot model), by name, so the
  evaluation can report them too.
  """
  variables: dict
  record: dict
  auxiliary: dict = dataclasses.field(default_factory=dict)


# A method's bounded settings: name -> (low, high, low_open), see `settings`.
Ranges = Mapping[str, tuple[float, float, bool]]


def settings(method: str, config: Mapping | None, defaults: Mapping,
             ranges: Ranges | None = None) -> dict:
  """The method's settings: `defaults` (over COMMON_DEFAULTS) updated by the set values of
  `config`; unknown keys and values out of range (counts, rates, and the method's own `ranges`:
  key -> (low, high, low_open), [low, high] or (low, high]) raise a UserError."""
  where = f"methods.{method}"
  out = settings_lib.merge({**COMMON_DEFAULTS, **defaults}, config, where)
  for key, (low, high, low_open) in (ranges or {}).items():
    out[key] = settings_lib.check_number(out, where, key, low, high, low_open=low_open)
  out["clip_norm"] = out["clip_norm"] or None
  return out


def frozen_prediction(apply_fn: Callable, variables, x: jax.Array) -> jax.Array:
  """A frozen model's evaluation-mode prediction (BatchNorm running statistics), no gradient."""
  return jax.lax.stop_gradient(apply_fn(variables, x, train=False)[0])


def capped_recipe(s: Mapping, rows: int, **changes) -> train.Recipe:
  """The recipe of a pass over `rows` rows, its batch at most that many: forget sets are often
  smaller than the batch of the original training, which the setting inherits."""
  return train.Recipe.from_settings(s, batch_size=min(int(s["batch_size"]), rows), **changes)


def fresh_variables(ctx: Context, original_variables: Mapping, purpose: int, what: str) -> dict:
  """init_fn(fresh key) of every member's key, stacked, checked to have the original's parameter
  structure."""
  variables = dict(train.ensemble.init_members(lambda key: dict(ctx.init_fn(key)),
                                               ctx.key(purpose)))
  check_same_architecture(original_variables, variables, what)
  return variables


def check_same_architecture(original: Mapping, other: Mapping, what: str) -> None:
  if checkpoint.fingerprint(original["params"]) != checkpoint.fingerprint(other["params"]):
    raise UserError(f"the {what} has another architecture than the original model "
                    "(parameter names, shapes or dtypes differ).",
                    "build it with the original's model settings (same init_fn).")


def validation_loss(ctx: Context, data: UnlearnData, keep_best: bool = True) -> Callable | None:
  """variables -> mean task loss on the retain-cohort validation rows, for the best-checkpoint
  selection of a stage (None without rows, or when the stage keeps its final variables)."""
  if len(data.val_x) == 0 or not keep_best:
    return None
  return train.make_validation_loss(ctx.apply_fn, ctx.loss, data.val_x, data.val_y,
                                    batch_size=ctx.predict_batch_size, dp=ctx.dp)


def fit(ctx: Context, variables: Mapping, objective: train.Objective | Callable,
        arrays: Mapping[str, np.ndarray], recipe: train.Recipe, *, name: str,
        stage: str = "unlearn", purposes: tuple[int, int] = (PURPOSE_TRAIN, PURPOSE_ORDER),
        augment=None, validate=None) -> train.TrainOutcome:
  """`train.train_model` of a method's stage: its keys from the run's key (`purposes`: of the
  step's key and of the data order), checkpointed in the stage directory `stage`; `name` labels
  its messages and progress bar."""
  identity = {**dict(ctx.identity or {}), "stage": stage, "validated": validate is not None}
  train_key, order_key = purposes
  return train.train_model(
      ctx.apply_fn, variables, objective, arrays, recipe, rng=ctx.key(train_key),
      seeds=ctx.seed(order_key), dp=ctx.dp, validate=validate, augment=augment,
      stage=train.Stage(name, ctx.stage_dir(stage), identity, ctx.progress))


def record(outcome: train.TrainOutcome, **extra) -> dict:
  """The method's JSON record: steps, seconds, whether its stages were reused, best val loss."""
  rec = {"steps": int(outcome.steps), "seconds": float(outcome.seconds),
         "reused": bool(outcome.reused)}
  vals = [h["val_loss"] for h in outcome.history if "val_loss" in h]
  if vals:  # one per member of several
    best = np.min(np.asarray(vals, np.float64), axis=0)
    rec["best_val_loss"] = float(best) if best.ndim == 0 else best.tolist()
  rec.update(extra)
  return rec
