"""Inputs too large for memory: rows read on demand from a random-access source.

A `RecordArray` stands where a split's `x` array would: it has a length and a shape, and
indexing it (`x[idx]`, a slice, a boolean mask) gives another lazy view, so the forget cohorts,
subsamples and retain-only / forget-only passes stay index sets over the source. Only `read`
(and `np.asarray`) decodes rows. `ArrayLoader` reads lazy arrays through a grain pipeline
(`stream`): one element per batch, prefetched by threads or worker processes, each process
reading only its own rows of every batch.

The source is anything with `__len__` and `__getitem__` (or `__getitems__`) returning records,
e.g. a tensorflow-datasets `as_data_source` over array_record files; `key` names the record's
field, decoded to float32 as (raw - mean) / std.
"""
import hashlib
import logging
from typing import Any, Callable, Iterable, Iterator

import numpy as np

log = logging.getLogger("jax_unlearn")

# Dataset arguments that say how inputs are read, not what they are (stage fingerprints skip them).
READ_SETTINGS = ("workers", "prefetch")
# Datasets that choose by size stream when their train inputs exceed this as float32.
STREAM_ABOVE_BYTES = 8 << 30
# Decoding more than this at once (np.asarray of a large view) is logged: it is what streaming
# exists to avoid.
WARN_BYTES = 1 << 30


class RecordArray:
  """float32 rows `(source[i][key] - mean) / std` for i in `index`, read on demand.

  Args:
    source: random-access records (`source[i]` or `source.__getitems__(indices)`).
    key: the field of a record holding the input (e.g. "image").
    index: the source rows this array holds, in order.
    row_shape: the shape of one decoded row.
    mean, std: broadcastable to `row_shape` (e.g. per channel, [C]).
    source_id: names the source's content for stage fingerprints (e.g. builder, version, split).
    workers: worker processes a loader reads batches with (0: threads in this process).
    prefetch: batches read ahead.
  """

  dtype = np.dtype(np.float32)

  def __init__(self, source: Any, key: str, index: np.ndarray, row_shape: tuple[int, ...], *,
               mean: np.ndarray, std: np.ndarray, source_id: str, workers: int = 0,
               prefetch: int = 4):
    self.source, self.key, self.source_id = source, key, source_id
    self.index = np.asarray(index, np.int64)
    self.row_shape = tuple(int(d) for d in row_shape)
    self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    self.workers, self.prefetch = int(workers), int(prefetch)

  @property
  def shape(self) -> tuple[int, ...]:
    return (len(self.index),) + self.row_shape

  @property
  def ndim(self) -> int:
    return 1 + len(self.row_shape)

  @property
  def nbytes(self) -> int:
    return int(np.prod(self.shape)) * self.dtype.itemsize

  def __len__(self) -> int:
    return len(self.index)

  def __getitem__(self, item) -> "RecordArray | np.ndarray":
    """A lazy view for slices, index arrays and boolean masks; one decoded row for an int."""
    if isinstance(item, (int, np.integer)):
      return self.read(np.asarray([item]))[0]
    view = self._view(item)
    return RecordArray(self.source, self.key, view, self.row_shape, mean=self.mean,
                       std=self.std, source_id=self.source_id, workers=self.workers,
                       prefetch=self.prefetch)

  def _view(self, item) -> np.ndarray:
    if isinstance(item, slice):
      return self.index[item]
    item = np.asarray(item)
    if item.dtype == bool:
      if item.shape != (len(self),):
        raise IndexError(f"boolean mask of shape {item.shape} for {len(self)} rows")
      return self.index[item]
    if item.ndim != 1 or not np.issubdtype(item.dtype, np.integer):
      raise IndexError("a RecordArray takes an int, a slice, or a 1-D int or bool array")
    return self.index[item]

  def read(self, positions: np.ndarray) -> np.ndarray:
    """The decoded rows at `positions` (of this view), float32 [len(positions), *row_shape]."""
    rows = self.index[np.asarray(positions, np.int64)]
    if len(rows) == 0:
      return np.zeros((0,) + self.row_shape, np.float32)
    unique, inverse = np.unique(rows, return_inverse=True)  # padding repeats rows: read once
    raw = np.stack([np.asarray(r[self.key]) for r in read_records(self.source, unique)])
    return (raw[inverse].astype(np.float32) - self.mean) / self.std

  def __array__(self, dtype=None, copy=None) -> np.ndarray:
    if self.nbytes > WARN_BYTES:
      log.warning("decoding %d rows (%.1f GiB) of %s at once: this step needs every input in "
                  "memory", len(self), self.nbytes / 2**30, self.source_id)
    out = self.read(np.arange(len(self)))
    return out if dtype is None else out.astype(dtype)

  @property
  def fingerprint(self) -> str:
    """What determines the decoded values: the source, the rows and the normalisation."""
    h = hashlib.sha256(f"{self.source_id}|{self.key}|{self.row_shape}".encode())
    for a in (self.index, self.mean, self.std):
      h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]

  def __repr__(self) -> str:
    return f"RecordArray({self.source_id}, {len(self)} rows of {self.row_shape})"


def is_lazy(array: Any) -> bool:
  return isinstance(array, RecordArray)


def as_rows(array: Any) -> Any:
  """A lazy array as it is, anything else as a numpy array."""
  return array if is_lazy(array) else np.asarray(array)


def take(array: Any, positions: np.ndarray) -> np.ndarray:
  """Rows `positions` of a numpy or lazy array, as numpy."""
  return array.read(positions) if is_lazy(array) else array[positions]


def read_records(source: Any, rows: np.ndarray) -> list:
  """`source` at `rows`, in one batched read when the source has one (array_record has)."""
  if hasattr(source, "__getitems__"):
    return list(source.__getitems__([int(r) for r in rows]))
  return [source[int(r)] for r in rows]


def scan(source: Any, chunk: int = 1024) -> Iterator[tuple[np.ndarray, list]]:
  """(rows, records) of every record of `source`, `chunk` at a time (one pass, bounded memory)."""
  for start in range(0, len(source), chunk):
    rows = np.arange(start, min(start + chunk, len(source)))
    yield rows, read_records(source, rows)


def uint8_moments(sums: np.ndarray, squares: np.ndarray, count: int
                  ) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std (float32, std 1 for a constant channel) from exact integer sums of
  uint8 values and of their squares: independent of the order the rows were read in, so a
  streamed pass and an in-memory one give the same bits."""
  mean = np.asarray(sums, np.float64) / count
  var = np.maximum(np.asarray(squares, np.float64) / count - mean * mean, 0.0)
  return mean.astype(np.float32), np.where(var > 1e-24, np.sqrt(var), 1.0).astype(np.float32)


class _Batches:
  """Batch i of a stream, as a grain data source (indexable, picklable for worker processes)."""

  def __init__(self, read_batch: Callable[[int], dict], batches: list[int]):
    self.read_batch, self.batches = read_batch, batches

  def __len__(self) -> int:
    return len(self.batches)

  def __getitem__(self, i: int) -> dict:
    return self.read_batch(self.batches[i])


def stream(read_batch: Callable[[int], dict], batches: Iterable[int], *, workers: int = 0,
           prefetch: int = 4) -> Iterator[dict]:
  """`read_batch(b)` for every b in `batches`, in order, read ahead by grain.

  `workers` > 0 reads in that many worker processes (grain's DataLoader; `read_batch` must
  pickle); 0 uses `prefetch` threads of this process (a grain dataset's prefetch).
  """
  import grain

  source = _Batches(read_batch, list(batches))
  if not len(source):
    return iter(())
  if workers == 0:
    options = grain.ReadOptions(num_threads=max(1, prefetch), prefetch_buffer_size=max(1, prefetch))
    return iter(grain.MapDataset.source(source).to_iter_dataset(options))
  from absl import flags

  if not flags.FLAGS.is_parsed():  # grain's workers read absl flags; a library parses none
    flags.FLAGS.mark_as_parsed()
  sampler = grain.samplers.SequentialSampler(len(source), grain.sharding.NoSharding())
  return iter(grain.DataLoader(data_source=source, sampler=sampler, worker_count=workers,
                               worker_buffer_size=max(1, prefetch)))
