"""The audit: LiRA, U-LiRA, the competition's epsilon score and KS, on constructed cases and
through the pipeline."""
import json
import math
import os

import jax
import numpy as np
import pytest

from jax_unlearn import config_io, losses, pipeline, train
from jax_unlearn.errors import UserError
from jax_unlearn.metrics import audit, epsilon, lira
from jax_unlearn.models import MLP, from_linen, init_linen

LN = math.log
D = epsilon.DELTA


# ---- the epsilon score ----------------------------------------------------------------------

def test_attack_rates_by_hand():
  # Four unlearned and four retrained models on one sample; a 2-point grid: t = 0 and t = 6.
  u = np.array([[3.0], [4.0], [5.0], [6.0]])
  r = np.array([[0.0], [1.0], [2.0], [3.5]])
  fpr, fnr = epsilon.attack_rates(u, r, grid=2)
  # Attacks: "above 0", "above 6", then the intervals [0, 0], [0, 6], [6, 6].
  np.testing.assert_allclose(fpr, [[0.75, 0.0, 0.25, 1.0, 0.0]])
  np.testing.assert_allclose(fnr, [[0.0, 1.0, 1.0, 0.0, 0.75]])


def test_attack_rates_take_the_side_of_the_larger_median():
  # Unlearned scores below the retrained ones: "unlearned" is the low side, so a single
  # threshold separates them perfectly.
  u, r = np.array([[0.0], [1.0], [2.0]]), np.array([[5.0], [6.0], [7.0]])
  fpr, fnr = epsilon.attack_rates(u, r, grid=11)
  assert np.any((fpr == 0) & (fnr == 0))
  assert epsilon.sample_epsilons(u, r)[0] == epsilon.EPS_MAX


@pytest.mark.parametrize("fpr, fnr, expected", [
    ([0.25], [0.5], max(LN(1 - D - 0.25) - LN(0.5), LN(1 - D - 0.5) - LN(0.25))),
    ([0.9], [0.05], max(LN(1 - D - 0.9) - LN(0.05), LN(1 - D - 0.05) - LN(0.9))),
    ([0.25, 0.125], [0.25, 0.5], max(LN(1 - D - 0.5) - LN(0.125), LN(1 - D - 0.25) - LN(0.25))),
    ([0.0, 0.5], [0.5, 0.5], 0.0),  # one rate zero: discarded; guessing: clipped to 0
    ([1.0], [0.0], 0.0),  # discarded
    ([0.0], [0.0], epsilon.EPS_MAX),  # a perfect separation
    ([0.2, 0.0], [0.3, 0.0], epsilon.EPS_MAX),
])
def test_epsilon_from_hand_computed_rates(fpr, fnr, expected):
  got = epsilon.epsilons_from_rates(np.array([fpr]), np.array([fnr]))
  assert got.shape == (1,)
  assert got[0] == pytest.approx(expected, abs=1e-12)


def test_identical_models_give_the_best_score_separable_ones_the_worst():
  r = np.random.default_rng(0).normal(size=(16, 40))
  same = epsilon.sample_epsilons(r, r.copy())
  np.testing.assert_array_equal(same, 0.0)  # no threshold tells equal scores apart
  assert epsilon.forget_quality(same, 16) == 1.0
  apart = epsilon.sample_epsilons(r + 6.0, r)
  assert epsilon.forget_quality(apart, 16) == 0.0
  # Constant scores (a degenerate range) are no information either.
  assert epsilon.sample_epsilons(np.ones((4, 3)), np.ones((4, 3))).tolist() == [0.0] * 3


def test_buckets_and_final_score():
  # 8 models a side: buckets of 0.5 up to ceil(ln 7) = 2.
  eps = np.array([0.0, 0.49, 0.5, 1.2, 1.99, 2.0, 50.0])
  np.testing.assert_allclose(epsilon.bucket_points(eps, 8), [1, 1, 0.5, 0.25, 0.125, 0, 0])
  assert epsilon.forget_quality(eps, 8) == pytest.approx((2 + 0.5 + 0.25 + 0.125) / 7)
  assert epsilon.utility_ratio(2.0, 1.0) == 0.5  # twice the retrained error: half the utility
  assert epsilon.final_score(0.5, 0.5, 2.0) == 0.5
  assert epsilon.final_score(0.5, None, 1.0) is None
  with pytest.raises(UserError, match="at least 3 models"):
    epsilon.bucket_points(eps, 2)


def test_epsilon_chunks_agree_with_one_pass(monkeypatch):
  r = np.random.default_rng(1)
  u, v = r.normal(size=(6, 10)), r.normal(0.5, 1.0, size=(6, 10))
  whole = epsilon.sample_epsilons(u, v)
  monkeypatch.setattr(epsilon, "CHUNK", 3)
  np.testing.assert_array_equal(epsilon.sample_epsilons(u, v), whole)


# ---- LiRA and U-LiRA ------------------------------------------------------------------------

def test_likelihood_ratio_by_hand():
  shadows = np.array([[0.0], [2.0], [10.0], [12.0]])
  keep = np.array([[True], [True], [False], [False]])
  online, offline = lira.likelihood_ratios(np.array([[1.0]]), shadows, keep,
                                           variance="per_sample")
  # In: mean 1, variance 2; out: mean 11, variance 2 (unbiased).
  assert online[0, 0] == pytest.approx(0.5 * 100 / 2)
  # Offline: closeness -|s| = -1 against the out-models' -10 and -12 (mean -11, sd sqrt 2).
  assert offline[0, 0] == pytest.approx(10 / math.sqrt(2))


@pytest.mark.parametrize("variance", ["per_sample", "global"])
def test_leave_one_out_matches_fitting_without_each_model(variance):
  r = np.random.default_rng(0)
  scores = r.normal(size=(8, 7))
  keep = audit.shadow_halves(7, 8, seed=0)
  online, offline = lira.likelihood_ratios(scores, scores, keep, variance=variance,
                                           leave_one_out=True)
  for m in range(8):
    rest = np.arange(8) != m
    one_on, one_off = lira.likelihood_ratios(scores[m:m + 1], scores[rest], keep[rest],
                                             variance=variance)
    np.testing.assert_allclose(online[m], one_on[0], rtol=1e-9)
    np.testing.assert_allclose(offline[m], one_off[0], rtol=1e-9)


def test_shadow_halves_put_every_row_in_half_the_shadows():
  keep = audit.shadow_halves(11, 8, seed=3)
  assert keep.shape == (8, 11) and (keep.sum(1) == 5).all()
  assert not (keep[0] & keep[1]).any() and (keep.sum(0) <= 4).all() and (keep.sum(0) >= 3).all()
  np.testing.assert_array_equal(keep, audit.shadow_halves(11, 8, seed=3))
  even = audit.shadow_halves(10, 8, seed=3)
  assert (even.sum(0) == 4).all() and (even.sum(1) == 5).all()
  with pytest.raises(UserError, match="pairs"):
    audit.shadow_halves(11, 5, seed=0)


def test_lira_needs_models_on_both_sides():
  scores = np.zeros((4, 3))
  keep = audit.shadow_halves(3, 4, seed=0)
  with pytest.raises(UserError, match="at least 2 models"):
    lira.likelihood_ratios(scores, scores, keep, leave_one_out=True)


def test_ulira_cannot_tell_models_of_one_distribution_apart():
  r = np.random.default_rng(0)
  centre = r.normal(size=(1, 60))
  same = lira.attack_summary(lira.unlearning_ratios(centre + r.normal(size=(32, 60)),
                                                    centre + r.normal(size=(32, 60))),
                             np.repeat([True, False], 32)[:, None] & np.ones((1, 60), bool), ())
  assert abs(same["auc"] - 0.5) < 0.05 and abs(same["accuracy"] - 0.5) < 0.05
  apart = lira.unlearning_ratios(centre + 2 + r.normal(size=(8, 60)),
                                 centre + r.normal(size=(8, 60)))
  kind = np.repeat([True, False], 8)[:, None] & np.ones((1, 60), bool)
  assert lira.attack_summary(apart, kind, ())["auc"] > 0.9


def test_lira_finds_a_model_that_memorised_noise():
  """Shadow MLPs memorise random labels of random rows: membership is plain, AUC near 1."""
  r = np.random.default_rng(0)
  x = r.normal(size=(64, 8)).astype(np.float32)
  y = r.normal(size=(64, 1)).astype(np.float32)
  keep = audit.shadow_halves(64, 8, seed=0)
  model = MLP(hidden=(128, 128))
  apply_fn = from_linen(model)
  keys = jax.random.split(jax.random.key(0), 8)
  variables = train.ensemble.init_members(lambda k: init_linen(model, k, x[:1]), keys, 8)
  shadows = train.train_model(apply_fn, variables, train.supervised_loss(losses.mse),
                              [{"x": x[m], "y": y[m]} for m in keep],
                              train.Recipe(epochs=150, batch_size=32, lr=3e-3),
                              rng=keys, seed=list(range(8))).variables
  scores, per_row = audit.member_scores(train.make_predict_fn(apply_fn), shadows, x, y,
                                        score="residual", task_loss=losses.mse)
  assert per_row[keep].mean() < 0.05 * per_row[~keep].mean()  # memorised
  online, offline = lira.likelihood_ratios(scores, scores, keep, leave_one_out=True)
  assert lira.attack_summary(online, keep)["auc"] > 0.95
  assert lira.attack_summary(offline, keep)["auc"] > 0.9


def test_attack_summary_reads_low_fpr():
  members = np.array([True] * 100 + [False] * 100)
  scores = np.concatenate([np.linspace(1, 2, 100), np.linspace(0, 1.5, 100)])
  summary = lira.attack_summary(scores, members, (0.01,))
  assert 0.5 < summary["auc"] < 1.0
  # Above 1.5 - 1.5 / 99 only one non-member remains (FPR 0.01): members above it, half of them.
  assert summary["tpr_at_fpr"]["0.01"] == pytest.approx(0.51, abs=0.02)


# ---- settings and the pipeline --------------------------------------------------------------

def _config(**overrides):
  c = config_io.load_config("experiments/configs/diabetes_mlp.py")
  c.smoke = True
  for key, value in {"audit.enabled": True, "seeds": 3, "audit.shadows": 8,
                     "methods.blindspot.epochs": 1, **overrides}.items():
    config_io.apply_override(c, key, str(value))
  return c


@pytest.mark.parametrize("overrides, match", [
    ({"seeds": 1}, "at least 3 models"),
    ({"audit.shadows": 7}, "even number of at least 8"),
    ({"audit.shadows": 6}, "even number of at least 8"),
    ({"audit.score": "absolute"}, "audit.score"),
    ({"audit.fpr": 0.7}, "audit.fpr"),
    ({"audit.which": "['lira', 'bogus']"}, "unknown audit"),
    ({"audit.shadow": 8}, "did you mean --config.audit.shadows"),
    ({"audit.enabled": False, "audit.score": "absolute"}, "audit.score"),  # checked when off too
])
def test_bad_audit_settings_fail_before_training(overrides, match):
  with pytest.raises(UserError, match=match):
    pipeline.prepare_config(_config(**overrides))


def test_shadow_batch_larger_than_half_the_data_fails_before_training(tmp_path):
  with pytest.raises(UserError, match="half the training data"):
    pipeline.run_experiment(_config(), str(tmp_path), overrides=[("train.batch_size", "200")],
                            quiet=True)
  assert not os.path.exists(tmp_path / "checkpoints")


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("audit"))
  return workdir, pipeline.run_experiment(_config(), workdir, quiet=True)


def test_pipeline_writes_the_audit(audited):
  workdir, results = audited
  a = results["audit"]
  assert a["members"] == 3 and list(a["models"]) == ["original", "retrained", "blindspot",
                                                      "finetune", "gaussian"]
  assert a["info"]["lira"]["shadows"] == 8
  assert 0 <= a["info"]["lira"]["online"]["auc"] <= 1
  for name, row in a["models"].items():
    assert row["lira_forget_auc"]["values"][0] is not None
    if name != "retrained":
      assert 0 <= row["ulira_auc"] <= 1 and 0 <= row["epsilon_forget_quality"] <= 1
      assert len(row["ulira_accuracy"]["values"]) == 6  # one per target: 3 unlearned, 3 retrained
      assert len(row["ks_forget_p"]["values"]) == 3
  with open(os.path.join(workdir, "results.json")) as f:
    assert json.load(f)["audit"] == a
  with open(os.path.join(workdir, "results.md")) as f:
    text = f.read()
  assert "## Audit" in text and "LiRA's power on its 8 shadow models" in text
  with np.load(os.path.join(workdir, "audit.npz"), allow_pickle=False) as z:
    assert z["shadows/keep"].shape == (8, results["n"]["train"])
    assert z["finetune/epsilon"].shape == (results["n"]["forget"],)
  for plot in ("audit_roc.png", "audit_epsilon.png", "audit_lira_scores.png"):
    assert os.path.getsize(os.path.join(workdir, "plots", plot)) > 0


def test_the_same_seed_gives_the_same_audit(audited, tmp_path):
  _, results = audited
  again = pipeline.run_experiment(_config(), str(tmp_path), quiet=True)
  strip = lambda a: {k: v for k, v in a.items() if k != "seconds"}  # noqa: E731
  assert strip(again["audit"]) == strip(results["audit"])
