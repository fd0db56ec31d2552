"""The forgetting score of the 2023 NeurIPS unlearning competition, for regression.

Per forget sample, N unlearned and N retrained models give N scores each. Attacks that tell the
two apart from one score are threshold rules on a fine grid over the sample's score range,
"unlearned" on the side of the larger median: single thresholds (score above t) and intervals
(t_a <= score <= t_b). Each attack's false-positive rate (retrained called unlearned) and
false-negative rate (unlearned called retrained) over the models give

  eps = max(ln(1 - delta - FPR) - ln FNR,  ln(1 - delta - FNR) - ln FPR)

(an attack with exactly one of FPR, FNR zero is discarded; both zero is a perfect separation,
eps = inf; a logarithm of a non-positive number is undefined, and an attack with both
undefined counts as inf). A sample's epsilon is the largest over attacks, clipped to [0, 50]:
0 when no attack beats guessing, including when every score is equal.

With N models a side, the largest finite epsilon is ln(N - 1) (FPR = FNR = 1/N), so epsilons
are bucketed in steps of 0.5 up to ceil(ln(N - 1)): bucket i ([0.5 i, 0.5 (i + 1))) is worth
2^-i points, an epsilon beyond the last bucket 0. The forget quality F is the mean of the points
(1: no sample distinguishable; 0: every sample exposed), and the final score

  score = F x (retain utility ratio) x (test utility ratio)

where, as error is the inverse of utility in regression, a utility ratio is the retrained
models' mean error over the unlearned models' (> 1 when unlearning predicts better than
retraining).
"""
import math

import numpy as np

from jax_unlearn.errors import UserError

DELTA = 1e-5
GRID = 101  # thresholds per sample, from its smallest score to its largest
EPS_MAX = 50.0
BUCKET = 0.5
CHUNK = 256  # forget samples per batch of attacks


def _counts(scores: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(#scores <= t, #scores < t) per sample and threshold: [F, G] each, scores [N, F]."""
  s = scores.T[:, :, None]  # [F, N, 1]
  g = grid[:, None, :]  # [F, 1, G]
  return (s <= g).sum(1), (s < g).sum(1)


def attack_rates(unlearned: np.ndarray, retrained: np.ndarray, *, grid: int = GRID
                 ) -> tuple[np.ndarray, np.ndarray]:
  """(FPR, FNR), each [F, A]: the rates of every threshold attack on each forget sample.

  `unlearned`, `retrained`: [N, F] scores of N models of each kind. Attacks: the G single
  thresholds ("unlearned" above t), then the G (G + 1) / 2 intervals [t_a, t_b], a <= b.
  """
  u, r = np.asarray(unlearned, np.float64), np.asarray(retrained, np.float64)
  if u.shape != r.shape or u.ndim != 2 or len(u) < 2:
    raise UserError(f"the epsilon score needs [models, samples] scores of as many (>= 2) "
                    f"unlearned as retrained models; got {u.shape} and {r.shape}.",
                    "score the forget samples under N models of each kind.")
  if not isinstance(grid, int) or grid < 2:
    raise UserError(f"the threshold grid needs at least 2 points, got {grid!r}.",
                    "use e.g. 101.")
  n = len(u)
  flip = np.median(u, 0) < np.median(r, 0)  # [F]: "unlearned" is then the lower side
  u, r = np.where(flip, -u, u), np.where(flip, -r, r)
  both = np.concatenate([u, r])
  t = np.linspace(both.min(0), both.max(0), grid, axis=1)  # [F, G]
  u_le, u_lt = _counts(u, t)
  r_le, r_lt = _counts(r, t)
  a, b = np.triu_indices(grid)
  fpr = np.concatenate([n - r_le, r_le[:, b] - r_lt[:, a]], axis=1) / n
  fnr = np.concatenate([u_le, n - (u_le[:, b] - u_lt[:, a])], axis=1) / n
  return fpr, fnr


def epsilons_from_rates(fpr: np.ndarray, fnr: np.ndarray, delta: float = DELTA) -> np.ndarray:
  """Per-sample epsilon [F] from the rates [F, A] of its attacks (see the module docstring)."""
  with np.errstate(divide="ignore", invalid="ignore"):
    e1 = np.log(1.0 - delta - fpr) - np.log(fnr)
    e2 = np.log(1.0 - delta - fnr) - np.log(fpr)
  per_attack = np.fmax(e1, e2)  # NaN only where both are undefined
  per_attack = np.where(np.isnan(per_attack), np.inf, per_attack)
  per_attack = np.where((fpr == 0) & (fnr == 0), np.inf, per_attack)
  per_attack = np.where((fpr == 0) ^ (fnr == 0), -np.inf, per_attack)  # discarded
  return np.clip(per_attack.max(1, initial=0.0), 0.0, EPS_MAX)


def sample_epsilons(unlearned: np.ndarray, retrained: np.ndarray, *, delta: float = DELTA,
                    grid: int = GRID) -> np.ndarray:
  """Per-sample epsilon [F] of N unlearned against N retrained models' scores [N, F], computed
  `CHUNK` samples at a time (the interval attacks are G^2 / 2 per sample)."""
  u, r = np.asarray(unlearned), np.asarray(retrained)
  if u.ndim != 2:
    raise UserError(f"the epsilon score needs [models, samples] scores, got shape {u.shape}.",
                    "score the forget samples under N models of each kind.")
  return np.concatenate([epsilons_from_rates(*attack_rates(u[:, i:i + CHUNK], r[:, i:i + CHUNK],
                                                           grid=grid), delta)
                         for i in range(0, u.shape[1], CHUNK)] or [np.zeros(0)])


def bucket_points(epsilons: np.ndarray, models: int) -> np.ndarray:
  """Each epsilon's points: 2^-floor(eps / 0.5) below ceil(ln(models - 1)), else 0."""
  if models < 3:
    raise UserError(f"the epsilon score needs at least 3 models of each kind, got {models}: with "
                    "2, every epsilon lies beyond the last bucket.", "use 3 or more seeds.")
  top = math.ceil(math.log(models - 1))
  eps = np.asarray(epsilons, np.float64)
  return np.where(eps < top, 2.0 ** -np.floor(eps / BUCKET), 0.0)


def forget_quality(epsilons: np.ndarray, models: int) -> float:
  """F: the mean of the forget samples' bucket points."""
  return float(np.mean(bucket_points(epsilons, models)))


def utility_ratio(unlearned_error: float, retrained_error: float) -> float | None:
  """Utility of the unlearned models relative to the retrained ones: retrained error over
  unlearned error (None when undefined)."""
  if unlearned_error is None or retrained_error is None or not unlearned_error > 0:
    return None
  return float(retrained_error) / float(unlearned_error)


def final_score(quality: float, retain_ratio: float | None, test_ratio: float | None
                ) -> float | None:
  """F x retain utility ratio x test utility ratio (None when a ratio is undefined)."""
  if retain_ratio is None or test_ratio is None:
    return None
  return quality * retain_ratio * test_ratio
