"""The forgetting score of the 2023 NeurIPS unlearning competition, for regression.

Exact to the code that scored the competition (google-deepmind/unlearning_evaluation,
`metric.py`), on per-sample scores in a stated unit. Per forget sample, N unlearned and N
retrained models give N scores each:

- "positive" is the side with the larger median (ties: unlearned);
- peaky rule: when one side's range is under 1% of the other's, epsilon = 50 outright;
- single thresholds: "positive" when score >= t, t on a grid of 100 per unit from the smallest
  to the largest of the 2N scores;
- intervals: "narrower side" when t_l <= score <= t_r; t_r from (narrow min + width - 2) to
  (narrow max + 2), 100 per unit; for each t_r, 400 values of t_l from t_r - width - 2 to
  t_r - width + 2 (width: the narrower side's range);
- per attack, with FPR and FNR over the models: both zero is a perfect separation (inf); one
  zero is discarded; else eps = max(ln(1 - delta - FPR) - ln FNR, ln(1 - delta - FNR) - ln FPR)
  clipped at 0, discarded where both logarithms are undefined (a rate of 1);
- a sample's epsilon is the largest over the kept attacks, clipped to [0, 50]. When every attack
  is discarded the reference stops with an assertion; here the sample's epsilon is NaN and F is
  undefined.

The reference's scores are logit-scaled confidences, whose unit the grid (100 thresholds per
unit) and the +-2 buffer assume. Regression scores carry the label's unit, so they are first
divided by `unit`: "retrained_sd" (default), the retrained models' spread on the forget rows
(the root mean of the per-sample variances), which makes the score invariant to the label's
scale; "raw" feeds them as they are, as the reference would.

With N models a side, epsilons are bucketed in steps of 0.5 up to ceil(ln(N - 1)): bucket i
([0.5 i, 0.5 (i + 1))) is worth 2^-i points, an epsilon beyond the last bucket 0. The forget
quality F is the mean of the points. Two independent retrained ensembles do not score F = 1
(about 0.2 at 8 to 64 models a side): read F against that null. The final score is

  score = F x retain utility ratio x test utility ratio

with each ratio the retrained models' mean error over the unlearned models', capped at 1 (see
`utility_ratio`).
"""
import math

import numpy as np

from jax_unlearn.errors import UserError

DELTA = 1e-5
EPS_MAX = 50.0
PER_UNIT = 100  # thresholds per unit of score
BUFFER = 2.0  # the interval attacks' reach around the narrower side, in units
PEAKY = 0.01  # a range under this share of the other side's: epsilon = EPS_MAX
BUCKET = 0.5
UNITS = ("retrained_sd", "raw")
# The most single thresholds one sample may need (a range of 10^5 units), past which a raw scale
# is surely not the unit the grid was meant for.
MAX_THRESHOLDS = 10_000_000
CHUNK = 32  # samples per batch of interval attacks (R x 400 thresholds each)


def check_unit(unit: str) -> None:
  if unit not in UNITS:
    raise UserError(f"unknown epsilon unit {unit!r}.", f"use one of {', '.join(UNITS)}.")


def score_unit(retrained: np.ndarray, unit: str = "retrained_sd") -> float:
  """What one unit of score is: the retrained models' spread over the forget samples
  (sqrt of the mean per-sample variance, ddof 0), or 1 for "raw"."""
  check_unit(unit)
  if unit == "raw":
    return 1.0
  sd = float(np.sqrt(np.mean(np.var(np.asarray(retrained, np.float64), axis=0))))
  if not sd > 0:
    raise UserError("the retrained models' scores do not vary on the forget rows, so the "
                    "epsilon score has no unit to read them in.",
                    "set --config.audit.unit=raw, or train the retrained models on other seeds.")
  return sd


def epsilon_table(models: int, delta: float = DELTA) -> np.ndarray:
  """[N + 1, N + 1] epsilon of an attack whose positive side has `tp` of N scores inside and
  whose negative side has `fp` (NaN: discarded; inf: perfect separation), before the clip."""
  tp, fp = np.meshgrid(np.arange(models + 1), np.arange(models + 1), indexing="ij")
  fpr, fnr = fp / models, (models - tp) / models
  with np.errstate(divide="ignore", invalid="ignore"):
    e = np.fmax(np.log(1.0 - delta - fpr) - np.log(fnr), np.log(1.0 - delta - fnr) - np.log(fpr))
  e = np.maximum(e, 0.0)  # NaN stays NaN: both logarithms undefined
  e = np.where((fpr == 0) ^ (fnr == 0), np.nan, e)
  return np.where((fpr == 0) & (fnr == 0), np.inf, e)


def _right_range(narrow: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The right thresholds' first and last values per sample, as published: (narrow min + width)
  - buffer and narrow max + buffer; narrow [G, N]."""
  return narrow.min(1) + width - BUFFER, narrow.max(1) + BUFFER


def _right_count(low: np.ndarray, high: np.ndarray) -> np.ndarray:
  """How many right thresholds (100 per unit) span [low, high]: 400 or 401."""
  return np.ceil((high - low) * PER_UNIT).astype(np.int64)


def _interval_epsilons(narrow: np.ndarray, wide: np.ndarray, width: np.ndarray,
                       table: np.ndarray) -> np.ndarray:
  """[G] the best epsilon of the interval attacks on G samples ([G, N] scores a side), NaN where
  every one is discarded; exact, without counting every one of the R x 400 intervals.

  On a row of 400 left thresholds (one right threshold t_r) the counts inside [t_l, t_r] only
  change where t_l passes a score, so each row is read at its first threshold and at each
  score's first threshold above it.
  """
  g, n = narrow.shape
  low, high = _right_range(narrow, width)  # the same count of right thresholds for all G
  rights = np.linspace(low, high, num=int(_right_count(low, high)[0]), axis=1)
  span = int(np.ceil(2 * BUFFER * PER_UNIT))
  # Row r's left thresholds are np.linspace(start_r, stop_r, span); threshold k of it, without
  # building all of them, by linspace's own arithmetic (-inf / inf one step past either end).
  start = rights - width[:, None] - BUFFER  # [G, R]
  stop = rights - width[:, None] + BUFFER
  step = ((stop - start) / (span - 1))[:, :, None]

  def left(k):
    value = np.where(k == span - 1, stop[:, :, None], k * step + start[:, :, None])
    return np.where(k < 0, -np.inf, np.where(k >= span, np.inf, value))

  scores = np.concatenate([narrow, wide], axis=1)[:, None, :]  # [G, 1, 2N]
  # first[g, r, x]: how many left thresholds of row r lie at or below score x (searchsorted,
  # side="right"), from the grid's step, then corrected against the thresholds themselves.
  first = np.clip(np.floor((scores - start[:, :, None]) / step) + 1, 0, span).astype(np.int64)
  for _ in range(4):  # the estimate is off by at most one; a first pass only checks it
    too_high, too_low = left(first - 1) > scores, left(first) <= scores
    if not (too_high.any() or too_low.any()):
      break
    first += too_low.astype(np.int64) - too_high
  else:
    raise AssertionError("the interval attacks' thresholds were not located exactly.")
  # The rows' reading points: the first left threshold and each score's first one above it.
  at = np.concatenate([np.zeros(first.shape[:2] + (1,), np.int64),
                       np.minimum(first, span - 1)], axis=2)  # [G, R, 2N + 1]
  rows = np.arange(g * rights.shape[1]).reshape(g, -1, 1)
  counts = []
  for side in (slice(0, n), slice(n, 2 * n)):
    # Scores below a threshold: sorted codes row * 2^11 + first, searched for row * 2^11 + at.
    codes = np.sort(first[:, :, side], axis=2) + rows * 2048
    below = np.searchsorted(codes.ravel(), (at + rows * 2048).ravel(), side="right")
    below = below.reshape(at.shape) - rows * n
    up_to_right = (scores[:, :, side] <= rights[:, :, None]).sum(2, keepdims=True)
    counts.append(np.maximum(up_to_right - below, 0))
  e = table[counts[0], counts[1]].reshape(g, -1)
  kept = ~np.isnan(e)
  return np.where(kept.any(1), np.where(kept, e, -np.inf).max(1), np.nan)


def _single_epsilon(pos: np.ndarray, neg: np.ndarray, table: np.ndarray) -> float:
  """The best epsilon of one sample's single-threshold attacks ("positive" at or above t), NaN
  where every one is discarded."""
  both = np.concatenate([pos, neg])
  count = int(np.ceil((both.max() - both.min()) * PER_UNIT))
  if count > MAX_THRESHOLDS:
    raise UserError(f"the epsilon score's single-threshold attacks need {count} thresholds on "
                    "one sample: the scores' unit is far from the grid's.",
                    "use --config.audit.unit=retrained_sd.")
  t = np.linspace(both.min(), both.max(), count)
  n = len(pos)
  e = table[n - np.searchsorted(np.sort(pos), t, side="left"),
            n - np.searchsorted(np.sort(neg), t, side="left")]
  e = e[~np.isnan(e)]
  return float(e.max()) if len(e) else math.nan


def _epsilons(u: np.ndarray, r: np.ndarray, table: np.ndarray) -> np.ndarray:
  """Per-sample epsilon [F] of scores [N, F] a side, in units."""
  retrained_positive = np.median(r, 0) > np.median(u, 0)
  pos, neg = np.where(retrained_positive, r, u).T, np.where(retrained_positive, u, r).T  # [F, N]
  pos_range, neg_range = np.ptp(pos, 1), np.ptp(neg, 1)
  largest = np.where(pos_range > neg_range, pos_range, neg_range)
  smallest = np.where(pos_range > neg_range, neg_range, pos_range)
  with np.errstate(divide="ignore", invalid="ignore"):
    peaky = smallest / largest < PEAKY  # 0 / 0 is no peak
  narrow_is_neg = (pos_range >= neg_range)[:, None]
  narrow, wide = np.where(narrow_is_neg, neg, pos), np.where(narrow_is_neg, pos, neg)
  out = np.full(len(pos), math.nan)
  rights = _right_count(*_right_range(narrow, smallest))
  for count in np.unique(rights[~peaky]):
    group = np.flatnonzero(~peaky & (rights == count))
    for chunk in np.array_split(group, -(-len(group) // CHUNK)):
      out[chunk] = _interval_epsilons(narrow[chunk], wide[chunk], smallest[chunk], table)
  for i in np.flatnonzero(~peaky):
    out[i] = np.fmax(out[i], _single_epsilon(pos[i], neg[i], table))
  out = np.clip(out, 0.0, EPS_MAX)
  out[peaky] = EPS_MAX
  return out


def sample_epsilons(unlearned: np.ndarray, retrained: np.ndarray, *, delta: float = DELTA,
                    unit: str = "retrained_sd") -> np.ndarray:
  """Per-sample epsilon [F] of N unlearned against N retrained models' scores [N, F]; NaN where
  every attack is discarded (the reference stops there)."""
  u, r = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
  if u.shape != r.shape or u.ndim != 2 or len(u) < 2:
    raise UserError(f"the epsilon score needs [models, samples] scores of as many (>= 2) "
                    f"unlearned as retrained models; got {u.shape} and {r.shape}.",
                    "score the forget samples under N models of each kind.")
  if not (np.isfinite(u).all() and np.isfinite(r).all()):
    raise UserError("the epsilon score got non-finite scores (a model predicts NaN or inf).",
                    "audit models whose predictions are finite.")
  scale = score_unit(r, unit)
  return _epsilons(u / scale, r / scale, epsilon_table(len(u), delta))


def bucket_points(epsilons: np.ndarray, models: int) -> np.ndarray:
  """Each epsilon's points: 2^-floor(eps / 0.5) below ceil(ln(models - 1)), else 0 (NaN stays)."""
  if models < 3:
    raise UserError(f"the epsilon score needs at least 3 models of each kind, got {models}: with "
                    "2, every epsilon lies beyond the last bucket.", "use 3 or more seeds.")
  top = math.ceil(math.log(models - 1))
  eps = np.asarray(epsilons, np.float64)
  return np.where(np.isnan(eps), np.nan, np.where(eps < top, 2.0 ** -np.floor(eps / BUCKET), 0.0))


def forget_quality(epsilons: np.ndarray, models: int) -> float:
  """F: the mean of the forget samples' bucket points; NaN when a sample's epsilon is."""
  return float(np.mean(bucket_points(epsilons, models)))


def utility_ratio(unlearned_error: float, retrained_error: float) -> float | None:
  """Utility of the unlearned models relative to the retrained ones: retrained error over
  unlearned error, capped at 1 (None when undefined).

  Error is unbounded below where accuracy is bounded above: uncapped, a method that fits the
  retain rows better than retraining (overfitting them) would multiply its score, so predicting
  better than retraining earns nothing.
  """
  if unlearned_error is None or retrained_error is None or not unlearned_error > 0:
    return None
  return min(1.0, float(retrained_error) / float(unlearned_error))


def final_score(quality: float | None, retain_ratio: float | None, test_ratio: float | None
                ) -> float | None:
  """F x retain utility ratio x test utility ratio (None when any is undefined)."""
  if quality is None or retain_ratio is None or test_ratio is None or math.isnan(quality):
    return None
  return quality * retain_ratio * test_ratio
