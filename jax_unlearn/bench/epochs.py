"""The epoch rows: epochs fed to the device batch by batch against scanned epochs (`train.scan`),
for one model and for K members trained as one vmapped ensemble.

For each model at the size of its offline default (rows per epoch and batch below; random rows
of the model's data contract) and each member count K, `train.fit` runs the same step over the
same rows twice: `scan=False` (one jitted step call per batch, each batch copied from the host)
and `scan=True` (the rows on the device, an epoch one `lax.scan`). Each variant first runs one
epoch (its compilation) and is then timed over `epochs` epochs; the variants alternate epoch
block by epoch block so that both see the same machine. K = 1 is the single-model path.
"""
import time
from typing import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import losses, parallel, train
from jax_unlearn.bench.cases import MODELS, ModelSpec, build_model, make_batch
from jax_unlearn.bench.ensembles import ENSEMBLE_MODELS
from jax_unlearn.data import ArrayLoader
from jax_unlearn.models import from_linen, init_linen
from jax_unlearn.train import ensemble

# model -> (spec, rows per epoch, batch size, member counts): the offline defaults' sizes
# (diabetes' 442 rows; digit images; STS-B pairs of 10 GloVe tokens; Electricity's windows).
EPOCH_MODELS: dict[str, tuple[ModelSpec, int, int, tuple[int, ...]]] = {
    "mlp": (ENSEMBLE_MODELS["mlp"], 442, 32, (1, 4, 16, 64)),
    "lstm": (MODELS["lstm"], 512, 32, (1, 4, 16)),
    "tft": (MODELS["tft"], 256, 64, (1, 4)),
    "allcnn": (ENSEMBLE_MODELS["allcnn"], 512, 64, (1, 4, 16)),
}
ROUNDS = 3  # alternating timed blocks per variant


def _variant(name: str, spec: ModelSpec, rows: int, batch: int, k: int, scan: bool, seed: int):
  """A `run(epochs)` that trains the model (K members, or one model at K = 1) for `epochs`."""
  module = build_model(name, spec, "float32")
  host = make_batch(spec, rows, seed)
  arrays = {"x": host["x"], "y": host["y"]}
  per_example = (losses.get_loss("quantile", quantiles=spec.quantiles) if spec.quantiles
                 else losses.l1)
  loss_fn = train.supervised_loss(per_example)
  tx = train.make_optimizer(1e-3)
  x0 = jnp.asarray(host["x"][:2])
  keys = jax.random.split(jax.random.key(seed), k)
  if k == 1:
    place = parallel.resolve(None)
    state = train.create_state(init_linen(module, keys[0], x0), tx, place)
    step = train.make_train_step(from_linen(module), loss_fn, tx, place)
    batches = ArrayLoader(arrays, batch, seed=seed)
    rng = keys[0]
  else:
    place = parallel.Members.create(k)
    variables = ensemble.init_members(lambda key: init_linen(module, key, x0), keys)
    state = ensemble.create_ensemble_state(variables, tx, place)
    step = ensemble.make_ensemble_step(from_linen(module), loss_fn, tx, members=place)
    batches = ensemble.ensemble_batches(arrays, batch, list(range(seed, seed + k)))
    rng = place.put(keys)
  holder = {"state": state}

  def run(epochs: int) -> float:
    t0 = time.perf_counter()
    result = train.fit(holder["state"], step, batches, epochs=epochs, rng=rng, dp=place,
                       scan=scan)
    holder["state"] = jax.block_until_ready(result.state)
    return time.perf_counter() - t0

  return run


def bench_epoch_row(name: str, k: int, *, epochs: int = 2, seed: int = 0) -> dict:
  spec, rows, batch, _ = EPOCH_MODELS[name]
  runs = {scan: _variant(name, spec, rows, batch, k, scan, seed) for scan in (False, True)}
  first = {scan: run(1) for scan, run in runs.items()}  # compiles
  times = {False: [], True: []}
  for r in range(ROUNDS):
    for scan in ((False, True) if r % 2 == 0 else (True, False)):
      times[scan].append(runs[scan](epochs) / epochs)
  stepped, scanned = (float(np.median(times[s])) for s in (False, True))
  return {"kind": "epochs", "model": name, "members": k, "rows": rows, "batch_size": batch,
          "batches": -(-rows // batch), "stepped_epoch_s": stepped, "scanned_epoch_s": scanned,
          "speedup": stepped / scanned, "stepped_first_s": first[False],
          "scanned_first_s": first[True]}


def bench_epochs(models: Sequence[str] | None = None, *, max_members: int = 64,
                 seed: int = 0) -> list[dict]:
  """Rows of every model (of `models`, all by default) at its member counts up to `max_members`."""
  rows = []
  for name in EPOCH_MODELS if models is None else models:
    for k in EPOCH_MODELS[name][3]:
      if k > max_members:
        continue
      row = bench_epoch_row(name, k, seed=seed)
      print(f"epochs {name:<6s} K={k:<3d} stepped {row['stepped_epoch_s'] * 1e3:8.1f} ms  "
            f"scanned {row['scanned_epoch_s'] * 1e3:8.1f} ms  speedup {row['speedup']:.2f}")
      rows.append(row)
  return rows


def markdown(rows: Sequence[Mapping]) -> str:
  if not rows:
    return ""
  lines = ["", "## Epochs: batch by batch against one scanned program", "",
           "Seconds per epoch after one compiled epoch, median of alternating blocks; speedup = "
           "stepped / scanned. K = 1: one model; K > 1: K members in one vmapped step. First: "
           "the first epoch's seconds (compilation included).", "",
           "| model | K | rows | batch | stepped ms | scanned ms | speedup | first stepped s "
           "| first scanned s |", "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
  for r in rows:
    lines.append(f"| {r['model']} | {r['members']} | {r['rows']} | {r['batch_size']} "
                 f"| {r['stepped_epoch_s'] * 1e3:.1f} | {r['scanned_epoch_s'] * 1e3:.1f} "
                 f"| {r['speedup']:.2f} | {r['stepped_first_s']:.2f} | {r['scanned_first_s']:.2f} |")
  return "\n".join(lines) + "\n"
