"""Batching: deterministic per (seed, epoch), padded to one shape, sliced per host.

Every batch is a dict of numpy arrays with "x", "y", "forget" ([B] 0/1) and "mask" ([B], 0 on
padding rows), always of the same global size so the train step compiles once. Each process
reads only its own rows of a batch. In-memory arrays are indexed directly; lazy inputs
(`data.records.RecordArray`, for data beyond memory) are read through a grain pipeline with
prefetching, into the same batches.
"""
import functools
from typing import Callable, Iterator, Mapping

import jax
import numpy as np

from jax_unlearn import parallel
from jax_unlearn.data import records
from jax_unlearn.errors import UserError

Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
  """The row order of epoch `epoch`: a permutation of n rows drawn from (seed, epoch) alone, so a
  resumed epoch, and relearning on device (AIN), see the same batches."""
  return np.random.default_rng([seed, epoch]).permutation(n)


class ArrayLoader:
  """Batches of arrays; `loader(epoch)` iterates one epoch, `loader(epoch, start=b)` from its
  batch b on (a resumed epoch reads nothing before its position).

  Args:
    arrays: name -> array with the same first dimension ("x", "y", optionally "forget"); "x"
      may be a lazy `records.RecordArray`, then read by its `workers` and `prefetch`.
    batch_size: global batch size (rows over all hosts and devices).
    seed: the order of epoch e is a permutation drawn from (seed, e), so a resumed epoch
      sees the same batches.
    shuffle: permute each epoch (training) or keep order (evaluation).
    dp: pads the batch to fill every device (or to whole fixed row blocks, `dp.shards`); each
      host yields only its own rows.
    augment: host-side numpy transform of "x" (e.g. random crop and flip), seeded per batch.
    per_host: each process yields only its rows of a batch (data parallel); False: every
      process yields whole batches, augmented alike (an ensemble's members train whole).
    pad_to: pad every batch to at least this many rows, also when there are fewer samples
      than a batch (an ensemble member with few rows, in its fellows' batch shape).
  """

  seekable = True  # `fit` starts a resumed epoch with `start` instead of skipping batches
  per_member_rows = False  # one model's rows (an ensemble's batches may hold one set per member)

  def __init__(self, arrays: Mapping[str, np.ndarray], batch_size: int, *, seed: int = 0,
               shuffle: bool = True, dp: parallel.DataParallel | None = None,
               augment: Augment | None = None, per_host: bool = True, pad_to: int = 0):
    n = len(arrays["x"])
    if any(len(v) != n for v in arrays.values()):
      raise UserError("arrays of a loader have different lengths: "
                      + ", ".join(f"{k}={len(v)}" for k, v in arrays.items()) + ".",
                      "give x, y and flags one row per sample.")
    if n == 0:
      raise UserError("a loader got no samples.", "check the data and the forget specification.")
    if batch_size <= 0:
      raise UserError(f"batch size must be positive, got {batch_size}.", "set a batch size >= 1.")
    self.arrays = {k: records.as_rows(v) for k, v in arrays.items()}
    self.arrays.setdefault("forget", np.zeros(n, np.float32))
    self.n = n
    self.batch_size = min(batch_size, n)
    self.seed, self.shuffle, self.augment = seed, shuffle, augment
    dp = parallel.resolve(dp)
    self.padded = dp.padded(max(self.batch_size, pad_to))
    self.rows = dp.host_rows(self.padded) if per_host else slice(None)
    self.per_host = per_host

  def __len__(self) -> int:
    return -(-self.n // self.batch_size)

  def __call__(self, epoch: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
    order = self._order(epoch)
    read = functools.partial(self._batch, order, epoch,
                             jax.process_index() if self.per_host else 0)
    lazy = [v for v in self.arrays.values() if records.is_lazy(v)]
    if not lazy:
      return map(read, range(start, len(self)))
    return records.stream(read, range(start, len(self)), workers=lazy[0].workers,
                          prefetch=lazy[0].prefetch)

  @property
  def on_device(self) -> bool:
    """Whether an epoch can run on the device from `device_rows` and `plan` alone: the rows are
    in memory and no host-side augmentation draws from numpy."""
    return self.augment is None and not any(records.is_lazy(v) for v in self.arrays.values())

  def device_rows(self) -> dict[str, np.ndarray]:
    """The rows a batch is gathered from on the device, as `_batch` reads them."""
    return {k: v.astype(np.float32) if k in ("forget", "mask") else v
            for k, v in self.arrays.items()}

  def plan(self, epoch: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Batches `start`, ... of an epoch as whole global batches: row indices and validity,
    [batches, padded] each; `_batch` reads these same rows."""
    order = self._order(epoch)
    parts = [self._indices(order, b) for b in range(start, len(self))]
    if not parts:
      return np.zeros((0, self.padded), np.int32), np.zeros((0, self.padded), np.float32)
    idx, valid = zip(*parts)
    return np.stack(idx).astype(np.int32), np.stack(valid)

  def empty_batch(self) -> dict[str, np.ndarray]:
    """A batch of padding only (mask 0), shaped as every batch: what a member that has run out of
    rows gets while longer members finish their epoch (`train.ensemble.EnsembleBatches`)."""
    none = np.zeros(self.padded, np.int64)
    return self._read(none, none.astype(np.float32), np.random.default_rng(0))

  def _order(self, epoch: int) -> np.ndarray:
    return epoch_order(self.seed, epoch, self.n) if self.shuffle else np.arange(self.n)

  def _indices(self, order: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch b's rows, padded by repeating its first row (so running statistics see real data),
    and 1 on real rows, 0 on the padding."""
    idx = order[b * self.batch_size:(b + 1) * self.batch_size]
    full = np.concatenate([idx, np.full(self.padded - len(idx), idx[0], idx.dtype)])
    return full, (np.arange(self.padded) < len(idx)).astype(np.float32)

  def _batch(self, order: np.ndarray, epoch: int, process: int, b: int) -> dict[str, np.ndarray]:
    """Batch b of an epoch's order: this process's rows of it, with mask 0 on the padding."""
    full, valid = self._indices(order, b)
    return self._read(full, valid, np.random.default_rng([self.seed, epoch, b, process]))

  def _read(self, full: np.ndarray, valid: np.ndarray,
            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """This process's rows of a whole batch `full` with validity `valid`, augmented by `rng`."""
    rows = full[self.rows]
    batch = {k: records.take(v, rows) for k, v in self.arrays.items()}
    batch["mask"] = (valid[self.rows] * batch.get("mask", 1.0)).astype(np.float32)
    if self.augment is not None:
      batch["x"] = self.augment(batch["x"], rng)
    batch["forget"] = batch["forget"].astype(np.float32)
    return batch
