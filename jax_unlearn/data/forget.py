"""Forget specifications: which training samples a deletion request removes.

A spec is a mapping with a "kind" and its arguments (from a config):

  {"kind": "label_range", "low": None, "high": 30.0, "include_high": True}   # ages <= 30
  {"kind": "groups", "ids": [3]}                # one person, customer or digit
  {"kind": "time_window", "start": 1000, "end": 1500}   # Split.time in [start, end)
  {"kind": "random", "fraction": 0.1, "seed": 0}
  {"kind": "indices", "ids": [4, 8, 15]}         # explicit train rows

Label, group and time specs mark val and test rows by the same rule, so the error on "test data
like the forgotten data" can be measured. A random spec draws val/test rows independently with
the same fraction; an index list names train rows only, so its val/test masks are empty.
"""
import dataclasses
from typing import Any, Callable, Mapping

import numpy as np

from jax_unlearn.data.base import SPLITS, Dataset
from jax_unlearn.errors import UserError, unknown_name


@dataclasses.dataclass(frozen=True)
class ForgetMasks:
  """Boolean forget masks, one per split (True = forget; the rest is the retain set)."""
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray

  def indices(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """(forget rows, retain rows) of a split: disjoint, and together every row once."""
    mask = getattr(self, split)
    return np.flatnonzero(mask), np.flatnonzero(~mask)

  def counts(self) -> dict[str, int]:
    """Cohort sizes, named as in results.json."""
    return {"train": len(self.train), "retain": int((~self.train).sum()),
            "forget": int(self.train.sum()), "test_retain": int((~self.test).sum()),
            "test_forget": int(self.test.sum())}


def label_values(y: np.ndarray) -> np.ndarray:
  """The scalar a label range applies to: y itself for [N, 1], the mean over outputs otherwise
  (e.g. the mean load over a forecast horizon)."""
  return y[:, 0] if y.shape[1] == 1 else y.mean(axis=1)


def _int_ids(ids) -> np.ndarray:
  """Ids from a config (a list, a tuple or one number) as int64 [K]."""
  arr = np.atleast_1d(np.asarray(ids))
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    raise UserError(f"forget ids must be integers, got {arr[:5].tolist()}.",
                    "give ids as a list of whole numbers.")
  return arr.astype(np.int64)


def _needs(ds: Dataset, field: str, kind: str) -> None:
  if getattr(ds.train, field) is None:
    raise UserError(f"dataset {ds.name!r} has no {field} ids, so forget kind {kind!r} "
                    "cannot apply.", "use label_range, random or indices.")


def _label_range(ds: Dataset, low=None, high=None, include_high=True) -> dict:
  if low is None and high is None:
    raise UserError("forget kind 'label_range' needs 'low', 'high' or both.",
                    "set forget.high (e.g. 30 for ages <= 30) or forget.low.")
  masks = {}
  for name, s in ds.splits().items():
    v = label_values(s.y)
    mask = np.ones(len(v), bool)
    if low is not None:
      mask &= v >= low
    if high is not None:
      mask &= (v <= high) if include_high else (v < high)
    masks[name] = mask
  return masks


def _groups(ds: Dataset, ids) -> dict:
  _needs(ds, "group", "groups")
  ids = _int_ids(ids)
  return {name: np.isin(s.group, ids) for name, s in ds.splits().items()}


def _time_window(ds: Dataset, start, end) -> dict:
  _needs(ds, "time", "time_window")
  return {name: (s.time >= start) & (s.time < end) for name, s in ds.splits().items()}


def _random(ds: Dataset, fraction, seed=0) -> dict:
  fraction = float(fraction)
  if not 0.0 < fraction < 1.0:
    raise UserError(f"forget fraction must be in (0, 1), got {fraction}.", "use e.g. 0.1.")
  masks = {}
  for i, (name, s) in enumerate(ds.splits().items()):
    mask = np.zeros(len(s), bool)
    mask[np.random.default_rng([int(seed), i]).permutation(len(s))[:round(fraction * len(s))]] = 1
    masks[name] = mask
  return masks


def _indices(ds: Dataset, ids) -> dict:
  ids, n = _int_ids(ids), len(ds.train)
  bad = ids[(ids < 0) | (ids >= n)]
  if bad.size:
    raise UserError(f"forget indices {bad[:5].tolist()} are outside the training set "
                    f"(rows 0..{n - 1}).", "give row numbers of the train split.")
  masks = {name: np.zeros(len(s), bool) for name, s in ds.splits().items()}
  masks["train"][ids] = True
  return masks


# kind -> (masks for every split, required arguments, optional arguments with their defaults).
_KINDS: dict[str, tuple[Callable[..., dict], tuple[str, ...], dict[str, Any]]] = {
    "label_range": (_label_range, (), {"low": None, "high": None, "include_high": True}),
    "groups": (_groups, ("ids",), {}),
    "time_window": (_time_window, ("start", "end"), {}),
    "random": (_random, ("fraction",), {"seed": 0}),
    "indices": (_indices, ("ids",), {}),
}
KINDS = tuple(_KINDS)


def _arguments(kind: str, spec: Mapping[str, Any]) -> dict:
  """The spec's arguments; unknown keys are errors unless None (= not set)."""
  _, required, optional = _KINDS[kind]
  args = {k: v for k, v in spec.items() if k != "kind" and v is not None}
  for key in required:
    if key not in args:
      raise UserError(f"forget kind {kind!r} needs the argument {key!r}.",
                      f"set forget.{key} in the config.")
  extra = sorted(set(args) - set(required) - set(optional))
  if extra:
    raise UserError(f"forget kind {kind!r} takes no argument {extra[0]!r}.",
                    f"its arguments are: {', '.join(required + tuple(optional))}.")
  return args


def make_forget_masks(ds: Dataset, spec: Mapping[str, Any]) -> ForgetMasks:
  """Forget masks over train/val/test for a spec (see the module docstring).

  Raises:
    UserError: unknown kind, missing or unknown argument, a rule the dataset cannot serve (no
      groups or times), out-of-range indices, bad fraction, or a train forget set that is empty
      or the whole training set.
  """
  spec = dict(spec)
  kind = spec.get("kind")
  if kind not in _KINDS:
    raise unknown_name("forget kind", kind, KINDS)
  masks = _KINDS[kind][0](ds, **_arguments(kind, spec))
  forget = int(masks["train"].sum())
  if forget == 0:
    raise UserError(f"the forget spec {spec} selects no training sample of {ds.name!r}.",
                    "widen the range, or check the ids or the time window.")
  if forget == len(ds.train):
    raise UserError(f"the forget spec {spec} selects all {forget} training samples of "
                    f"{ds.name!r}; nothing would be retained.", "narrow the forget set.")
  return ForgetMasks(**{name: masks[name] for name in SPLITS})
