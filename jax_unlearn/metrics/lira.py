"""Likelihood-ratio membership attacks over many models: LiRA and U-LiRA, for regression.

Exact to LiRA's published code (tensorflow/privacy, `research/mi_lira_2021/plot.py`). A
sample's score (the signed residual of the point prediction, or the negative task loss) varies
from model to model. Per sample, the scores under the models that trained on it ("in") and
under those that did not ("out") are each truncated to the first `in_size` / `out_size` models
in model order (the fewest any sample has, so every sample is fitted to as many), and fitted
with a Gaussian: its median and its standard deviation (ddof 0). A target model's score s reads

  online   log N(s; median_in, sd_in) - log N(s; median_out, sd_out)
  offline  -log N(s; median_out, sd_out): two-sided, how unlikely s is under the out-models

(sd + 1e-30 in both). Higher reads "member". `variance`:
  per_sample  each sample's own sd (the published default);
  fixed       one sd for every sample: the spread of all "in" scores (every sample, every model)
              online, for both Gaussians as published; of all "out" scores offline;
  auto        fixed below `FIXED_BELOW` models a side, per-sample from there, as the LiRA paper
              advises for few shadow models.
On regression residuals the fixed sd also holds the spread of the samples' levels (labels far
apart), which can swamp the within-sample spread: on shadow MLPs that memorised noise it cut the
online AUC from 0.97 to 0.84 at 8 shadows (README, "Auditing"), so the default is per-sample.

U-LiRA (Hayes et al. 2024) asks it of unlearning: the "in" models are unlearned ones (trained,
then unlearned), the "out" models retrained ones (never trained), and the target model is left
out of both fits.
"""
import numpy as np
import scipy.stats
from sklearn.metrics import roc_auc_score, roc_curve

from jax_unlearn.errors import UserError

VARIANCES = ("per_sample", "fixed", "auto")
FIXED_BELOW = 64
# The fewest models a side's Gaussian is fitted to (after leaving the target out).
MIN_PER_SIDE = 2
TINY = 1e-30  # added to every sd, as published


def check_variance(variance: str) -> None:
  if variance not in VARIANCES:
    raise UserError(f"unknown variance {variance!r}.", f"use one of {', '.join(VARIANCES)}.")


def _first_on_side(scores: np.ndarray, side: np.ndarray, size: int) -> np.ndarray:
  """[size, N]: per sample, the scores of the first `size` models (in model order) on `side`."""
  if (side == side[:, :1]).all():  # the same models for every sample (U-LiRA): no sort
    return scores[side[:, 0]][:size]
  order = np.argsort(~side, axis=0, kind="stable")[:size]  # side's models first, in order
  return np.take_along_axis(scores, order, axis=0)


def _fit(scores: np.ndarray, keep: np.ndarray, variance: str, leave_out: str):
  """The published fits on [M, N] scores and membership: (median_in, sd_in, median_out, sd_out,
  sd_offline), each [N] or a scalar sd."""
  sizes = keep.sum(0).min(), (~keep).sum(0).min()
  if min(sizes) < MIN_PER_SIDE:
    raise UserError(f"LiRA fits each sample's Gaussians to at least {MIN_PER_SIDE} models "
                    f"on each side, but a sample has {int(min(sizes))} (of {len(scores)} models"
                    f"{leave_out}).",
                    "use more models (shadows, or seeds), half of them trained on each sample.")
  dat_in, dat_out = (_first_on_side(scores, side, int(size))
                     for side, size in zip((keep, ~keep), sizes))
  fixed = variance == "fixed" or (variance == "auto" and min(sizes) < FIXED_BELOW)
  if fixed:
    sd_in = sd_out = np.std(dat_in)
    sd_offline = np.std(dat_out)
  else:
    sd_in, sd_out = np.std(dat_in, 0), np.std(dat_out, 0)
    sd_offline = sd_out
  return np.median(dat_in, 0), sd_in, np.median(dat_out, 0), sd_out, sd_offline


def likelihood_ratios(targets: np.ndarray, shadows: np.ndarray, keep: np.ndarray, *,
                      variance: str = "per_sample", leave_one_out: bool = False
                      ) -> tuple[np.ndarray, np.ndarray]:
  """(online, offline) LiRA scores [T, N] of each target model on each sample.

  Args:
    targets: [T, N] scores of the models attacked; with `leave_one_out`, the shadows themselves
      (T = M) and each one's Gaussians are fitted to the others (in model order).
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
  if leave_one_out:
    fits = [(m, np.arange(len(shadows)) != m) for m in range(len(shadows))]
  else:
    fits = [(slice(None), slice(None))]
  online, offline = np.empty(targets.shape), np.empty(targets.shape)
  for rows, others in fits:
    median_in, sd_in, median_out, sd_out, sd_offline = _fit(
        shadows[others], keep[others], variance, ", one left out" if leave_one_out else "")
    s = targets[rows]
    online[rows] = (scipy.stats.norm.logpdf(s, median_in, sd_in + TINY)
                    - scipy.stats.norm.logpdf(s, median_out, sd_out + TINY))
    offline[rows] = -scipy.stats.norm.logpdf(s, median_out, sd_offline + TINY)
  return online, offline


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
  """The highest TPR of a ROC curve at an FPR below `at` (strictly, as LiRA's code reads it)."""
  ok = fpr < at
  return float(tpr[ok].max()) if ok.any() else 0.0


def threshold_at_fpr(out_scores: np.ndarray, fpr: float) -> float:
  """The score above which a fraction `fpr` of non-member scores lies: the attack's decision
  threshold at that false-positive rate."""
  return float(np.quantile(np.ravel(out_scores), 1.0 - fpr))


def unlearning_ratios(unlearned: np.ndarray, retrained: np.ndarray, *,
                      variance: str = "per_sample") -> np.ndarray:
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
  online, _ = likelihood_ratios(scores, scores, unlearned_rows(scores.shape), variance=variance,
                                leave_one_out=True)
  return online


def unlearned_rows(shape: tuple[int, int]) -> np.ndarray:
  """[2K, F] bool: which rows of `unlearning_ratios`' output are the unlearned models' (the
  first K)."""
  kind = np.zeros(shape, bool)
  kind[:shape[0] // 2] = True
  return kind
