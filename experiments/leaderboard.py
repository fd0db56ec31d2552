"""The leaderboard: every method tuned by one protocol, graded on seeds and forget sets that
tuning never saw.

For each scenario:

  1. Tuning (`jax_unlearn.tuning`): each method's defaults and `budget` - 1 more points of its
     search space (`configs.search_entries`, seed 0), on the tuning seeds and on a tuning forget
     set of the scenario's kind (another random draw, the other tail of the labels, another
     group). Each method's choice: the candidate closest to the retrained models on the forget
     cohort's validation rows whose retain validation error stays within 1.2x the original's.
  2. Evaluation: for each evaluation forget set, a run on fresh seeds with every method at its
     defaults and, beside it, as tuned (`<method>_tuned`, through `config.tuned`: the library
     refuses the tuning seeds or forget set). The audit (U-LiRA, the epsilon score, KS) reads
     every model against the null, retrained models of other seeds.
  3. The cells, pooled over forget sets x seeds (95% intervals: a bootstrap of the seeds,
     stratified by forget set, paired across methods):
       - "W ÷ null": the forget cohort's Wasserstein distance to the retrained model over a
         retrained model of another seed's (1 is a perfect unlearner; the original's is the
         distance there is to close);
       - "retain ×": retain test error over the original's;
       - "audit": in how many forget sets any audit tells the models from the null (p < 0.05);
       - "× retraining": training seconds over retraining's, in the same run.
     The best row by the rule: among rows with retain × at most 1.2, the lowest W ÷ null; it
     is named only where the paired interval against every other such row excludes 0, else the
     rows whose interval reaches 0 are reported as not distinguishable from it.

The tuning forget set is what a user facing a real deletion request can do without a retrained
model of that request: retrain once on a proxy request of the same kind, tune there, and apply
the choice to the real one. The "tuned" rows measure how well that choice carries over.

  python -m experiments.leaderboard --workdir runs/leaderboard        # every scenario
  python -m experiments.leaderboard --workdir runs/leaderboard --scenarios random text

Writes WORKDIR/<scenario>/{tune,eval_<i>}/ (the usual outputs), WORKDIR/leaderboard.json,
leaderboard.md and leaderboard_<scenario>.png; `--results DIR` copies the last three there.
A rerun reuses every finished stage (checkpoints) and rebuilds the tables.
"""
import argparse
import collections
import dataclasses
import json
import os
import shutil
import sys
from typing import Sequence

import ml_collections
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jax_unlearn import config_io, errors, files, metrics, pipeline, runtime, tuning, unlearn
from jax_unlearn.configs import search_entries, set_methods
from jax_unlearn.errors import UserError

FLOOR = metrics.spread.FLOOR
DISTANCE, RETAIN = "wasserstein_to_retrained", "retain_test_error"
AUDITS = ("ulira", "epsilon", "ks")
MAX_RETAIN_RATIO = tuning.MAX_RETAIN_RATIO
TUNE_SEEDS = (100, 101, 102)
RESAMPLES = 2000


@dataclasses.dataclass(frozen=True)
class Scenario:
  title: str
  config: str  # the shipped config it starts from
  tune_forget: dict  # the proxy request tuning runs on
  eval_forgets: tuple  # the requests the rows are graded on
  budget: int | None = None  # candidates per method, when not the command's (--budget)


def _label(high=None, low=None) -> dict:
  return {"kind": "label_range", "low": low, "high": high}


SCENARIOS = {
    "random": Scenario(
        "RotDigits, a random 10% of the training rows", "audit_rotdigits",
        {"kind": "random", "fraction": 0.1, "seed": 100},
        ({"kind": "random", "fraction": 0.1, "seed": 0},
         {"kind": "random", "fraction": 0.1, "seed": 1})),
    "label_range": Scenario(
        "RotDigits, a range of angles (the demo's)", "audit_rotdigits", _label(low=30.0),
        (_label(high=-30.0), _label(low=-7.5, high=7.5))),
    "digit": Scenario(
        "RotDigits, every image of one digit", "audit_rotdigits",
        {"kind": "groups", "ids": [3]},
        ({"kind": "groups", "ids": [7]}, {"kind": "groups", "ids": [1]})),
    "text": Scenario(
        "generated sentence pairs over GloVe (LSTM), a range of scores", "textpairs_lstm",
        _label(low=4.0), (_label(high=2.0),),
        budget=4),  # the LSTM's 18 x 8 candidates would take hours on 2 CPU cores
}


def scenario_config(scenario: Scenario, forget: dict, seeds, methods: dict
                    ) -> ml_collections.ConfigDict:
  """The scenario's config for one forget request, seeds and method entries; the metrics the
  leaderboard reads (errors, distances; the audit without LiRA's shadows)."""
  c = config_io.load_config(scenario.config)
  c.forget.update(forget)
  with c.ignore_type():
    c.seeds = list(seeds)
  set_methods(c, methods)
  c.metrics.which = ("errors", "wasserstein")
  c.audit.which = AUDITS
  return c


def tune(scenario: Scenario, workdir: str, methods: Sequence[str], budget: int, *,
         overrides=(), quiet=True) -> dict:
  c = scenario_config(scenario, scenario.tune_forget, TUNE_SEEDS,
                      search_entries(methods, budget, seed=0))
  c.audit.enabled = False
  return tuning.tune_experiment(c, workdir, overrides=overrides, quiet=quiet)


def evaluate(scenario: Scenario, workdir: str, methods: Sequence[str], seeds: Sequence[int],
             tuned: str, *, overrides=(), quiet=True) -> list[dict]:
  """One run per evaluation forget set: every method at its defaults and as tuned."""
  out = []
  for i, forget in enumerate(scenario.eval_forgets):
    c = scenario_config(scenario, forget, seeds, {m: (m, {}) for m in methods})
    c.audit.enabled = True
    c.tuned = tuned
    out.append(pipeline.run_experiment(c, os.path.join(workdir, f"eval_{i}"),
                                       overrides=overrides, quiet=quiet))
  return out


# ----------------------------------------------------------------------------- the cells


def _values(results: dict, model: str, key: str) -> np.ndarray:
  return np.array([np.nan if v is None else v for v in results["models"][model][key]["values"]],
                  np.float64)


def _ratio_of_means(num: list[np.ndarray], den: list[np.ndarray], rows: list[np.ndarray]
                    ) -> np.ndarray:
  """[R] mean(num) / mean(den) over the pooled units picked by each resample's rows."""
  picked = lambda parts: np.concatenate([p[r] for p, r in zip(parts, rows)], axis=1)  # noqa
  return np.nanmean(picked(num), axis=1) / np.nanmean(picked(den), axis=1)


def _resampled_rows(sizes: Sequence[int], seed: int = 0) -> list[np.ndarray]:
  """Per forget set [R, n] seed indices: a bootstrap of the seeds within each forget set (the
  first draw is the identity, the point estimate), shared by every method so that comparisons
  are paired."""
  rng = np.random.default_rng(seed)
  out = []
  for n in sizes:
    rows = rng.integers(0, n, size=(RESAMPLES + 1, n))
    rows[0] = np.arange(n)
    out.append(rows)
  return out


def _summary(draws: np.ndarray) -> dict:
  """{"mean", "ci95"} from draws whose first is the point estimate."""
  return {"mean": float(draws[0]),
          "ci95": [float(np.nanpercentile(draws[1:], 2.5)),
                   float(np.nanpercentile(draws[1:], 97.5))]}


def cells(runs: Sequence[dict]) -> dict:
  """name -> the leaderboard's cells for every unlearned model of the runs (one run per forget
  set, the same models and seeds in each), pooled over forget sets x seeds; "distance_draws":
  the bootstrap draws of W ÷ null that `best` compares rows by."""
  names = [n for n in runs[0]["models"] if n not in ("original", "retrained", FLOOR)]
  rows = _resampled_rows([len(r["seeds"]) for r in runs])
  floor = [_values(r, FLOOR, DISTANCE) for r in runs]
  original_retain = [_values(r, "original", RETAIN) for r in runs]
  out = {}
  for name in ["original", *names]:
    distance = _ratio_of_means([_values(r, name, DISTANCE) for r in runs], floor, rows)
    retain = _ratio_of_means([_values(r, name, RETAIN) for r in runs], original_retain, rows)
    told = [_told_apart(r, name) for r in runs]
    cost = [(r["cost"].get(name) or {}).get("vs_retrained") for r in runs]
    out[name] = {
        "distance": _summary(distance), "distance_draws": distance,
        "retain": _summary(retain),
        "told_apart": [t for t in told if t is not None],
        "ulira": [_audit_value(r, name, "ulira_accuracy") for r in runs],
        "ulira_null": [_audit_value(r, FLOOR, "ulira_accuracy") for r in runs],
        "vs_retrained": None if None in cost else float(np.mean(cost))}
  return out


def _told_apart(results: dict, name: str) -> list[str] | None:
  """The audits that tell `name`'s models from the null in one run (None: not audited)."""
  tests = (results.get("audit") or {}).get("versus_null", {}).get(name)
  if tests is None:
    return None
  return [a for a, t in tests.items() if t.get("distinguishable")]


def _audit_value(results: dict, name: str, key: str) -> float | None:
  value = (results.get("audit") or {}).get("models", {}).get(name, {}).get(key)
  return metrics.spread.point(value)


def best(table: dict, candidates: Sequence[str]) -> dict:
  """The rule of the module docstring over `candidates` (rows of `cells`): {"best", "tied"
  (the rows whose paired interval of W ÷ null against the best reaches 0), "eligible"}."""
  eligible = [n for n in candidates
              if table[n]["retain"]["mean"] <= MAX_RETAIN_RATIO
              and np.isfinite(table[n]["distance"]["mean"])]
  if not eligible:
    return {"best": None, "tied": [], "eligible": []}
  winner = min(eligible, key=lambda n: table[n]["distance"]["mean"])
  tied = []
  for n in eligible:
    if n == winner:
      continue
    diff = table[n]["distance_draws"][1:] - table[winner]["distance_draws"][1:]
    if np.nanpercentile(diff, 2.5) <= 0:
      tied.append(n)
  return {"best": winner, "tied": tied, "eligible": eligible}


# ----------------------------------------------------------------------------- the reports


def _interval(s: dict) -> str:
  lo, hi = s["ci95"]
  return f"{s['mean']:.3g} [{lo:.3g}, {hi:.3g}]"


def _audit_cell(c: dict) -> str:
  told = c["told_apart"]
  if not told:
    return "not audited"
  caught = sum(bool(t) for t in told)
  which = sorted({a for t in told for a in t})
  return (f"null in {len(told)}/{len(told)}" if not caught
          else f"told apart in {caught}/{len(told)} ({', '.join(which)})")


def scenario_markdown(name: str, entry: dict) -> str:
  sc = entry["scenario"]
  table = entry["cells"]
  lines = [f"### {name}: {sc['title']}", "",
           f"Tuned ({entry['budget']} candidates per method) on seeds {entry['tune_seeds']} and "
           f"forget set {sc['tune_forget']} "
           f"({entry['tune_seconds']:.0f} s of training); evaluated on seeds {entry['eval_seeds']} x "
           f"{len(sc['eval_forgets'])} forget set(s) {list(sc['eval_forgets'])} "
           f"({entry['eval_seconds']:.0f} s of training).", "",
           "| method | row | settings | W ÷ null | retain × original | audit vs null | "
           "× retraining |", "|:--|:--|:--|--:|--:|:--|--:|"]
  for label in ["original", *entry["methods"]]:
    for row, key in (("default", label), ("tuned", label + "_tuned")):
      if key not in table:
        if row == "tuned" and label != "original":
          lines.append(f"| {label} | tuned | no candidate kept the retain error | | | | |")
        continue
      c = table[key]
      settings = entry["chosen"].get(label, {}).get("settings", {}) if row == "tuned" else {}
      cost = "" if c["vs_retrained"] is None else f"{c['vs_retrained']:.2f}"
      lines.append(f"| {label} | {row if label != 'original' else ''} | "
                   f"{_settings(settings)} | {_interval(c['distance'])} | "
                   f"{_interval(c['retain'])} | {_audit_cell(c)} | {cost} |")
  b = entry["best"]
  lines.append("")
  if b["best"] is None:
    lines.append("No row keeps the retain error within 1.2x the original's.")
  elif b["tied"]:
    lines.append(f"Lowest W ÷ null within the retain limit: **{b['best']}**; not "
                 f"distinguishable from it (paired interval reaches 0): {', '.join(b['tied'])}.")
  else:
    lines.append(f"Best by the rule: **{b['best']}** (the paired interval against every other "
                 "row within the retain limit excludes 0).")
  return "\n".join(lines) + "\n"


def _settings(s: dict) -> str:
  return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in s.items())


def overview_markdown(report: dict) -> str:
  """Methods x scenarios: each tuned row's W ÷ null [interval], retain ×, audit."""
  names = list(report)
  methods = list(dict.fromkeys(m for e in report.values() for m in e["methods"]))
  lines = ["| method | " + " | ".join(names) + " |", "|:--|" + "--:|" * len(names)]
  for m in ["original", *methods]:
    row = []
    for e in report.values():
      c = e["cells"].get(m + "_tuned") or (e["cells"].get(m) if m == "original" else None)
      if c is None:
        row.append("no candidate" if m in e["methods"] else "")
        continue
      mark = " **best**" if e["best"]["best"] == (m if m == "original" else m + "_tuned") else ""
      row.append(f"{_interval(c['distance'])}; ×{c['retain']['mean']:.2f}; "
                 f"{_audit_cell(c)}{mark}")
    lines.append(f"| {m} | " + " | ".join(row) + " |")
  return "\n".join(lines) + "\n"


def plot(name: str, entry: dict, path: str) -> str:
  """One row per tuned method (and the original), sorted by W ÷ null, three panels read across
  a row: W ÷ null and retain × with their intervals, and U-LiRA's accuracy in each forget set
  beside the null's. (Eighteen points near (1, 1) in one trade-off plane cannot be labelled.)"""
  table = entry["cells"]
  rows = [n for n in table if n.endswith("_tuned") or n == "original"]
  rows.sort(key=lambda n: -np.nan_to_num(table[n]["distance"]["mean"], nan=np.inf))
  fig = Figure(figsize=(11.0, 0.32 * len(rows) + 1.6), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(1, 3, sharey=True)
  ys = np.arange(len(rows))
  for ax, key, line, label in (
      (axes[0], "distance", 1.0, "forget W to retrained ÷ null (dashed: the null)"),
      (axes[1], "retain", MAX_RETAIN_RATIO, f"retain error ÷ original's (shaded: ≤ "
       f"{MAX_RETAIN_RATIO}x)")):
    means = np.array([table[n][key]["mean"] for n in rows])
    lo = np.array([table[n][key]["ci95"][0] for n in rows])
    hi = np.array([table[n][key]["ci95"][1] for n in rows])
    ax.errorbar(means, ys, xerr=[np.maximum(means - lo, 0), np.maximum(hi - means, 0)],
                fmt="o", color="tab:blue", ms=4, lw=1, capsize=2)
    ax.axvline(line, color="black", lw=0.8, ls="--")
    if key == "retain":
      ax.axvspan(min(0.9, np.nanmin(lo)), MAX_RETAIN_RATIO, color="tab:green", alpha=0.08)
    ax.set_xlabel(label, fontsize=8)
  ax = axes[2]
  for y, n in zip(ys, rows):
    values = [v for v in table[n]["ulira"] if v is not None]
    ax.scatter(values, [y] * len(values), color="tab:red", s=14, zorder=3)
  nulls = [v for v in table[rows[0]]["ulira_null"] if v is not None]
  for v in nulls:
    ax.axvline(v, color="black", lw=0.8, ls="--")
  ax.set_xlabel("U-LiRA accuracy per forget set (dashed: the null's)", fontsize=8)
  axes[0].set_yticks(ys, [n.removesuffix("_tuned") for n in rows], fontsize=8)
  fig.suptitle(f"{name}: {entry['scenario']['title']} (tuned rows; pooled over forget sets x "
               "seeds, 95% intervals)", fontsize=9)
  files.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
  return path


# ----------------------------------------------------------------------------- the command


def run_scenario(name: str, workdir: str, methods: Sequence[str], budget: int,
                 seeds: Sequence[int], *, overrides=(), quiet=True) -> dict:
  scenario = SCENARIOS[name]
  where = os.path.join(workdir, name)
  budget = scenario.budget or budget
  tuned = tune(scenario, os.path.join(where, "tune"), methods, budget, overrides=overrides,
               quiet=quiet)
  runs = evaluate(scenario, where, methods, seeds, os.path.join(where, "tune", "tune.json"),
                  overrides=overrides, quiet=quiet)
  return scenario_entry(scenario, methods, budget, tuned, runs)


def read_scenario(name: str, workdir: str) -> dict:
  """A finished scenario's entry from the tune.json and results.json files on disk."""
  scenario = SCENARIOS[name]
  where = os.path.join(workdir, name)
  paths = [os.path.join(where, "tune", "tune.json")] + [
      os.path.join(where, f"eval_{i}", "results.json") for i in range(len(scenario.eval_forgets))]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise UserError(f"scenario {name} has not finished in {workdir}: no {missing[0]}.",
                    "run it first (without --tables-only).")
  loaded = []
  for p in paths:
    with open(p) as f:
      loaded.append(json.load(f))
  tuned, runs = loaded[0], loaded[1:]
  methods = [m for m in runs[0]["models"] if m in unlearn.method_names()]
  per_method = collections.Counter(e.get("method") for e in tuned["settings"].values())
  budget = max(per_method.values())  # a method with a smaller grid tries all of it
  return scenario_entry(scenario, methods, budget, tuned, runs)


def scenario_entry(scenario: Scenario, methods: Sequence[str], budget: int, tuned: dict,
                   runs: Sequence[dict]) -> dict:
  """A scenario's part of the report: its cells, the tuning choices and costs, the best row."""
  table = cells(runs)
  candidates = [n for n in table if n != "original"]
  return {"scenario": dataclasses.asdict(scenario), "methods": list(methods),
          "budget": budget, "tune_seeds": list(tuned["seeds"]),
          "eval_seeds": list(runs[0]["seeds"]),
          "chosen": tuned["chosen_per_method"],
          # Training seconds of every stage as first run (a rerun reuses the checkpoints).
          "tune_seconds": float(sum(tuned["seconds"].values())),
          "eval_seconds": float(sum(c["seconds"] for r in runs for c in r["cost"].values())),
          "cells": table, "best": best(table, candidates)}


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
  p.add_argument("--methods", nargs="+", default=None,
                 help="registered methods (default: every method but the retrained reference)")
  p.add_argument("--budget", type=int, default=8, help="tuning candidates per method")
  p.add_argument("--seeds", type=int, default=8, help="evaluation seeds per forget set")
  p.add_argument("--results", default=None, help="also copy the tables and plots here")
  p.add_argument("--override", action="append", default=[], metavar="FIELD=VALUE",
                 help="a config override for every run, as --config.FIELD=VALUE of "
                 "`jax-unlearn run` (e.g. audit.permutations=1000)")
  p.add_argument("--smoke", action="store_true", help="tiny data and models (a check, not a "
                 "result)")
  p.add_argument("--tables-only", action="store_true",
                 help="rebuild the tables and plots from finished scenarios, train nothing")
  p.add_argument("--quiet", action="store_true")
  args = p.parse_args(argv)
  methods = args.methods or list(unlearn.tunable_methods())
  try:
    for m in methods:
      unlearn.get_method(m).candidates(args.budget)  # unknown names and budgets, before work
    bad = [o for o in args.override if "=" not in o or not o.split("=", 1)[0]]
    if bad:
      raise UserError(f"--override {bad[0]!r} is not FIELD=VALUE.",
                      "pass e.g. --override audit.permutations=1000.")
    if args.seeds < 3:
      raise UserError(f"--seeds {args.seeds}: the audit needs at least 3 models a side.",
                      "pass --seeds 8 (or at least 3).")
  except UserError as e:
    return errors.report(e)
  overrides = [tuple(o.split("=", 1)) for o in args.override]
  overrides += [("smoke", "True")] if args.smoke else []
  runtime.enable_compilation_cache(os.path.join(args.workdir, ".jax_cache"))
  report, written = {}, []
  try:
    for name in args.scenarios:
      report[name] = (read_scenario(name, args.workdir) if args.tables_only else
                      run_scenario(name, args.workdir, methods, args.budget,
                                   list(range(args.seeds)), overrides=overrides,
                                   quiet=args.quiet))
      written = write(report, args.workdir)  # after each scenario: a later failure keeps these
  except UserError as e:
    return errors.report(e)
  if args.results:
    for f in written:
      shutil.copy(f, os.path.join(args.results, os.path.basename(f)))
  print(overview_markdown(report))
  return 0


def write(report: dict, workdir: str) -> list[str]:
  """leaderboard.json, leaderboard.md and a plot per scenario into `workdir`."""
  safe = {n: {**e, "cells": {m: {k: v for k, v in c.items() if k != "distance_draws"}
                             for m, c in e["cells"].items()}} for n, e in report.items()}
  out = [os.path.join(workdir, "leaderboard.json"), os.path.join(workdir, "leaderboard.md")]
  files.write_text(out[0], json.dumps(files.json_safe(safe), indent=2) + "\n")
  plots = [plot(n, e, os.path.join(workdir, f"leaderboard_{n}.png")) for n, e in report.items()]
  files.write_text(out[1], markdown(report, [os.path.basename(p) for p in plots]))
  return out + plots


def markdown(report: dict, plots: Sequence[str]) -> str:
  parts = ["# Leaderboard", "",
           "Every method tuned by one protocol (`experiments/leaderboard.py`): its defaults and "
           "budget - 1 more points of its search space, chosen on the validation rows of other "
           "seeds and another forget set; graded on fresh seeds and forget sets. Cells pooled "
           "over forget sets x seeds with 95% bootstrap intervals. W ÷ null: forget-cohort "
           "Wasserstein distance to the retrained model over another retrained model's (1 is "
           "perfect). Audit: U-LiRA, the epsilon score and KS against retrained models of "
           "other seeds (p < 0.05).", "", "## Tuned rows, every scenario", "",
           "Each cell: W ÷ null [interval]; retain × original; audit.", "",
           overview_markdown(report), "## Per scenario", ""]
  for (name, entry), image in zip(report.items(), plots):
    parts += [scenario_markdown(name, entry), f"![{name}]({image})", ""]
  return "\n".join(parts)


if __name__ == "__main__":
  sys.exit(main())
