"""Choosing a method's settings on validation rows only: `jax-unlearn tune`.

A tuning config lists candidate settings as method entries (`configs.method_variant`). The
pipeline's stages train the original, the retrained model and every candidate (checkpointed as
in `jax-unlearn run`, so a later run of a chosen candidate reuses it); each is then scored on the
validation split, never on the test cohorts: the Wasserstein distance of its predictions on the
forget cohort's validation rows to the retrained model's, and its error on the retain cohort's
validation rows. The choice is the candidate closest to the retrained model among those whose
retain error stays within `max_retain_ratio` of the original's, by the mean over seeds: over
all candidates ("chosen") and per registered method ("chosen_per_method", with the settings of
its search space). tune.json also records the seeds and the forget request tuned on, which a
run that uses the choices (`config.tuned`) may not share (`protocol`).
"""
import json
import logging
import os
import time
from typing import Mapping, Sequence

import ml_collections
import numpy as np

from jax_unlearn import experiment, files, losses, pipeline, protocol, train, unlearn
from jax_unlearn.errors import UserError
from jax_unlearn.metrics import distances, spread
from jax_unlearn.metrics.errors import cohort_error

log = logging.getLogger("jax_unlearn")

class NoValidationRows(UserError):
  """The validation split lacks one of the cohorts (e.g. a forgotten time window has none)."""


MAX_RETAIN_RATIO = 1.2  # a candidate may not raise the retain validation error above this x


def check_cohorts(forget_val: np.ndarray) -> None:
  """Tuning scores both cohorts of the validation split: each needs rows."""
  if not forget_val.any() or forget_val.all():
    raise NoValidationRows(
        "tuning needs validation rows of both the forget and the retain cohort; the validation "
        f"split has {int(forget_val.sum())} forget rows of {len(forget_val)}.",
        "use a larger data.kwargs.val_fraction, or a forget set the validation split shares.")


def validation_scores(exp: experiment.Experiment, models: dict) -> dict:
  """name -> {"val_forget_wasserstein", "val_retain_error"}, one value per seed (lists); with
  several seeds also for the noise floor (`spread.FLOOR`, retrained of seed k + 1 vs seed k)."""
  ds, masks, task = exp.ds, exp.masks, exp.ds.task
  check_cohorts(masks.val)
  predict_fn = train.make_predict_fn(exp.apply_fn, exp.dp)
  members = exp.members
  quantiles = tuple(task.quantiles) if task.quantiles else None
  preds = {}
  for name, variables in models.items():
    per = []
    for k in range(members):
      v = train.ensemble.member(variables, k)
      p = train.predict(predict_fn, v, ds.val.x, batch_size=exp.config.metrics.predict_batch_size)
      per.append(np.asarray(p))
    preds[name] = per
  point = lambda p: np.asarray(losses.point_prediction(p, quantiles))  # noqa: E731
  if members > 1:  # the noise floor: another seed's retrained model against this seed's
    retrained = preds["retrained"]
    preds[spread.FLOOR] = [retrained[spread.floor_partner(k, members)] for k in range(members)]
  out = {}
  for name, per in preds.items():
    out[name] = {
        "val_forget_wasserstein": [
            distances.wasserstein(point(p)[masks.val], point(r)[masks.val])
            for p, r in zip(per, preds["retrained"])],  # the floor: against its own seed
        "val_retain_error": [cohort_error(p, ds.val.y, task.error, ~masks.val,
                                          quantiles=quantiles) for p in per]}
  return out


def choose(scores: dict, candidates: Sequence[str],
           max_retain_ratio: float = MAX_RETAIN_RATIO) -> str | None:
  """The candidate with the lowest mean validation forget distance to the retrained model among
  those whose mean retain validation error is at most `max_retain_ratio` x the original's."""
  limit = max_retain_ratio * float(np.mean(scores["original"]["val_retain_error"]))
  allowed = [n for n in candidates if float(np.mean(scores[n]["val_retain_error"])) <= limit]
  if not allowed:
    return None
  return min(allowed, key=lambda n: float(np.mean(scores[n]["val_forget_wasserstein"])))


def choose_per_method(scores: dict, methods: Mapping[str, tuple[str, Mapping]]) -> dict:
  """registered method -> {"label", "settings"} of its candidate chosen by `choose` among the
  entries (`RunSpec.methods`: label -> (method, settings)) that run it; the settings are those
  of its search space. A method none of whose candidates keeps the retain error is left out."""
  labels = {}
  for label, (method, _) in methods.items():
    labels.setdefault(method, []).append(label)
  out = {}
  for method, candidates in labels.items():
    best = choose(scores, candidates)
    if best is not None:
      space = unlearn.get_method(method).search_space
      out[method] = {"label": best, "settings": {k: methods[best][1][k] for k in space}}
  return out


def tune_experiment(config: ml_collections.ConfigDict, workdir: str, *, overrides=(),
                    quiet: bool = False, fresh: bool = False) -> dict:
  """Trains the original, the retrained model and every candidate of `config.methods`, scores
  them on validation rows and writes tune.json and tune.md into `workdir`; returns the report."""
  with experiment.session(config, workdir, overrides) as (config, spec):
    t0 = time.perf_counter()
    exp = experiment.load(config, workdir, spec=spec, quiet=quiet, fresh=fresh)
    check_cohorts(exp.masks.val)  # before any training
    original = pipeline.train_original(exp)
    models, records, _ = pipeline.run_methods(exp, original)
    scores = validation_scores(exp, models)
    candidates = list(config.methods)
    chosen = choose(scores, candidates)
    chosen_per_method = choose_per_method(scores, spec.methods)
    report = {
        "experiment": config.experiment, "rule": (
            "lowest mean val_forget_wasserstein among candidates with mean val_retain_error <= "
            f"{MAX_RETAIN_RATIO} x the original's"),
        "chosen": chosen,
        **protocol.record(config, exp.seeds, chosen_per_method),
        "scores": {n: {k: spread.summarize(v) for k, v in s.items()} for n, s in scores.items()},
        "settings": {n: config.methods[n].to_dict() for n in candidates},
        "seconds": {n: float(np.max(r["seconds"])) for n, r in records.items()},
        "total_seconds": time.perf_counter() - t0}
    files.write_text(os.path.join(workdir, "tune.json"), json.dumps(report, indent=2) + "\n")
    files.write_text(os.path.join(workdir, "tune.md"), _markdown(report))
    log.info("chosen on validation rows: %s", chosen)
    return report


def _markdown(report: dict) -> str:
  lines = [f"# tuning {report['experiment']} on validation rows (seeds {report['seeds']})", "",
           f"Rule: {report['rule']}. Chosen: **{report['chosen']}**; per method: "
           + (", ".join(f"{m} **{c['label']}**" for m, c in report["chosen_per_method"].items())
              or "none") + ".", "",
           "| model | settings | val forget Wasserstein to retrained | val retain error | seconds "
           "|",
           "|:--|:--|--:|--:|--:|"]
  for name, s in report["scores"].items():
    w, r = s["val_forget_wasserstein"], s["val_retain_error"]
    sec = report["seconds"].get(name)
    searched = _searched(name, report["settings"].get(name))
    lines.append(f"| {name} | {searched} | {w['mean']:.4g} ± "
                 f"{w['std']:.2g} | {r['mean']:.4g} ± {r['std']:.2g} "
                 f"| {'' if sec is None else f'{sec:.1f}'} |")
  return "\n".join(lines) + "\n"


def _searched(label: str, entry) -> str:
  """A candidate's values of its method's search space ("" for the original and references);
  an entry without a `method` field runs the method its label names."""
  if not entry:
    return ""
  space = unlearn.get_method(entry.get("method") or label).search_space
  return ", ".join(f"{k}={entry[k]:g}" if isinstance(entry[k], float) else f"{k}={entry[k]}"
                   for k in space if k in entry)
