"""The audit's statistics against transcriptions of their published code, on identical arrays.

Each `reference_*` function below transcribes, step by step and in numpy, the code that defines
the statistic:
- the epsilon score: google-deepmind/unlearning_evaluation, `metric.py`
  (`compute_forget_score_from_confs`, `_get_epsilons`, `_get_single_threshold_rates`,
  `_get_double_threshold_rates`);
- LiRA: tensorflow/privacy, `research/mi_lira_2021/plot.py` (`generate_ours`,
  `generate_ours_offline`, `sweep`, `do_plot`).
The transcriptions keep the published loops and broadcasts (every threshold against every
model), so they share no code path with the library's. Two deliberate differences from the
published epsilon code, both numerical: its rates are float32 means and its single thresholds a
float32 `torch.linspace`; here everything is float64, which moves a sample's epsilon by less
than 1e-6 (a float32 rounding) and leaves every bucket, so epsilons and F are compared exactly.
Its `assert thr_eps` (ambiguous on a numpy array) is read as "some attack is kept".
"""
import math

import numpy as np
import pytest
import scipy.stats
from sklearn.metrics import auc, roc_curve

from jax_unlearn.metrics import audit, epsilon, lira

DELTA, CAP, PER_UNIT = 1e-05, 50, 100


# ---- transcription: the competition's epsilon score -----------------------------------------

def _reference_double_rates(pos, neg):
  pos_diff, neg_diff = pos.max() - pos.min(), neg.max() - neg.min()
  smallest = neg_diff if pos_diff > neg_diff else pos_diff
  if pos_diff >= neg_diff:  # "positive" is the peakiest distribution
    pos, neg = neg, pos
  buffer, width = 2.0, smallest
  min_, max_ = pos.min() + width - buffer, pos.max() + buffer
  right = np.linspace(min_, max_, num=int(np.ceil((max_ - min_) * PER_UNIT)))
  num_left = int(np.ceil(2 * buffer * PER_UNIT))
  thr_left = np.concatenate([np.linspace(tr - width - buffer, tr - width + buffer, num=num_left)
                             for tr in right])
  thr_right = np.tile(right.reshape(-1, 1), (1, num_left)).reshape(-1)

  def is_pp(c):
    return (thr_left[None, :] <= c[:, None]) & (c[:, None] <= thr_right[None, :])

  tpr, fpr = is_pp(pos).mean(0), is_pp(neg).mean(0)
  return tpr, 1 - tpr, fpr, 1 - fpr


def _reference_single_rates(pos, neg):
  both = np.concatenate([pos, neg])
  t = np.linspace(both.min(), both.max(), int(np.ceil((both.max() - both.min()) * PER_UNIT)))
  tpr = (pos[:, None] >= t[None, :]).mean(0)
  fpr = (neg[:, None] >= t[None, :]).mean(0)
  return tpr, (pos[:, None] < t[None, :]).mean(0), fpr, (neg[:, None] < t[None, :]).mean(0)


def reference_epsilons(pos_confs, neg_confs, delta=DELTA):
  epsilons = []
  for i in range(pos_confs.shape[1]):
    pos, neg = pos_confs[:, i], neg_confs[:, i]
    pos_diff, neg_diff = np.max(pos) - np.min(pos), np.max(neg) - np.min(neg)
    largest = pos_diff if pos_diff > neg_diff else neg_diff
    smallest = neg_diff if pos_diff > neg_diff else pos_diff
    with np.errstate(divide="ignore", invalid="ignore"):
      if smallest / largest < 0.01:
        epsilons.append(CAP)
        continue
    rates = [np.concatenate(pair) for pair in zip(_reference_double_rates(pos, neg),
                                                  _reference_single_rates(pos, neg))]
    tpr, fnr, fpr, tnr = rates
    thr_eps = np.zeros(len(tpr))
    thr_eps = np.where((fpr + fnr == 0) & (tpr + tnr == 2), np.inf, thr_eps)
    thr_eps = np.where((thr_eps == 0) & (fpr * fnr == 0), np.nan, thr_eps)
    with np.errstate(divide="ignore", invalid="ignore"), np.testing.suppress_warnings() as sup:
      sup.filter(RuntimeWarning)
      computed = np.clip(np.nanmax([np.log(1 - delta - fpr) - np.log(fnr),
                                    np.log(1 - delta - fnr) - np.log(fpr)], axis=0), 0, None)
    thr_eps = np.where(thr_eps == 0, computed, thr_eps)
    thr_eps = thr_eps[~np.isnan(thr_eps)]
    assert len(thr_eps), "Something went wrong, all thresholds gave nan epsilon..."
    epsilons.append(np.nanmax(thr_eps))
  return np.clip(epsilons, 0, CAP)


def reference_forget_score(unlearned_confs, retrained_confs):
  """(forget score, per-sample epsilons) as `compute_forget_score_from_confs` computes them."""
  _, forget_set_size = retrained_confs.shape
  retrain_is_positive = np.median(retrained_confs, 0) > np.median(unlearned_confs, 0)
  pos = np.where(retrain_is_positive, retrained_confs, unlearned_confs)
  neg = np.where(retrain_is_positive, unlearned_confs, retrained_confs)
  eps = reference_epsilons(pos, neg)
  max_epsilon = np.ceil(np.log(unlearned_confs.shape[0] - 1))
  start, size, points, bucket_points = 0, 0.5, 1, {}
  while start + size <= max_epsilon:
    bucket_points[start] = points
    points /= 2
    start += size
  score = 0
  for e in eps:
    for start, points in bucket_points.items():
      if e < start + size:
        score += points
        break
  return score / forget_set_size, eps


# ---- the cases ------------------------------------------------------------------------------

def _case(kind: str, models: int, samples: int, seed: int = 0):
  """(unlearned, retrained) [models, samples] scores of one kind of case, in raw units of about
  one (the reference's own scale)."""
  r = np.random.default_rng([seed, models, samples])
  centre = r.normal(0, 3, size=(1, samples))
  draw = lambda sd, shift=0.0: centre + shift + r.normal(0, sd, (models, samples))  # noqa: E731
  if kind == "shifted":
    return draw(1.0, 0.8), draw(1.0)
  if kind == "null":  # two independent draws of one distribution
    return draw(1.0), draw(1.0)
  if kind == "narrow_retrained":
    return draw(1.5), draw(0.3)
  if kind == "wide_retrained":
    return draw(0.3), draw(1.5)
  if kind == "collapsed_unlearned":
    return draw(0.005), draw(1.0)
  if kind == "collapsed_retrained":
    return draw(1.0), draw(0.005)
  if kind == "ties":  # scores on a half-unit lattice: thresholds land on scores
    return np.round(2 * draw(1.0, 0.3)) / 2, np.round(2 * draw(1.0)) / 2
  raise ValueError(kind)


KINDS = ("shifted", "null", "narrow_retrained", "wide_retrained", "collapsed_unlearned",
         "collapsed_retrained", "ties")
# Samples per case: the reference tries every threshold against every model.
SIZES = [(8, 24), (64, 8), (512, 2)]


@pytest.mark.parametrize("models, samples", SIZES)
@pytest.mark.parametrize("kind", KINDS)
def test_epsilons_and_forget_quality_equal_the_reference(kind, models, samples):
  u, r = _case(kind, models, samples)
  score, reference = reference_forget_score(u, r)
  ours = epsilon.sample_epsilons(u, r, unit="raw")
  np.testing.assert_array_equal(ours, reference)
  assert epsilon.forget_quality(ours, models) == pytest.approx(score, abs=1e-12)


def test_collapsed_unlearned_outputs_score_zero_as_in_the_reference():
  # A method that collapses its forget predictions must not be rewarded (the peaky rule).
  for models in (8, 64):
    u, r = _case("collapsed_unlearned", models, 16)
    eps = epsilon.sample_epsilons(u, r)
    np.testing.assert_array_equal(eps, epsilon.EPS_MAX)
    assert epsilon.forget_quality(eps, models) == 0.0


def test_the_default_unit_is_the_reference_on_scores_in_retrained_spreads():
  u, r = _case("shifted", 8, 24)
  u, r = 37.0 * u, 37.0 * r  # a label scale (years, say)
  unit = np.sqrt(np.mean(np.var(r, axis=0)))
  score, reference = reference_forget_score(u / unit, r / unit)
  ours = epsilon.sample_epsilons(u, r)
  np.testing.assert_array_equal(ours, reference)
  assert epsilon.forget_quality(ours, 8) == pytest.approx(score, abs=1e-12)


def test_a_change_of_scale_moves_raw_scores_not_the_default():
  u, r = _case("shifted", 8, 40, seed=3)
  for scale in (8.0, 1 / 64):  # powers of two: the scaled arrays are exact
    np.testing.assert_array_equal(epsilon.sample_epsilons(scale * u, scale * r),
                                  epsilon.sample_epsilons(u, r))
  # Raw: at 1/64 of the scale the grid (100 per unit) is too coarse to find what it found.
  coarse = epsilon.sample_epsilons(u / 64, r / 64, unit="raw")
  fine = epsilon.sample_epsilons(u, r, unit="raw")
  assert np.mean(coarse) < np.mean(fine)


def test_when_every_attack_is_discarded_the_reference_fails_and_ours_is_undefined():
  # Every model scores the same on the sample: no threshold tells anything.
  u = r = np.ones((8, 3))
  with pytest.raises(AssertionError, match="all thresholds gave nan"):
    reference_forget_score(u, r)
  eps = epsilon.sample_epsilons(u, r, unit="raw")
  assert np.isnan(eps).all() and math.isnan(epsilon.forget_quality(eps, 8))
  assert epsilon.final_score(epsilon.forget_quality(eps, 8), 1.0, 1.0) is None


def test_rates_of_one_make_no_epsilon_as_in_the_reference():
  # FPR = FNR = 1: both logarithms undefined, the attack is discarded (not a separation).
  table = epsilon.epsilon_table(4)
  assert np.isnan(table[0, 4])  # no positive inside, every negative inside
  assert table[4, 0] == np.inf  # every positive inside, no negative: separated
  assert np.isnan(table[4, 2]) and np.isnan(table[2, 0])  # one rate zero: discarded
  expected = max(math.log(1 - DELTA - 0.25) - math.log(0.5), math.log(1 - DELTA - 0.5)
                 - math.log(0.25))
  assert table[2, 1] == pytest.approx(expected, abs=1e-15)
  assert table[2, 2] == 0.0  # guessing: clipped to 0, kept


def test_the_null_is_far_from_one():
  # Two independent draws of one distribution: F well below 1 (the reference agrees).
  u, r = _case("null", 8, 24)
  score, _ = reference_forget_score(u, r)
  ours = epsilon.forget_quality(epsilon.sample_epsilons(u, r, unit="raw"), 8)
  assert ours == pytest.approx(score) and ours < 0.6


# ---- transcription: LiRA ---------------------------------------------------------------------

def _reference_fit(keep, scores):
  dat_in = [scores[keep[:, j], j, :] for j in range(scores.shape[1])]
  dat_out = [scores[~keep[:, j], j, :] for j in range(scores.shape[1])]
  in_size, out_size = min(map(len, dat_in)), min(map(len, dat_out))
  return (np.array([x[:in_size] for x in dat_in]), np.array([x[:out_size] for x in dat_out]))


def reference_online(keep, scores, check_keep, check_scores, fix_variance=False):
  dat_in, dat_out = _reference_fit(keep, scores)
  mean_in, mean_out = np.median(dat_in, 1), np.median(dat_out, 1)
  if fix_variance:
    std_in = std_out = np.std(dat_in)
  else:
    std_in, std_out = np.std(dat_in, 1), np.std(dat_out, 1)
  prediction, answers = [], []
  for ans, sc in zip(check_keep, check_scores):
    pr_in = -scipy.stats.norm.logpdf(sc, mean_in, std_in + 1e-30)
    pr_out = -scipy.stats.norm.logpdf(sc, mean_out, std_out + 1e-30)
    prediction.extend((pr_in - pr_out).mean(1))
    answers.extend(ans)
  return np.array(prediction), np.array(answers, bool)


def reference_offline(keep, scores, check_keep, check_scores, fix_variance=False):
  _, dat_out = _reference_fit(keep, scores)
  mean_out = np.median(dat_out, 1)
  std_out = np.std(dat_out) if fix_variance else np.std(dat_out, 1)
  prediction, answers = [], []
  for ans, sc in zip(check_keep, check_scores):
    prediction.extend(scipy.stats.norm.logpdf(sc, mean_out, std_out + 1e-30).mean(1))
    answers.extend(ans)
  return np.array(prediction), np.array(answers, bool)


def reference_sweep(score, x, low_fpr):
  fpr, tpr, _ = roc_curve(x, -score)
  return auc(fpr, tpr), tpr[np.where(fpr < low_fpr)[0][-1]]


def _lira_case(models: int, samples: int, seed: int = 0):
  """Scores [M, N] and membership (at random, 3 to M - 3 models in: counts differ by sample): a
  per-sample level, a per-sample spread, and a member shift of about one spread."""
  r = np.random.default_rng(seed)
  counts = r.integers(3, models - 2, samples)  # models trained on each sample
  keep = r.random((models, samples)).argsort(0) < counts
  level, spread = r.normal(0, 2, samples), r.uniform(0.3, 2.0, samples)
  scores = level + spread * (r.normal(size=(models, samples)) - 0.8 * keep)
  return scores, keep


@pytest.mark.parametrize("models", [12, 80])
@pytest.mark.parametrize("fixed", [False, True])
def test_lira_equals_the_reference(models, fixed):
  scores, keep = _lira_case(models, 2000)
  shadows, target = scores[:-1], scores[-1:]
  variance = "fixed" if fixed else "per_sample"
  online, offline = lira.likelihood_ratios(target, shadows, keep[:-1], variance=variance)
  for ours, reference in ((online, reference_online), (offline, reference_offline)):
    prediction, answers = reference(keep[:-1], shadows[..., None], keep[-1:], target[..., None],
                                    fix_variance=fixed)
    np.testing.assert_allclose(-prediction, ours[0], rtol=1e-12, atol=1e-12)
    summary = lira.attack_summary(ours, keep[-1:], (0.01, 0.001))
    ref_auc, ref_tpr = reference_sweep(prediction, answers, 0.01)
    assert summary["auc"] == pytest.approx(ref_auc, abs=1e-12)
    assert summary["tpr_at_fpr"]["0.01"] == ref_tpr
    assert summary["tpr_at_fpr"]["0.001"] == reference_sweep(prediction, answers, 0.001)[1]


def test_auto_variance_is_fixed_below_64_models_a_side():
  # Complementary halves: every sample has M / 2 models a side, one fewer without the target.
  for models, fixed in ((40, True), (128, True), (130, False)):
    scores, _ = _lira_case(models, 300, seed=1)
    keep = audit.shadow_halves(300, models, seed=1)
    auto = lira.likelihood_ratios(scores[-1:], scores[:-1], keep[:-1], variance="auto")
    chosen = lira.likelihood_ratios(scores[-1:], scores[:-1], keep[:-1],
                                    variance="fixed" if fixed else "per_sample")
    np.testing.assert_array_equal(auto[0], chosen[0])
    np.testing.assert_array_equal(auto[1], chosen[1])
