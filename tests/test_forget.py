"""Forget specifications: every kind, its val/test cohorts, and every error."""
import ml_collections
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jax_unlearn.data import ForgetMasks, make_forget_masks
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
    ({"kind": "groups", "ids": [7]}, "selects no training sample"),
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
    assert "selects no training sample" in str(e) or "selects all" in str(e)
    return
  for name, s in d.splits().items():
    mask = getattr(m, name)
    assert mask.dtype == bool and mask.shape == (len(s),)
    forget, retain = m.indices(name)
    assert np.intersect1d(forget, retain).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([forget, retain])), np.arange(len(s)))
  assert 0 < m.train.sum() < n
