"""One process of a multi-process data-parallel training run (started by test_multihost.py).

  multihost_worker.py PORT PROCESSES RANK OUT [RESUME_DIR|-] [CUT_DIR|-] [all|resume]

"all" trains with XLA's gradient all-reduce, with 4 fixed batch shards, and with 4 shards on
inputs streamed from a record source (saving the rows each process read in one epoch); RESUME_DIR
finishes a run cut mid-epoch by another process count; CUT_DIR cuts a run mid-epoch (Ctrl-C, a
checkpoint) for another process count to finish. "resume" only resumes.
"""
import os
import signal
import sys

import numpy as np

from fakes import CountingSource

EPOCHS = 2


def _interrupt_mid_epoch(it, epoch, epochs, total):
  for i, batch in enumerate(it):
    yield batch
    if epoch == 1 and i == 0:  # seen after the next step: a checkpoint at epoch 2, batch 2
      os.kill(os.getpid(), signal.SIGINT)


def main(port: int, num_processes: int, process_id: int, out: str, resume_dir: str = "-",
         cut_dir: str = "-", what: str = "all") -> None:
  from jax_unlearn import parallel
  parallel.initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id)
  import jax

  from jax_unlearn import losses, train
  from jax_unlearn.data import ArrayLoader, records
  from jax_unlearn.models import MLP, from_linen, init_linen

  r = np.random.default_rng(0)
  raw = r.integers(0, 256, size=(90, 3), dtype=np.uint8)
  source = CountingSource(raw)
  lazy = records.RecordArray(source, "image", np.arange(90), (3,), mean=np.float32(128.0),
                             std=np.float32(64.0), source_id="counting")
  x = (raw.astype(np.float32) - 128.0) / 64.0
  y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
  model = MLP(hidden=(8,))
  variables = init_linen(model, jax.random.key(0), x[:2])
  sharded = parallel.DataParallel.create(shards=4)

  def fit(inputs, dp, scan=True, **kw):
    outcome = train.train_model(from_linen(model), train.ensemble.one(variables),
                                train.supervised_loss(losses.mse), {"x": inputs, "y": y},
                                train.Recipe(epochs=EPOCHS, batch_size=30, lr=0.01, scan=scan),
                                rng=jax.random.key(1)[None], seeds=[0], dp=dp, **kw)
    return [np.asarray(jax.device_get(v)) for v in jax.tree_util.tree_leaves(outcome.variables)]

  leaves = {}
  runs = {"plain": (x, parallel.DataParallel.create()), "sharded": (x, sharded),
          "streamed": (lazy, sharded)} if what == "all" else {}
  for name, (inputs, dp) in runs.items():
    leaves.update({f"{name}_{i}": v for i, v in enumerate(fit(inputs, dp))})
  if what == "all":  # an ensemble: 4 members, one device each, over every process
    keys = jax.random.split(jax.random.key(2), 4)
    stacked = train.ensemble.init_members(lambda k: init_linen(model, k, x[:2]), keys)
    recipe = train.Recipe(epochs=EPOCHS, batch_size=30, lr=0.01, plateau_factor=0.5,
                          plateau_patience=0)
    validate = train.make_validation_loss(from_linen(model), losses.mse, x[:20], y[:20],
                                          dp=sharded)
    outcome = train.train_model(from_linen(model), stacked, train.supervised_loss(losses.mse),
                                {"x": x, "y": y}, recipe, rng=keys, seeds=[0, 1, 2, 3],
                                dp=sharded, validate=validate)
    leaves.update({f"ensemble_{i}": np.asarray(v)
                   for i, v in enumerate(jax.tree_util.tree_leaves(outcome.variables))})
    leaves["ensemble_lr"] = np.asarray(outcome.history[-1]["lr"])
    source.read = []
    for _ in ArrayLoader({"x": lazy[:64], "y": y[:64]}, 32, seed=5, dp=sharded)(0):  # no padding
      pass
    np.save(f"{out}.rows{process_id}.npy", np.asarray(source.read))
  if resume_dir != "-":
    leaves.update({f"resumed_{i}": v
                   for i, v in enumerate(fit(x, sharded, stage=train.Stage(directory=resume_dir)))})
  if cut_dir != "-":
    try:
      # Fed batch by batch, so the cut lands mid-epoch (scanned epochs end whole).
      fit(x, sharded, stage=train.Stage(directory=cut_dir, progress=_interrupt_mid_epoch),
          scan=False)
      raise AssertionError("the run was not interrupted")
    except KeyboardInterrupt:
      pass
  if process_id == 0:
    np.savez(out, **leaves, devices=sharded.devices, processes=jax.process_count())


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), *sys.argv[4:])
