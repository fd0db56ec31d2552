"""One model as an ensemble of one (the member axis, K = 1) against the single-model path.

What making every run carry the member axis would change and cost, measured before doing it.
For the ensemble benchmark's MLP (tabular rows) and AllCNN (digit-shaped images), one model (the
same initial variables, key and data order) is trained by `train.train_model` on both paths, on
1 device and on every device (fixed batch blocks, as the shipped configs use):

  single   the variables as they are; each batch split over the devices in fixed blocks
  member   an ensemble of one member (`parallel.Members`): whole members on devices, so one
           device whatever the count

and each path's compiled step is timed against the other on one device (`bench.ensembles`,
K = 1 against one single step, interleaved).

  XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m experiments.member_axis

Prints markdown: per model and device count, the largest weight difference between the two
paths (0: the same bits), whether each path gives the same bits on 1 device and on all, each
path's training seconds (compiling included), and the step's time and compile-time ratios.
"""
import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import losses, parallel, train
from jax_unlearn.bench import ensembles, measure
from jax_unlearn.bench.cases import build_model, make_batch
from jax_unlearn.errors import UserError
from jax_unlearn.models import from_linen, init_linen
from jax_unlearn.train import ensemble

SHARDS = 4  # fixed batch blocks: the single path's bits do not depend on the device count


def train_both(name: str, *, rows: int, epochs: int, devices: int) -> dict:
  """{"single": (weights, seconds), "member": (weights, seconds)} of one model on `devices`."""
  spec = ensembles.ENSEMBLE_MODELS[name]
  module = build_model(name, spec, "float32", "xla")
  data = make_batch(spec, rows, seed=0)
  arrays = {"x": data["x"], "y": data["y"]}
  apply_fn = from_linen(module)
  variables = init_linen(module, jax.random.key(1), arrays["x"][:2])
  recipe = train.Recipe(epochs=epochs, batch_size=32, lr=1e-3)
  dp = parallel.DataParallel.create(devices, shards=SHARDS)
  loss = train.supervised_loss(losses.mse)
  out = {}
  t0 = time.perf_counter()
  single = train.train_model(apply_fn, variables, loss, arrays, recipe, rng=jax.random.key(2),
                             seed=0, dp=dp)
  out["single"] = jax.device_get(single.variables), time.perf_counter() - t0
  t0 = time.perf_counter()
  member = train.train_model(apply_fn, ensemble.stack([variables]), loss, [arrays], recipe,
                             rng=jax.vmap(jax.random.key)(jnp.array([2])), seed=[0], dp=dp)
  out["member"] = (jax.device_get(ensemble.member(member.variables, 0)),
                   time.perf_counter() - t0)
  return out


def largest_difference(a, b) -> float:
  """The largest absolute difference between two trees' leaves (0.0: the same bits)."""
  return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


def rows_for(name: str, *, rows: int, epochs: int) -> list[str]:
  """The table's rows of one model: one per device count, then the step timing."""
  counts = sorted({1, jax.device_count()})
  runs = {d: train_both(name, rows=rows, epochs=epochs, devices=d) for d in counts}
  out = []
  for d in counts:
    single, member = runs[d]["single"], runs[d]["member"]
    same = {path: largest_difference(runs[d][path][0], runs[1][path][0]) == 0.0
            for path in ("single", "member")}
    out.append(f"| {name} | {d} | {largest_difference(single[0], member[0]):.3g} | "
               f"{'yes' if same['single'] else 'no'} | {'yes' if same['member'] else 'no'} | "
               f"{single[1]:.2f} | {member[1]:.2f} | {member[1] / single[1]:.2f} |")
  step = ensembles.bench_ensemble(
      name, ensembles.ENSEMBLE_MODELS[name], 1, batch_size=ensembles.ENSEMBLE_BATCH,
      opts=ensembles.ENSEMBLE_OPTIONS, info=measure.device_info(), peak=None)
  out.append(f"| {name} | step, 1 | | | | {step['sequential_step_s'] * 1e3:.3f} ms | "
             f"{step['ensemble_step_s'] * 1e3:.3f} ms | {1 / step['speedup']:.2f} "
             f"(compile {step['compile_s'] / step['single_compile_s']:.2f}) |")
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--models", default=",".join(ensembles.ENSEMBLE_MODELS),
                 help=f"comma-separated, from {', '.join(ensembles.ENSEMBLE_MODELS)}")
  p.add_argument("--rows", type=int, default=256, help="training rows")
  p.add_argument("--epochs", type=int, default=3)
  args = p.parse_args(argv)
  try:
    names = [n for n in args.models.split(",") if n]
    for n in names:
      if n not in ensembles.ENSEMBLE_MODELS:
        raise UserError(f"unknown model {n!r}.",
                        f"use one of {', '.join(ensembles.ENSEMBLE_MODELS)}.")
    if args.rows < 32 or args.epochs < 1:
      raise UserError("--rows must be >= 32 (one batch) and --epochs >= 1.",
                      "e.g. --rows 256 --epochs 3.")
    lines = [f"{args.rows} rows, {args.epochs} epochs, batch 32 in {SHARDS} fixed blocks, "
             f"{jax.device_count()} {jax.default_backend()} device(s).", "",
             "| model | devices | largest weight difference, member - single | single: same "
             "bits on 1 device | member: same bits on 1 device | single s | member s | "
             "member / single |", "|:--|--:|--:|:--|:--|--:|--:|--:|"]
    for n in names:
      lines += rows_for(n, rows=args.rows, epochs=args.epochs)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print("\n".join(lines))
  return 0


if __name__ == "__main__":
  sys.exit(main())
