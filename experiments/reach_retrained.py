"""Does an unlearned model reach the retrained one? Neighbour relabelling against Blindspot.

For each scenario: the neighbour-relabelling settings are chosen on validation rows
(`jax_unlearn.tuning`, the test cohorts unread; where the validation split has no forget rows, as
for a forgotten time window, the method's defaults, chosen on the demo's validation rows), then
the chosen settings and the paper-default Blindspot run over the same seeds, and the criteria
are read off the test results:

  1. forget-set Wasserstein distance to retrained <= half of Blindspot's (means over seeds),
  2. inside the retrained-vs-retrained noise floor (the floor's paired interval reaches 0),
  3. retain test error <= 1.2 x the original's (means over seeds),
  4. the paired interval of the distance against Blindspot excludes 0.

  python -m experiments.reach_retrained --workdir runs/reach            # all four scenarios
  python -m experiments.reach_retrained --workdir runs/reach --scenarios digit --seeds 5

Writes WORKDIR/<scenario>/{tune,run}/ (the usual outputs) and WORKDIR/reach.md, reach.json.
"""
import argparse
import json
import os
import sys

import ml_collections

from jax_unlearn import config_io, files, pipeline, runtime, tuning
from jax_unlearn.configs import set_methods
from jax_unlearn.errors import UserError


def _digit(c):
  c.forget.kind = "groups"
  c.forget.ids = [7]
  return c


SCENARIOS = {
    "label_range": ("RotDigits, forget angles <= -30 (the demo)", "demo", None),
    "digit": ("RotDigits, forget every 7", "demo", _digit),
    "text": ("generated sentence pairs over GloVe, forget scores < 2", "textpairs_lstm", None),
    "forecast": ("electricity demand, forget a time window", "taylor_tft", None),
}
# Neighbour counts x unlearning epochs x learning rates x blend weights (the label says which).
CANDIDATES = {
    **{f"neighbours_k{k}_u{e}": {"neighbours": k, "epochs": e}
       for k in (5, 20, 50) for e in (1, 3, 5)},
    **{f"neighbours_k{k}_u{e}_lr3e-3": {"neighbours": k, "epochs": e, "lr": 3e-3}
       for k in (5, 20, 50) for e in (3, 5)},
    **{f"neighbours_k{k}_u3_w{round(w * 10):02d}": {"neighbours": k, "epochs": 3,
                                                   "neighbour_weight": w}
       for k in (5, 20) for w in (0.6, 0.8)}}
KEY = "wasserstein_to_retrained"


def scenario_config(name: str, seeds: int, methods: dict) -> ml_collections.ConfigDict:
  _, base, change = SCENARIOS[name]
  c = config_io.load_config(base)
  if change is not None:
    c = change(c)
  c.experiment = f"reach_{name}"
  c.seeds = seeds
  set_methods(c, {"blindspot": ("blindspot", {}), **methods})
  return c


def criteria(results: dict, chosen: str) -> dict:
  """The four criteria of the module docstring, with the numbers they rest on."""
  models = results["models"]
  mean = lambda model, key: models[model][key]["mean"]  # noqa: E731
  comparisons = results["comparisons"]
  first = "blindspot" if f"blindspot vs {chosen}" in comparisons else chosen
  pair = comparisons[f"blindspot vs {chosen}" if first == "blindspot"
                     else f"{chosen} vs blindspot"][KEY]  # the first minus the second
  floor = results["noise_floor"][chosen]
  return {
      "distance": mean(chosen, KEY), "blindspot_distance": mean("blindspot", KEY),
      "half_of_blindspot": mean(chosen, KEY) <= 0.5 * mean("blindspot", KEY),
      "floor_interval": floor["ci95"], "inside_floor": bool(floor["inside"]),
      "retain_ratio": mean(chosen, "retain_test_error") / mean("original", "retain_test_error"),
      "retain_kept": mean(chosen, "retain_test_error")
      <= 1.2 * mean("original", "retain_test_error"),
      "vs_blindspot_interval": pair["ci95"],
      "beats_blindspot": (pair["ci95"][1] < 0 if first == chosen else pair["ci95"][0] > 0),
      "cost_vs_retrained": results["cost"][chosen]["vs_retrained"],
  }


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--workdir", required=True)
  p.add_argument("--scenarios", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
  p.add_argument("--seeds", type=int, default=5)
  p.add_argument("--quiet", action="store_true")
  args = p.parse_args(argv)
  if args.seeds < 2:
    raise SystemExit("error: --seeds must be at least 2 (an interval needs several seeds)")
  report = {}
  path = os.path.join(args.workdir, "reach.json")
  if os.path.exists(path):
    with open(path) as f:
      report = json.load(f)
  runtime.enable_compilation_cache(os.path.join(args.workdir, ".jax_cache"))
  for name in args.scenarios:
    where = os.path.join(args.workdir, name)
    try:
      c = scenario_config(name, args.seeds,
                          {k: ("neighbours", v) for k, v in CANDIDATES.items()})
      try:
        chosen = tuning.tune_experiment(c, where, quiet=args.quiet)["chosen"]
        settings = CANDIDATES.get(chosen)
      except tuning.NoValidationRows:  # nothing to choose on: the defaults, chosen elsewhere
        chosen, settings = "neighbours", {}
      if chosen is None:
        report[name] = {"chosen": None, "why": "no candidate kept the retain validation error"}
        continue
      # The same workdir: the original, the retrained model and the chosen candidate are reused.
      c = scenario_config(name, args.seeds, {chosen: ("neighbours", settings)})
      results = pipeline.run_experiment(c, where, quiet=args.quiet)
    except UserError as e:  # e.g. no validation rows of the forget cohort: say so, go on
      print(f"{name}: {e.message} ({e.hint})", file=sys.stderr)
      report[name] = {"chosen": None, "why": e.message}
      continue
    report[name] = {"description": SCENARIOS[name][0], "seeds": results["seeds"],
                    "chosen": chosen, "settings": settings,
                    **criteria(results, chosen)}
    files.write_text(path, json.dumps(report, indent=2) + "\n")
    files.write_text(os.path.join(args.workdir, "reach.md"), markdown(report))
  print(markdown(report))
  return 0


def markdown(report: dict) -> str:
  lines = ["| scenario | chosen on validation | W to retrained (Blindspot) | ≤ half | floor "
           "interval | inside | retain × original | vs Blindspot interval | better | cost × "
           "retraining |", "|:--|:--|--:|:--|--:|:--|--:|--:|:--|--:|"]
  yes = lambda v: "yes" if v else "no"  # noqa: E731
  for name, r in report.items():
    if r.get("chosen") is None:
      lines.append(f"| {name} | none ({r.get('why')}) |" + " |" * 8)
      continue
    lo, hi = r["floor_interval"]
    plo, phi = r["vs_blindspot_interval"]
    lines.append(
        f"| {name} ({len(r['seeds'])} seeds) | {r['chosen']} | {r['distance']:.3g} "
        f"({r['blindspot_distance']:.3g}) | {yes(r['half_of_blindspot'])} | [{lo:.3g}, {hi:.3g}] "
        f"| {yes(r['inside_floor'])} | {r['retain_ratio']:.3f} | [{plo:.3g}, {phi:.3g}] | "
        f"{yes(r['beats_blindspot'])} | {r['cost_vs_retrained']:.3f} |")
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  sys.exit(main())
