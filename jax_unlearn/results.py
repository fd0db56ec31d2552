"""What a run reports: the results record (`assemble`) and the files written from it (`write`):
results.json, results.md with the prose of its tables, config.json, audit.npz and the plots.

One seed: each result is a number. Several: each is {"mean", "std", "ci95", "values"} over
seeds, with the noise floor's row, each method against that floor (`noise_floor`) and the
paired comparisons of the methods (`comparisons`).
"""
import json
import os

import ml_collections
import numpy as np

from jax_unlearn import files, metrics, published

# Keys the paired comparisons between methods cover.
COMPARED = ("forget_test_error", "retain_test_error", "wasserstein_to_retrained", "mia_forget",
            "ain")
# The columns of the models built on the way (the blindspot model): how well they predict.
AUXILIARY_COLUMNS = ("retain_train_error", "forget_train_error", "retain_test_error",
                     "forget_test_error", "wasserstein_to_retrained")
PUBLISHED_COLUMNS = ("retain_test_error", "forget_test_error", "wasserstein_to_retrained")


def cost(records: dict) -> dict:
  """name -> {"seconds", "vs_retrained"}: each method's training time (all its stages, of all
  members at once; from the checkpoints when reused, so a rerun reports the first run's) and
  its ratio to retraining's. Unlearning is worth it only well below 1."""
  base = float(records["retrained"]["seconds"])
  return {name: {"seconds": float(r["seconds"]),
                 "vs_retrained": float(r["seconds"]) / base if base > 0 else None}
          for name, r in records.items()}


def assemble(evaluations: list[metrics.Evaluation], auxiliary: list[dict], records: dict,
             audit: dict | None) -> dict:
  """The record's results: "models" and "auxiliary" (numbers, or summaries over seeds), with
  several seeds "noise_floor" and "comparisons", "cost", "audit" and the methods' "records"."""
  per_seed = [files.json_safe(ev.results) for ev in evaluations]
  out = {}
  if len(per_seed) == 1:
    out["models"], out["auxiliary"] = per_seed[0], files.json_safe(auxiliary[0])
  else:
    out["models"] = metrics.spread.aggregate(per_seed)
    out["auxiliary"] = (metrics.spread.aggregate([files.json_safe(a) for a in auxiliary])
                        if auxiliary[0] else {})
    methods = [n for n in out["models"]
               if n not in ("original", "retrained", metrics.spread.FLOOR)]
    keys = [k for k in COMPARED if any(r.get(k) is not None for s in per_seed for r in s.values())]
    out["noise_floor"] = files.json_safe(metrics.spread.noise_floor(per_seed, methods))
    out["comparisons"] = files.json_safe(metrics.spread.compare(
        per_seed, ["original", *methods], keys))
  out["cost"] = cost(records)
  if audit is not None:
    out["audit"] = files.json_safe(audit)
  out["records"] = files.json_safe(records)
  return out


def markdown(results: dict) -> str:
  """results.md: the main table, then the noise floor, the comparisons, the models built on the
  way, the cost, the audit and the paper's numbers, each with a line saying what it shows."""
  several = len(results["seeds"]) > 1
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
  return header + table + timing


def write(workdir: str, results: dict, evaluations: list[metrics.Evaluation], *,
          forget: np.ndarray, labels: np.ndarray, config: ml_collections.ConfigDict,
          samples: dict | None) -> None:
  """config.json, results.json, results.md, audit.npz (the audit's per-sample arrays `samples`)
  and, with `config.plots`, the plots (`forget`: the forget rows of the training split, `labels`
  their labels)."""
  # Written with the results, so a failed later run leaves the config of the results on disk.
  files.write_text(os.path.join(workdir, "config.json"),
                   config.to_json_best_effort(indent=2) + "\n")
  files.write_text(os.path.join(workdir, "results.json"), json.dumps(results, indent=2) + "\n")
  if "audit" in results:
    files.write_npz(os.path.join(workdir, "audit.npz"), samples)
  files.write_text(os.path.join(workdir, "results.md"), markdown(results))
  if not config.plots:
    return
  out = os.path.join(workdir, "plots")
  os.makedirs(out, exist_ok=True)
  per_seed = [files.json_safe(ev.results) for ev in evaluations]
  metrics.plot_tradeoff(per_seed, out)
  if "audit" in results:
    metrics.plot_audit(results["audit"], samples, forget, out)
  if len(per_seed) > 1:  # the spread as points; the histograms and scatter of the first seed
    metrics.plot_seeds(per_seed, out)
    metrics.plot_relative_difference(evaluations[0], labels, out)
    metrics.plot_predictions(evaluations[0], labels, out)
  else:
    metrics.plot_all(evaluations[0], labels, out)
