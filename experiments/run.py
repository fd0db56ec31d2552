"""The experiment pipeline: original -> retrained -> each method -> evaluate -> report.

`run_experiment(config, workdir)` is importable and tested; `jax-unlearn run` is a thin entry
point over it. Every training stage checkpoints into `workdir/checkpoints/<model>/<stage>`, so a
rerun reuses finished stages and resumes unfinished ones.
"""
import contextlib
import json
import logging
import math
import os
import platform
import shutil
import sys
import time
from importlib import metadata
from typing import Sequence

import jax
import ml_collections
import numpy as np
from tqdm.auto import tqdm

from experiments.configs.base import shrink_for_smoke
from jax_unlearn import data as data_lib
from jax_unlearn import config_io, files, losses, metrics, parallel, train, unlearn
from jax_unlearn.errors import UserError
from jax_unlearn.models import from_linen, get_model, init_linen

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
ERROR_KEYS = ("retain_train_error", "forget_train_error", "retain_test_error", "forget_test_error")


def _check_config(c: ml_collections.ConfigDict) -> None:
  """Rejects values out of range before any work starts."""
  stages = {"train": c.train, **{f"methods.{k}": v for k, v in c.methods.items()}}
  for where, s in stages.items():
    for key in ("epochs", "blindspot_epochs"):
      if key in s and (not isinstance(s[key], int) or s[key] <= 0):
        raise UserError(f"config {where}.{key} must be a positive integer, got {s[key]!r}.",
                        f"set --config.{where}.{key}=1 or more.")
    for key in ("lr", "blindspot_lr"):
      if key in s and not (isinstance(s[key], (int, float)) and s[key] > 0):
        raise UserError(f"config {where}.{key} must be positive, got {s[key]!r}.",
                        f"set --config.{where}.{key} to e.g. 1e-3.")
  if c.train.batch_size <= 0:
    raise UserError(f"config train.batch_size must be positive, got {c.train.batch_size}.",
                    "set --config.train.batch_size=64, for example.")
  for name in c.methods:
    unlearn.get_method(name)


def _setup_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write-test")
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


def _load(c: ml_collections.ConfigDict):
  ds = data_lib.load_dataset(c.data.name, seed=c.seed, **c.data.kwargs.to_dict())
  masks = data_lib.make_forget_masks(ds, c.forget.to_dict())
  return ds, masks


def run_experiment(config: ml_collections.ConfigDict, workdir: str, *,
                   overrides: Sequence[tuple[str, str]] = (), quiet: bool = False,
                   fresh: bool = False) -> dict:
  """Runs the whole pipeline for `config` and writes results into `workdir`; returns results.

  `overrides` are (field, text) pairs from the command line (`--config.a.b=v`), applied after
  the smoke shrink too, so a value the user typed wins over the smoke sizes. `fresh` deletes
  earlier checkpoints, once the data and the model have passed their checks.
  """
  c = ml_collections.ConfigDict(config.to_dict())
  _apply_overrides(c, overrides)
  if c.smoke:
    shrink_for_smoke(c)
    _apply_overrides(c, overrides)
  _check_config(c)
  _setup_workdir(workdir)
  handler = _setup_logging(workdir)
  try:
    return _run(c, workdir, quiet, fresh)
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


def _run(c: ml_collections.ConfigDict, workdir: str, quiet: bool, fresh: bool) -> dict:
  t_start, compiles_before = time.perf_counter(), dict(COMPILES)
  mesh = parallel.make_mesh(c.devices or None)
  shards = c.batch_shards or None
  parallel.batch_multiple(mesh, shards)  # a clear error now, not inside the first step
  log.info("experiment %s on %d device(s): %s", c.experiment, mesh.devices.size,
           jax.devices()[0].device_kind)
  seconds = {}

  t = time.perf_counter()
  ds, masks = _load(c)
  seconds["data"] = time.perf_counter() - t
  task = ds.task
  n = {"train": len(ds.train), "retain": int((~masks.train).sum()),
       "forget": int(masks.train.sum()), "test_retain": int((~masks.test).sum()),
       "test_forget": int(masks.test.sum())}
  log.info("data %s: %s (%.1fs)", ds.name, n, seconds["data"])
  if c.train.batch_size > n["retain"]:  # checked now, not after hours of original training
    raise UserError(
        f"config train.batch_size {c.train.batch_size} is larger than the training data: "
        f"{n['train']} samples, {n['retain']} of them retained (the retrained model trains on "
        "those).", f"set --config.train.batch_size={n['retain']} or less.")

  loss_kwargs = {"quantiles": tuple(task.quantiles)} if task.loss == "quantile" else {}
  per_example = losses.get_loss(task.loss, **loss_kwargs)
  facts = {**task.extra, "out_dim": ds.train.y.shape[1]}
  if task.quantiles:
    facts["quantiles"] = tuple(task.quantiles)
  model_kwargs = {k: v for k, v in c.model.kwargs.to_dict().items() if v is not None}
  module = get_model(c.model.name, data_facts=facts, **model_kwargs)
  apply_fn = from_linen(module)
  sample_x = ds.train.x[:2]

  def init_fn(key):
    return init_linen(module, key, sample_x)

  _check_model_input(c.model.name, apply_fn, init_fn, sample_x, ds.train.y.shape[1])
  root = jax.random.key(c.seed)
  if fresh:
    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
  ckpt_root = os.path.join(workdir, "checkpoints", c.model.name)
  augment = None
  if c.data.augment and task.kind == "image":  # flips only where they keep the label
    augment = data_lib.make_augment(flip=task.extra.get("flip_preserves_label", True))

  # 1. The original model on all training data, the paper's recipe.
  t = time.perf_counter()
  tr = c.train
  original = train.train_model(
      apply_fn, init_fn(jax.random.fold_in(root, 0)), train.supervised_loss(per_example),
      {"x": ds.train.x, "y": ds.train.y}, epochs=tr.epochs, batch_size=tr.batch_size, lr=tr.lr,
      rng=jax.random.fold_in(root, 1), seed=c.seed, mesh=mesh, shards=shards,
      validate=train.make_validation_loss(apply_fn, per_example, ds.val.x, ds.val.y,
                                          batch_size=c.metrics.predict_batch_size, mesh=mesh,
                                          shards=shards),
      plateau=train.Plateau(factor=tr.plateau_factor, patience=tr.plateau_patience),
      clip_norm=tr.clip_norm or None, optimizer=tr.optimizer, augment=augment,
      checkpoint_dir=os.path.join(ckpt_root, "original"),
      progress=_progress("original", quiet), name="original")
  seconds["original"] = time.perf_counter() - t
  _summary("original", original, seconds["original"])

  # 2. The retrained (gold) model and 3. each unlearning method.
  udata = unlearn.UnlearnData(x=ds.train.x, y=ds.train.y, forget=masks.train,
                              val_x=ds.val.x[~masks.val], val_y=ds.val.y[~masks.val],
                              augment=augment)
  models = {"original": original.variables}
  records = {}
  stages = {"retrained": ml_collections.ConfigDict({
      "epochs": tr.epochs, "batch_size": tr.batch_size, "lr": tr.lr,
      "plateau_factor": tr.plateau_factor, "plateau_patience": tr.plateau_patience,
      "clip_norm": tr.clip_norm or None})}
  for name in c.methods:
    stages[name] = ml_collections.ConfigDict(
        {"batch_size": tr.batch_size, "clip_norm": tr.clip_norm or None,
         **c.methods[name].to_dict()})
  for i, (name, settings) in enumerate(stages.items()):
    t = time.perf_counter()
    ctx = unlearn.Context(apply_fn=apply_fn, init_fn=init_fn, loss=per_example,
                          rng=jax.random.fold_in(root, 100 + i), mesh=mesh, shards=shards,
                          checkpoint_dir=os.path.join(ckpt_root, name),
                          progress=_progress(name, quiet))
    result = unlearn.run_method(name, ctx, original.variables, udata, settings)
    seconds[name] = time.perf_counter() - t
    models[name] = result.variables
    records[name] = result.record
    log.info("%-10s done in %.1fs (%s)", name, seconds[name],
             ", ".join(f"{k}={v}" for k, v in result.record.items() if k != "seconds"))

  # 4. Every model evaluated with the shared metrics.
  t = time.perf_counter()
  eval_data = metrics.EvalData(
      train_x=ds.train.x, train_y=ds.train.y, forget_train=masks.train, test_x=ds.test.x,
      test_y=ds.test.y, forget_test=masks.test, val_x=ds.val.x, val_y=ds.val.y,
      forget_val=masks.val)
  evaluation = metrics.evaluate_models(
      apply_fn, models, eval_data, task_loss=per_example, error=task.error,
      quantiles=tuple(task.quantiles) if task.quantiles else None, config=c.metrics,
      seed=c.seed, mesh=mesh, shards=shards)
  seconds["metrics"] = time.perf_counter() - t
  seconds["metrics_per_model"] = dict(evaluation.seconds)
  seconds["total"] = time.perf_counter() - t_start
  seconds["compile"] = COMPILES["seconds"] - compiles_before["seconds"]
  compiles = COMPILES["count"] - compiles_before["count"]
  cache_hits = COMPILES["cache_hits"] - compiles_before["cache_hits"]

  results = {
      "experiment": c.experiment, "error": task.error, "seed": c.seed, "n": n,
      "devices": [str(d) for d in mesh.devices.flat], "versions": _versions(),
      "models": _finite(evaluation.results), "seconds": seconds,
      "records": _finite(records), "compiles": compiles - cache_hits,
      "compile_cache_hits": cache_hits, "config": c.to_dict(),
  }
  _write_outputs(workdir, results, evaluation, eval_data, c)
  log.info("\n%s", metrics.write_markdown(results["models"], None))
  log.info("results in %s (%.1fs in all)", workdir, seconds["total"])
  return results


def _summary(stage, outcome, secs):
  last = outcome.history[-1] if outcome.history else {}
  how = "reused checkpoint" if outcome.reused else (
      f"resumed after epoch {outcome.resumed_from_epoch}" if outcome.resumed_from_epoch else "")
  log.info("%-10s %d steps, train loss %.4g, val loss %.4g, %.1fs %s", stage, outcome.steps,
           last.get("train_loss", math.nan), last.get("best_val", math.nan), secs, how)


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


def _write_outputs(workdir, results, evaluation, eval_data, c) -> None:
  if jax.process_index() != 0:
    return
  # Written with the results, so a failed later run leaves the config of the results on disk.
  files.write_text(os.path.join(workdir, "config.json"), c.to_json_best_effort(indent=2) + "\n")
  files.write_text(os.path.join(workdir, "results.json"), json.dumps(results, indent=2) + "\n")
  table = metrics.write_markdown(results["models"], None)
  header = (f"# {results['experiment']}\n\nerror: {results['error']}, seed {results['seed']}, "
            f"n = {results['n']}\n\n")
  timing = "\n\nseconds: " + ", ".join(
      f"{k} {v:.1f}" for k, v in results["seconds"].items() if isinstance(v, float)) + "\n"
  files.write_text(os.path.join(workdir, "results.md"), header + table + timing)
  if c.plots:
    os.makedirs(os.path.join(workdir, "plots"), exist_ok=True)
    metrics.plot_all(evaluation, eval_data.train_y[eval_data.forget_train],
                     os.path.join(workdir, "plots"))
