"""SISA's accuracy and cost table from finished runs of the sisa configs.

For each run (a workdir of `jax-unlearn run --config sisa_random`, `sisa_group`,
`sisa_textpairs`) and each sisa entry: the sharded model's retain and forget test errors before
the request against the monolithic original's (what sharding costs in accuracy), the same after
unlearning against the monolithic retrained model's, the shards touched, and the unlearning's
training seconds against retraining's (the original's sharded training counted apart).
Every error is a mean ± std over the run's seeds.

  python -m experiments.sisa_table runs/sisa_random runs/sisa_group runs/sisa_textpairs

Prints markdown (the README's "Exact unlearning by shards" table).
"""
import argparse
import json
import os
import sys

from jax_unlearn.errors import UserError
from jax_unlearn.metrics import format_value

ERRORS = ("retain_test_error", "forget_test_error")


def rows(workdir: str) -> list[str]:
  path = os.path.join(workdir, "results.json")
  if not os.path.exists(path):
    raise UserError(f"no results.json in {workdir!r}.", "run the sisa config into it first.")
  with open(path, encoding="utf-8") as f:
    r = json.load(f)
  models, aux, records, cost = r["models"], r["auxiliary"], r["records"], r["cost"]
  base_seconds = cost["retrained"]["seconds"]
  out = []
  pair = lambda m: " / ".join(format_value(m[k]) for k in ERRORS)  # noqa: E731
  labels = sorted((n for n in records if records[n].get("shards")),
                  key=lambda n: records[n]["shards"])
  for label in labels:
    rec = records[label]
    out.append(
        f"| {r['experiment']} | {rec['shards']} | {pair(aux[f'{label}:sisa_original'])} | "
        f"{pair(models['original'])} | {pair(models[label])} | {pair(models['retrained'])} | "
        f"{len(rec['touched_shards'])} of {rec['shards']} | {rec['seconds']:.1f} / "
        f"{base_seconds:.1f} = {rec['seconds'] / base_seconds:.2f} | "
        f"{rec['original_seconds']:.1f} |")
  return out


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("workdirs", nargs="+")
  args = parser.parse_args(argv)
  try:
    body = [row for w in args.workdirs for row in rows(w)]
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  print("| run | shards | sharded original: retain / forget test error | monolithic original "
        "| sisa unlearned | monolithic retrained | shards retrained | unlearning s / "
        "retraining s | sharded training s |\n|:--|--:|--:|--:|--:|--:|--:|--:|--:|")
  print("\n".join(body))
  return 0


if __name__ == "__main__":
  sys.exit(main())
