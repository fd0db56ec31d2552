"""What a metric is, what it is handed, and the one registry of everything that evaluates models.

The registry holds the evaluator's metrics (`Metric`, one model at a time) and the audits
(`audit.Audit`, every member of every ensemble at once) in one namespace: names, settings, result
keys and columns never clash, and the tables find every column's label and direction here.

A metric declares its name, its own settings with their defaults, the result keys it reports
and the table columns that show them; the evaluator (`evaluate.evaluate_models`) calls its hooks:

  prepare(run)                      once, before any model: shared state (compiled functions,
                                    targets), returned and handed back to the other hooks
  evaluate(state, model)            per model: a dict of results from its `ModelContext`
  finish(state, models, results)    once, over all models: results that need every model
                                    (AIN divides by the retrained model's steps)

Every `ModelContext` stays alive until `finish`, with the model's predictions and per-sample
losses on both splits, so a metric over many models (e.g. an attack calibrated on all of them)
reads per-sample values rather than a summary. `register` adds a metric or an audit of your own;
the built-in ones are registered by `builtin`.
"""
import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax.numpy as jnp
import numpy as np

from jax_unlearn import parallel, train
from jax_unlearn.errors import UserError, unknown_name

LOWER, HIGHER, RETRAINED, TO_NULL = "↓", "↑", "≈ retrained", "→ null"
# Where a column appears in the default table: not at all, in the headline group, or after it.
HIDDEN, HEADLINE, DETAIL = 0, 1, 2
# The evaluator's own settings; metrics add theirs (their `defaults`).
EVALUATOR_DEFAULTS = {"which": None, "predict_batch_size": 1024}


@dataclasses.dataclass(frozen=True)
class Column:
  """One table column: a result key, its label, and which direction is better.

  `mark(row) -> str` appends to the cell (e.g. " (cap)"); `note` explains it in the legend.
  """
  key: str
  label: str
  direction: str = ""
  show: int = HIDDEN
  mark: Callable[[Mapping[str, Any]], str] | None = None
  note: str | None = None


@dataclasses.dataclass
class EvalData:
  """The splits every metric reads; `forget_*` are boolean row masks of their split.

  Labels are [N, D] float32; the test and validation forget cohorts may be empty.
  `train_augment` is the training augmentation `augment(x, rng) -> x` (see `data.augment_for`),
  for a metric that scores training rows as training saw them (the membership attack with
  mia_members="train"); None when training did not augment or the caller did not pass it.
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
  train_augment: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None

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
class Run:
  """What every model of one evaluation shares; `prepare` reads it, `info` collects settings
  every model shares (e.g. AIN's target) for `Evaluation.info`."""
  apply_fn: Callable
  models: Mapping[str, Any]  # name -> variables, "original" and "retrained" included
  data: EvalData
  task_loss: Callable  # per-example loss(pred, y) -> [B]
  error: str
  quantiles: Sequence[float] | None
  settings: Mapping[str, Any]  # every setting, resolved and checked
  seed: int
  dp: parallel.DataParallel
  predict_fn: train.PredictFn  # the model's predictions, compiled once for every model
  info: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def batch_size(self) -> int:
    """Rows per prediction call: one compiled shape for every split and model."""
    return self.settings["predict_batch_size"]


def loss_values(pred: np.ndarray, y: np.ndarray, loss: Callable) -> np.ndarray:
  """Per-example `loss` of predictions [N, ...] against labels [N, ...] as float64 [N]."""
  if len(pred) == 0:
    return np.zeros(0)
  return np.asarray(loss(jnp.asarray(pred), jnp.asarray(y)), np.float64)


@dataclasses.dataclass(eq=False)
class ModelContext:
  """One model's view for `evaluate` and `finish`, from one prediction per split.

  Attributes:
    name, variables: the model.
    pred_train, pred_test: [N, ...] and [M, ...] predictions as the model outputs them (a quantile
      model's [.., Q] included).
    forget_pred: [F, D] point predictions on the forget-train rows.
    run: what every model shares (data, settings, task loss, seed, ...).
    retrained: the retrained model's context (itself for the retrained model); the evaluator
      measures the retrained model first.
  """
  name: str
  variables: Any = dataclasses.field(repr=False)
  pred_train: np.ndarray = dataclasses.field(repr=False)
  pred_test: np.ndarray = dataclasses.field(repr=False)
  forget_pred: np.ndarray = dataclasses.field(repr=False)
  run: Run = dataclasses.field(repr=False)
  retrained: "ModelContext | None" = dataclasses.field(default=None, repr=False)

  @property
  def data(self) -> EvalData:
    return self.run.data

  @property
  def settings(self) -> Mapping[str, Any]:
    return self.run.settings

  @property
  def seed(self) -> int:
    return self.run.seed

  @property
  def task_loss(self) -> Callable:
    return self.run.task_loss

  @functools.cached_property
  def train_losses(self) -> np.ndarray:
    """[N] float64 task loss per training row, computed once for every metric that reads it."""
    return loss_values(self.pred_train, self.run.data.train_y, self.run.task_loss)

  @functools.cached_property
  def test_losses(self) -> np.ndarray:
    """[M] float64 task loss per test row."""
    return loss_values(self.pred_test, self.run.data.test_y, self.run.task_loss)


class Metric:
  """A metric of the evaluator; subclass it, set the class attributes, override the hooks.

  Attributes:
    name: the name `which` selects it by.
    defaults: its own settings (one flat namespace with every other metric's, e.g. "mia_samples")
      with their defaults.
    keys: every result key it may report.
    required: keys every model's results hold even when the metric is not selected (None then).
    columns: its table columns.
  A metric object holds no state of an evaluation (that is what `prepare` returns), so one
  registered object serves every evaluation.
  """
  kind = "metric"
  name: str = ""
  defaults: Mapping[str, Any] = {}
  keys: tuple[str, ...] = ()
  required: tuple[str, ...] = ()
  columns: tuple[Column, ...] = ()

  def check(self, settings: Mapping[str, Any]) -> None:
    """Raises a UserError for a bad value of one of its settings (beyond `settings.merge`)."""

  def prepare(self, run: Run) -> Any:
    """Shared state for every model (compiled functions, targets); None by default."""
    return None

  def evaluate(self, state: Any, model: ModelContext) -> Mapping[str, Any]:
    """This model's results (keys of `keys`)."""
    raise NotImplementedError

  def finish(self, state: Any, models: Mapping[str, ModelContext],
             results: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    """model name -> further results, computed over all models; none by default."""
    del state, models, results
    return {}


# name -> a `Metric` or an `audit.Audit`; both declare `kind`, `name`, `defaults`, `keys`,
# `required` and `columns`.
_REGISTRY: dict[str, Any] = {}


def _clashes(entry, other) -> set[str]:
  return ((set(entry.defaults) & set(other.defaults)) | (set(entry.keys) & set(other.keys))
          | ({c.key for c in entry.columns} & {c.key for c in other.columns}))


def register(entry, *, replace: bool = False):
  """Adds a metric or an audit (after those registered before, which fixes its place in results
  and tables) and returns it.

  Its name, settings, result keys and columns must not clash with another entry's: they share
  one namespace. `replace=True` swaps an entry of the same name in place.
  """
  name, kind = entry.name, entry.kind
  if not isinstance(name, str) or not name.isidentifier():
    raise UserError(f"a {kind} needs a name that is an identifier, got {name!r}.",
                    f"set the class attribute `name`, e.g. name = 'my_{kind}'.")
  if name in _REGISTRY and not replace:
    raise UserError(f"a {_REGISTRY[name].kind} named {name!r} is already registered.",
                    "choose another name, or pass replace=True.")
  unreported = (set(entry.required) | {c.key for c in entry.columns}) - set(entry.keys)
  if unreported:
    raise UserError(f"{kind} {name!r} requires or shows keys it does not report: "
                    f"{', '.join(sorted(unreported))}.", "list every such key in `keys` too.")
  own = set(EVALUATOR_DEFAULTS) & set(entry.defaults)
  for other in _REGISTRY.values():
    if other.name != name:
      own |= _clashes(entry, other)
  if own:
    raise UserError(f"{kind} {name!r} reuses names of another metric, audit or the evaluator: "
                    f"{', '.join(sorted(own))}.", f"prefix them with {name + '_'!r}.")
  _REGISTRY[name] = entry
  return entry


def checked(entry, values: Mapping[str, Any]) -> Mapping[str, Any]:
  """`values`, if every key is one `entry` (a metric or an audit) declares: declared keys are
  what the registry keeps from colliding."""
  extra = set(values) - set(entry.keys)
  if extra:
    raise ValueError(f"{entry.kind} {entry.name!r} reported undeclared keys {sorted(extra)}; "
                     "list them in its `keys`")
  return values


def unregister(name: str):
  """Removes the metric or audit `name` and returns it."""
  return _REGISTRY.pop(get(name).name)


def registered(kind: type | None = None) -> tuple:
  """Every registered entry (of class `kind`, when given), in registration order."""
  return tuple(e for e in _REGISTRY.values() if kind is None or isinstance(e, kind))


def get(name: str, kind: type | None = None):
  """The entry `name`; with `kind`, an error unless it is one (e.g. an audit where a metric is
  expected)."""
  known = {e.name: e for e in registered(kind)}
  if name not in known:
    raise unknown_name(kind.kind if kind is not None else "metric or audit", name, known)
  return known[name]


def names(kind: type | None = None) -> tuple[str, ...]:
  """Every registered entry's name (of class `kind`), in registration (= evaluation and table)
  order."""
  return tuple(e.name for e in registered(kind))


def defaults() -> dict[str, Any]:
  """Every setting of the evaluator (`which`: every registered metric; `predict_batch_size`) and
  of every registered metric, with its default: metric configs are built from this."""
  out = dict(EVALUATOR_DEFAULTS, which=names(Metric))
  for metric in registered(Metric):
    out.update(metric.defaults)
  return out


def required_keys() -> tuple[str, ...]:
  """Keys every model's results hold, in registration order."""
  return tuple(k for m in registered(Metric) for k in m.required)


def columns() -> dict[str, Column]:
  """result key -> its column, for every registered metric and audit."""
  return {c.key: c for m in _REGISTRY.values() for c in m.columns}


def default_columns() -> tuple[str, ...]:
  """Keys of the default table: headline columns, then detail columns, each in registry order."""
  shown = [c for c in columns().values() if c.show != HIDDEN]
  return tuple(c.key for c in sorted(shown, key=lambda c: c.show))
