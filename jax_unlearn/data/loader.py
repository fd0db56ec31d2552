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


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The row order of epoch `epoch`: a permutation of n rows drawn from (seed, epoch) alone, so a
  resumed epoch, and relearning on device (AIN), see the same batches."""
  return np.random.default_rng([seed, epoch]).permutation(n)


class ArrayLoader:
  """Batches of in-memory arrays; `loader(epoch)` iterates one epoch.

  Args:
    arrays: name -> array with the same first dimension ("x", "y", optionally "forget").
    batch_size: global batch size (rows over all hosts and devices).
    seed: the order of epoch e is a permutation drawn from (seed, e), so a resumed epoch
      sees the same batches.
    shuffle: permute each epoch (training) or keep order (evaluation).
    dp: pads the batch to fill every device (or to whole fixed row blocks, `dp.shards`); each
      host yields only its own rows.
    augment: host-side numpy transform of "x" (e.g. random crop and flip), seeded per batch.
  """

  def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int = 0,
               shuffle: bool = True, dp: parallel.DataParallel | None = None,
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
    dp = parallel.resolve(dp)
    self.padded = dp.padded(self.batch_size)
    self.rows = dp.host_rows(self.padded)

  def __len__(self) -> int:
    return -(-self.n // self.batch_size)

  def __call__(self, epoch: int) -> Iterator[dict[str, np.ndarray]]:
    order = epoch_order(self.seed, epoch, self.n) if self.shuffle else np.arange(self.n)
    for b, start in enumerate(range(0, self.n, self.batch_size)):
      idx = order[start:start + self.batch_size]
      batch = {k: v[idx] for k, v in self.arrays.items()}
      batch = parallel.pad_batch(batch, self.padded)
      batch = {k: v[self.rows] for k, v in batch.items()}
      if self.augment is not None:
        rng = np.random.default_rng([self.seed, epoch, b, jax.process_index()])
        batch["x"] = self.augment(batch["x"], rng)
      batch["forget"] = batch["forget"].astype(np.float32)
      yield batch
