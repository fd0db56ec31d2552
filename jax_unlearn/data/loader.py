"""In-memory batching: deterministic per (seed, epoch), padded to one shape, sliced per host.

Every batch is a dict of numpy arrays with "x", "y", "forget" ([B] 0/1) and "mask" ([B], 0 on
padding rows), always of the same global size so the train step compiles once.
"""
from typing import Callable, Iterator, Mapping

import jax
import numpy as np

from jax_unlearn import parallel
from jax_unlearn.errors import UserError

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


class ArrayLoader:
  """Batches of in-memory arrays; `loader(epoch)` iterates one epoch.

  Args:
    arrays: name -> array with the same first dimension ("x", "y", optionally "forget").
    batch_size: global batch size (rows over all hosts and devices).
    seed: the order of epoch e is a permutation drawn from (seed, e), so a resumed epoch
      sees the same batches.
    shuffle: permute each epoch (training) or keep order (evaluation).
    mesh: pads the batch to fill every device; each host yields only its own rows.
    shards: pads the batch to a multiple of this many fixed row blocks instead (see
      `train.make_train_step`).
    augment: host-side numpy transform of "x" (e.g. random crop and flip), seeded per batch.
  """

  def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int = 0,
               shuffle: bool = True, mesh=None, shards: int | None = None,
               augment: Augment | None = None):
    n = len(arrays["x"])
    if any(len(v) != n for v in arrays.values()):
      raise UserError("arrays of a loader have different lengths: "
                      + ", ".join(f"{k}={len(v)}" for k, v in arrays.items()) + ".",
                      "give x, y and flags one row per sample.")
    if n == 0:
      raise UserError("a loader got no samples.", "check the data and the forget specification.")
    if batch_size <= 0:
      raise UserError(f"batch size must be positive, got {batch_size}.", "set a batch size >= 1.")
    self.arrays = {k: np.asarray(v) for k, v in arrays.items()}
    self.arrays.setdefault("forget", np.zeros(n, np.float32))
    self.n = n
    self.batch_size = min(batch_size, n)
    self.seed, self.shuffle, self.augment = seed, shuffle, augment
    self.padded = parallel.round_up(self.batch_size, parallel.batch_multiple(mesh, shards))
    self.hosts, self.host = (jax.process_count(), jax.process_index()) if mesh is not None else (1, 0)

  def __len__(self) -> int:
    return -(-self.n // self.batch_size)

  def __call__(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
    rng = np.random.default_rng([self.seed, epoch])
    order = rng.permutation(self.n) if self.shuffle else np.arange(self.n)
    per_host = self.padded // self.hosts
    for b, start in enumerate(range(0, self.n, self.batch_size)):
      idx = order[start:start + self.batch_size]
      batch = {k: v[idx] for k, v in self.arrays.items()}
      batch = parallel.pad_batch(batch, self.padded)
      batch = {k: v[self.host * per_host:(self.host + 1) * per_host] for k, v in batch.items()}
      if self.augment is not None:
        batch["x"] = self.augment(batch["x"], np.random.default_rng([self.seed, epoch, b, self.host]))
      batch["forget"] = batch["forget"].astype(np.float32)
      yield batch
