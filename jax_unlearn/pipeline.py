"""The experiment pipeline: original -> retrained -> each method -> evaluate -> audit -> report.

`run_experiment(config, workdir)` is importable and tested; `jax-unlearn run` is a thin entry
point over it. Each stage is a function of an `experiment.Experiment` (what the stages share,
loaded by `experiment.load`). Every training stage checkpoints into
`workdir/checkpoints/<model>/<stage>` with the fingerprint of what determines it, so a rerun
reuses finished stages of the same settings, resumes unfinished ones, and recomputes those whose
settings (or whose parent stages) changed.
"""
import logging
import math
import os
import zlib
from typing import Sequence

import jax
import ml_collections
import numpy as np

from jax_unlearn import events, experiment, metrics, ops, train, unlearn
from jax_unlearn import results as results_lib
from jax_unlearn import runtime

log = logging.getLogger("jax_unlearn")


def run_experiment(config: ml_collections.ConfigDict, workdir: str, *,
                   overrides: Sequence[tuple[str, str]] = (), quiet: bool = False,
                   fresh: bool = False) -> dict:
  """Runs the whole pipeline for `config` and writes results into `workdir`; returns results.

  `fresh` deletes earlier checkpoints, once the data and the model have passed their checks.
  """
  with experiment.session(config, workdir, overrides) as (config, spec), \
      events.recording(_events_dir(config, workdir)):
    exp = experiment.load(config, workdir, spec=spec, quiet=quiet, fresh=fresh)
    original = train_original(exp)
    models, records, auxiliary = run_methods(exp, original)
    null = models.pop(NULL_STAGE, None)
    with exp.clock.timing("metrics"):
      evaluations, aux_results = evaluate(exp, models, auxiliary, null)
    audited = audit(exp, models, evaluations, null)
    return report(exp, evaluations, aux_results, records, audited)


def _events_dir(config: ml_collections.ConfigDict, workdir: str) -> str | None:
  """Where the TensorBoard events go (process 0 writes them), or None when they are off."""
  if not config.tensorboard or jax.process_index() != 0:
    return None
  return os.path.join(workdir, "tensorboard")


def _validation(exp: experiment.Experiment):
  """The original recipe's validation loss (on the whole validation split)."""
  return train.make_validation_loss(exp.apply_fn, exp.per_example, exp.ds.val.x, exp.ds.val.y,
                                    batch_size=exp.config.metrics.predict_batch_size, dp=exp.dp)


def _train_by_recipe(exp: experiment.Experiment, stage: str, variables, arrays, *,
                     rng: jax.Array, seeds: list[int]) -> train.TrainOutcome:
  """A stage trained on `arrays` by the config's recipe (the original's), validated on the
  validation split and checkpointed under its name; timed, and logged as reused or not."""
  with exp.clock.timing(stage):
    outcome = train.train_model(
        exp.apply_fn, variables, train.supervised_loss(exp.per_example), arrays,
        train.Recipe.from_settings(exp.spec.train), rng=rng, seeds=seeds,
        dp=exp.dp,
        validate=_validation(exp), augment=exp.augment,
        stage=train.Stage(stage, os.path.join(exp.checkpoints, stage),
                          {**exp.identity, "stage": stage},
                          runtime.epoch_progress(stage, exp.quiet)))
  if outcome.reused:
    exp.reused.append(stage)
  _summary(stage, outcome, exp.clock.seconds[stage])
  return outcome


def train_original(exp: experiment.Experiment) -> train.TrainOutcome:
  """Stage 1: the original model on all training data, the paper's recipe."""
  return _train_by_recipe(exp, "original", exp.fresh(0),
                          {"x": exp.ds.train.x, "y": exp.ds.train.y}, rng=exp.key(1),
                          seeds=exp.seeds)


def stage_purpose(label: str) -> int:
  """The key purpose of a method's stage, from its label alone: a method's result does not
  depend on which other methods the config runs, or in which order."""
  return 100 + zlib.crc32(label.encode()) % (1 << 24)


# The audit's null: a second retrained ensemble, from keys of its own (see `run_methods`).
NULL_STAGE = metrics.audit.NULL_STAGE


def run_methods(exp: experiment.Experiment, original: train.TrainOutcome
                ) -> tuple[dict, dict, dict]:
  """Stages 2 and 3: the retrained (gold) model, then each configured unlearning method; with
  the audit on, also `NULL_STAGE`, retrained models of other seeds (what a perfect unlearner
  would be) against which every audit number is read.

  Returns (name -> variables, with "original" first; name -> the method's record; name -> the
  variables of models the methods built on the way, e.g. "blindspot_model").
  """
  ds, masks, spec = exp.ds, exp.masks, exp.spec
  method_data = unlearn.UnlearnData(x=ds.train.x, y=ds.train.y, forget=masks.train,
                                    val_x=ds.val.x[~masks.val], val_y=ds.val.y[~masks.val],
                                    augment=exp.augment, group=ds.train.group)
  models, records, auxiliary = {"original": original.variables}, {}, {}
  stages = {"retrained": ("retrained", spec.train)}
  if spec.audit["enabled"]:
    stages[NULL_STAGE] = stages["retrained"]
  stages.update(spec.methods)
  for name, (method, settings) in stages.items():
    ctx = unlearn.Context(apply_fn=exp.apply_fn, init_fn=exp.init_fn, loss=exp.per_example,
                          rng=exp.key(stage_purpose(name)), dp=exp.dp,
                          checkpoint_dir=os.path.join(exp.checkpoints, name),
                          identity={**exp.identity, "method": name},
                          progress=runtime.epoch_progress(name, exp.quiet))
    with exp.clock.timing(name):
      result = unlearn.run_method(method, ctx, original.variables, method_data, settings)
    models[name] = result.variables
    records[name] = result.record
    # A variant's models built on the way carry its label ("blindspot_beta0:blindspot_model").
    auxiliary.update({k if name == method else f"{name}:{k}": v
                      for k, v in result.auxiliary.items()})
    if result.record.get("reused"):
      exp.reused.append(name)
    log.info("%-10s done in %.1fs (%s)", name, exp.clock.seconds[name],
             ", ".join(f"{k}={v}" for k, v in result.record.items() if k != "seconds"))
  return models, records, auxiliary


# What the models the methods build on the way are evaluated with: how well they predict.
AUXILIARY_METRICS = ("errors", "wasserstein")


def evaluate(exp: experiment.Experiment, models: dict, auxiliary: dict, null=None
             ) -> tuple[list[metrics.Evaluation], list[dict]]:
  """Stage 4: every model evaluated with the configured metrics; the auxiliary models (the
  blindspot model) with their errors and Wasserstein distance to the retrained model.

  With several seeds each member is evaluated as one run of its seed would be, and the noise
  floor joins as a model (`metrics.spread.FLOOR`), against this seed's retrained model: member k
  of the audit's null ensemble `null` when there is one, else the retrained model of the next
  seed; with every configured metric but AIN (another retrained model relearns as the retrained
  one does, up to the cap; a relearning per seed for a known answer).

  Returns (one evaluation per seed, one dict name -> the auxiliary models' results per seed).
  """
  ds, masks, task = exp.ds, exp.masks, exp.ds.task
  eval_data = metrics.EvalData(
      train_x=ds.train.x, train_y=ds.train.y, forget_train=masks.train, test_x=ds.test.x,
      test_y=ds.test.y, forget_test=masks.test, val_x=ds.val.x, val_y=ds.val.y,
      forget_val=masks.val, train_augment=exp.augment)
  evaluations, aux = [], []
  k_all = exp.members
  for k in range(k_all):
    pick = lambda tree: train.ensemble.member(tree, k)  # noqa: E731
    picked = {name: pick(v) for name, v in models.items()}
    picked_aux = {name: pick(v) for name, v in auxiliary.items()}
    floor = {}
    if k_all > 1:  # a noise floor needs another seed
      floor[metrics.spread.FLOOR] = (pick(null) if null is not None else train.ensemble.member(
          models["retrained"], metrics.spread.floor_partner(k, k_all)))
    common = dict(task_loss=exp.per_example, error=task.error,
                  quantiles=tuple(task.quantiles) if task.quantiles else None, seed=exp.seeds[k],
                  dp=exp.dp)
    evaluation = metrics.evaluate_models(exp.apply_fn, picked, eval_data,
                                         config=exp.config.metrics, **common)
    aux_results = {}
    if picked_aux or floor:
      # One more evaluation for the floor (its metrics but AIN) and the auxiliary models (errors
      # and distances only); the references come again, as every evaluation needs them.
      which = [m for m in exp.spec.metrics["which"] if m != "ain"]
      which = list(dict.fromkeys(which + list(AUXILIARY_METRICS)))
      references = {n: picked[n] for n in ("original", "retrained")}
      aux_results = metrics.evaluate_models(
          exp.apply_fn, {**references, **floor, **picked_aux}, eval_data,
          config={**exp.config.metrics.to_dict(), "which": which}, **common).results
      allowed = {key for m in AUXILIARY_METRICS for key in metrics.get(m).keys}
      for name in floor:  # beside the retrained model, in the main table
        evaluation.results = {**{n: evaluation.results[n] for n in ("original", "retrained")},
                              name: aux_results[name], **evaluation.results}
      aux_results = {name: {key: v for key, v in aux_results[name].items()
                            if v is not None and key in allowed} for name in picked_aux}
    evaluations.append(evaluation)
    aux.append(aux_results)
    log.info("metrics of seed %d (%d/%d) done", exp.seeds[k], k + 1, k_all)
  exp.clock.seconds["metrics_per_model"] = dict(evaluations[0].seconds)
  return evaluations, aux


# The first data-order seed of the shadow models (apart from every stage's).
SHADOW_ORDER_SEEDS = 1 << 20


def train_shadows(exp: experiment.Experiment, keep: np.ndarray) -> dict:
  """LiRA's shadow models: S models of the original recipe, shadow s on the rows `keep[s]`,
  trained at once (an ensemble, one compiled program) and checkpointed as one stage.

  Returns their stacked variables.
  """
  ds, seed, shadows = exp.ds, exp.config.seed, len(keep)
  keys = jax.random.split(
      jax.random.fold_in(jax.random.key(seed), metrics.audit.SHADOW_PURPOSE), shadows)
  return _train_by_recipe(
      exp, "shadows", train.ensemble.init_members(exp.init_fn, keys),
      [{"x": ds.train.x[rows], "y": ds.train.y[rows]} for rows in keep],
      rng=train.ensemble.fold_in(keys, 1),
      seeds=[SHADOW_ORDER_SEEDS + seed * shadows + s for s in range(shadows)]).variables


def audit(exp: experiment.Experiment, models: dict, evaluations: list[metrics.Evaluation], null
          ) -> tuple[dict, dict] | None:
  """Stage 5, with audit.enabled: LiRA's shadow models, every member's per-sample scores on
  every training row, and every selected audit (`metrics.audit`) over them, the null ensemble
  `null` (`metrics.audit.NULL`) beside the retrained one.

  Returns (the audit's results, its per-sample arrays), or None when the audit is off.
  """
  audit_settings = exp.spec.audit
  if not audit_settings["enabled"]:
    return None
  with exp.clock.timing("audit"):
    results, samples = _audit(exp, models, evaluations, null, audit_settings)
  log.info("audit done in %.1fs (%s)", exp.clock.seconds["audit"],
           ", ".join(f"{k} {v:.1f}s" for k, v in results["seconds"].items()))
  return results, samples


def _audit(exp: experiment.Experiment, models: dict, evaluations: list[metrics.Evaluation],
           null, audit_settings: dict) -> tuple[dict, dict]:
  """The audit with settings `audit_settings`: (its results, its per-sample arrays)."""
  ds, task = exp.ds, exp.ds.task
  predict_fn = train.make_predict_fn(exp.apply_fn, exp.dp)

  def score(stacked):
    return metrics.audit.member_scores(
        predict_fn, stacked, ds.train.x, ds.train.y, score=audit_settings["score"],
        task_loss=exp.per_example,
        quantiles=tuple(task.quantiles) if task.quantiles else None,
        batch_size=exp.config.metrics.predict_batch_size)

  audited = dict(models)
  audited[metrics.audit.NULL] = null
  audited = {n: audited[n] for n in ("original", "retrained", metrics.audit.NULL, *models)}
  scored = {name: score(v) for name, v in audited.items()}
  data = metrics.audit.AuditData(
      scores={n: v[0] for n, v in scored.items()}, losses={n: v[1] for n, v in scored.items()},
      forget=exp.masks.train, per_seed=[ev.results for ev in evaluations], settings=audit_settings)
  if audit_settings["lira"]:
    data.shadow_keep = metrics.audit.shadow_halves(len(ds.train.x), audit_settings["shadows"],
                                                   exp.config.seed)
    data.shadow_scores, _ = score(train_shadows(exp, data.shadow_keep))
  return metrics.audit.run_audit(data, runtime.progress(exp.quiet))


def report(exp: experiment.Experiment, evaluations: list[metrics.Evaluation],
           auxiliary: list[dict], records: dict, audited: tuple[dict, dict] | None = None) -> dict:
  """Stage 6: the results record (`results.assemble`), written by `results.write`; returns it."""
  config, compiles = exp.config, exp.clock.finish()
  record = results_lib.assemble(evaluations, auxiliary, records, audited[0] if audited else None)
  record = {
      "experiment": config.experiment, "error": exp.ds.task.error, "seed": config.seed,
      "seeds": list(exp.seeds), "dataset": {"name": exp.ds.name, "label": exp.ds.task.label},
      "n": exp.masks.counts(), "devices": [str(d) for d in exp.dp.mesh.devices.flat],
      "kernels": ops.kernels_info(config.kernels),
      "versions": runtime.versions(), **record, "seconds": exp.clock.seconds, **compiles,
      "reused": list(exp.reused), "config": config.to_dict(),
  }
  if jax.process_index() == 0:
    results_lib.write(exp.workdir, record, evaluations, forget=exp.masks.train,
                      labels=exp.ds.train.y[exp.masks.train], config=config,
                      samples=audited[1] if audited else None)
  events.final_metrics(record["models"])
  log.info("\n%s", metrics.write_markdown(record["models"], None))
  log.info("results in %s (%.1fs in all)", exp.workdir, exp.clock.seconds["total"])
  return record


def _summary(stage, outcome, secs):
  last = outcome.history[-1] if outcome.history else {}
  how = "reused checkpoint" if outcome.reused else (
      f"resumed after epoch {outcome.resumed_from_epoch}" if outcome.resumed_from_epoch else "")
  mean = lambda key: float(np.mean(last.get(key, math.nan)))  # over the members  # noqa: E731
  log.info("%-10s %d steps, train loss %.4g, val loss %.4g, %.1fs %s", stage, outcome.steps,
           mean("train_loss"), mean("best_val"), secs, how)
