"""Blindspot unlearning (Tarun et al., ICML 2023): distil a partially trained model on forget rows.

A blindspot model of the same architecture is trained from scratch on the retain set for a few
epochs and frozen. The original model is then trained on the full set with

    loss = c * L_forget + (1 - c) * L_retain,   c = forget rows / rows of the batch,
    L_retain = task loss to the labels over retain rows,
    L_forget = distance to the blindspot model's output over forget rows
               + beta * sum over layers of the attention-transfer distance,

so that on the forget set the model behaves like one that never learned it, while the retain set
keeps its labels. The blindspot variables are an argument of the jitted step, never a closure.
"""
import math
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import losses, parallel, train
from jax_unlearn.errors import UserError, unknown_name
from jax_unlearn.unlearn import base

ATTENTION_MODES = ("features", "reference")
_EPS = 1e-12  # torch.nn.functional.normalize's eps, as in the published code


def _normalize(maps: jnp.ndarray) -> jnp.ndarray:
  """Rows of `maps` [B, P] divided by their L2 norm, max(norm, eps) as torch's F.normalize.

  The norm is taken as sqrt(max(sum of squares, eps^2)) so an all-zero row has a zero gradient
  instead of 0/0.
  """
  sq = jnp.sum(jnp.square(maps), axis=1, keepdims=True)
  # Times a reciprocal, not divided by a broadcast: XLA rewrites the latter in some programs
  # only, which would break fixed-shard reproducibility (see ops.BatchNorm).
  return maps * (1.0 / jnp.sqrt(jnp.maximum(sq, _EPS * _EPS)))


def attention_map(act: jnp.ndarray, mode: str = "features") -> jnp.ndarray:
  """The attention-transfer map of an activation, one L2-normalised row per sample.

  Args:
    act: [B, H, W, C] (NHWC) or [B, F]; any other rank is flattened to [B, F] first.
    mode: for [B, H, W, C] both modes give the mean over channels of the squared activation,
      flattened to [B, H * W]. For a sequence [B, T, F], "reference" takes the mean over time
      (the published code's mean over dim 1), [B, F]; "features" flattens it to [B, T * F].
      For [B, F], "reference" follows the published code (mean over
      dim 1 of the squared activation, i.e. one number per sample, normalised): the map is the
      constant 1 (0 for an all-zero row), so its distance is zero (up to rounding) and the
      term is degenerate.
      "features" keeps the squared features, [B, F], which carries information.
  Returns:
    [B, P] float32 rows of unit L2 norm (zero rows stay zero).
  """
  if mode not in ATTENTION_MODES:
    raise unknown_name("attention mode", mode, ATTENTION_MODES)
  act = jnp.asarray(act, jnp.float32)
  sq = jnp.square(act)
  if act.ndim == 4:
    maps = jnp.mean(sq, axis=-1).reshape(act.shape[0], -1)  # [B, H * W]
  elif act.ndim == 3 and mode == "reference":  # a sequence [B, T, F]: torch's mean over dim 1
    maps = jnp.mean(sq, axis=1)  # [B, F]
  else:
    sq = sq.reshape(act.shape[0], -1)  # [B, F]
    maps = jnp.mean(sq, axis=1, keepdims=True) if mode == "reference" else sq  # [B, 1] | [B, F]
  return _normalize(maps)


def _check_same_shape(a_shape, b_shape, name: str = "") -> None:
  if tuple(a_shape) != tuple(b_shape):
    what = f"activations {name!r}" if name else "activations"
    raise UserError(f"{what} of the two models differ in shape: {a_shape} vs {b_shape}.",
                    "the blindspot model must have the original model's architecture.")


def _map_distance(a_map: jnp.ndarray, b_map: jnp.ndarray) -> jnp.ndarray:
  """Per-sample mean squared difference of two attention maps [B, P]: [B]."""
  return jnp.mean(jnp.square(a_map - b_map), axis=1)


def attention_distance(a: jnp.ndarray, b: jnp.ndarray, mode: str = "features") -> jnp.ndarray:
  """Per-sample mean squared difference of the attention maps of two activations: [B]."""
  _check_same_shape(a.shape, b.shape)
  return _map_distance(attention_map(a, mode), attention_map(b, mode))


def prediction_distance(per_example_loss: losses.LossFn) -> Callable:
  """Per-sample distance between two predictions of the same shape: [B].

  The task loss is used when the predictions have the labels' shape (point models: L1 or MSE
  between the two outputs, as the paper). A quantile model's prediction [B, ..., Q] is not a
  label, so the pinball loss does not apply; the mean absolute difference over outputs and
  quantiles is used instead (the pinball loss is L1-like, so the scale is comparable).
  """

  def distance(pred, other, y):
    if pred.shape[1:] == y.shape[1:]:
      return per_example_loss(pred, other)
    diff = jnp.abs(pred - other)
    return diff.reshape(diff.shape[0], -1).mean(axis=1)

  return distance


def forget_rows_for(forget_fraction: float, batch_size: int,
                    dp: parallel.DataParallel | None = None) -> int | None:
  """How many rows the frozen forward needs for batches drawn from a set with this forget share.

  The number of forget rows in a shuffled batch is hypergeometric; its mean plus 4 standard
  deviations (of the binomial, which is wider), rounded up to a multiple of 8, covers all but
  about 3e-5 of the batches, and those take the full-batch path. None when that would not save
  at least a quarter of the frozen forward, and on a mesh of several devices: gathering forget
  rows out of a sharded batch would move them between devices and leave the partitioner to
  place the small forward, so only a single device gains. With fixed `dp.shards` the loss sees
  one row block at a time, on its own device, so the count is per block, on any mesh.
  """
  dp = parallel.resolve(dp)
  if dp.shards is not None:
    batch_size = dp.rows_per_block(batch_size)
  elif dp.devices > 1:
    return None
  mean = forget_fraction * batch_size
  bound = mean + 4.0 * math.sqrt(batch_size * forget_fraction * (1.0 - forget_fraction))
  rows = 8 * math.ceil(max(bound, 1.0) / 8)
  return rows if rows <= 0.75 * batch_size else None


def make_blindspot_loss(apply_fn: Callable, per_example_loss: losses.LossFn, *,
                        beta: float = 50.0, attention: str = "features",
                        layers: Sequence[str] | None = None, forget_rows: int | None = None):
  """The blindspot objective as a train-step loss `loss_fn(pred, acts, batch, rng, frozen)`,
  `frozen` being the blindspot model's variables.

  Args:
    apply_fn: the model contract; the frozen blindspot model runs through it in evaluation mode
      (BatchNorm running statistics) inside the loss, under stop_gradient.
    per_example_loss: the task's loss (pred, y) -> [B]; also the output distance to the blindspot
      model for point predictions (see `prediction_distance`).
    beta: weight of the attention-transfer term (50 in the paper).
    attention: "features" or "reference", how 2-D activations are mapped (see `attention_map`).
    layers: activation names to compare; None means every name both models return.
    forget_rows: if set, the frozen model runs only on the batch's forget rows, gathered into
      this many rows (see `forget_rows_for`): it is the frozen forward's only use, and forget
      rows are usually a small share of a batch. A batch with more forget rows than that runs
      it on the whole batch instead (`lax.cond`), so the loss is the same either way.
  Returns:
    loss_fn returning (loss, {"retain_loss", "forget_loss", "attention", "forget_fraction"}),
    "attention" being the unweighted sum over layers of the forget-row attention distance.
    A batch without forget rows gives exactly L_retain, one without retain rows exactly
    L_forget; padded rows (mask 0) count in neither.
  """
  if attention not in ATTENTION_MODES:
    raise unknown_name("attention mode", attention, ATTENTION_MODES)
  if not beta >= 0:
    raise UserError(f"blindspot beta must be >= 0, got {beta}.", "use e.g. the paper's 50.")
  distance = prediction_distance(per_example_loss)

  def forget_terms(blindspot_variables, x, y, pred, maps, weight):
    """(output distance, attention distance summed over layers), weighted means over rows.

    `maps` are the student's attention maps by layer name: small [B, P] rows, so gathering
    them (and scattering their gradient back) is cheap next to doing so with activations.
    """
    bs_pred, bs_acts = apply_fn(blindspot_variables, x, train=False)[:2]
    bs_pred, bs_acts = jax.lax.stop_gradient((bs_pred, bs_acts))
    att = jnp.zeros((), jnp.float32)
    for n, m in maps.items():
      att += losses.masked_mean(_map_distance(m, attention_map(bs_acts[n], attention)), weight)
    return losses.masked_mean(distance(pred, bs_pred, y), weight), att

  def loss_fn(pred, acts, batch, rng, blindspot_variables):
    del rng  # the frozen pytree of the step is the blindspot model
    mask = batch["mask"].astype(jnp.float32)  # [B]
    forget = mask * batch["forget"].astype(jnp.float32)  # [B]
    retain = mask - forget  # [B]
    bs_acts = jax.eval_shape(lambda v, x: apply_fn(v, x, train=False)[1], blindspot_variables,
                             batch["x"])
    names = [n for n in acts if n in bs_acts] if layers is None else list(layers)
    missing = [n for n in names if n not in acts or n not in bs_acts]
    if missing:
      raise UserError(f"blindspot loss: activations {missing} are not returned by both models; "
                      f"available: {sorted(set(acts) & set(bs_acts))}.",
                      "pick layers from the available names, or layers=None for all.")
    maps = {}
    for n in names:
      _check_same_shape(acts[n].shape, bs_acts[n].shape, n)
      maps[n] = attention_map(acts[n], attention)
    args = (batch["x"], batch["y"], pred, maps, forget)
    whole = lambda args: forget_terms(blindspot_variables, *args)  # noqa: E731
    if forget_rows is None or forget_rows >= len(forget):
      forget_out, att = whole(args)
    else:
      rows = jnp.argsort(-forget, stable=True)[:forget_rows]  # forget rows first
      gathered = lambda args: whole(jax.tree_util.tree_map(lambda a: a[rows], args))  # noqa: E731
      forget_out, att = jax.lax.cond(jnp.sum(forget > 0) <= forget_rows, gathered, whole, args)
    retain_loss = losses.masked_mean(per_example_loss(pred, batch["y"]), retain)
    forget_loss = forget_out + beta * att
    c = jnp.sum(forget) / jnp.maximum(jnp.sum(mask), 1.0)
    loss = c * forget_loss + (1.0 - c) * retain_loss
    return loss, {"retain_loss": retain_loss, "forget_loss": forget_loss, "attention": att,
                  "forget_fraction": c}

  return loss_fn


# `keep_best` / `blindspot_keep_best`: return the unlearning's / the blindspot model's epoch with
# the lowest retain-cohort validation loss (the published STS-B notebook keeps the blindspot
# model's best); the defaults keep the final variables.
DEFAULTS = {"epochs": 1, "lr": 1e-3, "blindspot_epochs": 2, "blindspot_lr": 0.01, "beta": 50.0,
            "attention": "features", "layers": None, "keep_best": False,
            "blindspot_keep_best": False}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [3e-4, 1e-3, 3e-3], "epochs": [1, 3], "beta": [0.0, 50.0],
                "blindspot_epochs": [2, 4, 8]}


def train_blindspot_model(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
                          s: Mapping) -> train.TrainOutcome:
  """A fresh model of the original's architecture, trained on the retain rows for a few epochs.

  Its learning rate is the original recipe's (0.01), as in the published code, which trains the
  partial model with the same settings as the full one, only for fewer epochs.
  """
  variables = base.fresh_variables(ctx, original_variables, base.PURPOSE_BLINDSPOT_INIT,
                                   "blindspot model")
  recipe = train.Recipe.from_settings(s, epochs=s["blindspot_epochs"], lr=s["blindspot_lr"])
  return base.fit(ctx, variables, train.supervised_loss(ctx.loss), data.arrays(retain_only=True),
                  recipe, name="blindspot model", stage="blindspot_model",
                  purposes=(base.PURPOSE_BLINDSPOT_TRAIN, base.PURPOSE_BLINDSPOT_ORDER),
                  augment=data.augment,
                  validate=base.validation_loss(ctx, data, s["blindspot_keep_best"]))


def blindspot(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
              config: Mapping | None = None, *,
              blindspot_variables: Mapping | None = None) -> base.MethodResult:
  """Blindspot unlearning of the original model.

  Args:
    blindspot_variables: a ready blindspot model (its architecture must be the original's);
      by default one is trained with `train_blindspot_model` (checkpointed in
      `ctx.checkpoint_dir/blindspot_model`, the unlearning in `ctx.checkpoint_dir/unlearn`).
  Returns:
    The unlearned variables (the blindspot model as `auxiliary["blindspot_model"]`); the
    record's steps and seconds include the blindspot model's.
  """
  s = base.settings("blindspot", config, DEFAULTS)
  # A vmapped loss runs both branches of lax.cond: no gather then.
  rows = (None if train.ensemble.runs_vmapped(ctx.members) else
          forget_rows_for(float(np.mean(data.forget)), int(s["batch_size"]), ctx.dp))
  loss_fn = make_blindspot_loss(ctx.apply_fn, ctx.loss, beta=float(s["beta"]),
                                attention=s["attention"], layers=s["layers"], forget_rows=rows)
  steps, seconds, reused = 0, 0.0, True
  if blindspot_variables is None:
    partial = train_blindspot_model(ctx, original_variables, data, s)
    blindspot_variables, steps, seconds = partial.variables, partial.steps, partial.seconds
    reused = partial.reused
  base.check_same_architecture(original_variables, blindspot_variables, "blindspot model")
  loss_settings = {k: s[k] for k in ("beta", "attention", "layers")}
  outcome = base.fit(ctx, original_variables,
                     train.Objective(loss_fn, loss_settings, frozen=blindspot_variables),
                     data.arrays(), train.Recipe.from_settings(s), name="blindspot",
                     augment=data.augment, validate=base.validation_loss(ctx, data, s["keep_best"]))
  rec = base.record(outcome, blindspot_steps=int(steps), blindspot_seconds=float(seconds))
  rec["reused"] = rec["reused"] and reused
  rec["steps"] += rec["blindspot_steps"]
  rec["seconds"] += rec["blindspot_seconds"]
  return base.MethodResult(outcome.variables, rec, {"blindspot_model": blindspot_variables})
