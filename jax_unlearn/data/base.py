"""The in-memory dataset every loader returns, and the checks and splits they share.

A dataset is three numpy splits plus a `Task` that tells the pipeline which loss, error and
model input it implies. Arrays follow the data contracts: `y` is float32 [N, D]; images are
NHWC, text pairs [N, 2, T, E], forecasting windows [N, L + H, F], tabular [N, F].
"""
import dataclasses
from typing import Any, Sequence

import numpy as np

from jax_unlearn.data import records
from jax_unlearn.errors import UserError

SPLITS = ("train", "val", "test")


@dataclasses.dataclass(frozen=True)
class Split:
  """One split: inputs, labels and the optional ids that group- and time-forgetting need.

  Attributes:
    x: inputs, float32 [N, ...].
    y: labels, float32 [N, D].
    group: [N] int ids (a person, a customer, a digit), or None.
    time: [N] int64 timestamps (e.g. the index of the first forecast step), or None.
  """
  x: np.ndarray
  y: np.ndarray
  group: np.ndarray | None = None
  time: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.x)

  def take(self, idx: np.ndarray) -> "Split":
    """The rows `idx` of every array."""
    return Split(self.x[idx], self.y[idx], None if self.group is None else self.group[idx],
                 None if self.time is None else self.time[idx])


@dataclasses.dataclass(frozen=True)
class Task:
  """What a dataset asks of the model and the evaluation.

  Attributes:
    loss: training loss name ("l1", "mse" or "quantile").
    error: the reported error ("mae" or "mse"; on the median for quantile models).
    quantiles: the quantiles of a quantile loss, else None.
    kind: "image", "text", "series" or "tabular".
    label: what `y` measures, with its unit (for reports).
    extra: dataset facts the model or the report may need (input_shape, output_dim, horizon,
      num_ids, ...); JSON-friendly values only.
  """
  loss: str
  error: str
  quantiles: tuple | None
  kind: str
  label: str
  extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  train: Split
  val: Split
  test: Split
  task: Task

  def splits(self) -> dict[str, Split]:
    return {"train": self.train, "val": self.val, "test": self.test}


def as_str(value) -> str:
  """A tfds Text value as str: array_record sources return bytes, tfds' mock data str."""
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def make_dataset(name: str, train: Split, val: Split, test: Split, *, loss: str, error: str,
                 kind: str, label: str, quantiles: tuple | None = None,
                 **extra: Any) -> Dataset:
  """Builds and validates a Dataset; records the input shape and output size in `task.extra`."""
  extra = {"input_shape": tuple(int(d) for d in train.x.shape[1:]),
           "output_dim": int(train.y.shape[1]) if train.y.ndim == 2 else 1, **extra}
  ds = Dataset(name, train, val, test, Task(loss, error, quantiles, kind, label, extra))
  validate_dataset(ds)
  return ds


def validate_dataset(ds: Dataset) -> None:
  """Raises UserError for empty splits, misaligned arrays, non-2-D labels or non-finite values."""
  for split_name, s in ds.splits().items():
    where = f"dataset {ds.name!r}, split {split_name!r}"
    if len(s.x) == 0:
      raise UserError(f"{where} is empty.", "give every split at least one sample.")
    if s.y.ndim != 2:
      raise UserError(f"{where}: labels must be [N, D], got shape {s.y.shape}.",
                      "reshape scalar labels to [N, 1].")
    for key, arr in (("y", s.y), ("group", s.group), ("time", s.time)):
      if arr is not None and len(arr) != len(s.x):
        raise UserError(f"{where}: {len(s.x)} inputs but {len(arr)} rows of {key}.",
                        "give one row per sample.")
    # Lazy inputs (data.records) are decoded from uint8 records, finite by construction.
    checked = (("labels", s.y),) + (() if records.is_lazy(s.x) else (("inputs", s.x),))
    for key, arr in checked:
      if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise UserError(f"{where}: {bad} NaN or infinite values in the {key}.",
                        "drop or impute those samples before loading.")


def split_indices(n: int, fractions: Sequence[float], rng: np.random.Generator
                  ) -> list[np.ndarray]:
  """A seeded random partition of range(n) with the given fractions (sorted indices per part).

  Every part gets at least one row when n allows, so tiny (smoke) datasets keep three splits.
  """
  order = rng.permutation(n)
  sizes = [max(1, int(round(f * n))) for f in fractions[1:]]
  bounds = np.cumsum([n - sum(sizes)] + sizes)[:-1]
  return [np.sort(p) for p in np.split(order, bounds)]


def subsample(ds: Dataset, max_samples: int, seed: int) -> Dataset:
  """At most `max_samples` rows per split, a seeded random subset kept in its original order."""
  if max_samples <= 0:
    raise UserError(f"max_samples must be positive, got {max_samples}.",
                    "set max_samples >= 1, or leave it unset for all samples.")
  out = {}
  for i, (name, s) in enumerate(ds.splits().items()):
    if len(s) > max_samples:
      idx = np.sort(np.random.default_rng([seed, i]).choice(len(s), max_samples, replace=False))
      s = s.take(idx)
    out[name] = s
  return dataclasses.replace(ds, **out)


def moments(train: np.ndarray, axis: tuple[int, ...] | int = 0
            ) -> tuple[np.ndarray, np.ndarray]:
  """Mean and std of `train` over `axis` (kept as size-1 dims), float32; constant features get
  std 1. Sums accumulate in float64 while the data stays float32 (images are large)."""
  train = np.asarray(train, np.float32)
  mean = train.mean(axis=axis, keepdims=True, dtype=np.float64).astype(np.float32)
  var = np.square(train - mean).mean(axis=axis, keepdims=True, dtype=np.float64)
  return mean, np.where(var > 1e-24, np.sqrt(var), 1.0).astype(np.float32)


def standardise(train: np.ndarray, *others: np.ndarray, axis: tuple[int, ...] | int = 0
                ) -> list[np.ndarray]:
  """(a - mean) / std for `train` and `others`, with the statistics of `train` only."""
  mean, std = moments(train, axis)
  return [(np.asarray(a, np.float32) - mean) / std for a in (train, *others)]
