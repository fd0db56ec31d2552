"""Forget specifications: which training samples a deletion request removes.

A spec is a mapping with a "kind" and its arguments (from a config):

  {"kind": "label_range", "low": None, "high": 30.0, "include_high": True}   # ages <= 30
  {"kind": "groups", "ids": [3]}                # one person, customer or digit
  {"kind": "groups", "ids_file": "request.txt"}  # the ids listed in a file
  {"kind": "time_window", "start": 1000, "end": 1500}   # Split.time in [start, end)
  {"kind": "random", "fraction": 0.1, "seed": 0}
  {"kind": "indices", "ids": [4, 8, 15]}         # explicit train rows (or "ids_file")

Configs start from `forget_defaults()`, which holds every setting of every kind, so the kind and
any argument can be changed from the command line (`--config.forget.kind=groups
--config.forget.ids=[7]`). The rule that makes such a switch work: only the chosen kind's
arguments are applied, and arguments of the other kinds are ignored (a config file's `high` does
not block `kind=groups`); None means "not set"; the chosen kind's required arguments must be set,
and a key that is no setting of any kind is an error.

`ids_file` (groups and indices, instead of `ids`) names a UTF-8 text file, relative to the working
directory, with one id per line: group ids, or train row numbers. Blank lines and lines starting
with # are skipped. Ids are whole numbers, or any text when the dataset's group ids are strings.
Every id must name a group that has training samples, or a row of the training set.

Label, group and time specs mark val and test rows by the same rule, so the error on "test data
like the forgotten data" can be measured. A random spec draws val/test rows independently with
the same fraction; an index list names train rows only, so its val/test masks are empty.
"""
import dataclasses
import logging
import numbers
import os
import re
from typing import Any, Callable, Mapping

import numpy as np

from jax_unlearn.data.base import SPLITS, Dataset
from jax_unlearn.errors import UserError, unknown_name

log = logging.getLogger("jax_unlearn")


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


def _text_ids(group: np.ndarray) -> bool:
  """Whether a dataset's group ids are strings (then forget ids are matched as text)."""
  return group.dtype.kind in "US" or (group.dtype.kind == "O" and group.size > 0 and
                                      isinstance(group.flat[0], str))


def _number(kind: str, key: str, value, integer: bool = False):
  """`value` when it is a real number (an integer if asked), else a UserError naming the key."""
  ok = isinstance(value, numbers.Integral if integer else numbers.Real)
  if not ok or isinstance(value, (bool, np.bool_)):
    what = "a whole number" if integer else "a number"
    raise UserError(f"forget {kind} argument {key!r} must be {what}, got {value!r}.",
                    f"set e.g. --config.forget.{key}={1 if integer else 0.5}.")
  return value


def _needs(ds: Dataset, field: str, kind: str) -> None:
  if getattr(ds.train, field) is None:
    raise UserError(f"dataset {ds.name!r} has no {field} ids, so forget kind {kind!r} "
                    "cannot apply.", "use label_range, random or indices.")


def _label_range(ds: Dataset, low=None, high=None, include_high=True) -> dict:
  if low is None and high is None:
    raise UserError("forget kind 'label_range' needs 'low', 'high' or both.",
                    "set forget.high (e.g. 30 for ages <= 30) or forget.low.")
  low = None if low is None else _number("label_range", "low", low)
  high = None if high is None else _number("label_range", "high", high)
  if not isinstance(include_high, (bool, np.bool_)):
    raise UserError(f"forget label_range argument 'include_high' must be True or False, got "
                    f"{include_high!r}.", "set --config.forget.include_high=False, for example.")
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
  text = _text_ids(ds.train.group)
  ids = np.atleast_1d(np.asarray(ids)).astype(str) if text else _int_ids(ids)
  groups = {name: s.group.astype(str) if text else s.group for name, s in ds.splits().items()}
  unknown = np.setdiff1d(ids, groups["train"])
  if unknown.size:
    more = f" and {unknown.size - 5} more" if unknown.size > 5 else ""
    raise UserError(f"forget group ids {unknown[:5].tolist()}{more} have no training sample "
                    f"in {ds.name!r}.", "give ids of groups that are in the train split.")
  return {name: np.isin(g, ids) for name, g in groups.items()}


def _time_window(ds: Dataset, start, end) -> dict:
  _needs(ds, "time", "time_window")
  start, end = _number("time_window", "start", start), _number("time_window", "end", end)
  return {name: (s.time >= start) & (s.time < end) for name, s in ds.splits().items()}


def _random(ds: Dataset, fraction, seed=0) -> dict:
  fraction = float(_number("random", "fraction", fraction))
  seed = _number("random", "seed", seed, integer=True)
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
# Kinds whose `ids` may come from a file instead.
_FILE_KINDS = ("groups", "indices")


def _own_arguments(kind: str) -> tuple[str, ...]:
  _, required, optional = _KINDS[kind]
  return required + tuple(optional) + (("ids_file",) if kind in _FILE_KINDS else ())


def forget_defaults() -> dict[str, Any]:
  """Every forget setting with its default (None = not set), for a config's `forget` field.

  A config holding every key lets the command line switch the kind and set any of its arguments.
  """
  out = {"kind": "label_range"}
  for kind in KINDS:
    _, required, optional = _KINDS[kind]
    out.update({key: None for key in required if key not in out})
    out.update({key: value for key, value in optional.items() if key not in out})
  out["ids_file"] = None
  return out


SETTINGS = tuple(forget_defaults())


def read_ids_file(path, text: bool = False) -> list:
  """The ids listed in a text file, one per line (see the module docstring).

  Args:
    path: the file.
    text: keep ids as strings (datasets whose group ids are strings); else whole numbers.
  """
  if not isinstance(path, (str, os.PathLike)):
    raise UserError(f"forget.ids_file must be a file path, got {path!r}.",
                    "write it as a path, e.g. --config.forget.ids_file=./request.txt.")
  try:
    with open(os.path.expanduser(path), encoding="utf-8-sig") as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise UserError(f"cannot read the forget ids file {str(path)!r}: {e.strerror or e}.",
                    "set forget.ids_file to a readable text file, one id per line.") from None
  except UnicodeDecodeError:
    raise UserError(f"the forget ids file {str(path)!r} is not UTF-8 text.",
                    "write one id per line in a plain text file.") from None
  ids = []
  for number, line in enumerate(lines, 1):
    line = line.strip()
    if not line or line.startswith("#"):
      continue
    if not text and not re.fullmatch(r"[+-]?[0-9]+", line):
      raise UserError(f"the forget ids file {str(path)!r}, line {number}: {line!r} is not a "
                      "whole number.", "write one integer id per line (# starts a comment).")
    ids.append(line if text else int(line))
  if not ids:
    raise UserError(f"the forget ids file {str(path)!r} lists no ids.",
                    "write one id per line (blank and # lines are skipped).")
  return ids


def _short(value) -> str:
  """A setting for a message: long id lists cut to their first few."""
  if isinstance(value, (list, tuple)) and len(value) > 8:
    return f"[{', '.join(map(repr, value[:5]))}, ... ({len(value)} ids)]"
  return repr(value)


def _arguments(kind: str, spec: Mapping[str, Any]) -> dict:
  """The chosen kind's set arguments: other kinds' are dropped, unknown keys are errors."""
  _, required, _ = _KINDS[kind]
  own = _own_arguments(kind)
  args = {k: v for k, v in spec.items() if k != "kind" and v is not None}
  extra = sorted(set(args) - set(SETTINGS))
  if extra:
    raise UserError(f"forget kind {kind!r} takes no argument {extra[0]!r}.",
                    f"its arguments are: {', '.join(own)}.")
  defaults = forget_defaults()
  ignored = {k: v for k, v in args.items()
             if k not in own and (defaults[k] is None or v != defaults[k])}
  if ignored:
    log.info("forget kind %r ignores the other kinds' settings %s.", kind,
             ", ".join(f"{k}={v!r}" for k, v in ignored.items()))
  args = {k: v for k, v in args.items() if k in own}
  if "ids" in args and "ids_file" in args:
    raise UserError(f"forget kind {kind!r} got both 'ids' and 'ids_file'.",
                    "keep one, e.g. --config.forget.ids=None to use the file.")
  for key in required:
    if key not in args and not (key == "ids" and "ids_file" in args):
      raise UserError(f"forget kind {kind!r} needs the argument {key!r}.",
                      f"set forget.{key} in the config" +
                      (" (or forget.ids_file)." if key == "ids" else "."))
  return args


def make_forget_masks(ds: Dataset, spec: Mapping[str, Any]) -> ForgetMasks:
  """Forget masks over train/val/test for a spec (see the module docstring).

  Raises:
    UserError: unknown kind, missing or unknown argument, a rule the dataset cannot serve (no
      groups or times), unknown group ids or out-of-range indices, an unreadable or malformed
      ids file, bad fraction, or a train forget set that is empty or the whole training set.
  """
  spec = dict(spec)
  kind = spec.get("kind")
  if kind not in _KINDS:
    raise unknown_name("forget kind", kind, KINDS)
  args = _arguments(kind, spec)
  shown = ", ".join([f"kind={kind!r}"] + [f"{k}={_short(v)}" for k, v in args.items()])
  if "ids_file" in args:
    if kind == "groups":
      _needs(ds, "group", kind)
    text = kind == "groups" and _text_ids(ds.train.group)
    args["ids"] = read_ids_file(args.pop("ids_file"), text=text)
  masks = _KINDS[kind][0](ds, **args)
  forget = int(masks["train"].sum())
  if forget == 0:
    raise UserError(f"the forget spec ({shown}) selects no training sample of {ds.name!r}.",
                    "widen the range, or check the ids or the time window.")
  if forget == len(ds.train):
    raise UserError(f"the forget spec ({shown}) selects all {forget} training samples of "
                    f"{ds.name!r}; nothing would be retained.", "narrow the forget set.")
  return ForgetMasks(**{name: masks[name] for name in SPLITS})
