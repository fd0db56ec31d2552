"""Anamnesis Index (AIN): how fast a model relearns what it was asked to forget.

A copy of the model is trained with Adam on the training data; after every step (or every
`check_every` steps) its error on the forget-validation set is compared with a target, "within
alpha of the original model's forget-validation error":

    target = original_error * (1 + alpha)      (errors where lower is better)

The relearn time is the number of steps taken until error <= target, at least one (the check
follows a step, as in the paper), capped at `max_epochs` epochs (the cap is reported). Then

    AIN = steps(unlearned) / steps(retrained),   so AIN(retrained) = 1.

A model that forgot superficially relearns fast (AIN << 1); one that forgot as well as
retraining relearns as slowly (AIN ~ 1).

Relearning runs compiled: one jitted call takes `steps_per_call` steps of the library's generic
train step (unrolled), gathering each batch on device from precomputed epoch permutations (the
same order `ArrayLoader(seed)` gives) and evaluating the forget-validation error on device after
each; the host only reads one integer per call (the first step that reached the target). Not a
`lax.while_loop`: XLA's CPU backend runs convolutions inside loops tens of times slower (a
width-0.25 AllCNN step: 0.13 s plain, 7 s inside `fori_loop`, 0.09 s unrolled). It is pure:
the variables it measures are never modified (the published code retrains the gold model in
place, corrupting later values).

The "ain" metric compiles one Relearner for all models; its `finish` divides by the retrained
model's steps, so it needs every model's steps first.
"""
import math
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import data as data_lib
from jax_unlearn import parallel, train
from jax_unlearn.errors import UserError
from jax_unlearn.metrics import base


def relearn_target(original_error: float, alpha: float) -> float:
  """The error a relearning model has to reach: within `alpha` of the original model's."""
  if alpha < 0:
    raise UserError(f"AIN's alpha must be >= 0, got {alpha}.", "set metrics.ain_alpha, e.g. 0.05.")
  return original_error * (1.0 + alpha)


def anamnesis_index(steps_unlearned: int, steps_retrained: int) -> float:
  """AIN = relearn steps of the unlearned model / relearn steps of the retrained model."""
  if steps_retrained < 1:
    raise ValueError("relearn steps are at least 1")
  return steps_unlearned / steps_retrained


class Relearner:
  """Compiled relearning of copies of one architecture on one dataset.

  One Relearner compiles its loop once and reuses it for every model with the same variable
  structure, so measuring five models costs one compilation.

  Args:
    apply_fn: the model contract `apply_fn(variables, x, *, train, rngs=None) -> (pred, acts)`.
    loss: per-example task loss `loss(pred, y) -> [B]`; training minimises its masked mean and
      the forget-validation error is its mean.
    lr: Adam learning rate.
    batch_size: global batch size of relearning.
    check_every: compare the forget-validation error with the target every this many steps (and
      after the last step); 1 counts exactly.
    steps_per_call: steps per compiled call (unrolled; compile time grows with it).
    eval_batch_size: rows per chunk when evaluating the forget-validation set.
    dp: where relearning runs (batches sharded over "data", the rest replicated) and its fixed
      row blocks (see `train.make_train_step`).
  """

  def __init__(self, apply_fn: Callable, loss: Callable, *, lr: float = 1e-3,
               batch_size: int = 64, check_every: int = 1, eval_batch_size: int = 512,
               steps_per_call: int = 4, dp: parallel.DataParallel | None = None):
    if min(batch_size, check_every, eval_batch_size, steps_per_call) < 1:
      raise UserError("AIN's batch size, check interval, evaluation batch size and steps per "
                      f"call must be >= 1, got {batch_size}, {check_every}, {eval_batch_size}, "
                      f"{steps_per_call}.",
                      "set metrics.ain_batch_size, ain_check_every and ain_steps_per_call >= 1.")
    self.loss, self.dp = loss, parallel.resolve(dp)
    self.batch_size, self.check_every = batch_size, check_every
    self.eval_batch_size, self.steps_per_call = eval_batch_size, steps_per_call
    self.tx = train.make_optimizer(lr)
    self._step = train.make_train_step(apply_fn, train.supervised_loss(loss), self.tx, self.dp,
                                       donate=False)
    self._batch_multiple = self.dp.batch_multiple
    self._predict = train.make_predict_fn(apply_fn, self.dp)
    # Fixed shards make each row's prediction device-independent; the error then sums them
    # replicated, in one order, rather than per device.
    self._sum_replicated = self.dp.shards is not None
    self._chunk = jax.jit(self._relearn_chunk, donate_argnums=0)
    self._evaluate = jax.jit(self._error)

  def prepare(self, train_xy: tuple[np.ndarray, np.ndarray],
              forget_val: tuple[np.ndarray, np.ndarray], *, max_epochs: int = 10,
              seed: int = 0) -> dict:
    """Device copies of the data and the epoch orders, shared by every model measured."""
    (x, y), (vx, vy) = train_xy, forget_val
    n, v = len(x), len(vx)
    if n == 0 or v == 0:
      raise UserError(f"relearning needs training and forget-validation data, got {n} and {v} "
                      "rows.",
                      "give a validation split that contains forget samples.")
    if max_epochs < 1:
      raise UserError(f"AIN's max epochs must be >= 1, got {max_epochs}.",
                      "set metrics.ain_max_epochs >= 1.")
    # The order of epoch e is the one ArrayLoader(seed) gives.
    perms = np.stack([data_lib.epoch_order(seed, e, n)
                      for e in range(max_epochs)]).astype(np.int32)  # [E, N]
    chunk = parallel.round_up(min(self.eval_batch_size, v), self._batch_multiple)
    padded = parallel.round_up(v, chunk)
    val = parallel.pad_batch({"x": vx, "y": vy}, padded)
    val = {k: a.reshape((padded // chunk, chunk) + a.shape[1:]) for k, a in val.items()}
    arrays = {"x": np.asarray(x), "y": np.asarray(y), "perms": perms, "val": val,
              "rng": jax.random.key(seed)}
    return self.dp.replicate(arrays)

  def error(self, variables, data: dict) -> float:
    """The mean task loss on the forget-validation set, computed as inside the loop."""
    return float(self._evaluate(self._place(variables), data["val"]))

  def steps(self, variables, data: dict, target_error: float) -> tuple[int, bool]:
    """(relearn steps, whether the cap was hit) of a copy of `variables`."""
    state = train.create_state(self._place(variables), self.tx, self.dp)  # a copy
    total = self._total_steps(data)
    target = jnp.float32(target_error)
    for t0 in range(0, total, self.steps_per_call):
      state, hit = self._chunk(state, data, jnp.int32(t0), target)
      if int(hit):
        return int(hit), False
    return total, True

  def _total_steps(self, data: dict) -> int:
    epochs, n = data["perms"].shape
    return epochs * math.ceil(n / min(self.batch_size, n))

  def _place(self, variables):
    return self.dp.replicate(variables)

  def _error(self, variables, val: dict) -> jax.Array:
    def chunk(carry, rows):
      pred = self._predict(variables, rows["x"])  # [C, ...], sharded over the mesh
      if self._sum_replicated:
        pred = jax.lax.with_sharding_constraint(pred, self.dp.replicated)
      values = self.loss(pred, rows["y"])  # [C]
      return (carry[0] + jnp.sum(values * rows["mask"]), carry[1] + jnp.sum(rows["mask"])), None

    (total, count), _ = jax.lax.scan(chunk, (jnp.float32(0), jnp.float32(0)), val)
    return total / jnp.maximum(count, 1.0)

  def _relearn_chunk(self, state, data: dict, t0: jax.Array, target: jax.Array):
    """`steps_per_call` steps from step t0; returns (state, first step reaching target or 0)."""
    x, y, perms = data["x"], data["y"], data["perms"]
    epochs, n = perms.shape
    size = min(self.batch_size, n)
    padded = parallel.round_up(size, self._batch_multiple)
    per_epoch = math.ceil(n / size)
    total = epochs * per_epoch
    rows = jnp.arange(padded)

    def batch_at(t):
      # Rows of step t as ArrayLoader gives them: padding repeats the batch's first row.
      t = t % total  # steps past the cap (end of the last call) only repeat work
      start = (t % per_epoch) * size
      perm = perms[t // per_epoch]  # [N]
      pos = start + rows
      valid = (rows < size) & (pos < n)
      idx = jnp.where(valid, perm[jnp.minimum(pos, n - 1)], perm[start])
      return {"x": x[idx], "y": y[idx], "forget": jnp.zeros(padded, jnp.float32),
              "mask": valid.astype(jnp.float32)}

    hit = jnp.int32(0)
    for i in range(self.steps_per_call):
      t = t0 + i
      state, _ = self._step(state, batch_at(t), data["rng"])
      done = t + 1  # steps taken
      check = ((done % self.check_every == 0) | (done == total)) & (done <= total)
      reached = check & (self._error(state.variables, data["val"]) <= target) & (hit == 0)
      hit = jnp.where(reached, done, hit)
    return state, hit


def _is_count(value) -> bool:
  return not isinstance(value, bool) and isinstance(value, int) and value >= 1


class AnamnesisIndex(base.Metric):
  """AIN of every model, relearning towards one target set by the original model."""
  name = "ain"
  defaults = {
      "ain_alpha": 0.05,
      "ain_lr": 1e-3,
      "ain_batch_size": 64,
      "ain_max_epochs": 10,
      "ain_check_every": 1,
      "ain_steps_per_call": 4,  # relearning steps per compiled call (unrolled)
  }
  keys = ("ain", "ain_steps", "ain_hit_cap")
  required = ("ain",)
  columns = (base.Column("ain", "AIN", base.RETRAINED, base.HEADLINE,
                         mark=lambda row: " (cap)" if row.get("ain_hit_cap") else "",
                         note="AIN marked (cap) hit the relearning epoch cap (a lower bound)."),
             base.Column("ain_steps", "AIN relearn steps", base.RETRAINED))

  def check(self, settings) -> None:
    alpha = settings["ain_alpha"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
      raise UserError(f"metrics.ain_alpha must be a number >= 0, got {alpha!r}.",
                      "set metrics.ain_alpha, e.g. 0.05.")
    for key in ("ain_check_every", "ain_steps_per_call"):
      if not _is_count(settings[key]):
        raise UserError(f"metrics.{key} must be an integer >= 1, got {settings[key]!r}.",
                        f"set metrics.{key} to 1 or more.")

  def prepare(self, run: base.Run) -> tuple[Relearner, dict, float]:
    s, data, forget = run.settings, run.data, run.data.forget_train
    relearner = Relearner(run.apply_fn, run.task_loss, lr=float(s["ain_lr"]),
                          batch_size=s["ain_batch_size"], check_every=s["ain_check_every"],
                          eval_batch_size=run.batch_size, steps_per_call=s["ain_steps_per_call"],
                          dp=run.dp)
    if data.forget_val.any():
      relearn_eval = (data.val_x[data.forget_val], data.val_y[data.forget_val])
    else:  # e.g. a time window inside the training period: no held-out forget rows exist
      relearn_eval = (data.train_x[forget], data.train_y[forget])
      run.info["ain_note"] = ("no forget-validation samples: relearning is measured on the forget "
                              "training rows")
    arrays = relearner.prepare((data.train_x, data.train_y), relearn_eval,
                               max_epochs=s["ain_max_epochs"], seed=run.seed)
    run.info["ain_original_error"] = relearner.error(run.models["original"], arrays)
    run.info["ain_target_error"] = target = relearn_target(run.info["ain_original_error"],
                                                           float(s["ain_alpha"]))
    return relearner, arrays, target

  def evaluate(self, state, model: base.ModelContext) -> dict[str, Any]:
    relearner, arrays, target = state
    steps, hit_cap = relearner.steps(model.variables, arrays, target)
    return {"ain_steps": steps, "ain_hit_cap": hit_cap}

  def finish(self, state, models, results: Mapping[str, Mapping[str, Any]]
             ) -> dict[str, dict[str, float]]:
    reference = results["retrained"]["ain_steps"]
    return {name: {"ain": 1.0 if name == "retrained" else
                   anamnesis_index(res["ain_steps"], reference)}
            for name, res in results.items()}
