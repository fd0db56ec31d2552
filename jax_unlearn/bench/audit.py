"""The audit rows: N shadow models trained as one vmapped ensemble against N separate runs, and
the audit's statistics over N models.

Each row trains N MLPs (64, 64) by `train.train_model`, each on a random half of the same
synthetic regression rows (`metrics.audit.shadow_halves`), first as one ensemble (one compiled
program, the audit's way), then as N single-model runs one after another (what N jobs of one
seed would do), both timed end to end with compilation, as a user waits for them. Then LiRA
leave-one-out over the N models and the epsilon score over N / 2 models a side on the forget
rows are timed; they are numpy on the host.
"""
import time
from typing import Mapping, Sequence

import jax
import numpy as np

from jax_unlearn import losses, train
from jax_unlearn.metrics import audit, epsilon, lira
from jax_unlearn.models import MLP, from_linen, init_linen

ROWS, FEATURES, FORGET = 512, 10, 64
EPOCHS, BATCH = 10, 64


def _problem(seed: int):
  r = np.random.default_rng(seed)
  x = r.normal(size=(ROWS, FEATURES)).astype(np.float32)
  y = (x[:, :1] * 2.0 + r.normal(scale=0.5, size=(ROWS, 1))).astype(np.float32)
  return x, y


def bench_audit_row(n: int, *, seed: int = 0, epochs: int = EPOCHS) -> dict:
  """One row: seconds of N shadows vmapped and sequential, and of the statistics, at N."""
  x, y = _problem(seed)
  keep = audit.shadow_halves(ROWS, n, seed)
  module = MLP(hidden=(64, 64))
  apply_fn = from_linen(module)
  keys = jax.random.split(jax.random.key(seed), n)
  init = lambda k: init_linen(module, k, x[:2])  # noqa: E731
  loss = train.supervised_loss(losses.mse)
  recipe = train.Recipe(epochs=epochs, batch_size=BATCH, lr=1e-3)
  arrays = [{"x": x[m], "y": y[m]} for m in keep]

  t0 = time.perf_counter()
  stacked = train.train_model(apply_fn, train.ensemble.init_members(init, keys), loss, arrays,
                              recipe, rng=keys, seeds=list(range(n))).variables
  jax.block_until_ready(stacked)
  vmapped = time.perf_counter() - t0
  t0 = time.perf_counter()
  for k in range(n):
    jax.block_until_ready(train.train_model(
        apply_fn, train.ensemble.one(init(keys[k])), loss, arrays[k], recipe,
        rng=keys[k:k + 1], seeds=[k]).variables)
  sequential = time.perf_counter() - t0

  scores, _ = audit.member_scores(train.make_predict_fn(apply_fn), stacked, x, y,
                                  score="residual", task_loss=losses.mse)
  t0 = time.perf_counter()
  online, _ = lira.likelihood_ratios(scores, scores, keep, leave_one_out=True)
  lira.attack_summary(online, keep)
  lira_s = time.perf_counter() - t0
  half = n // 2
  t0 = time.perf_counter()
  epsilon.sample_epsilons(scores[:half, :FORGET], scores[half:2 * half, :FORGET])
  eps_s = time.perf_counter() - t0
  return {"kind": "audit", "members": n, "rows": ROWS, "epochs": epochs,
          "vmapped_s": vmapped, "sequential_s": sequential, "speedup": sequential / vmapped,
          "lira_s": lira_s, "epsilon_s": eps_s, "forget_rows": FORGET}


def member_counts(n_max: int) -> list[int]:
  """8, 16, 32, ... up to `n_max` (LiRA needs 8 shadows)."""
  counts = [c for c in (8 * 2**i for i in range(10)) if c < n_max]
  return counts + [max(n_max, audit.MIN_SHADOWS)]


def bench_audit(n_max: int, *, seed: int = 0, epochs: int = EPOCHS) -> list[dict]:
  rows = []
  for n in member_counts(n_max):
    row = bench_audit_row(n, seed=seed, epochs=epochs)
    print(f"audit N={n:<4d} vmapped {row['vmapped_s']:7.2f} s  sequential "
          f"{row['sequential_s']:7.2f} s  speedup {row['speedup']:.2f}  LiRA {row['lira_s']:.3f} s"
          f"  epsilon {row['epsilon_s']:.3f} s")
    rows.append(row)
  return rows


def markdown(rows: Sequence[Mapping]) -> str:
  if not rows:
    return ""
  r0 = rows[0]
  lines = ["", "## Audit: N shadow models at once against N runs, and the statistics", "",
           f"N MLPs (64, 64), each on half of {r0['rows']} rows, {r0['epochs']} epochs of batch "
           f"{BATCH}, wall seconds with compilation; speedup = sequential / vmapped. LiRA: "
           f"leave-one-out over the N models on every row; epsilon: N / 2 models a side on "
           f"{r0['forget_rows']} rows (host numpy).", "",
           "| N | vmapped s | sequential s | speedup | LiRA s | epsilon s |",
           "|--:|--:|--:|--:|--:|--:|"]
  for r in rows:
    lines.append(f"| {r['members']} | {r['vmapped_s']:.2f} | {r['sequential_s']:.2f} "
                 f"| {r['speedup']:.2f} | {r['lira_s']:.3f} | {r['epsilon_s']:.3f} |")
  return "\n".join(lines) + "\n"
