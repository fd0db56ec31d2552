"""The training loop: `fit` runs epochs of the one step; `train_model` adds checkpoints, resume,
reuse of a finished stage, and its fingerprint.

A stage's fingerprint covers everything that determines its result: the recipe, the data order
seed and key, the arrays it trains on, the variables it starts from, the frozen arguments, the
fixed batch blocks, and what the caller declares (`Stage.identity`: loss settings, model and
data configuration). A checkpoint whose fingerprint differs is discarded and the stage recomputed,
with the changed entries in the log; so a stage that starts from a recomputed one is recomputed
too, as its starting variables differ.
"""
import dataclasses
import hashlib
import itertools
import json
import logging
import math
import signal
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import events, parallel, settings
from jax_unlearn.data import records
from jax_unlearn.errors import UserError
from jax_unlearn.train import scan as scan_lib
from jax_unlearn.train.step import (LossFn, TrainState, create_state, learning_rate,
                                    make_optimizer, make_train_step, set_learning_rate)

log = logging.getLogger("jax_unlearn")


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How a model is trained: the settings every training stage shares.

  `plateau_factor` None keeps the learning rate constant; otherwise it is multiplied by the
  factor after `plateau_patience` epochs without improvement of the validation loss.
  """
  epochs: int
  batch_size: int
  lr: float
  optimizer: str = "adam"
  clip_norm: float | None = None
  plateau_factor: float | None = None
  plateau_patience: int = 10
  # Epochs as one compiled program where the rows allow it (`train.scan`); the same batches and
  # updates as one call per batch, so it is not part of a stage's fingerprint.
  scan: bool = True

  def __post_init__(self):
    settings.check_ranges(dataclasses.asdict(self), "train")

  @classmethod
  def from_settings(cls, s: Mapping[str, Any], **changes) -> "Recipe":
    """The recipe fields of a method's (or the config's) settings, with `changes` applied."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in {**s, **changes}.items() if k in names}
    values["clip_norm"] = values.get("clip_norm") or None
    return cls(**values)

  def optimizer_fn(self):
    return make_optimizer(self.lr, clip_norm=self.clip_norm, name=self.optimizer)

  def plateau(self) -> "Plateau | None":
    if self.plateau_factor is None:
      return None
    return Plateau(factor=self.plateau_factor, patience=self.plateau_patience)


@dataclasses.dataclass
class Plateau:
  """Reduce-on-plateau on a validation loss, as torch's ReduceLROnPlateau(mode="min").

  After `patience` epochs without a relative improvement of `threshold`, the learning rate is
  multiplied by `factor` (not below `min_lr`). Host-side state, saved with checkpoints.
  """
  factor: float = 0.1
  patience: int = 10
  threshold: float = 1e-4
  min_lr: float = 0.0
  best: float = math.inf
  bad_epochs: int = 0

  def update(self, value: float, lr: float) -> float:
    if value < self.best * (1.0 - self.threshold):
      self.best, self.bad_epochs = value, 0
    else:
      self.bad_epochs += 1
    if self.bad_epochs > self.patience:
      self.bad_epochs = 0
      return max(lr * self.factor, self.min_lr)
    return lr


@dataclasses.dataclass
class FitResult:
  state: TrainState
  best_variables: dict | None
  history: list
  steps: int
  seconds: float
  interrupted_at: tuple[int, int] | None = None  # (epoch, batches done in it) when stopped early


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/inf loss."""


@dataclasses.dataclass
class Resume:
  """Where a resumed run starts: its epoch, the batches of that epoch already done, and the best
  validation loss with its variables so far."""
  epoch: int = 0
  batch: int = 0
  best_val: float = math.inf
  best_variables: dict | None = None


@dataclasses.dataclass
class Validation:
  """Validation after every epoch: `loss(variables)`, a float ([K] values for an ensemble).

  `fit` keeps the best-validation variables; `plateau` (one schedule, or one per member of an
  ensemble) lowers the learning rate when the loss stalls.
  """
  loss: Callable[[Any], Any]
  plateau: Plateau | list[Plateau] | None = None


@dataclasses.dataclass(frozen=True)
class Watch:
  """How a caller follows and steers `fit`, none of which changes what it computes.

  Attributes:
    name: the run's name in messages.
    progress: optional callable (iterable, epoch, epochs, batches_per_epoch) -> iterable, e.g. a
      progress bar (over an epoch's batches; over the one scanned program of a scanned epoch).
    on_epoch_end: called with (epoch, state, record) after each epoch, e.g. to checkpoint; the
      record holds "best_val" and the FitResult-to-be's best variables under "best_variables".
    should_stop: polled after every step, or after every scanned epoch's end (e.g. a Ctrl-C
      flag); when true, fit returns at once with `interrupted_at` set, the state consistent for
      a checkpoint.
  """
  name: str = "train"
  progress: Callable | None = None
  on_epoch_end: Callable[[int, TrainState, dict], None] | None = None
  should_stop: Callable[[], bool] | None = None


def fit(state: TrainState, step_fn, batches: Callable[[int], Iterable[Mapping[str, np.ndarray]]],
        *, epochs: int, rng: jax.Array, dp: parallel.DataParallel | parallel.Members | None = None,
        frozen: Any = None, validation: Validation | None = None, resume: Resume | None = None,
        watch: Watch = Watch(), scan: bool = True) -> FitResult:
  """Runs `epochs` epochs of `step_fn` over `batches(epoch)`.

  An ensemble (`train.ensemble`: `dp` a `parallel.Members`, batches [K, B, ...], `rng` [K] keys)
  runs through the same loop: its losses, validation values, learning rates and best values are
  per member (lists in the history), each member keeping its own best variables and, with
  a plateau schedule per member, its own learning-rate decay.

  Args:
    batches: epoch -> iterable of host batches (numpy dicts of a fixed padded size), so that the
      data order is a function of (seed, epoch) and a resumed epoch sees the same batches.
    frozen: the step's frozen pytree (already placed, e.g. `dp.replicate(...)`).
    validation: the validation loss after every epoch and its plateau schedule (`Validation`).
    resume: where a resumed run starts (see `Resume`).
    watch: its name, progress bar, end-of-epoch hook and stop flag (`Watch`).
    scan: run each epoch as one program (`train.scan`) when the batches allow it and
      `step_fn` has a traceable `.pure`; else, or False, one step call per host batch.
  Returns:
    FitResult with the final state, the best-validation variables (None without validation),
    one history record per epoch, the number of steps and seconds spent.
  """
  if epochs < 0:
    raise UserError(f"epochs must be >= 0, got {epochs}.", "set a positive number of epochs.")
  dp = parallel.resolve(dp)
  resume = resume or Resume()
  progress, should_stop = watch.progress, watch.should_stop
  history, best_val, best_vars = [], resume.best_val, resume.best_variables
  t0, steps = time.perf_counter(), 0
  scanned = (scan_lib.scanned_epochs(step_fn.pure, batches, dp)
             if scan and hasattr(step_fn, "pure") else None)
  for epoch in range(resume.epoch, epochs):
    skip = resume.batch if epoch == resume.epoch else 0
    if scanned is not None:
      n_batches, stacked = len(batches) - skip, None
      for _ in ([None] if progress is None else progress([None], epoch, epochs, 1)):
        if n_batches:
          state, stacked = scanned(state, epoch, skip, rng, frozen)
          stacked = jax.device_get(parallel.gather(stacked))
    else:
      it: Iterator = (batches(epoch, start=skip) if getattr(batches, "seekable", False)
                      else itertools.islice(batches(epoch), skip, None))
      if progress is not None:
        total = len(batches) - skip if hasattr(batches, "__len__") else None
        it = progress(it, epoch, epochs, total)
      pending, n_batches = [], 0
      for batch in it:
        state, metrics = step_fn(state, dp.put_batch(batch), rng, frozen)
        pending.append(metrics)
        n_batches += 1
        if should_stop is not None and should_stop():
          return FitResult(state, best_vars, history, steps + n_batches,
                           time.perf_counter() - t0, interrupted_at=(epoch, skip + n_batches))
      fetched = jax.device_get(parallel.gather(pending))
      stacked = ({key: np.stack([m[key] for m in fetched]) for key in fetched[0]} if fetched
                 else None)
    steps += n_batches
    loss_sum, parts = 0.0, {}
    if stacked is not None:
      # Every part the step reports besides the loss (e.g. a method's retain and forget terms),
      # averaged over the epoch's steps: [steps] values, or [steps, K] for an ensemble.
      # A ragged ensemble's members count only their own batches ("active", see
      # `ensemble.make_ensemble_step`).
      active = np.asarray(stacked.pop("active", 1.0), np.float64)
      counted = np.maximum(np.sum(np.broadcast_to(active, np.shape(stacked["loss"])), axis=0), 1)
      parts = {f"train_{key}": _plain(np.sum(np.asarray(value, np.float64) * active, axis=0)
                                      / counted)
               for key, value in stacked.items() if key != "loss" and np.ndim(value) <= 2}
      values = np.asarray(stacked["loss"], np.float64)
      if not np.all(np.isfinite(values)):
        bad = tuple(np.argwhere(~np.isfinite(values))[0])
        who = f", member {bad[1]}" if len(bad) > 1 else ""
        raise NonFiniteLossError(
            f"{watch.name}: loss became {values[bad]} at epoch {epoch + 1}, batch "
            f"{skip + bad[0] + 1}{who}. Lower the learning rate (train.lr) or enable gradient "
            "clipping (train.clip_norm).")
      loss_sum = values.sum(axis=0)
    record = {"epoch": epoch + 1,
              "train_loss": _plain(loss_sum / (counted if stacked is not None else 1)), **parts}
    if validation is not None:
      val = np.asarray(validation.loss(state.variables), np.float64)  # [] or [K]
      record["val_loss"] = _plain(val)
      improved = val < best_val
      if np.any(improved):
        best_vars = _keep_improved(best_vars, state.variables, improved, dp)
      best_val = _plain(np.where(improved, val, best_val))
      if validation.plateau is not None:
        lr = learning_rate(state)
        new_lr = _plateau_update(validation.plateau, val, lr)
        if np.any(new_lr != lr):
          state = set_learning_rate(state, new_lr)
      record["lr"] = _plain(learning_rate(state))
      record["best_val"] = best_val
    history.append(record)
    if watch.on_epoch_end is not None:
      watch.on_epoch_end(epoch, state, {**record, "best_variables": best_vars})
    if scanned is not None and should_stop is not None and should_stop():
      # Whole epochs: a Ctrl-C lands after the epoch in flight and its end (checkpoint).
      return FitResult(state, best_vars, history, steps, time.perf_counter() - t0,
                       interrupted_at=(epoch + 1, 0))
  return FitResult(state, best_vars, history, steps, time.perf_counter() - t0)


def _plain(value):
  """A float, or a list of floats for an ensemble's [K] values (JSON-able history records)."""
  value = np.asarray(value, np.float64)
  return float(value) if value.ndim == 0 else value.tolist()


def _keep_improved(best: Any, current: Any, improved: np.ndarray, place) -> Any:
  """Copies of `current`'s variables where `improved` (per member of an ensemble, the flags
  placed as the members are), else `best`."""
  if best is None or np.ndim(improved) == 0:
    return jax.tree_util.tree_map(jnp.copy, current)
  keep = place.put(np.asarray(improved))

  def pick(b, c):
    return jnp.where(keep.reshape((-1,) + (1,) * (c.ndim - 1)), c, b)

  return jax.tree_util.tree_map(pick, best, current)


def _plateau_update(plateau, val, lr):
  """The plateau schedule's next learning rate; one schedule per member for an ensemble."""
  if isinstance(plateau, Plateau):
    return plateau.update(float(val), float(lr))
  return np.asarray([p.update(float(v), float(r)) for p, v, r in zip(plateau, val, lr)])


@dataclasses.dataclass
class TrainOutcome:
  """What a (possibly resumed or reused) training run produced."""
  variables: dict
  steps: int
  seconds: float
  history: list
  resumed_from_epoch: int = 0
  reused: bool = False
  fingerprint: str = ""  # of everything that determined it, the epochs included


class _StopFlag:
  """Ctrl-C during training sets a flag (the step in flight finishes, a checkpoint is written);
  a second Ctrl-C interrupts at once. Installed only in the main thread."""

  def __init__(self):
    self.stop = False
    self._previous = None

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGINT, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.stop:
      raise KeyboardInterrupt
    self.stop = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGINT, self._previous)

  def __call__(self) -> bool:
    return self.stop


def _digest(tree: Any) -> str:
  """A short hash of a pytree's structure and values (host copies of device arrays)."""
  h = hashlib.sha256()
  leaves, treedef = jax.tree_util.tree_flatten(tree)
  h.update(str(treedef).encode())
  for leaf in leaves:
    if records.is_lazy(leaf):  # rows on disk: named by their source, rows and normalisation
      h.update(leaf.fingerprint.encode())
      continue
    a = np.ascontiguousarray(jax.device_get(leaf))
    h.update(f"{a.dtype}{a.shape}".encode())
    h.update(a.tobytes() if a.dtype != object else repr(a.tolist()).encode())
  return h.hexdigest()[:16]


def _key_values(rng: jax.Array) -> list:
  """The numbers of a typed key (`jax.random.key`) or a raw one (`jax.random.PRNGKey`)."""
  if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    rng = jax.random.key_data(rng)
  return np.asarray(rng).tolist()


def fingerprint(identity: Mapping[str, Any]) -> str:
  """A short hash of a JSON-able description of a stage."""
  text = json.dumps(identity, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def changes(old: Any, new: Any, prefix: str = "") -> list[str]:
  """"path: old -> new" for every entry in which two stage descriptions differ."""
  if isinstance(old, Mapping) and isinstance(new, Mapping):
    out = []
    for key in sorted(set(old) | set(new), key=str):
      path = f"{prefix}.{key}" if prefix else str(key)
      out += changes(old.get(key, "(unset)"), new.get(key, "(unset)"), path)
    return out
  if json.dumps(old, sort_keys=True, default=str) == json.dumps(new, sort_keys=True, default=str):
    return []
  return [f"{prefix or 'value'}: {old} -> {new}"]


def _check_members(name: str, k: int, variables: Mapping, rng: jax.Array) -> None:
  """K seeds need K stacked members and K keys."""
  leaves = jax.tree_util.tree_leaves(variables)
  got = {len(a) if np.ndim(a) else None for a in leaves} | {len(rng) if np.ndim(rng) else None}
  if got != {k}:
    raise UserError(f"{name}: {k} seed(s) need variables and keys stacked over {k} member(s) "
                    f"(a leading axis of {k}); got leading sizes {sorted(got, key=str)}.",
                    "stack the members' variables and keys (train.ensemble.stack, "
                    "train.ensemble.one for a lone model).")


def _steps(state: TrainState) -> int:
  """Steps taken (every member of an ensemble takes the same)."""
  return int(np.max(jax.device_get(parallel.gather(state.step))))


def _plateau_record(plateau):
  if plateau is None:
    return None
  if isinstance(plateau, Plateau):
    return dataclasses.asdict(plateau)
  return [dataclasses.asdict(p) for p in plateau]


@dataclasses.dataclass(frozen=True)
class Stage:
  """A training stage as its caller declares it: the name its messages and curves carry, the
  directory it checkpoints into (None: none), its `identity`, what determines its result that
  `train_model` cannot see (model and data configuration, a method's settings), which joins its
  fingerprint, and the progress bar its epochs show (see `fit`)."""
  name: str = "train"
  directory: str | None = None
  identity: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  progress: Callable | None = None


@dataclasses.dataclass(frozen=True)
class Objective:
  """What a stage minimises: `loss_fn` (see `train.step`), the `settings` it depends on (they
  join the stage's fingerprint), the `frozen` values it reads (arguments of the compiled step,
  not constants baked into it) and a `param_hook` on the gradients (see `train.step`)."""
  loss_fn: LossFn
  settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  frozen: Any = None
  param_hook: Callable | None = None


def train_model(apply_fn: Callable, variables: Mapping, objective: Objective | LossFn,
                arrays: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]],
                recipe: Recipe, *, rng: jax.Array, seeds: Sequence[int],
                dp: parallel.DataParallel | None = None,
                validate: Callable[[dict], float] | None = None, augment=None,
                stage: Stage = Stage()) -> "TrainOutcome":
  """Trains K models at once, member k from `variables` member k on `arrays` with data-order
  seed `seeds[k]` and key `rng[k]`, by `recipe`, to minimise `objective` (an `Objective`, or a
  bare loss function: one of no settings, frozen values or hook), checkpointing every epoch.

  `variables` (and `objective.frozen`, if any) are stacked pytrees with a leading member axis K
  (`ensemble.stack`; `ensemble.one` makes a lone model an ensemble of one), `rng` holds K keys,
  `arrays` are shared by every member or one mapping per member, and `validate` scores one
  model (it is applied to each member). Returns stacked variables.

  One member trains as a lone model: its batches split over the devices of `dp` (fixed blocks
  with `dp.shards`). Several train vmapped, whole members on this process's devices of `dp`
  (`dp.members`), member k as a lone model of seed k and key k would, up to float rounding.

  With `stage.directory`, a run of the same fingerprint (see the module docstring and `Stage`)
  that reached `recipe.epochs` is reused as is, an unfinished one resumes where it stopped
  (state, data position, plateau schedule, best validation), so a killed job loses at most one
  epoch; a checkpoint of another fingerprint, or one trained for more epochs, is discarded.
  More epochs than a finished run had continue it. Ctrl-C saves a checkpoint at the current
  step and raises KeyboardInterrupt. Returns the best-validation variables when `validate` is
  given, else the final ones.
  """
  from jax_unlearn.checkpoint import Checkpointer
  from jax_unlearn.data.loader import ArrayLoader
  from jax_unlearn.train import ensemble

  dp = parallel.resolve(dp)
  name = stage.name
  if not isinstance(objective, Objective):
    objective = Objective(objective)
  loss_fn, frozen, param_hook = objective.loss_fn, objective.frozen, objective.param_hook
  if isinstance(seeds, (int, np.integer)) or not len(seeds):
    raise UserError(f"{name}: seeds must be a sequence of one data-order seed per member, got "
                    f"{seeds!r}.", "pass e.g. seeds=[0] for one model.")
  seeds = [int(s) for s in seeds]
  k = len(seeds)
  _check_members(name, k, variables, rng)
  # Members given rows of their own may hold fewer than a batch: they train on all of them at
  # each step (an ensemble pads them to their fellows' batch shape).
  own_rows = not isinstance(arrays, Mapping)
  vmapped = ensemble.runs_vmapped(k)
  if not vmapped:  # one member: the lone model's data-parallel program, on the member's arrays
    variables, frozen, rng = ensemble.member((dict(variables), frozen, rng), 0)
    arrays = arrays[0] if own_rows else arrays
  n = len((arrays if isinstance(arrays, Mapping) else arrays[0])["x"])
  if recipe.batch_size > n and not own_rows:
    raise UserError(f"{name}: batch size {recipe.batch_size} is larger than the {n} samples it "
                    "trains on.", f"set a batch size <= {n}.")
  # What determines the result, but the number of epochs (a longer run continues a shorter one).
  determined = {
      "recipe": {key: v for key, v in dataclasses.asdict(recipe).items()
                 if key not in ("epochs", "scan")},
      "seed": seeds if vmapped else seeds[0], "rng": _key_values(rng),
      "shards": dp.shards,
      "arrays": _digest(dict(arrays) if isinstance(arrays, Mapping) else list(arrays)),
      "start_variables": _digest(dict(variables)), "frozen": _digest(frozen),
      **({"settings": dict(objective.settings)} if objective.settings else {}),
      **dict(stage.identity)}
  stage_key = fingerprint(determined)
  result_fingerprint = fingerprint({**determined, "epochs": recipe.epochs})
  tx = recipe.optimizer_fn()
  plateau = recipe.plateau()
  if not vmapped:
    place = dp
    state = create_state(variables, tx, dp)
    step_fn = make_train_step(apply_fn, loss_fn, tx, dp, param_hook=param_hook)
    frozen = dp.replicate(frozen)
    loader = ArrayLoader(arrays, min(recipe.batch_size, n), seed=seeds[0], dp=dp,
                         augment=augment)
    with_axis = lambda tree: ensemble.one(parallel.gather(tree))  # noqa: E731
  else:
    place = dp.members(k)
    state = ensemble.create_ensemble_state(variables, tx, place)
    loader = ensemble.ensemble_batches(arrays, recipe.batch_size, seeds, augment=augment,
                                       blocks=dp.shards, members=place.local_members())
    step_fn = ensemble.make_ensemble_step(apply_fn, loss_fn, tx, members=place, blocks=dp.shards,
                                          param_hook=param_hook,
                                          skip_empty=loader.ragged)
    frozen, rng = place.put(frozen), place.put(rng)
    validate = None if validate is None else ensemble.per_member(validate, k)
    plateau = None if plateau is None else [recipe.plateau() for _ in range(k)]
    with_axis = parallel.gather
  ckpt = Checkpointer(stage.directory, max_to_keep=1) if stage.directory else None
  meta = {"epoch": 0, "batch": 0, "best_val": math.inf, "history": [], "steps": 0,
          "seconds": 0.0}
  resume = Resume()
  if ckpt is not None and ckpt.latest_step() is not None:
    old = ckpt.read_meta()
    why = changes(old.get("stage", {}), determined) if old.get("stage_key") != stage_key else []
    if not why and old.get("epoch", 0) > recipe.epochs:
      why = [f"epochs: {old['epoch']} -> {recipe.epochs}"]
    if why:
      log.info("%s: recomputing, its settings changed (%s)", name, "; ".join(why))
      ckpt.delete_all()
    else:
      tree, meta = ckpt.restore({"state": state, "best": state.variables})
      if meta["epoch"] >= recipe.epochs:
        ckpt.close()
        return TrainOutcome(with_axis(tree["best"]), meta["steps"], meta["seconds"],
                            meta["history"],
                            meta["epoch"], reused=True, fingerprint=result_fingerprint)
      state = tree["state"]
      resume = Resume(meta["epoch"], meta["batch"], meta["best_val"],
                      tree["best"] if np.any(np.asarray(meta["best_val"]) < math.inf) else None)
      if plateau is not None and meta.get("plateau"):
        saved = meta["plateau"]
        plateau = (Plateau(**saved) if isinstance(saved, Mapping)
                   else [Plateau(**p) for p in saved])
      log.info("%s: resuming from epoch %d, batch %d (step %d)", name, meta["epoch"] + 1,
               meta["batch"], _steps(state))
  history = list(meta["history"])
  t0, start_step = time.perf_counter(), _steps(state)

  def save(st, best_val, best, epoch, batch):
    if ckpt is None or ckpt.latest_step() == _steps(st):  # this very state is saved already
      return
    record = {"epoch": epoch, "batch": batch, "best_val": best_val,
              "plateau": _plateau_record(plateau), "history": history,
              "steps": meta["steps"] + _steps(st) - start_step,
              "seconds": meta["seconds"] + time.perf_counter() - t0,
              "stage_key": stage_key, "stage": determined}
    ckpt.save(_steps(st), {"state": st, "best": best or st.variables}, record, force=True)

  def on_epoch_end(epoch, st, record):
    history.append({k: v for k, v in record.items() if k != "best_variables"})
    events.epoch(name, _steps(st), history[-1])
    save(st, record.get("best_val", math.inf), record["best_variables"], epoch + 1, 0)

  try:
    with _StopFlag() as stop:
      result = fit(state, step_fn, loader, epochs=recipe.epochs, rng=rng, dp=place, frozen=frozen,
                   validation=None if validate is None else Validation(validate, plateau),
                   resume=resume, watch=Watch(name, stage.progress, on_epoch_end, stop),
                   scan=recipe.scan)
    if result.interrupted_at is not None:
      best_val = history[-1].get("best_val", math.inf) if history else meta["best_val"]
      save(result.state, best_val, result.best_variables, *result.interrupted_at)
      epoch, batch = result.interrupted_at
      raise KeyboardInterrupt(f"{name} interrupted after {epoch} epoch(s) and {batch} batch(es) "
                              f"(step {_steps(result.state)}); checkpoint saved")
  finally:
    if ckpt is not None:
      ckpt.close()
  final = result.best_variables if result.best_variables is not None else result.state.variables
  return TrainOutcome(with_axis(final), meta["steps"] + result.steps,
                      meta["seconds"] + result.seconds,
                      history, meta["epoch"], fingerprint=result_fingerprint)
