"""The experiment pipeline: original -> retrained -> each method -> evaluate -> audit -> report.

`run_experiment(config, workdir)` is importable and tested; `jax-unlearn run` is a thin entry
point over it. Each stage is a function of an `Experiment` (what the stages share). Every
training stage checkpoints into `workdir/checkpoints/<model>/<stage>` with the fingerprint of what
determines it, so a rerun reuses finished stages of the same settings, resumes unfinished ones,
and recomputes those whose settings (or whose parent stages) changed.
"""
import contextlib
import dataclasses
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
import zlib
from importlib import metadata
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from jax_unlearn import data as data_lib
from jax_unlearn import (config_io, configs, events, files, losses, metrics, ops, parallel,
                         published, train, unlearn)
from jax_unlearn.errors import UserError
from jax_unlearn.models import from_linen, get_model, initialize

log = logging.getLogger("jax_unlearn")

# XLA compilations of this process, read around each run for results.json. JAX times a
# persistent-cache hit as a backend compile too; the hits are counted apart and subtracted.
COMPILES = {"count": 0, "seconds": 0.0, "cache_hits": 0}


def _on_duration(event: str, duration: float, **_) -> None:
  if event == "/jax/core/compile/backend_compile_duration":
    COMPILES["count"] += 1
    COMPILES["seconds"] += duration


def _on_event(event: str, **_) -> None:
  if event == "/jax/compilation_cache/cache_hits":
    COMPILES["cache_hits"] += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)
jax.monitoring.register_event_listener(_on_event)

VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy",
             "scikit-learn", "jax-unlearn")


def check_config(c: ml_collections.ConfigDict) -> None:
  """Rejects unknown names and values out of range before any work starts."""
  seeds = len(configs.member_seeds(c))
  train.Recipe.from_settings(configs.train_settings(c))
  if NULL_STAGE in c.methods:
    raise UserError(f"{NULL_STAGE!r} names the audit's null stage, not a method.",
                    "give the method another label in config.methods.")
  for name in c.methods:
    configs.method_settings(c, name)
  metrics.resolve_settings(c.metrics)
  audit = metrics.audit.resolve_settings(c.audit, seeds)
  ops.check_kernels(c.kernels)
  processes = jax.process_count()
  # An ensemble's members are spread whole over the processes, as many on each.
  for count, what in ((seeds, "models per stage (seeds)"),
                      (audit["shadows"] if audit["enabled"] else 1, "shadow models")):
    if count > 1 and count % processes:
      raise UserError(f"{count} {what} do not split over {processes} processes.",
                      f"use a multiple of {processes}, or one process.")


def _setup_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    # One probe per process: hosts sharing the workdir must not remove each other's.
    probe = os.path.join(workdir, f".write-test-{jax.process_index()}-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UserError(f"cannot write to the workdir {workdir!r}: {e.strerror}.",
                    "pass a --workdir you can write to.") from e


class _Console(logging.StreamHandler):
  """Writes to whatever sys.stdout is now: notebooks and test runners replace (and close) it."""

  def __init__(self):
    super().__init__()
    self.setFormatter(logging.Formatter("%(message)s"))

  @property
  def stream(self):
    return sys.stdout

  @stream.setter
  def stream(self, _):
    pass


def _setup_logging(workdir: str) -> logging.Handler:
  handler = logging.FileHandler(os.path.join(workdir, "log.txt"))
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
  log.addHandler(handler)
  log.setLevel(logging.INFO)
  log.propagate = False  # our own console handler; no second copy through the root logger
  if not any(isinstance(h, _Console) for h in log.handlers):
    log.addHandler(_Console())
  return handler


def enable_compilation_cache(directory: str) -> None:
  """Persistent XLA compilation cache: a second run of the same config skips most compiles."""
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _versions() -> dict:
  out = {}
  for pkg in VERSIONED:
    with contextlib.suppress(metadata.PackageNotFoundError):
      out[pkg] = metadata.version(pkg)
  out["python"] = platform.python_version()
  return out


def _progress(stage: str, quiet: bool):
  """A progress-bar factory for `train.fit`: one bar per epoch with the stage name and ETA."""

  def wrap(iterable, epoch, epochs, batches):
    return tqdm(iterable, total=batches, desc=f"{stage} epoch {epoch + 1}/{epochs}", leave=False,
                disable=quiet, unit="batch", dynamic_ncols=True)

  return wrap


def prepare_config(config: ml_collections.ConfigDict,
                   overrides: Sequence[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
  """A checked copy of `config` with the command-line overrides applied.

  `overrides` are (field, text) pairs (`--config.a.b=v`), applied after the smoke shrink too, so a
  value the user typed wins over the smoke sizes.
  """
  c = ml_collections.ConfigDict(config.to_dict())
  _apply_overrides(c, overrides)
  if c.smoke:
    configs.shrink_for_smoke(c)
    _apply_overrides(c, overrides)
  check_config(c)
  return c


def run_experiment(config: ml_collections.ConfigDict, workdir: str, *,
                   overrides: Sequence[tuple[str, str]] = (), quiet: bool = False,
                   fresh: bool = False) -> dict:
  """Runs the whole pipeline for `config` and writes results into `workdir`; returns results.

  `fresh` deletes earlier checkpoints, once the data and the model have passed their checks.
  """
  with session(config, workdir, overrides) as c, events.recording(_events_dir(c, workdir)):
    t_start, compiles_before = time.perf_counter(), dict(COMPILES)
    e = load_experiment(c, workdir, quiet=quiet, fresh=fresh)
    original = train_original(e)
    models, records, auxiliary = run_methods(e, original)
    null = models.pop(NULL_STAGE, None)
    evaluations, aux_results, eval_data = evaluate(e, models, auxiliary, null)
    audited = audit(e, models, evaluations, null)
    return report(e, evaluations, aux_results, eval_data, records, t_start, compiles_before,
                  audited)


def _events_dir(c: ml_collections.ConfigDict, workdir: str) -> str | None:
  """Where the TensorBoard events go (process 0 writes them), or None when they are off."""
  if not c.tensorboard or jax.process_index() != 0:
    return None
  return os.path.join(workdir, "tensorboard")


@contextlib.contextmanager
def session(config: ml_collections.ConfigDict, workdir: str,
            overrides: Sequence[tuple[str, str]] = ()):
  """The checked config (`prepare_config`) with `workdir` writable and its log.txt attached to
  the log for the duration: what every command over the stages starts with."""
  c = prepare_config(config, overrides)
  _setup_workdir(workdir)
  handler = _setup_logging(workdir)
  try:
    yield c
  finally:
    log.removeHandler(handler)
    handler.close()


def _apply_overrides(c: ml_collections.ConfigDict, overrides) -> None:
  for key, value in overrides:
    config_io.apply_override(c, key, value)


def _check_model_input(name: str, apply_fn, init_fn, x: np.ndarray, out_dim: int) -> None:
  """Fails before any training, naming the model and the input shape, when they do not fit.

  Shapes only (`eval_shape`): nothing is computed or compiled.
  """
  hint = ("give inputs in a layout the model takes (images [N, H, W, C], with a channel axis "
          "for grayscale; tabular [N, F] for mlp; text pairs [N, 2, T, E]; windows "
          "[N, L + H, F]), or choose another model.name.")
  try:
    pred = jax.eval_shape(lambda key: apply_fn(init_fn(key), x, train=False)[0],
                          jax.random.key(0))
  except UserError:
    raise
  except Exception as e:  # shape errors of flax, lax and user models share no type
    cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise UserError(f"model {name!r} cannot take inputs of shape {tuple(x.shape[1:])} per "
                    f"sample: {cause}", hint) from e
  if tuple(pred.shape[:2]) != (len(x), out_dim):
    raise UserError(
        f"model {name!r} maps a batch of inputs of shape {tuple(x.shape)} to predictions of "
        f"shape {tuple(pred.shape)}, not [{len(x)}, {out_dim}, ...]: the input layout does "
        "not fit the model.", hint)


@dataclasses.dataclass
class Experiment:
  """What the stages share: the config, the data and its forget masks, the model, the keys.

  With several seeds every stage is an ensemble (`members` = K): `root` holds one key per seed,
  variables carry a leading member axis, and member k is the model one run of seed k trains.
  """
  c: ml_collections.ConfigDict
  workdir: str
  quiet: bool
  dp: parallel.DataParallel
  ds: data_lib.Dataset
  masks: data_lib.ForgetMasks
  per_example: losses.LossFn
  apply_fn: Callable
  init_fn: Callable
  augment: Callable | None
  root: jax.Array
  seeds: list
  # What determines every stage beyond what the training loop sees itself (see train.loop).
  identity: dict
  seconds: dict = dataclasses.field(default_factory=dict)
  reused: list = dataclasses.field(default_factory=list)  # stages taken from their checkpoints

  @property
  def checkpoints(self) -> str:
    return os.path.join(self.workdir, "checkpoints", self.c.model.name)

  @property
  def members(self) -> int | None:
    """None for one model per stage, else the member count K."""
    return None if len(self.seeds) == 1 else len(self.seeds)

  def key(self, purpose: int) -> jax.Array:
    """The stage key of `purpose`, one per member for an ensemble."""
    return train.ensemble.fold_in(self.root, purpose, self.members)

  def order_seed(self):
    """The data-order seed of a stage trained on the config's recipe (one per member)."""
    return self.seeds[0] if self.members is None else list(self.seeds)

  def fresh(self, purpose: int) -> dict:
    """Fresh variables (stacked over the members of an ensemble, each from its own key)."""
    return train.ensemble.init_members(self.init_fn, self.key(purpose), self.members)


def load_experiment(c: ml_collections.ConfigDict, workdir: str, *, quiet: bool = False,
                    fresh: bool = False) -> Experiment:
  """Stage 0: the parallel context, the data and forget masks, the model; every check that can
  fail before training."""
  dp = parallel.DataParallel.create(c.devices or None, c.batch_shards or None)
  log.info("experiment %s on %d device(s): %s", c.experiment, dp.devices,
           jax.devices()[0].device_kind)
  t = time.perf_counter()
  ds = data_lib.load_dataset(c.data.name, seed=c.seed, **c.data.kwargs.to_dict())
  masks = data_lib.make_forget_masks(ds, c.forget.to_dict())
  seconds = {"data": time.perf_counter() - t}
  task = ds.task
  n = masks.counts()
  log.info("data %s (%s): %s (%.1fs)", ds.name, task.label, n, seconds["data"])
  if c.train.batch_size > n["retain"]:  # checked now, not after hours of original training
    raise UserError(
        f"config train.batch_size {c.train.batch_size} is larger than the training data: "
        f"{n['train']} samples, {n['retain']} of them retained (the retrained model trains on "
        "those).", f"set --config.train.batch_size={n['retain']} or less.")
  if _audit_settings(c)["lira"] and c.train.batch_size > n["train"] // 2:
    raise UserError(
        f"config train.batch_size {c.train.batch_size} is larger than the {n['train'] // 2} "
        "rows each of LiRA's shadow models trains on (half the training data).",
        f"set --config.train.batch_size={n['train'] // 2} or less, or leave lira out of "
        "audit.which.")

  loss_kwargs = {"quantiles": tuple(task.quantiles)} if task.loss == "quantile" else {}
  per_example = losses.get_loss(task.loss, **loss_kwargs)
  facts = {**task.extra, "out_dim": ds.train.y.shape[1], "kernels": c.kernels}
  if task.quantiles:
    facts["quantiles"] = tuple(task.quantiles)
  model_kwargs = {k: v for k, v in c.model.kwargs.to_dict().items() if v is not None}
  module = get_model(c.model.name, data_facts=facts, **model_kwargs)
  apply_fn = from_linen(module)
  sample_x = np.asarray(ds.train.x[:2])  # decoded, when the inputs are streamed

  def init_fn(key):
    return initialize(module, key, sample_x, init=c.model.init)

  _check_model_input(c.model.name, apply_fn, init_fn, sample_x, ds.train.y.shape[1])
  if fresh:
    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
  augment = data_lib.augment_for(task, c.data.augment)  # images only; flips keep the label
  # The training loop fingerprints the arrays, keys and starting variables it sees; validation
  # rows, augmentation and the model's definition (kernels included) come from these settings.
  data_identity = c.data.to_dict()  # how inputs are read (workers, prefetch) changes no result
  data_identity["kwargs"] = {k: v for k, v in data_identity["kwargs"].items()
                             if k not in data_lib.records.READ_SETTINGS}
  identity = {"data": data_identity, "forget": c.forget.to_dict(),
              "model": {"name": c.model.name, "kwargs": model_kwargs, "facts": facts,
                        "init": c.model.init}}
  seeds = configs.member_seeds(c)
  root = (jax.random.key(seeds[0]) if len(seeds) == 1
          else jnp.stack([jax.random.key(s) for s in seeds]))
  if len(seeds) > 1:
    log.info("%d models per stage (seeds %s), trained at once on %d device(s)", len(seeds),
             seeds, dp.members(len(seeds)).devices)
  return Experiment(c, workdir, quiet, dp, ds, masks, per_example, apply_fn, init_fn, augment,
                    root, seeds, identity, seconds)


def _validation(e: Experiment):
  """The original recipe's validation loss (on the whole validation split)."""
  return train.make_validation_loss(e.apply_fn, e.per_example, e.ds.val.x, e.ds.val.y,
                                    batch_size=e.c.metrics.predict_batch_size, dp=e.dp)


def _train_by_recipe(e: Experiment, stage: str, variables, arrays, *, rng: jax.Array,
                     seed) -> train.TrainOutcome:
  """A stage trained on `arrays` by the config's recipe (the original's), validated on the
  validation split and checkpointed under its name; timed, and logged as reused or not."""
  t = time.perf_counter()
  outcome = train.train_model(
      e.apply_fn, variables, train.supervised_loss(e.per_example), arrays,
      train.Recipe.from_settings(configs.train_settings(e.c)), rng=rng, seed=seed, dp=e.dp,
      validate=_validation(e), augment=e.augment,
      checkpoint_dir=os.path.join(e.checkpoints, stage), identity={**e.identity, "stage": stage},
      progress=_progress(stage, e.quiet), name=stage)
  e.seconds[stage] = time.perf_counter() - t
  if outcome.reused:
    e.reused.append(stage)
  _summary(stage, outcome, e.seconds[stage])
  return outcome


def train_original(e: Experiment) -> train.TrainOutcome:
  """Stage 1: the original model on all training data, the paper's recipe."""
  return _train_by_recipe(e, "original", e.fresh(0), {"x": e.ds.train.x, "y": e.ds.train.y},
                          rng=e.key(1), seed=e.order_seed())


def stage_purpose(label: str) -> int:
  """The key purpose of a method's stage, from its label alone: a method's result does not
  depend on which other methods the config runs, or in which order."""
  return 100 + zlib.crc32(label.encode()) % (1 << 24)


# The audit's null: a second retrained ensemble, from keys of its own (see `run_methods`).
NULL_STAGE = "retrained_null"


def run_methods(e: Experiment, original: train.TrainOutcome) -> tuple[dict, dict, dict]:
  """Stages 2 and 3: the retrained (gold) model, then each configured unlearning method; with
  the audit on, also `NULL_STAGE`, retrained models of other seeds (what a perfect unlearner
  would be) against which every audit number is read.

  Returns (name -> variables, with "original" first; name -> the method's record; name -> the
  variables of models the methods built on the way, e.g. "blindspot_model").
  """
  ds, masks, c = e.ds, e.masks, e.c
  udata = unlearn.UnlearnData(x=ds.train.x, y=ds.train.y, forget=masks.train,
                              val_x=ds.val.x[~masks.val], val_y=ds.val.y[~masks.val],
                              augment=e.augment)
  models, records, auxiliary = {"original": original.variables}, {}, {}
  stages = {"retrained": ("retrained", configs.train_settings(c))}
  if _audit_settings(c)["enabled"]:
    stages[NULL_STAGE] = stages["retrained"]
  stages.update({name: (configs.method_of(c, name), configs.method_settings(c, name))
                 for name in c.methods})
  for name, (method, settings) in stages.items():
    t = time.perf_counter()
    ctx = unlearn.Context(apply_fn=e.apply_fn, init_fn=e.init_fn, loss=e.per_example,
                          rng=e.key(stage_purpose(name)), dp=e.dp,
                          checkpoint_dir=os.path.join(e.checkpoints, name),
                          identity={**e.identity, "method": name},
                          progress=_progress(name, e.quiet), members=e.members)
    result = unlearn.run_method(method, ctx, original.variables, udata, settings)
    e.seconds[name] = time.perf_counter() - t
    models[name] = result.variables
    records[name] = result.record
    # A variant's models built on the way carry its label ("blindspot_beta0:blindspot_model").
    auxiliary.update({k if name == method else f"{name}:{k}": v
                      for k, v in result.auxiliary.items()})
    if result.record.get("reused"):
      e.reused.append(name)
    log.info("%-10s done in %.1fs (%s)", name, e.seconds[name],
             ", ".join(f"{k}={v}" for k, v in result.record.items() if k != "seconds"))
  return models, records, auxiliary


# What the models the methods build on the way are evaluated with: how well they predict.
AUXILIARY_METRICS = ("errors", "wasserstein")
AUXILIARY_COLUMNS = ("retain_train_error", "forget_train_error", "retain_test_error",
                     "forget_test_error", "wasserstein_to_retrained")
PUBLISHED_COLUMNS = ("retain_test_error", "forget_test_error", "wasserstein_to_retrained")


def evaluate(e: Experiment, models: dict, auxiliary: dict, null=None
             ) -> tuple[list[metrics.Evaluation], list[dict], metrics.EvalData]:
  """Stage 4: every model evaluated with the configured metrics; the auxiliary models (the
  blindspot model) with their errors and Wasserstein distance to the retrained model.

  With several seeds each member is evaluated as one run of its seed would be, and the noise
  floor joins as a model (`metrics.spread.FLOOR`), against this seed's retrained model: member k
  of the audit's null ensemble `null` when there is one, else the retrained model of the next
  seed; with every configured metric but AIN (another retrained model relearns as the retrained
  one does, up to the cap; a relearning per seed for a known answer).

  Returns (one evaluation per seed, one dict name -> the auxiliary models' results per seed,
  the evaluation data).
  """
  t = time.perf_counter()
  ds, masks, task = e.ds, e.masks, e.ds.task
  eval_data = metrics.EvalData(
      train_x=ds.train.x, train_y=ds.train.y, forget_train=masks.train, test_x=ds.test.x,
      test_y=ds.test.y, forget_test=masks.test, val_x=ds.val.x, val_y=ds.val.y,
      forget_val=masks.val)
  evaluations, aux = [], []
  k_all = e.members or 1
  for k in range(k_all):
    floor = {}
    if e.members is None:
      these, extra = models, auxiliary
    else:
      pick = lambda tree: train.ensemble.member(tree, k)  # noqa: E731
      these = {name: pick(v) for name, v in models.items()}
      floor = {metrics.spread.FLOOR: train.ensemble.member(models["retrained"], (k + 1) % k_all)
               if null is None else pick(null)}
      extra = {name: pick(v) for name, v in auxiliary.items()}
    common = dict(task_loss=e.per_example, error=task.error,
                  quantiles=tuple(task.quantiles) if task.quantiles else None, seed=e.seeds[k],
                  dp=e.dp)
    evaluation = metrics.evaluate_models(e.apply_fn, these, eval_data, config=e.c.metrics,
                                         augment=e.augment, **common)
    found = {}
    if extra or floor:
      # One more evaluation for the floor (its metrics but AIN) and the auxiliary models (errors
      # and distances only); the references come again, as every evaluation needs them.
      which = [m for m in metrics.resolve_settings(e.c.metrics)["which"] if m != "ain"]
      which = list(dict.fromkeys(which + list(AUXILIARY_METRICS)))
      references = {n: these[n] for n in ("original", "retrained")}
      found = metrics.evaluate_models(
          e.apply_fn, {**references, **floor, **extra}, eval_data, augment=e.augment,
          config={**e.c.metrics.to_dict(), "which": which}, **common).results
      allowed = {key for m in AUXILIARY_METRICS for key in metrics.get(m).keys}
      for name in floor:  # beside the retrained model, in the main table
        evaluation.results = {**{n: evaluation.results[n] for n in ("original", "retrained")},
                              name: found[name], **evaluation.results}
      found = {name: {key: v for key, v in found[name].items() if v is not None and key in allowed}
               for name in extra}
    evaluations.append(evaluation)
    aux.append(found)
    if e.members is not None:
      log.info("metrics of seed %d (%d/%d) done", e.seeds[k], k + 1, k_all)
  e.seconds["metrics"] = time.perf_counter() - t
  e.seconds["metrics_per_model"] = dict(evaluations[0].seconds)
  return evaluations, aux, eval_data


def _audit_settings(c: ml_collections.ConfigDict) -> dict:
  """The audit's settings, with "lira": whether shadow models train."""
  s = metrics.audit.resolve_settings(c.audit, len(configs.member_seeds(c)))
  return {**s, "lira": bool(s["enabled"] and "lira" in s["which"])}


# Key purpose and first data-order seed of the shadow models (apart from every stage's).
SHADOW_PURPOSE = 0x5AD0
SHADOW_ORDER_SEEDS = 1 << 20


def train_shadows(e: Experiment, keep: np.ndarray) -> dict:
  """LiRA's shadow models: S models of the original recipe, shadow s on the rows `keep[s]`,
  trained at once (an ensemble, one compiled program) and checkpointed as one stage.

  Returns their stacked variables.
  """
  ds, seed, shadows = e.ds, e.c.seed, len(keep)
  keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), SHADOW_PURPOSE), shadows)
  return _train_by_recipe(
      e, "shadows", train.ensemble.init_members(e.init_fn, keys, shadows),
      [{"x": ds.train.x[rows], "y": ds.train.y[rows]} for rows in keep],
      rng=train.ensemble.fold_in(keys, 1, shadows),
      seed=[SHADOW_ORDER_SEEDS + seed * shadows + s for s in range(shadows)]).variables


def audit(e: Experiment, models: dict, evaluations: list[metrics.Evaluation], null
          ) -> tuple[dict, dict] | None:
  """Stage 5, with audit.enabled: LiRA's shadow models, every member's per-sample scores on
  every training row, and every selected audit (`metrics.audit`) over them, the null ensemble
  `null` (`metrics.audit.NULL`) beside the retrained one.

  Returns (the audit's results, its per-sample arrays), or None when the audit is off.
  """
  s = _audit_settings(e.c)
  if not s["enabled"]:
    return None
  t = time.perf_counter()
  ds, task = e.ds, e.ds.task
  predict_fn = train.make_predict_fn(e.apply_fn, e.dp)

  def score(stacked):
    return metrics.audit.member_scores(
        predict_fn, stacked, ds.train.x, ds.train.y, score=s["score"], task_loss=e.per_example,
        quantiles=tuple(task.quantiles) if task.quantiles else None,
        batch_size=e.c.metrics.predict_batch_size)

  audited = dict(models)
  audited[metrics.audit.NULL] = null
  audited = {n: audited[n] for n in ("original", "retrained", metrics.audit.NULL, *models)}
  scored = {name: score(v if e.members else train.ensemble.stack([v]))
            for name, v in audited.items()}
  data = metrics.audit.AuditData(
      scores={n: v[0] for n, v in scored.items()}, losses={n: v[1] for n, v in scored.items()},
      forget=e.masks.train, per_seed=[ev.results for ev in evaluations], settings=s)
  if s["lira"]:
    data.shadow_keep = metrics.audit.shadow_halves(len(ds.train.x), s["shadows"], e.c.seed)
    data.shadow_scores, _ = score(train_shadows(e, data.shadow_keep))
  progress = None if e.quiet else (lambda it, desc: tqdm(it, desc=desc, leave=False))
  results, samples = metrics.audit.run_audit(data, progress)
  e.seconds["audit"] = time.perf_counter() - t
  log.info("audit done in %.1fs (%s)", e.seconds["audit"],
           ", ".join(f"{k} {v:.1f}s" for k, v in results["seconds"].items()))
  return results, samples


# Keys the paired comparisons between methods cover.
COMPARED = ("forget_test_error", "retain_test_error", "wasserstein_to_retrained", "mia_forget",
            "ain")


def report(e: Experiment, evaluations: list[metrics.Evaluation], auxiliary: list[dict],
           eval_data: metrics.EvalData, records: dict, t_start: float,
           compiles_before: dict, audited: tuple[dict, dict] | None = None) -> dict:
  """Stage 5: results.json, results.md, config.json and plots; returns the results.

  One seed: each result is a number. Several: each is {"mean", "std", "ci95", "values"} over
  seeds, with the noise floor's row, each method against that floor (`noise_floor`) and the
  paired comparisons of the methods (`comparisons`).
  """
  c, seconds = e.c, e.seconds
  seconds["total"] = time.perf_counter() - t_start
  seconds["compile"] = COMPILES["seconds"] - compiles_before["seconds"]
  compiles = COMPILES["count"] - compiles_before["count"]
  cache_hits = COMPILES["cache_hits"] - compiles_before["cache_hits"]
  per_seed = [_finite(ev.results) for ev in evaluations]
  spread = {}
  if e.members is None:
    models, aux = per_seed[0], _finite(auxiliary[0])
  else:
    models = metrics.spread.aggregate(per_seed)
    aux = metrics.spread.aggregate([_finite(a) for a in auxiliary]) if auxiliary[0] else {}
    methods = [n for n in models if n not in ("original", "retrained", metrics.spread.FLOOR)]
    keys = [k for k in COMPARED if any(r.get(k) is not None for s in per_seed for r in s.values())]
    spread = {"noise_floor": _finite(metrics.spread.noise_floor(per_seed, methods)),
              "comparisons": _finite(metrics.spread.compare(
                  per_seed, ["original", *methods], keys))}
  results = {
      "experiment": c.experiment, "error": e.ds.task.error, "seed": c.seed,
      "seeds": list(e.seeds), "dataset": {"name": e.ds.name, "label": e.ds.task.label},
      "n": e.masks.counts(),
      "devices": [str(d) for d in e.dp.mesh.devices.flat], "kernels": ops.kernels_info(c.kernels),
      "versions": _versions(), "models": models, "auxiliary": aux, **spread,
      "cost": cost(records), **({"audit": _finite(audited[0])} if audited else {}),
      "seconds": seconds, "records": _finite(records),
      "compiles": compiles - cache_hits, "compile_cache_hits": cache_hits,
      "reused": list(e.reused), "config": c.to_dict(),
  }
  _write_outputs(e.workdir, results, evaluations, per_seed, eval_data, c,
                 audited[1] if audited else None)
  events.final_metrics(results["models"])
  log.info("\n%s", metrics.write_markdown(results["models"], None))
  log.info("results in %s (%.1fs in all)", e.workdir, seconds["total"])
  return results


def cost(records: dict) -> dict:
  """name -> {"seconds", "vs_retrained"}: each method's training time (all its stages, of all
  members at once; from the checkpoints when reused, so a rerun reports the first run's) and
  its ratio to retraining's. Unlearning is worth it only well below 1."""
  base = float(records["retrained"]["seconds"])
  return {name: {"seconds": float(r["seconds"]),
                 "vs_retrained": float(r["seconds"]) / base if base > 0 else None}
          for name, r in records.items()}


def _summary(stage, outcome, secs):
  last = outcome.history[-1] if outcome.history else {}
  how = "reused checkpoint" if outcome.reused else (
      f"resumed after epoch {outcome.resumed_from_epoch}" if outcome.resumed_from_epoch else "")
  mean = lambda key: float(np.mean(last.get(key, math.nan)))  # over the members  # noqa: E731
  log.info("%-10s %d steps, train loss %.4g, val loss %.4g, %.1fs %s", stage, outcome.steps,
           mean("train_loss"), mean("best_val"), secs, how)


def _finite(tree):
  """JSON-safe copy: numpy scalars to Python, non-finite floats to None."""
  if isinstance(tree, dict):
    return {str(k): _finite(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_finite(v) for v in tree]
  if isinstance(tree, (np.generic,)):
    tree = tree.item()
  if isinstance(tree, float) and not math.isfinite(tree):
    return None
  return tree


def _write_outputs(workdir, results, evaluations, per_seed, eval_data, c, samples) -> None:
  if jax.process_index() != 0:
    return
  several = len(results["seeds"]) > 1
  # Written with the results, so a failed later run leaves the config of the results on disk.
  files.write_text(os.path.join(workdir, "config.json"), c.to_json_best_effort(indent=2) + "\n")
  files.write_text(os.path.join(workdir, "results.json"), json.dumps(results, indent=2) + "\n")
  table = metrics.write_markdown(results["models"], None, interval=several)
  if several:
    table += ("\n## The noise floor\n\nHow far each method's model is from the retrained model, "
              f"minus how far another seed's retrained model is (the row {metrics.spread.FLOOR!r})"
              ", paired by seed.\n\n" + metrics.write_floor(results["noise_floor"]))
    table += ("\n## Paired comparisons\n\nDifferences between models over the same seeds "
              "(first minus second).\n\n" + metrics.write_comparisons(results["comparisons"]))
  if results["auxiliary"]:
    table += ("\n## Models built on the way\n\nThe blindspot model is the partially trained "
              "model Blindspot unlearning distils from on the forget rows.\n\n"
              + metrics.write_markdown(results["auxiliary"], None, columns=AUXILIARY_COLUMNS,
                                       interval=several))
  table += ("\n## Cost\n\nTraining seconds of each method (every stage, all seeds at once) and "
            "their ratio to retraining's.\n\n| model | seconds | × retraining |\n|:--|--:|--:|\n"
            + "".join(f"| {n} | {r['seconds']:.1f} | {metrics.format_value(r['vs_retrained'])} |\n"
                      for n, r in results["cost"].items()))
  if "audit" in results:
    table += "\n" + metrics.write_audit(results["audit"])
    files.write_npz(os.path.join(workdir, "audit.npz"), samples)
  paper = published.rows_for(results["experiment"])
  if paper is not None:
    table += (f"\n## Published\n\nThe paper's numbers for this experiment ({paper['source']}; "
              f"error: {paper['error']}), beside which a run of it is read.\n\n"
              + metrics.write_markdown(paper["rows"], None, columns=PUBLISHED_COLUMNS))
  seeds = (f"seeds {', '.join(map(str, results['seeds']))} (mean ± std over seeds [95% "
           "interval of the mean])" if several else f"seed {results['seed']}")
  header = (f"# {results['experiment']}\n\ndata: {results['dataset']['name']} "
            f"({results['dataset']['label']}); error: {results['error']}, {seeds}, "
            f"n = {results['n']}\n\n")
  timing = "\n\nseconds: " + ", ".join(
      f"{k} {v:.1f}" for k, v in results["seconds"].items() if isinstance(v, float)) + "\n"
  files.write_text(os.path.join(workdir, "results.md"), header + table + timing)
  if c.plots:
    out = os.path.join(workdir, "plots")
    os.makedirs(out, exist_ok=True)
    labels = eval_data.train_y[eval_data.forget_train]
    metrics.plot_tradeoff(per_seed, out)
    if "audit" in results:
      metrics.plot_audit(results["audit"], samples, eval_data.forget_train, out)
    if several:  # the spread as points; the histograms and scatter of the first seed
      metrics.plot_seeds(per_seed, out)
      metrics.plot_relative_difference(evaluations[0], labels, out)
      metrics.plot_predictions(evaluations[0], labels, out)
    else:
      metrics.plot_all(evaluations[0], labels, out)
