"""Forget specifications: every kind, its val/test cohorts, and every error."""
import logging

import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jax_unlearn.data import ForgetMasks, make_forget_masks
from jax_unlearn.data.forget import KINDS, SETTINGS, forget_defaults, read_ids_file
from jax_unlearn.data.base import Dataset, Split, Task
from jax_unlearn.errors import UserError


def _split(y, group=None, time=None):
  y = np.asarray(y, np.float32)
  y = y[:, None] if y.ndim == 1 else y
  return Split(np.zeros((len(y), 2), np.float32), y,
               None if group is None else np.asarray(group, np.int64),
               None if time is None else np.asarray(time, np.int64))


def _dataset(train, val, test):
  return Dataset("toy", train, val, test, Task("l1", "mae", None, "tabular", "t"))


@pytest.fixture
def ds():
  return _dataset(
      _split([10, 25, 30, 31, 50, 70], group=[0, 1, 2, 0, 1, 2], time=[0, 1, 2, 3, 4, 5]),
      _split([20, 40], group=[1, 2], time=[6, 7]),
      _split([5, 30, 35, 90], group=[0, 0, 1, 2], time=[8, 9, 10, 11]))


def test_label_range_high_inclusive_marks_all_splits(ds):
  m = make_forget_masks(ds, {"kind": "label_range", "high": 30})
  assert isinstance(m, ForgetMasks)
  np.testing.assert_array_equal(m.train, [1, 1, 1, 0, 0, 0])
  np.testing.assert_array_equal(m.val, [1, 0])
  np.testing.assert_array_equal(m.test, [1, 1, 0, 0])
  assert m.counts() == {"train": 6, "retain": 3, "forget": 3, "test_retain": 2,
                        "test_forget": 2}
  forget, retain = m.indices("train")
  np.testing.assert_array_equal(forget, [0, 1, 2])
  np.testing.assert_array_equal(retain, [3, 4, 5])


def test_label_range_exclusive_high_and_low(ds):
  m = make_forget_masks(ds, {"kind": "label_range", "high": 30, "include_high": False})
  np.testing.assert_array_equal(m.train, [1, 1, 0, 0, 0, 0])
  m = make_forget_masks(ds, {"kind": "label_range", "low": 30, "high": 50})
  np.testing.assert_array_equal(m.train, [0, 0, 1, 1, 1, 0])
  np.testing.assert_array_equal(m.test, [0, 1, 1, 0])
  m = make_forget_masks(ds, {"kind": "label_range", "low": 60, "high": None})
  np.testing.assert_array_equal(m.train, [0, 0, 0, 0, 0, 1])


def test_label_range_uses_mean_over_outputs():
  y = np.array([[0, 10], [4, 4], [1, 2]], np.float32)  # means 5, 4, 1.5
  d = _dataset(_split(y), _split(y), _split(y))
  m = make_forget_masks(d, {"kind": "label_range", "low": 4.5})
  np.testing.assert_array_equal(m.train, [1, 0, 0])


def test_groups_and_time_window(ds):
  m = make_forget_masks(ds, {"kind": "groups", "ids": [0]})
  np.testing.assert_array_equal(m.train, [1, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(m.test, [1, 1, 0, 0])
  assert not m.val.any()
  m = make_forget_masks(ds, {"kind": "groups", "ids": 2})  # one id, not a list
  np.testing.assert_array_equal(m.train, [0, 0, 1, 0, 0, 1])
  m = make_forget_masks(ds, {"kind": "time_window", "start": 2, "end": 4})  # [2, 4)
  np.testing.assert_array_equal(m.train, [0, 0, 1, 1, 0, 0])
  assert not m.val.any() and not m.test.any()
  m = make_forget_masks(ds, {"kind": "time_window", "start": 5, "end": 9})
  np.testing.assert_array_equal(m.val, [1, 1])
  np.testing.assert_array_equal(m.test, [1, 0, 0, 0])


def test_random_fraction_is_seeded_and_draws_val_test():
  y = np.arange(100)
  d = _dataset(_split(y), _split(y[:40]), _split(y[:60]))
  m = make_forget_masks(d, {"kind": "random", "fraction": 0.25, "seed": 3})
  assert (m.train.sum(), m.val.sum(), m.test.sum()) == (25, 10, 15)
  again = make_forget_masks(d, {"kind": "random", "fraction": 0.25, "seed": 3})
  np.testing.assert_array_equal(m.train, again.train)
  other = make_forget_masks(d, {"kind": "random", "fraction": 0.25, "seed": 4})
  assert not np.array_equal(m.train, other.train)
  assert not np.array_equal(m.train[:40], m.val)  # independent draws per split


def test_indices(ds):
  m = make_forget_masks(ds, {"kind": "indices", "ids": [4, 1, 4]})
  np.testing.assert_array_equal(m.train, [0, 1, 0, 0, 1, 0])
  assert not m.val.any() and not m.test.any()


def test_config_dict_spec_with_unset_keys(ds):
  spec = ml_collections.ConfigDict({"kind": "groups", "ids": [1], "low": None})
  m = make_forget_masks(ds, spec.to_dict())
  np.testing.assert_array_equal(m.train, [0, 1, 0, 0, 1, 0])
  assert make_forget_masks(ds, spec).train.sum() == 2  # a ConfigDict works directly too


def _defaults(**spec):
  return {**forget_defaults(), **spec}


def test_defaults_hold_every_argument_of_every_kind(ds):
  d = forget_defaults()
  assert d["kind"] == "label_range" and tuple(d) == SETTINGS
  assert {"low", "high", "include_high", "ids", "start", "end", "fraction", "seed",
          "ids_file"} == set(d) - {"kind"}
  assert d["ids"] is None and d["ids_file"] is None and d["high"] is None
  assert forget_defaults() is not d  # a fresh dict each call
  args = {"label_range": {"high": 30}, "groups": {"ids": [0]},
          "time_window": {"start": 2, "end": 4}, "random": {"fraction": 0.5},
          "indices": {"ids": [1]}}
  assert set(args) == set(KINDS)
  for kind, a in args.items():
    assert 0 < make_forget_masks(ds, _defaults(kind=kind, **a)).train.sum() < 6


def test_other_kinds_arguments_are_ignored(ds, caplog):
  # A config file's label range does not block switching to groups (or any other kind).
  spec = _defaults(high=-30.0, include_high=False, fraction=0.5, start=0, end=1)
  with caplog.at_level(logging.INFO, "jax_unlearn"):
    m = make_forget_masks(ds, {**spec, "kind": "groups", "ids": [1]})
  np.testing.assert_array_equal(m.train, [0, 1, 0, 0, 1, 0])
  assert "ignores the other kinds' settings high=-30.0, include_high=False" in caplog.text
  m = make_forget_masks(ds, {**spec, "kind": "indices", "ids": [5]})
  np.testing.assert_array_equal(m.train, [0, 0, 0, 0, 0, 1])
  m = make_forget_masks(ds, {**spec, "kind": "label_range", "high": 30, "ids": [1]})
  np.testing.assert_array_equal(m.train, [1, 1, 0, 0, 0, 0])  # include_high=False applies
  with pytest.raises(UserError, match="needs the argument 'ids'"):  # still required
    make_forget_masks(ds, {**spec, "kind": "groups"})


def _write(tmp_path, text, name="request.txt"):
  path = tmp_path / name
  path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
  return str(path)


def test_ids_file_for_groups_and_indices(ds, tmp_path):
  path = _write(tmp_path, "# people who asked to be forgotten\n\n  2\n\n#1\n0\n")
  assert read_ids_file(path) == [2, 0]
  m = make_forget_masks(ds, _defaults(kind="groups", ids_file=path))
  np.testing.assert_array_equal(m.train, [1, 0, 1, 1, 0, 1])
  np.testing.assert_array_equal(m.test, [1, 1, 0, 1])
  path = _write(tmp_path, "\ufeff4\r\n+1\r\n4\r\n", "rows.txt")  # BOM, CRLF, repeats
  m = make_forget_masks(ds, _defaults(kind="indices", ids_file=path))
  np.testing.assert_array_equal(m.train, [0, 1, 0, 0, 1, 0])
  assert not m.val.any() and not m.test.any()


def test_ids_file_with_string_group_ids(tmp_path):
  def split(groups):
    return Split(np.zeros((len(groups), 2), np.float32), np.zeros((len(groups), 1), np.float32),
                 np.asarray(groups))
  d = _dataset(split(["ann", "bob", "cy", "ann"]), split(["bob"]), split(["ann", "cy"]))
  path = _write(tmp_path, "ann\n# bob\n")
  m = make_forget_masks(d, {"kind": "groups", "ids_file": path})
  np.testing.assert_array_equal(m.train, [1, 0, 0, 1])
  np.testing.assert_array_equal(m.test, [1, 0])
  assert make_forget_masks(d, {"kind": "groups", "ids": ["cy"]}).train.sum() == 1
  with pytest.raises(UserError, match=r"group ids \['dan'\] have no training sample"):
    make_forget_masks(d, {"kind": "groups", "ids_file": _write(tmp_path, "cy\ndan\n")})


@pytest.mark.parametrize("kind, text, match", [
    ("groups", "0\n\nabc\n", r"line 3: 'abc' is not a whole number"),
    ("indices", "1\n2.5\n", r"line 2: '2.5' is not a whole number"),
    ("groups", "1 2\n", r"line 1: '1 2' is not a whole number"),
    ("groups", "# nobody\n\n", "lists no ids"),
    ("groups", "9\n0\n8\n", r"group ids \[8, 9\] have no training sample"),
    ("indices", "0\n6\n", r"indices \[6\] are outside the training set \(rows 0..5\)"),
    ("indices", "-1\n", "outside the training set"),
    ("groups", b"\xff\xfe1\n", "is not UTF-8 text"),
])
def test_ids_file_errors(ds, tmp_path, kind, text, match):
  with pytest.raises(UserError, match=match):
    make_forget_masks(ds, _defaults(kind=kind, ids_file=_write(tmp_path, text)))


def test_missing_ids_file_and_directory(ds, tmp_path):
  missing = str(tmp_path / "nope.txt")
  with pytest.raises(UserError, match="cannot read the forget ids file .*nope.txt.*No such") as e:
    make_forget_masks(ds, _defaults(kind="groups", ids_file=missing))
  assert "one id per line" in e.value.hint
  with pytest.raises(UserError, match="cannot read the forget ids file"):
    make_forget_masks(ds, _defaults(kind="indices", ids_file=str(tmp_path)))
  with pytest.raises(UserError, match="has no group ids"):  # before the file is read
    make_forget_masks(_no_groups(ds), _defaults(kind="groups", ids_file=missing))


def test_ids_file_of_another_kind_is_ignored(ds):
  m = make_forget_masks(ds, _defaults(kind="random", fraction=0.5, ids_file="nope.txt"))
  assert m.train.sum() == 3


def test_error_shows_only_the_applied_settings(ds):
  with pytest.raises(UserError, match=r"spec \(kind='label_range', high=0, include_high=True\) "
                     "selects no training sample"):
    make_forget_masks(ds, _defaults(high=0, ids=[1]))
  with pytest.raises(UserError, match=r"spec \(kind='indices', ids=\[0, 1, 2, 3, 4, \.\.\. "
                     r"\(9 ids\)\]\) selects all 6"):
    make_forget_masks(ds, _defaults(kind="indices", ids=[0, 1, 2, 3, 4, 5, 0, 1, 2]))


def _no_groups(ds):
  t = ds.train
  return _dataset(Split(t.x, t.y), ds.val, ds.test)


@pytest.mark.parametrize("spec, match", [
    ({"kind": "label_rang"}, "unknown forget kind 'label_rang'.*did you mean 'label_range'"),
    ({}, "unknown forget kind None"),
    ({"kind": "label_range"}, "needs 'low', 'high' or both"),
    ({"kind": "label_range", "hi": 3}, "takes no argument 'hi'"),
    ({"kind": "groups"}, "needs the argument 'ids'"),
    ({"kind": "groups", "ids": [0.5]}, "must be integers"),
    ({"kind": "time_window", "start": 1}, "needs the argument 'end'"),
    ({"kind": "random", "fraction": 1.5}, r"fraction must be in \(0, 1\)"),
    ({"kind": "random"}, "needs the argument 'fraction'"),
    ({"kind": "indices", "ids": [0, 6]}, r"indices \[6\] are outside .*\(rows 0..5\)"),
    ({"kind": "indices", "ids": [-1]}, "outside the training set"),
    ({"kind": "label_range", "high": 0}, "selects no training sample"),
    ({"kind": "groups", "ids": [7, 1]}, r"group ids \[7\] have no training sample in 'toy'"),
    ({"kind": "groups", "ids": list(range(3, 10))},
     r"group ids \[3, 4, 5, 6, 7\] and 2 more have no training sample"),
    ({"kind": "groups", "ids": []}, "selects no training sample"),
    ({"kind": "groups", "ids": [0], "ids_file": "x.txt"}, "got both 'ids' and 'ids_file'"),
    ({"kind": "indices", "ids_file": 3}, "ids_file must be a file path, got 3"),
    ({"kind": "groups", "low": 3}, "needs the argument 'ids'"),
    ({"kind": "groups", "ids": [0], "hi": 3}, "takes no argument 'hi'.*ids, ids_file"),
    ({"kind": "label_range", "high": "30"}, "'high' must be a number, got '30'"),
    ({"kind": "label_range", "high": 30, "include_high": "no"}, "must be True or False"),
    ({"kind": "time_window", "start": 1, "end": "x"}, "'end' must be a number"),
    ({"kind": "random", "fraction": 0.5, "seed": 1.5}, "'seed' must be a whole number"),
    ({"kind": "time_window", "start": 100, "end": 200}, "selects no training sample"),
    ({"kind": "random", "fraction": 0.01}, "selects no training sample"),
    ({"kind": "label_range", "low": 0}, "selects all 6 training samples"),
    ({"kind": "indices", "ids": list(range(6))}, "nothing would be retained"),
])
def test_errors(ds, spec, match):
  with pytest.raises(UserError, match=match):
    make_forget_masks(ds, spec)


def test_group_spec_on_dataset_without_groups(ds):
  with pytest.raises(UserError, match="has no group ids"):
    make_forget_masks(_no_groups(ds), {"kind": "groups", "ids": [0]})


_SPECS = st.one_of(
    st.builds(lambda lo, hi, inc: {"kind": "label_range", "low": lo, "high": hi,
                                   "include_high": inc},
              st.none() | st.floats(-3, 3), st.floats(-3, 3), st.booleans()),
    st.builds(lambda ids: {"kind": "groups", "ids": ids}, st.lists(st.integers(0, 5),
                                                                   max_size=4)),
    st.builds(lambda a, w: {"kind": "time_window", "start": a, "end": a + w},
              st.integers(-5, 40), st.integers(0, 20)),
    st.builds(lambda f, s: {"kind": "random", "fraction": f, "seed": s},
              st.floats(0.01, 0.99), st.integers(0, 10)),
    st.builds(lambda ids: {"kind": "indices", "ids": ids}, st.lists(st.integers(0, 29),
                                                                    max_size=40)),
)


@settings(max_examples=150, deadline=None)
@given(spec=_SPECS, seed=st.integers(0, 1000))
def test_masks_partition_the_training_set(spec, seed):
  r = np.random.default_rng(seed)
  n = 30
  d = _dataset(*(_split(r.normal(size=k), r.integers(0, 6, k), r.permutation(40)[:k])
                 for k in (n, 8, 12)))
  try:
    m = make_forget_masks(d, spec)
  except UserError as e:  # only the documented refusals
    assert any(words in str(e) for words in ("selects no training sample", "selects all",
                                              "have no training sample"))
    return
  for name, s in d.splits().items():
    mask = getattr(m, name)
    assert mask.dtype == bool and mask.shape == (len(s),)
    forget, retain = m.indices(name)
    assert np.intersect1d(forget, retain).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([forget, retain])), np.arange(len(s)))
  assert 0 < m.train.sum() < n
