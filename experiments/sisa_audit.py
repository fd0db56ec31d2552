"""Is sisa's unlearned model what SISA trained without the forget rows is? The audit's answer.

Runs the `sisa_audit` config (the pipeline: every method audited against the monolithic
retrained model, beside the null), then trains the 4-shard model from scratch on the retain rows
three more times, on three other sets of seeds (the same shard assignment, fresh keys), and
audits the unlearned model against the first of them, with the second as the null: an exact
method sits at the null (U-LiRA accuracy and AUC about 0.5, no permutation test distinguishing
it). Beside it: the third, a control that is exact by definition (what the tests against the null
find for a model of the reference's own distribution), and the sharded original, trained on
every row (what the audit finds when nothing was forgotten). First it checks the guarantee at
this scale: SISA trained on the retain rows alone with the unlearned model's own keys gives the
same weights (the largest difference is printed; 0 is bitwise).

  python -m experiments.sisa_audit --workdir runs/sisa_audit

Writes WORKDIR/results.* (the pipeline's) and WORKDIR/sharded_audit.json, and prints markdown.
"""
import argparse
import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import config_io, experiment, files, metrics, pipeline, runtime, train, unlearn
from jax_unlearn.errors import UserError
from jax_unlearn.unlearn import sisa

LABEL = "sisa_s4"
# Where the from-scratch ensembles' seeds start (the reference, the null, the control): apart
# from the run's seeds 0..K-1.
OTHER_SEEDS = (1000, 2000, 3000)
AUDITS = ("ulira", "epsilon", "ks")


def context(exp, rng: jax.Array, name: str) -> unlearn.Context:
  """A method's context in the run, its stages checkpointed under `name`."""
  return unlearn.Context(apply_fn=exp.apply_fn, init_fn=exp.init_fn, loss=exp.per_example,
                         rng=rng, dp=exp.dp, checkpoint_dir=os.path.join(exp.checkpoints, name),
                         identity={**exp.identity, "method": name},
                         progress=runtime.epoch_progress(name, exp.quiet))


def sharded_from_scratch(ctx: unlearn.Context, data, s):
  """The sharded model trained on the retain rows alone, with the keys of `ctx`."""
  shard, slice_ = sisa.assign(len(data.x), s["shards"], s["slices"], s["assignment_seed"])
  plan = sisa.Plan(ctx, data, s, shard, slice_)
  return plan.served(plan.fit_slices(~data.forget, "scratch")[0][-1])


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--quiet", action="store_true")
  args = parser.parse_args(argv)
  try:
    config = config_io.load_config("sisa_audit")
    pipeline.run_experiment(config, args.workdir, quiet=args.quiet)
    with experiment.session(config, args.workdir) as (config, spec):
      exp = experiment.load(config, args.workdir, spec=spec, quiet=True)
      original = pipeline.train_original(exp)  # reused from its checkpoint
      ds, masks = exp.ds, exp.masks
      data = unlearn.UnlearnData(x=ds.train.x, y=ds.train.y, forget=masks.train,
                                 val_x=ds.val.x[~masks.val], val_y=ds.val.y[~masks.val])
      method, settings = spec.methods[LABEL]
      run_keys = exp.key(pipeline.stage_purpose(LABEL))
      result = unlearn.run_method(method, context(exp, run_keys, LABEL), original.variables,
                                  data, settings)  # reused from its checkpoints
      s = sisa.settings(settings)
      # The implementation's test at this scale: with the unlearned model's own keys, SISA
      # trained on the retain rows alone gives the same weights.
      same_keys = sharded_from_scratch(context(exp, run_keys, "sisa_scratch_own_keys"), data, s)
      difference = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(
          jax.tree_util.tree_leaves(result.variables), jax.tree_util.tree_leaves(same_keys)))
      k = len(exp.seeds)
      reference, null, control = (
          sharded_from_scratch(context(exp, jnp.stack([jax.random.key(first + i)
                                                       for i in range(k)]),
                                       f"sisa_scratch_{first}"), data, s)
          for first in OTHER_SEEDS)
      predict_fn = train.make_predict_fn(exp.apply_fn, exp.dp)
      stacks = {metrics.audit.REFERENCE: reference, metrics.audit.NULL: null,
                "sisa unlearned": result.variables,
                "sisa retrained from scratch (control)": control,
                "sisa original": result.auxiliary["sisa_original"]}
      scored = {n: metrics.audit.member_scores(
          predict_fn, v, ds.train.x, ds.train.y, score=spec.audit["score"],
          task_loss=exp.per_example, batch_size=config.metrics.predict_batch_size)
          for n, v in stacks.items()}
      audit = metrics.audit.AuditData(
          scores={n: v[0] for n, v in scored.items()}, losses={n: v[1] for n, v in scored.items()},
          forget=masks.train, per_seed=[], settings={**spec.audit, "which": AUDITS})
      results, _ = metrics.audit.run_audit(audit)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  results["unlearned_vs_scratch_same_keys_max_abs_difference"] = difference
  files.write_text(os.path.join(args.workdir, "sharded_audit.json"),
                   json.dumps(files.json_safe(results), indent=1))
  print(f"unlearned against SISA trained on the retain rows alone with the same keys: largest "
        f"weight difference {difference:g}\n")
  columns = metrics.audit.columns(AUDITS)
  print("| model (against the sharded model retrained from scratch) | "
        + " | ".join(c.label for c in columns) + " |")
  print("|:--|" + "--:|" * len(columns))
  for name, values in results["models"].items():
    if name == metrics.audit.REFERENCE:
      continue
    tests = results.get("versus_null", {}).get(name, {})
    cells = [metrics.format_value(values.get(c.key)) for c in columns]
    verdict = ", ".join(f"{a} p={t['p']:.2f}" for a, t in tests.items() if t.get("p") is not None)
    print(f"| {name}{' (' + verdict + ')' if verdict else ''} | " + " | ".join(cells) + " |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
