"""The audit: LiRA, U-LiRA, the competition's epsilon score and KS, on constructed cases and
through the pipeline."""
import json
import math
import os

import jax
import numpy as np
import pytest

from jax_unlearn import config_io, losses, metrics, pipeline, train
from jax_unlearn.errors import UserError
from jax_unlearn.metrics import audit, epsilon, lira
from jax_unlearn.models import MLP, from_linen, init_linen

LN = math.log
D = epsilon.DELTA


# ---- the epsilon score ----------------------------------------------------------------------

def test_the_perfect_separation_and_the_peaky_rule():
  u, r = np.array([[0.0], [1.0], [2.0]]), np.array([[5.0], [6.0], [7.0]])
  assert epsilon.sample_epsilons(u, r, unit="raw")[0] == epsilon.EPS_MAX  # a threshold separates
  rng = np.random.default_rng(0)
  r = rng.normal(size=(16, 40))
  assert epsilon.forget_quality(epsilon.sample_epsilons(r + 6.0, r), 16) == 0.0
  # Collapsed unlearned outputs (a range under 1% of the retrained ones'): epsilon 50 outright.
  collapsed = np.mean(r, 0) + 1e-4 * rng.normal(size=(16, 40))
  np.testing.assert_array_equal(epsilon.sample_epsilons(collapsed, r), epsilon.EPS_MAX)


def test_the_null_of_independent_draws_is_far_from_one():
  """Two independent draws of one distribution: F about 0.2, not 1 (what a perfect unlearner
  scores; identical copies of the retrained models are no experiment's case)."""
  rng = np.random.default_rng(0)
  centre = rng.normal(size=(1, 200))
  for models in (8, 32):
    f = epsilon.forget_quality(epsilon.sample_epsilons(centre + rng.normal(size=(models, 200)),
                                                       centre + rng.normal(size=(models, 200))),
                               models)
    assert 0.05 < f < 0.45


def test_the_unit_is_the_retrained_spread():
  r = np.random.default_rng(0).normal(0, 3.0, size=(64, 50))
  assert epsilon.score_unit(r) == pytest.approx(np.sqrt(np.mean(np.var(r, 0))))
  assert epsilon.score_unit(r, "raw") == 1.0
  with pytest.raises(UserError, match="do not vary"):
    epsilon.score_unit(np.ones((4, 3)))
  with pytest.raises(UserError, match="unknown epsilon unit"):
    epsilon.score_unit(r, "years")
  with pytest.raises(UserError, match="non-finite"):
    epsilon.sample_epsilons(np.full((4, 3), np.nan), np.ones((4, 3)))
  with pytest.raises(UserError, match="far from the grid"):  # raw scores in tiny units
    epsilon.sample_epsilons(1e6 * r[:8, :2], 1e6 * r[8:16, :2], unit="raw")


def test_buckets_and_final_score():
  # 8 models a side: buckets of 0.5 up to ceil(ln 7) = 2.
  eps = np.array([0.0, 0.49, 0.5, 1.2, 1.99, 2.0, 50.0])
  np.testing.assert_allclose(epsilon.bucket_points(eps, 8), [1, 1, 0.5, 0.25, 0.125, 0, 0])
  assert epsilon.forget_quality(eps, 8) == pytest.approx((2 + 0.5 + 0.25 + 0.125) / 7)
  assert epsilon.utility_ratio(2.0, 1.0) == 0.5  # twice the retrained error: half the utility
  assert epsilon.utility_ratio(0.5, 1.0) == 1.0  # better than retraining earns nothing (capped)
  assert epsilon.final_score(0.5, 0.5, 1.0) == 0.25
  assert epsilon.final_score(0.5, None, 1.0) is None
  assert epsilon.final_score(math.nan, 1.0, 1.0) is None
  with pytest.raises(UserError, match="at least 3 models"):
    epsilon.bucket_points(eps, 2)


def test_epsilon_chunks_agree_with_one_pass(monkeypatch):
  r = np.random.default_rng(1)
  u, v = r.normal(size=(6, 10)), r.normal(0.5, 1.0, size=(6, 10))
  whole = epsilon.sample_epsilons(u, v)
  monkeypatch.setattr(epsilon, "CHUNK", 3)
  np.testing.assert_array_equal(epsilon.sample_epsilons(u, v), whole)


# ---- LiRA and U-LiRA ------------------------------------------------------------------------

def _log_normal(s, mean, sd):
  return -0.5 * ((s - mean) / sd) ** 2 - math.log(sd) - 0.5 * math.log(2 * math.pi)


def test_likelihood_ratio_by_hand_per_sample():
  # One sample; in-models 0, 2, 4 (median 2, sd sqrt(8/3)), out-models 10, 12, 20 (median 12,
  # sd sqrt(56/3)): medians and ddof 0, as published.
  shadows = np.array([[0.0], [2.0], [4.0], [10.0], [12.0], [20.0]])
  keep = np.array([[True], [True], [True], [False], [False], [False]])
  online, offline = lira.likelihood_ratios(np.array([[1.0]]), shadows, keep,
                                           variance="per_sample")
  sd_in, sd_out = math.sqrt(8 / 3), math.sqrt(56 / 3)
  assert online[0, 0] == pytest.approx(_log_normal(1, 2, sd_in) - _log_normal(1, 12, sd_out))
  # Offline, two-sided: how unlikely the score is under the out-models.
  assert offline[0, 0] == pytest.approx(-_log_normal(1, 12, sd_out))


def test_likelihood_ratio_by_hand_fixed():
  # Two samples; the fixed sd is the spread of every "in" score (both samples), for both sides
  # online; of every "out" score offline.
  shadows = np.array([[0.0, 5.0], [2.0, 9.0], [10.0, 1.0], [12.0, 3.0]])
  keep = np.array([[True, True], [True, True], [False, False], [False, False]])
  online, offline = lira.likelihood_ratios(np.array([[1.0, 4.0]]), shadows, keep,
                                           variance="fixed")
  sd_in, sd_out = np.std([0.0, 5.0, 2.0, 9.0]), np.std([10.0, 1.0, 12.0, 3.0])
  assert online[0, 1] == pytest.approx(_log_normal(4, 7, sd_in) - _log_normal(4, 2, sd_in))
  assert offline[0, 0] == pytest.approx(-_log_normal(1, 11, sd_out))


def test_lira_truncates_every_sample_to_the_fewest_models_a_side():
  # The last model is in for sample 0 (3 in, 2 out) and out for sample 1 (2 in, 3 out): each
  # side is fitted to its first 2 models, so neither of its scores is ever read.
  shadows = np.array([[0.0, 0.0], [2.0, 2.0], [10.0, 10.0], [12.0, 12.0], [100.0, 7.0]])
  keep = np.array([[True, True], [True, True], [False, False], [False, False], [True, False]])
  online, _ = lira.likelihood_ratios(np.array([[1.0, 1.0]]), shadows, keep, variance="per_sample")
  assert online[0, 0] == pytest.approx(online[0, 1])


@pytest.mark.parametrize("variance", ["per_sample", "fixed"])
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
  assert lira.attack_summary(apart, kind, ())["auc"] > 0.85
  # Alike per-sample spreads, levels of the same order: the fixed variance does as well.
  fixed = lira.unlearning_ratios(centre + 2 + r.normal(size=(8, 60)),
                                 centre + r.normal(size=(8, 60)), variance="fixed")
  assert lira.attack_summary(fixed, kind, ())["auc"] > 0.85


def test_lira_finds_a_model_that_memorised_noise():
  """Shadow MLPs memorise random labels of random rows: membership is plain, AUC near 1."""
  r = np.random.default_rng(0)
  x = r.normal(size=(64, 8)).astype(np.float32)
  y = r.normal(size=(64, 1)).astype(np.float32)
  keep = audit.shadow_halves(64, 8, seed=0)
  model = MLP(hidden=(128, 128))
  apply_fn = from_linen(model)
  keys = jax.random.split(jax.random.key(0), 8)
  variables = train.ensemble.init_members(lambda k: init_linen(model, k, x[:1]), keys)
  shadows = train.train_model(apply_fn, variables, train.supervised_loss(losses.mse),
                              [{"x": x[m], "y": y[m]} for m in keep],
                              train.Recipe(epochs=150, batch_size=32, lr=3e-3),
                              rng=keys, seeds=list(range(8))).variables
  scores, per_row = audit.member_scores(train.make_predict_fn(apply_fn), shadows, x, y,
                                        score="residual", task_loss=losses.mse)
  assert per_row[keep].mean() < 0.05 * per_row[~keep].mean()  # memorised
  online, offline = lira.likelihood_ratios(scores, scores, keep, leave_one_out=True)
  assert lira.attack_summary(online, keep)["auc"] > 0.95  # per-sample variances (the default)
  # Offline (two-sided, as published) sees how unlikely a score is under out-models only.
  assert lira.attack_summary(offline, keep)["auc"] > 0.6
  # The fixed variance holds the residual levels' spread across rows: far weaker here.
  fixed, _ = lira.likelihood_ratios(scores, scores, keep, variance="fixed", leave_one_out=True)
  assert lira.attack_summary(fixed, keep)["auc"] < lira.attack_summary(online, keep)["auc"] - 0.05


def test_attack_summary_reads_low_fpr():
  members = np.array([True] * 100 + [False] * 100)
  scores = np.concatenate([np.linspace(1, 2, 100), np.linspace(0, 1.5, 100)])
  summary = lira.attack_summary(scores, members, (0.01,))
  assert 0.5 < summary["auc"] < 1.0
  # Above 1.5 - 1.5 / 99 only one non-member remains (FPR 0.01): members above it, half of them.
  assert summary["tpr_at_fpr"]["0.01"] == pytest.approx(0.51, abs=0.02)


def test_permutation_test_by_hand():
  a, b = np.array([1.0, 2.0, 3.0]), np.array([4.0, 5.0, 6.0])
  # Of the 20 ways to deal 6 models into two groups of 3, 2 are as extreme as the observed one.
  test = audit.permutation_test(np.mean, a, b, permutations=4000, seed=0)
  assert test["difference"] == -3.0 and test["p"] == pytest.approx(0.1, abs=0.015)
  assert audit.permutation_test(np.mean, a, a.copy(), permutations=50)["p"] == 1.0
  assert audit.permutation_test(np.mean, a, np.full(3, np.nan), permutations=50)["p"] is None


# ---- one registry for metrics and audits ----------------------------------------------------

class ForgetSpread(audit.Audit):
  """Each model's mean spread of its members' forget scores: an audit of a test's own."""
  name = "forget_spread"
  keys = ("forget_spread",)
  columns = (metrics.Column("forget_spread", "forget spread", metrics.TO_NULL),)

  def run(self, data):
    return audit.AuditOutput(models={
        n: {"forget_spread": float(data.forget_scores(n).std(0).mean())} for n in data.scores})


def _audit_data(which):
  r = np.random.default_rng(0)
  scores = {n: r.normal(size=(3, 10)) * scale for n, scale in
            (("original", 3.0), (audit.REFERENCE, 1.0), (audit.NULL, 1.0))}
  return audit.AuditData(scores=scores, losses={n: s ** 2 for n, s in scores.items()},
                         forget=np.arange(10) < 4, per_seed=[],
                         settings={**audit.DEFAULTS, "which": which})


def test_an_audit_registered_with_the_metrics_joins_the_audit_and_its_table():
  metrics.register(ForgetSpread())
  try:
    assert "forget_spread" in audit.names() and "forget_spread" not in metrics.names(metrics.Metric)
    assert metrics.columns()["forget_spread"].label == "forget spread"
    data = _audit_data(("ks", "forget_spread"))
    results, _ = audit.run_audit(data)
    for name in data.scores:
      expected = data.scores[name][:, data.forget].std(0).mean()
      assert results["models"][name]["forget_spread"] == pytest.approx(expected)
    assert "| forget spread → null |" in metrics.write_audit(results)
    with pytest.raises(UserError, match="unknown metric 'forget_spread'"):
      metrics.resolve_settings({"which": ["errors", "forget_spread"]})
  finally:
    metrics.unregister("forget_spread")
  assert "forget_spread" not in metrics.names()


def test_audits_and_metrics_share_one_namespace_and_declare_their_keys():
  with pytest.raises(UserError, match="already registered"):
    metrics.register(type("Mia", (audit.Audit,), {"name": "mia"})())
  clash = type("Clash", (audit.Audit,), {"name": "clash", "keys": ("mia_forget",)})
  with pytest.raises(UserError, match="mia_forget"):
    metrics.register(clash())
  with pytest.raises(UserError, match="unknown audit 'mia'"):
    audit.get("mia")

  class Sloppy(ForgetSpread):
    name, keys, columns = "sloppy", (), ()

  metrics.register(Sloppy())
  try:
    with pytest.raises(ValueError, match="undeclared keys"):
      audit.run_audit(_audit_data(("sloppy",)))
  finally:
    metrics.unregister("sloppy")


# ---- settings and the pipeline --------------------------------------------------------------

def _config(**overrides):
  c = config_io.load_config("diabetes_mlp")
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
    ({"audit.unit": "years"}, "unknown epsilon unit"),
    ({"audit.permutations": 10}, "audit.permutations"),
    ({"audit.variance": "pooled"}, "unknown variance"),
    ({"audit.enabled": False, "audit.score": "absolute"}, "audit.score"),  # checked when off too
])
def test_bad_audit_settings_fail_before_training(overrides, match):
  with pytest.raises(UserError, match=match):
    config_io.prepare_config(_config(**overrides))


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
  assert a["members"] == 3 and list(a["models"]) == ["original", "retrained", audit.NULL,
                                                      "blindspot", "finetune", "gaussian"]
  # The null is retrained models of other seeds, checkpointed as a stage, and it is the noise
  # floor of the metrics too.
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "mlp", audit.NULL_STAGE))
  assert results["models"][audit.NULL]["wasserstein_to_retrained"]["mean"] > 0
  null = a["models"][audit.NULL]
  assert 0 <= null["ulira_accuracy"]["mean"] <= 1 and 0 <= null["epsilon_forget_quality"] <= 1
  versus = a["versus_null"]
  assert list(versus) == ["original", "blindspot", "finetune", "gaussian"]
  for name, row in versus.items():
    assert set(row) == {"lira", "ulira", "epsilon", "ks", "svm"}
    for test in row.values():
      # 3 models a side: 20 ways to split 6, so p is at least about 1 / 10.
      assert 0.05 <= test["p"] <= 1 and test["distinguishable"] is False
      value = a["models"][name][test["key"]]
      assert test["difference"] == pytest.approx(
          (value["mean"] if isinstance(value, dict) else value) - (
              null[test["key"]]["mean"] if isinstance(null[test["key"]], dict)
              else null[test["key"]]))
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
  assert "### Against the null" in text and f"| {audit.NULL} |" in text
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
