"""Likelihood-ratio membership attacks over many models: LiRA and U-LiRA, for regression.

A sample's score (the signed residual of the point prediction, or the negative task loss) varies
from model to model. LiRA (Carlini et al. 2022) fits, per sample, one Gaussian to its scores
under models that trained on it ("in") and one under models that did not ("out"), and asks which
explains a target model's score better:

  online   log N(s; mu_in, sd_in) - log N(s; mu_out, sd_out)
  offline  (c - mu_out(c)) / sd_out(c), c = -|s|: no in-models, a one-sided test of how much
           closer to its label the target is than out-models are (c is -|residual| or -loss)

Higher reads "member". U-LiRA (Hayes et al. 2024) asks it of unlearning: the "in" models are
unlearned ones (trained, then unlearned), the "out" models retrained ones (never trained), and
the target model is left out of both fits.

With few models per side a per-sample variance is noisy; `variance="global"` pools the
within-sample variance over samples (Carlini et al.'s fixed variance), "auto" pools below
`POOL_BELOW` models per side.
"""
import math

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from jax_unlearn.errors import UserError

VARIANCES = ("auto", "global", "per_sample")
POOL_BELOW = 64
# The fewest models a side's Gaussian is fitted to (after leaving the target out).
MIN_PER_SIDE = 2
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def log_normal(s: np.ndarray, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
  """Elementwise log density of N(mean, sd^2) at s."""
  return -0.5 * ((s - mean) / sd) ** 2 - np.log(sd) - _LOG_SQRT_2PI


def _fit(scores: np.ndarray, weights: np.ndarray, leave_one_out: bool):
  """(mean, var, count) of each sample's scores over the models weighted 1; each [1, N], or with
  `leave_one_out` [M, N], row m without model m. Scores [M, N] float64, weights [M, N] 0/1."""
  centre = scores.mean(0, keepdims=True)  # less cancellation in the sums of squares
  s = scores - centre
  total, squares, count = ((weights * s).sum(0, keepdims=True),
                           (weights * s * s).sum(0, keepdims=True), weights.sum(0, keepdims=True))
  if leave_one_out:
    total, squares, count = total - weights * s, squares - weights * s * s, count - weights
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = total / count
    var = np.maximum(squares - count * mean * mean, 0.0) / (count - 1)
  return mean + centre, var, count


def _sd(var: np.ndarray, models: int, variance: str) -> np.ndarray:
  """Per-sample standard deviations, or the pooled one per target row (`variance`)."""
  pooled = variance == "global" or (variance == "auto" and models < POOL_BELOW)
  if pooled:
    var = np.broadcast_to(np.nanmean(var, axis=1, keepdims=True), var.shape)
  scale = np.nanmean(var)
  return np.sqrt(np.maximum(var, 1e-12 * max(scale if np.isfinite(scale) else 0.0, 1e-12)))


def check_variance(variance: str) -> None:
  if variance not in VARIANCES:
    raise UserError(f"unknown variance {variance!r}.", f"use one of {', '.join(VARIANCES)}.")


def likelihood_ratios(targets: np.ndarray, shadows: np.ndarray, keep: np.ndarray, *,
                      variance: str = "auto", leave_one_out: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
  """(online, offline) LiRA scores [T, N] of each target model on each sample.

  Args:
    targets: [T, N] scores of the models attacked; with `leave_one_out`, the shadows themselves
      (T = M) and each one's Gaussians are fitted without it.
    shadows: [M, N] scores of the models the Gaussians are fitted to.
    keep: [M, N] bool, whether shadow m trained on sample n.
    variance: see the module docstring.
  """
  check_variance(variance)
  shadows = np.asarray(shadows, np.float64)
  targets = np.asarray(targets, np.float64)
  keep = np.asarray(keep, bool)
  if shadows.ndim != 2 or keep.shape != shadows.shape or targets.shape[1:] != shadows.shape[1:]:
    raise UserError(f"LiRA needs shadow scores and their membership of one shape [models, "
                    f"samples] and target scores [targets, samples]; got {shadows.shape}, "
                    f"{keep.shape} and {targets.shape}.", "pass per-sample scores of each model.")
  if leave_one_out and targets.shape != shadows.shape:
    raise UserError("leave-one-out LiRA attacks the shadows themselves.",
                    "pass targets=shadows.")
  fits = []
  for values, side in ((shadows, keep), (shadows, ~keep), (-np.abs(shadows), ~keep)):
    mean, var, count = _fit(values, side.astype(np.float64), leave_one_out)
    fewest = int(count.min())
    if fewest < MIN_PER_SIDE:
      raise UserError(f"LiRA fits each sample's Gaussians to at least {MIN_PER_SIDE} models "
                      f"on each side, but a sample has {fewest} (of {len(shadows)} models"
                      f"{', one left out' if leave_one_out else ''}).",
                      "use more models (shadows, or seeds), half of them trained on each sample.")
    fits.append((mean, _sd(var, fewest, variance)))
  (mean_in, sd_in), (mean_out, sd_out), (close_mean, close_sd) = fits
  online = log_normal(targets, mean_in, sd_in) - log_normal(targets, mean_out, sd_out)
  return online, (-np.abs(targets) - close_mean) / close_sd


def attack_summary(scores: np.ndarray, members: np.ndarray, fprs=(0.01, 0.001)) -> dict:
  """How well `scores` (higher = member) separate members from non-members, pooled over every
  (model, sample) pair: AUC, accuracy of score > 0, and the TPR at each low FPR in `fprs`.

  Keys: "auc", "accuracy", "tpr_at_fpr" {fpr: tpr}; the ROC curve itself under "roc"
  ({"fpr", "tpr"} lists, thinned to at most 200 points for plots).
  """
  s, m = np.ravel(scores), np.ravel(members).astype(bool)
  if m.all() or not m.any():
    raise UserError("an attack's summary needs members and non-members.",
                    "score both kinds of samples.")
  fpr, tpr, _ = roc_curve(m, s)
  pick = np.unique(np.round(np.geomspace(1, len(fpr), 200)).astype(int) - 1)
  return {"auc": float(roc_auc_score(m, s)), "accuracy": float(np.mean((s > 0) == m)),
          "tpr_at_fpr": {str(a): tpr_at(fpr, tpr, a) for a in fprs},
          "roc": {"fpr": fpr[pick].tolist(), "tpr": tpr[pick].tolist()}}


def tpr_at(fpr: np.ndarray, tpr: np.ndarray, at: float) -> float:
  """The highest TPR of a ROC curve at an FPR of at most `at`."""
  ok = fpr <= at
  return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_at_fpr(out_scores: np.ndarray, fpr: float) -> float:
  """The score above which a fraction `fpr` of non-member scores lies: the attack's decision
  threshold at that false-positive rate."""
  return float(np.quantile(np.ravel(out_scores), 1.0 - fpr))


def unlearning_ratios(unlearned: np.ndarray, retrained: np.ndarray, *,
                      variance: str = "auto") -> np.ndarray:
  """U-LiRA scores [2K, F]: for each of the K unlearned then K retrained models (target), per
  forget sample, log N(s; unlearned) - log N(s; retrained), both fitted without the target.

  Higher reads "unlearned"; over models that forgot as retraining does, the scores of the two
  kinds are indistinguishable (AUC 0.5).
  """
  unlearned, retrained = np.asarray(unlearned), np.asarray(retrained)
  if unlearned.shape != retrained.shape or unlearned.ndim != 2:
    raise UserError(f"U-LiRA needs [models, samples] scores of as many unlearned as retrained "
                    f"models; got {unlearned.shape} and {retrained.shape}.",
                    "score the same forget samples under K models of each kind.")
  scores = np.concatenate([unlearned, retrained])
  kind = np.zeros(scores.shape, bool)
  kind[:len(unlearned)] = True
  online, _ = likelihood_ratios(scores, scores, kind, variance=variance, leave_one_out=True)
  return online
