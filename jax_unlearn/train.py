"""The functional training core: one state pytree, one generic jitted step, one fit loop.

Every training in the library (original model, retraining, fine-tuning, every unlearning
objective, relearning for AIN) is `fit` over `make_train_step(apply_fn, loss_fn, tx, mesh)`.
A loss function has the signature

    loss_fn(pred, acts, batch, rng, *frozen) -> (loss, metrics)

where `batch` holds "x", "y", "forget" and "mask" ([B], 0 on padded rows), `frozen` are
extra arguments of the step (e.g. a frozen model's variables), `loss` is a scalar and `metrics`
a dict of scalars. Frozen variables travel as step arguments, never in closures, so they are
not baked into the compiled program.
"""
import dataclasses
import itertools
import logging
import math
import signal
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec as P

from jax_unlearn import losses, parallel
from jax_unlearn.errors import UserError
from jax_unlearn.models.adapters import accepts_mask, split_outputs

LossFn = Callable[..., tuple[jax.Array, dict]]


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training; a pytree, donated to the step."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any

  @property
  def variables(self) -> dict:
    return make_variables(self.params, self.batch_stats)


def make_variables(params, batch_stats) -> dict:
  """The model's variables dict; "batch_stats" only when the model has any."""
  if batch_stats:
    return {"params": params, "batch_stats": batch_stats}
  return {"params": params}


def make_optimizer(lr: float, *, clip_norm: float | None = None, weight_decay: float = 0.0,
                   name: str = "adam") -> optax.GradientTransformation:
  """Adam (the paper's optimizer) or SGD with an injectable learning rate for plateau decay."""
  if lr <= 0 or not math.isfinite(lr):
    raise UserError(f"learning rate must be positive, got {lr}.", "set train.lr > 0, e.g. 1e-3.")
  makers = {"adam": optax.adam, "adamw": optax.adamw, "sgd": optax.sgd}
  if name not in makers:
    from jax_unlearn.errors import unknown_name
    raise unknown_name("optimizer", name, makers)
  kwargs = {"weight_decay": weight_decay} if name == "adamw" else {}
  tx = optax.inject_hyperparams(makers[name])(learning_rate=lr, **kwargs)
  if clip_norm:
    tx = optax.chain(optax.clip_by_global_norm(clip_norm), tx)
  return tx


def _find_hyperparams(opt_state):
  """The inject_hyperparams dict inside a (possibly chained) optimizer state, or None."""
  if hasattr(opt_state, "hyperparams"):
    return opt_state.hyperparams
  if isinstance(opt_state, tuple):
    for s in opt_state:
      found = _find_hyperparams(s)
      if found is not None:
        return found
  return None


def _replace_lr(opt_state, lr: float):
  if hasattr(opt_state, "hyperparams"):
    old = opt_state.hyperparams["learning_rate"]
    new = jax.device_put(jnp.asarray(lr, old.dtype), old.sharding)
    return opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": new})
  if isinstance(opt_state, tuple) and not hasattr(opt_state, "_fields"):
    return tuple(_replace_lr(s, lr) for s in opt_state)
  return opt_state


def learning_rate(state: TrainState) -> float:
  hp = _find_hyperparams(state.opt_state)
  if hp is None:
    raise ValueError("optimizer state has no injectable learning rate; use make_optimizer")
  return float(hp["learning_rate"])


def set_learning_rate(state: TrainState, lr: float) -> TrainState:
  """The state with a new learning rate (host side, between epochs)."""
  return state.replace(opt_state=_replace_lr(state.opt_state, lr))


def create_state(variables: Mapping, tx: optax.GradientTransformation, mesh=None) -> TrainState:
  """A fresh train state (step 0) for `variables`, replicated over `mesh` if given."""
  # A copy: the step donates its state, which must never delete the caller's arrays.
  variables = jax.tree_util.tree_map(jnp.array, dict(variables))
  params = variables["params"]
  state = TrainState(step=jnp.zeros((), jnp.int32), params=params,
                     batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params))
  if mesh is not None:
    state = jax.device_put(state, parallel.replicated(mesh))
  return state


def supervised_loss(per_example: losses.LossFn, prediction_fn: Callable | None = None) -> LossFn:
  """Loss function of plain supervised training: masked mean of a per-example loss to the labels.

  `prediction_fn` maps the model output before the loss (identity by default).
  """

  def loss_fn(pred, acts, batch, rng, *frozen):
    del acts, rng, frozen
    values = per_example(pred if prediction_fn is None else prediction_fn(pred), batch["y"])
    return losses.masked_mean(values, batch["mask"]), {}

  return loss_fn


def make_train_step(apply_fn: Callable, loss_fn: LossFn, tx: optax.GradientTransformation,
                    mesh=None, *, donate: bool = True, shards: int | None = None):
  """The one generic step `(state, batch, rng, *frozen) -> (state, metrics)`, jitted.

  With a mesh, the batch is sharded over "data" and everything else replicated; XLA inserts the
  gradient all-reduce, so N devices compute the single-device update up to the order of float
  sums. The rng is folded with the state's step, so every step draws fresh randomness from one
  base key.

  `shards` cuts the batch into that many fixed row blocks, summed in a fixed order (see
  `_in_fixed_shards`): every device count dividing `shards` then computes bitwise the same step.
  """
  takes_mask = accepts_mask(apply_fn)

  def gradients(params, batch_stats, batch, rng, *frozen):
    """((loss, (metrics, new batch_stats)), grads) of the loss on `batch`."""
    model_rng, loss_rng = jax.random.split(rng)
    mask_kw = {"mask": batch["mask"]} if takes_mask else {}

    def objective(params):
      out = apply_fn(make_variables(params, batch_stats), batch["x"], train=True,
                     rngs={"dropout": model_rng}, **mask_kw)
      pred, acts, new_state = split_outputs(out, {"batch_stats": batch_stats})
      loss, metrics = loss_fn(pred, acts, batch, loss_rng, *frozen)
      return loss, (metrics, new_state.get("batch_stats", batch_stats))

    return jax.value_and_grad(objective, has_aux=True)(params)

  if shards is not None:
    gradients = _in_fixed_shards(gradients, mesh or parallel.make_mesh(1), shards)

  def step(state: TrainState, batch, rng, *frozen):
    rng = jax.random.fold_in(rng, state.step)
    (loss, (metrics, batch_stats)), grads = gradients(state.params, state.batch_stats, batch,
                                                      rng, *frozen)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                              opt_state=opt_state)
    return new_state, {"loss": loss, **metrics}

  return _jit_for_mesh(step, mesh, donate=donate)


def _in_fixed_shards(gradients: Callable, mesh, shards: int) -> Callable:
  """`gradients(params, batch_stats, batch, rng, *frozen)` computed on `shards` row blocks.

  Float sums depend on their order, and XLA's gradient all-reduce orders them by device; trained
  models then drift apart between device counts, as training amplifies rounding. Here each
  device runs the one per-block program on its blocks in turn (`lax.map`), scaling each block's
  results by its share of the batch's unmasked rows; the results of all blocks are gathered and
  every device adds them up in block order. Loss and gradients equal the whole batch's for any
  masked-mean loss; BatchNorm takes its statistics per block; memory holds `shards` gradient
  copies. Bitwise equality also needs a model free of `array / broadcast scalar`, which XLA
  turns into a multiplication by the reciprocal in some programs and not in others (the
  library's BatchNorm and blindspot loss multiply by a reciprocal themselves).
  """
  per_device = parallel.batch_multiple(mesh, shards) // mesh.devices.size  # checks `shards`
  axis = parallel.DATA_AXIS

  def local(params, batch_stats, batch, rng, *frozen):
    blocks = jax.tree_util.tree_map(lambda a: a.reshape((per_device, -1) + a.shape[1:]), batch)
    rows = jnp.sum(blocks["mask"].astype(jnp.float32), axis=1)  # [per_device]
    total = jax.lax.psum(jnp.sum(rows), axis)  # a count: exact in float32
    first = jax.lax.axis_index(axis) * per_device
    shapes = jax.eval_shape(
        lambda b: gradients(params, batch_stats, b, rng, *frozen),
        jax.tree_util.tree_map(lambda a: a[0], blocks))

    def one(args):
      index, block, n = args

      def weighted(_):
        out = gradients(params, batch_stats, block, jax.random.fold_in(rng, index), *frozen)
        return jax.tree_util.tree_map(lambda a: (a * (n / total)).astype(a.dtype), out)

      def skipped(_):  # padding rows only (end of an epoch): BatchNorm of no rows is not finite
        return jax.tree_util.tree_map(lambda sd: jnp.zeros(sd.shape, sd.dtype), shapes)

      return jax.lax.cond(n > 0, weighted, skipped, None)

    out = jax.lax.map(one, (first + jnp.arange(per_device), blocks, rows))
    out = jax.tree_util.tree_map(lambda a: jax.lax.all_gather(a, axis, tiled=True), out)

    def ordered_sum(stacked):
      acc = stacked[0]
      for s in range(1, shards):
        acc = acc + stacked[s]
      return acc

    return jax.tree_util.tree_map(ordered_sum, out)

  def call(params, batch_stats, batch, rng, *frozen):
    rows = len(batch["mask"])
    if rows % shards:
      raise ValueError(f"a batch of {rows} rows does not split into {shards} shards; pad it "
                       "with parallel.pad_batch to parallel.batch_multiple(mesh, shards)")
    specs = (P(), P(), P(axis), P()) + (P(),) * len(frozen)
    return jax.shard_map(local, mesh=mesh, in_specs=specs, out_specs=P(), check_vma=False)(
        params, batch_stats, batch, rng, *frozen)

  return call


def _jit_for_mesh(fn, mesh, *, donate: bool):
  """jit `fn(state, batch, rng, *frozen)`, with shardings when a mesh is given.

  One compiled program per number of frozen arguments (a static fact of the caller).
  """
  compiled = {}

  def call(state, batch, rng, *frozen):
    key = len(frozen)
    if key not in compiled:
      kwargs = {"donate_argnums": (0,)} if donate else {}
      if mesh is not None:
        repl, data = parallel.replicated(mesh), parallel.data_sharded(mesh)
        kwargs["in_shardings"] = (repl, data, repl) + (repl,) * key
        kwargs["out_shardings"] = (repl, repl)
      compiled[key] = jax.jit(fn, **kwargs)
    return compiled[key](state, batch, rng, *frozen)

  call.jitted = compiled
  return call


def make_predict_fn(apply_fn: Callable, mesh=None, shards: int | None = None):
  """Jitted `predict(variables, x) -> pred` in evaluation mode, batch sharded over the mesh.

  With `shards`, rows go through the model in that many fixed blocks (see `_rows_in_blocks`),
  so every row's prediction is bitwise the same on any device count dividing `shards`.
  """

  def predict(variables, x):
    return apply_fn(variables, x, train=False)[0]

  if shards is not None:
    mesh = mesh or parallel.make_mesh(1)
    predict = _rows_in_blocks(predict, mesh, shards)
  if mesh is None:
    return jax.jit(predict)
  return jax.jit(predict, in_shardings=(parallel.replicated(mesh), parallel.data_sharded(mesh)),
                 out_shardings=parallel.data_sharded(mesh))


def _rows_in_blocks(fn: Callable, mesh, shards: int) -> Callable:
  """A row-wise `fn(variables, x) -> [B, ...]` computed on `shards` fixed row blocks of x.

  Each device runs the one per-block program on its blocks in turn, so a row's value does not
  depend on how many rows a device holds (kernels pick their algorithm by batch size).
  """
  per_device = parallel.batch_multiple(mesh, shards) // mesh.devices.size

  def local(variables, x):
    out = jax.lax.map(lambda block: fn(variables, block),
                      x.reshape((per_device, -1) + x.shape[1:]))
    return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), out)

  return jax.shard_map(local, mesh=mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                       out_specs=P(parallel.DATA_AXIS), check_vma=False)


def predict(apply_fn_or_predict: Callable, variables, x: np.ndarray, *, batch_size: int = 512,
            mesh=None, shards: int | None = None, predict_fn=None) -> np.ndarray:
  """Predictions for every row of `x` (numpy), in fixed-size padded batches (one compilation).

  Pass a `predict_fn` from `make_predict_fn` (with the same `shards`) to reuse its compilation
  across calls.
  """
  predict_fn = predict_fn or make_predict_fn(apply_fn_or_predict, mesh, shards)
  n = len(x)
  size = parallel.round_up(min(batch_size, max(n, 1)), parallel.batch_multiple(mesh, shards))
  outs = []
  for start in range(0, n, size):
    chunk = {"x": x[start:start + size]}
    rows = len(chunk["x"])
    chunk = parallel.pad_batch(chunk, size)
    xb = parallel.shard_batch({"x": chunk["x"]}, mesh)["x"] if mesh is not None else chunk["x"]
    outs.append(np.asarray(jax.device_get(predict_fn(variables, xb)))[:rows])
  return np.concatenate(outs) if outs else np.zeros((0,))


def make_validation_loss(apply_fn: Callable, per_example: losses.LossFn, x: np.ndarray,
                         y: np.ndarray, *, batch_size: int = 512, mesh=None,
                         shards: int | None = None):
  """variables -> mean per-example loss on (x, y): the validation loss for `fit` and plateaus."""
  predict_fn = make_predict_fn(apply_fn, mesh, shards)

  def validate(variables) -> float:
    pred = predict(apply_fn, variables, x, batch_size=batch_size, mesh=mesh, shards=shards,
                   predict_fn=predict_fn)
    return float(np.mean(np.asarray(per_example(jnp.asarray(pred), jnp.asarray(y)), np.float64)))

  return validate


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


def fit(state: TrainState, step_fn, batches: Callable[[int], Iterable[Mapping[str, np.ndarray]]],
        *, epochs: int, rng: jax.Array, mesh=None, frozen: tuple = (),
        validate: Callable[[dict], float] | None = None, plateau: Plateau | None = None,
        on_epoch_end: Callable[[int, TrainState, dict], None] | None = None,
        start_epoch: int = 0, start_batch: int = 0,
        best: tuple[float, dict | None] = (math.inf, None),
        should_stop: Callable[[], bool] | None = None,
        progress: Callable | None = None, name: str = "train") -> FitResult:
  """Runs `epochs` epochs of `step_fn` over `batches(epoch)`.

  Args:
    batches: epoch -> iterable of host batches (numpy dicts of a fixed padded size), so that the
      data order is a function of (seed, epoch) and a resumed epoch sees the same batches.
    validate: variables -> validation loss, called after every epoch; the best-validation
      variables are kept and the plateau schedule (if any) follows it.
    on_epoch_end: called with (epoch, state, record) after each epoch, e.g. to checkpoint; the
      record holds "best_val" and the FitResult-to-be's best variables under "best_variables".
    start_epoch, start_batch, best: where a resumed run starts: its epoch, the batches of that
      epoch already done, and the best validation loss with its variables so far.
    should_stop: polled after every step (e.g. a Ctrl-C flag); when true, fit returns at once
      with `interrupted_at` set, the state consistent for a checkpoint.
    progress: optional callable (iterable, epoch, epochs, batches_per_epoch) -> iterable, e.g. a
      progress bar.
  Returns:
    FitResult with the final state, the best-validation variables (None without `validate`),
    one history record per epoch, the number of steps and seconds spent.
  """
  if epochs < 0:
    raise UserError(f"epochs must be >= 0, got {epochs}.", "set a positive number of epochs.")
  history, (best_val, best_vars) = [], best
  t0, steps = time.perf_counter(), 0
  for epoch in range(start_epoch, epochs):
    loss_sum, n_batches = 0.0, 0
    skip = start_batch if epoch == start_epoch else 0
    it: Iterator = itertools.islice(batches(epoch), skip, None)
    if progress is not None:
      total = len(batches) - skip if hasattr(batches, "__len__") else None
      it = progress(it, epoch, epochs, total)
    pending = []
    for batch in it:
      dev_batch = parallel.shard_batch(batch, mesh) if mesh is not None else batch
      state, metrics = step_fn(state, dev_batch, rng, *frozen)
      pending.append(metrics["loss"])
      steps += 1
      n_batches += 1
      if should_stop is not None and should_stop():
        return FitResult(state, best_vars, history, steps, time.perf_counter() - t0,
                         interrupted_at=(epoch, skip + n_batches))
    if pending:
      values = np.asarray(jax.device_get(pending), np.float64)
      if not np.all(np.isfinite(values)):
        bad = int(np.argmin(np.isfinite(values)))
        raise NonFiniteLossError(
            f"{name}: loss became {values[bad]} at epoch {epoch + 1}, batch {bad + 1}. "
            "Lower the learning rate (train.lr) or enable gradient clipping (train.clip_norm).")
      loss_sum = float(values.sum())
    record = {"epoch": epoch + 1, "train_loss": loss_sum / max(n_batches, 1)}
    if validate is not None:
      record["val_loss"] = val = float(validate(state.variables))
      if val < best_val:
        best_val, best_vars = val, jax.tree_util.tree_map(jnp.copy, state.variables)
      if plateau is not None:
        new_lr = plateau.update(val, learning_rate(state))
        if new_lr != learning_rate(state):
          state = set_learning_rate(state, new_lr)
      record["lr"] = learning_rate(state)
      record["best_val"] = best_val
    history.append(record)
    if on_epoch_end is not None:
      on_epoch_end(epoch, state, {**record, "best_variables": best_vars})
  return FitResult(state, best_vars, history, steps, time.perf_counter() - t0)


@dataclasses.dataclass
class TrainOutcome:
  """What a (possibly resumed or reused) training run produced."""
  variables: dict
  steps: int
  seconds: float
  history: list
  resumed_from_epoch: int = 0
  reused: bool = False


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


def train_model(apply_fn: Callable, variables: Mapping, loss_fn: LossFn,
                arrays: Mapping[str, np.ndarray], *, epochs: int, batch_size: int, lr: float,
                rng: jax.Array, seed: int = 0, mesh=None, shards: int | None = None,
                frozen: tuple = (),
                validate: Callable[[dict], float] | None = None, plateau: Plateau | None = None,
                clip_norm: float | None = None, optimizer: str = "adam", augment=None,
                checkpoint_dir: str | None = None, progress: Callable | None = None,
                name: str = "train") -> TrainOutcome:
  """Trains `variables` with `loss_fn` on `arrays`, checkpointing every epoch when asked.

  With `checkpoint_dir`, a run that reached `epochs` is reused as is and an unfinished one
  resumes where it stopped (state, data position, plateau schedule, best validation), so a
  killed job loses at most one epoch. Ctrl-C saves a checkpoint at the current step and raises
  KeyboardInterrupt. Returns the best-validation variables when `validate` is given, else the
  final ones. `shards`: see `make_train_step`.
  """
  from jax_unlearn.checkpoint import Checkpointer
  from jax_unlearn.data.loader import ArrayLoader

  if epochs <= 0:
    raise UserError(f"{name}: epochs must be positive, got {epochs}.", "set epochs >= 1.")
  n = len(arrays["x"])
  if batch_size > n:
    raise UserError(f"{name}: batch size {batch_size} is larger than the {n} samples it trains on.",
                    f"set a batch size <= {n}.")
  tx = make_optimizer(lr, clip_norm=clip_norm, name=optimizer)
  state = create_state(variables, tx, mesh)
  step_fn = make_train_step(apply_fn, loss_fn, tx, mesh, shards=shards)
  if mesh is not None:
    frozen = jax.device_put(frozen, parallel.replicated(mesh))
  loader = ArrayLoader(arrays, batch_size, seed=seed, mesh=mesh, shards=shards, augment=augment)
  plateau = plateau if plateau is None else dataclasses.replace(plateau)
  ckpt = Checkpointer(checkpoint_dir, max_to_keep=1) if checkpoint_dir else None
  meta = {"epoch": 0, "batch": 0, "best_val": math.inf, "history": [], "steps": 0,
          "seconds": 0.0}
  best_vars = None
  if ckpt is not None and ckpt.latest_step() is not None:
    tree, meta = ckpt.restore({"state": state, "best": state.variables})
    if meta["epoch"] >= epochs:
      ckpt.close()
      return TrainOutcome(tree["best"], meta["steps"], meta["seconds"], meta["history"],
                          meta["epoch"], reused=True)
    state = tree["state"]
    best_vars = tree["best"] if meta["best_val"] < math.inf else None
    if plateau is not None and meta.get("plateau"):
      plateau = Plateau(**meta["plateau"])
    logging.getLogger("jax_unlearn").info(
        "%s: resuming from epoch %d, batch %d (step %d)", name, meta["epoch"] + 1,
        meta["batch"], int(state.step))
  history = list(meta["history"])
  t0, start_step = time.perf_counter(), int(state.step)

  def save(st, best_val, best, epoch, batch):
    if ckpt is None:
      return
    record = {"epoch": epoch, "batch": batch, "best_val": best_val,
              "plateau": dataclasses.asdict(plateau) if plateau else None, "history": history,
              "steps": meta["steps"] + int(st.step) - start_step,
              "seconds": meta["seconds"] + time.perf_counter() - t0}
    ckpt.save(int(st.step), {"state": st, "best": best or st.variables}, record, force=True)

  def on_epoch_end(epoch, st, record):
    history.append({k: v for k, v in record.items() if k != "best_variables"})
    save(st, record.get("best_val", math.inf), record["best_variables"], epoch + 1, 0)

  try:
    with _StopFlag() as stop:
      result = fit(state, step_fn, loader, epochs=epochs, rng=rng, mesh=mesh, frozen=frozen,
                   validate=validate, plateau=plateau, start_epoch=meta["epoch"],
                   start_batch=meta["batch"], best=(meta["best_val"], best_vars),
                   on_epoch_end=on_epoch_end, should_stop=stop, progress=progress, name=name)
    if result.interrupted_at is not None:
      best_val = history[-1].get("best_val", math.inf) if history else meta["best_val"]
      save(result.state, best_val, result.best_variables, *result.interrupted_at)
      raise KeyboardInterrupt(f"{name} interrupted at epoch {result.interrupted_at[0] + 1}, "
                              f"step {int(result.state.step)}; checkpoint saved")
  finally:
    if ckpt is not None:
      ckpt.close()
  final = result.best_variables if result.best_variables is not None else result.state.variables
  return TrainOutcome(final, meta["steps"] + result.steps, meta["seconds"] + result.seconds,
                      history, meta["epoch"])
