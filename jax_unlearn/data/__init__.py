"""Datasets, forget specifications and batching.

`load_dataset(name, seed=..., **kwargs)` returns a `Dataset` of three splits (in memory, or
inputs streamed from disk, `data.records`); kwargs come from the config (data.kwargs). Each
dataset module is imported only when it is loaded, so importing this package stays cheap
(tensorflow-datasets, pandas and pmdarima are slow imports).
"""
import importlib
import inspect
from typing import Any, Callable

from jax_unlearn.data.augment import augment_for, augment_images, make_augment
from jax_unlearn.data.base import (Dataset, Split, Task, moments, split_indices, standardise,
                                   subsample, validate_dataset)
from jax_unlearn.data.forget import KINDS as FORGET_KINDS
from jax_unlearn.data.forget import (ForgetMasks, forget_defaults, label_values,
                                     make_forget_masks)
from jax_unlearn.data.loader import ArrayLoader, epoch_order
from jax_unlearn.errors import UserError, unknown_name

# name -> "module:function" (imported on first use) or a function added by `register_dataset`.
_REGISTRY: dict[str, str | Callable[..., Dataset]] = {
    "rotdigits": "images:rotdigits",
    "agedb": "faces:agedb",
    "imdbwiki": "faces:imdbwiki",
    "stsb": "text:stsb",
    "textpairs": "text:textpairs",
    "electricity": "series:electricity",
    "taylor": "series:taylor",
    "elecdemand": "series:elecdemand",
    "diabetes": "tabular:diabetes",
    "npz": "tabular:npz",
}


def register_dataset(name: str, fn: Callable[..., Dataset]) -> None:
  """Adds a dataset: `fn(*, seed, **kwargs) -> Dataset` becomes loadable by `name`."""
  _REGISTRY[name] = fn


def dataset_names() -> list[str]:
  return sorted(_REGISTRY)


def _resolve(name: str) -> Callable[..., Dataset]:
  entry = _REGISTRY[name]
  if isinstance(entry, str):
    module, fn = entry.split(":")
    entry = getattr(importlib.import_module(f"{__name__}.{module}"), fn)
  return entry


def load_dataset(name: str, *, seed: int = 0, max_samples: int | None = None,
                 **kwargs: Any) -> Dataset:
  """Loads a registered dataset.

  Args:
    name: a registry name (see `dataset_names()`).
    seed: drives every random choice (splits, angles, generated pairs) and the subsample.
    max_samples: keep at most this many rows per split (a seeded subset; smoke runs).
    **kwargs: the dataset's own arguments (path, image_size, seq_len, horizon, ...). A value of
      None means "not set": the dataset's default applies, so shared config keys do no harm.

  Raises:
    UserError: unknown name, an argument the dataset does not take, or bad data.
  """
  if name not in _REGISTRY:
    raise unknown_name("dataset", name, _REGISTRY)
  fn = _resolve(name)
  kwargs = {k: v for k, v in kwargs.items() if v is not None}
  params = inspect.signature(fn).parameters
  accepted = sorted(k for k in params if k != "seed")
  if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
    for key in kwargs:
      if key not in params:
        raise UserError(f"dataset {name!r} takes no argument {key!r}.",
                        f"its arguments are: {', '.join(accepted + ['max_samples'])}.")
  ds = fn(seed=seed, **kwargs)
  if max_samples is not None:
    ds = subsample(ds, max_samples, seed)
  return ds


__all__ = [
    "ArrayLoader", "Dataset", "FORGET_KINDS", "ForgetMasks", "Split", "Task", "augment_for",
    "augment_images", "dataset_names", "epoch_order", "forget_defaults", "label_values",
    "load_dataset", "make_augment", "make_forget_masks", "moments", "register_dataset",
    "split_indices", "standardise", "subsample", "validate_dataset",
]
