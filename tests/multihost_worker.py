"""One process of a 2-process data-parallel training run (started by test_multihost.py): the
same training with XLA's gradient all-reduce and with 4 fixed batch shards."""
import sys

import numpy as np


def main(port: int, num_processes: int, process_id: int, out: str) -> None:
  from jax_unlearn import parallel
  parallel.initialize_distributed(f"127.0.0.1:{port}", num_processes, process_id)
  import jax

  from jax_unlearn import losses, train
  from jax_unlearn.models import MLP, from_linen, init_linen

  r = np.random.default_rng(0)
  x = r.normal(size=(90, 3)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5], np.float32))[:, None]
  model = MLP(hidden=(8,))
  variables = init_linen(model, jax.random.key(0), x[:2])
  leaves = {}
  for name, shards in (("plain", None), ("sharded", 4)):
    dp = parallel.DataParallel.create(shards=shards)
    outcome = train.train_model(from_linen(model), variables, train.supervised_loss(losses.mse),
                                {"x": x, "y": y}, train.Recipe(epochs=2, batch_size=30, lr=0.01),
                                rng=jax.random.key(1), dp=dp)
    for i, v in enumerate(jax.tree_util.tree_leaves(outcome.variables)):
      leaves[f"{name}_{i}"] = np.asarray(jax.device_get(v))
  if process_id == 0:
    np.savez(out, **leaves, devices=dp.devices, processes=jax.process_count())


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
