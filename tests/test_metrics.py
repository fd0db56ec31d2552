import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn import metrics as skm
from sklearn.svm import SVC

from jax_unlearn import configs, losses, parallel, train
from jax_unlearn.data import ArrayLoader
from jax_unlearn.errors import UserError
from jax_unlearn.metrics import (EvalData, Relearner, activation_distance, anamnesis_index,
                                 cohort_error, cohort_errors, evaluate_models, loss_values,
                                 membership_attack, model_activation_distance,
                                 per_example_losses, r2_score, relative_difference,
                                 relearn_target, resolve_settings, wasserstein,
                                 wasserstein_1d)
from jax_unlearn.metrics import defaults as metrics_defaults
from jax_unlearn.metrics.mia import augmented_inputs, target_rows
from jax_unlearn.models import MLP, from_linen, init_linen


def _random(seed, n=37, d=2):
  r = np.random.default_rng(seed)
  pred = r.normal(size=(n, d)).astype(np.float32)
  y = r.normal(size=(n, d)).astype(np.float32)
  mask = r.random(n) < 0.4
  return pred, y, mask


# Errors


@pytest.mark.parametrize("seed", [0, 1])
def test_cohort_errors_match_sklearn_on_ragged_masks(seed):
  pred, y, mask = _random(seed)
  got = cohort_errors(pred, y, "mae", {"f": mask, "r": ~mask})
  np.testing.assert_allclose(got["f"], skm.mean_absolute_error(y[mask], pred[mask]), rtol=1e-6)
  np.testing.assert_allclose(got["r"], skm.mean_absolute_error(y[~mask], pred[~mask]), rtol=1e-6)
  np.testing.assert_allclose(cohort_error(pred, y, "mse", mask),
                             skm.mean_squared_error(y[mask], pred[mask]), rtol=1e-6)
  np.testing.assert_allclose(cohort_error(pred, y, "rmse", mask),
                             np.sqrt(skm.mean_squared_error(y[mask], pred[mask])), rtol=1e-6)
  np.testing.assert_allclose(cohort_error(pred, y, "mae"), skm.mean_absolute_error(y, pred),
                             rtol=1e-6)
  np.testing.assert_allclose(r2_score(pred, y, mask), skm.r2_score(y[mask], pred[mask]),
                             rtol=1e-6)


def test_quantile_error_and_median_by_hand():
  y = np.array([[1.0], [2.0], [0.0]], np.float32)  # [3, D=1]
  pred = np.array([[[0.0, 1.0, 3.0]], [[2.0, 2.0, 2.0]], [[-1.0, 0.5, 1.0]]], np.float32)
  q = (0.1, 0.5, 0.9)
  # Pinball per row: e = y - pred; max(q e, (q - 1) e) averaged over the three quantiles.
  rows = [(0.1 * 1 + 0 + 0.1 * 2) / 3, 0.0, (0.1 * 1 + 0.5 * 0.5 + 0.1 * 1) / 3]
  np.testing.assert_allclose(cohort_error(pred, y, "quantile", quantiles=q), np.mean(rows),
                             rtol=1e-6)
  # The median forecast is quantile 0.5: |1-1|, |2-2|, |0.5-0|.
  np.testing.assert_allclose(cohort_error(pred, y, "mae", quantiles=q), 0.5 / 3, rtol=1e-6)
  with pytest.raises(UserError, match="quantiles"):
    cohort_error(pred, y, "quantile")


def test_empty_or_undefined_cohorts_are_none_not_nan():
  pred, y, _ = _random(0, n=5)
  none = np.zeros(5, bool)
  assert cohort_errors(pred, y, "mse", {"empty": none}) == {"empty": None}
  assert r2_score(pred, y, none) is None
  assert r2_score(pred, np.ones_like(y)) is None  # constant label: R^2 undefined
  with pytest.raises(UserError, match="did you mean 'mae'"):
    cohort_error(pred, y, "maee")


# Distances


@pytest.mark.parametrize("seed", range(4))
def test_wasserstein_matches_scipy_on_different_lengths(seed):
  r = np.random.default_rng(seed)
  u = r.normal(size=int(r.integers(1, 60)))
  v = r.gamma(2.0, size=int(r.integers(1, 60))) + r.normal()
  np.testing.assert_allclose(wasserstein_1d(u, v), scipy.stats.wasserstein_distance(u, v),
                             rtol=1e-6)
  ties_u, ties_v = r.integers(0, 4, size=25), r.integers(0, 6, size=11)
  np.testing.assert_allclose(wasserstein_1d(ties_u, ties_v),
                             scipy.stats.wasserstein_distance(ties_u, ties_v), rtol=1e-6)


def test_wasserstein_invariants_and_multi_output_mean():
  r = np.random.default_rng(0)
  u, v = r.normal(size=(30, 3)), r.normal(1.0, 2.0, size=(17, 3))
  expected = np.mean([scipy.stats.wasserstein_distance(u[:, d], v[:, d]) for d in range(3)])
  np.testing.assert_allclose(wasserstein(u, v), expected, rtol=1e-6)
  assert wasserstein(u, v) == pytest.approx(wasserstein(v, u), rel=1e-12)
  assert wasserstein(u, u) == 0.0
  assert wasserstein(u + 3.25, v + 3.25) == pytest.approx(wasserstein(u, v), rel=1e-9)
  assert wasserstein_1d([0.0], [2.5]) == pytest.approx(2.5)
  with pytest.raises(ValueError, match="output shapes"):
    wasserstein(u, v[:, :2])


def test_relative_difference_by_hand_with_zero_label_guard():
  pred = np.array([[2.0], [1.0], [1.0]])
  pred_r = np.array([[1.0], [1.0], [0.5]])
  y = np.array([[4.0], [-3.0], [0.0]])
  got = relative_difference(pred, pred_r, y, eps=1e-3)
  np.testing.assert_allclose(got, [[0.25], [0.0], [500.0]])
  assert np.all(np.isfinite(relative_difference(pred, pred_r, np.zeros_like(y))))


def _mlp(seed=1, hidden=(8,), x=None):
  model = MLP(hidden=hidden)
  x = np.zeros((2, 3), np.float32) if x is None else x
  return from_linen(model), init_linen(model, jax.random.key(seed), x[:2])


def test_activation_distance_arrays_and_models_match_numpy():
  r = np.random.default_rng(0)
  a, b = r.normal(size=(6, 2, 3)), r.normal(size=(6, 2, 3))
  by_hand = np.mean(np.sqrt(np.sum((a - b).reshape(6, -1) ** 2, axis=1)))
  np.testing.assert_allclose(activation_distance(a, b), by_hand, rtol=1e-5)
  assert activation_distance(a, a) == 0.0

  apply_fn, va = _mlp(1)
  _, vb = _mlp(2)
  x = r.normal(size=(10, 3)).astype(np.float32)  # 10 rows: ragged over 4 devices and batch 4
  acts_a = np.asarray(apply_fn(va, x, train=False)[1]["layer1"])
  acts_b = np.asarray(apply_fn(vb, x, train=False)[1]["layer1"])
  for dp in (None, parallel.DataParallel.create(4), parallel.DataParallel.create(4, 8)):
    got = model_activation_distance(apply_fn, va, vb, x, layer="layer1", batch_size=4, dp=dp)
    np.testing.assert_allclose(got, activation_distance(acts_a, acts_b), rtol=1e-5)


# Membership inference


def test_per_example_losses_are_exact_on_ragged_batches():
  apply_fn, v = _mlp()
  r = np.random.default_rng(0)
  x, y = r.normal(size=(11, 3)).astype(np.float32), r.normal(size=(11, 1)).astype(np.float32)
  direct = np.abs(np.asarray(apply_fn(v, x, train=False)[0]) - y)[:, 0]
  for dp in (None, parallel.DataParallel.create(4)):
    got = per_example_losses(apply_fn, v, x, y, losses.l1, batch_size=4, dp=dp)
    np.testing.assert_allclose(got, direct, rtol=1e-5, atol=1e-6)
  predict_fn = train.make_predict_fn(chex.assert_max_traces(apply_fn, n=1))
  for rows in (11, 7, 5):  # every call pads to the one batch shape: one compilation
    got = per_example_losses(None, v, x[:rows], y[:rows], losses.l1, batch_size=4,
                             predict_fn=predict_fn)
    np.testing.assert_allclose(got, direct[:rows], rtol=1e-5, atol=1e-6)
  assert loss_values(np.zeros((0, 1)), np.zeros((0, 1)), losses.l1).shape == (0,)


def _attack_losses(seed=0):
  r = np.random.default_rng(seed)
  return r.exponential(0.2, 300), r.exponential(1.0, 250) + 0.3


def test_membership_attack_is_deterministic_bounded_and_informative():
  member, nonmember = _attack_losses()
  r = np.random.default_rng(1)
  forgotten, remembered = r.exponential(1.0, 50) + 0.3, r.exponential(0.2, 50)
  a = membership_attack(member, nonmember, forgotten, samples=200, seed=3)
  assert a == membership_attack(member, nonmember, forgotten, samples=200, seed=3)
  assert all(0.0 <= v <= 1.0 for v in a.values())
  assert a["mia_attack_accuracy"] > 0.75 and a["mia_attack_auc"] > 0.8
  assert a["mia_forget"] < 0.3
  assert membership_attack(member, nonmember, remembered, samples=200, seed=3)["mia_forget"] > 0.7
  noise = membership_attack(member, member[::-1].copy(), forgotten, samples=200, seed=3)
  assert 0.3 < noise["mia_attack_auc"] < 0.7  # members vs members: the attack is guessing


def test_membership_attack_matches_a_direct_svm_without_holdout():
  member, nonmember = _attack_losses(2)
  target = np.random.default_rng(5).exponential(0.6, 200)
  svm = SVC(C=3, gamma="auto", kernel="rbf").fit(
      np.concatenate([member, nonmember])[:, None],
      np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))]))
  expected = svm.predict(target[:, None]).mean()
  got = membership_attack(member, nonmember, target, samples=10_000, holdout=0.0)
  assert got["mia_forget"] == pytest.approx(expected, abs=0.02)
  assert got["mia_attack_accuracy"] is None and got["mia_attack_auc"] is None


def test_membership_attack_edge_cases():
  member, nonmember = _attack_losses()
  assert membership_attack(member, nonmember, np.array([np.nan])) == dict.fromkeys(
      ["mia_forget", "mia_attack_accuracy", "mia_attack_auc"])
  assert membership_attack(member, nonmember, np.zeros(0))["mia_forget"] is None
  with pytest.raises(UserError, match="at least 2 non-member"):
    membership_attack(member, nonmember[:1], member)


def test_membership_attack_defaults_keep_their_numbers():
  """The numbers of the attack before mia_members and mia_target_samples existed."""
  r = np.random.default_rng(11)
  member, nonmember = r.exponential(0.3, 40), r.exponential(1.0, 30) + 0.2
  target = r.exponential(0.6, 12)
  assert membership_attack(member, nonmember, target, samples=25, seed=4) == {
      "mia_forget": 0.5833333333333334, "mia_attack_accuracy": 0.625, "mia_attack_auc": 0.8125}
  assert membership_attack(member, nonmember, target, samples=25, holdout=0.0, seed=4) == {
      "mia_forget": 0.4166666666666667, "mia_attack_accuracy": None, "mia_attack_auc": None}


def test_membership_attack_target_sampling_is_seeded_and_sized():
  rng = np.random.default_rng
  assert np.array_equal(target_rows(7, None, rng(0)), np.arange(7))
  rows = target_rows(50, 20, rng(3))
  assert len(rows) == 20 and len(set(rows)) == 20 and rows.max() < 50
  assert np.array_equal(rows, target_rows(50, 20, rng(3)))
  assert not np.array_equal(rows, target_rows(50, 20, rng(4)))
  assert len(target_rows(5, 2000, rng(0))) == 5  # at most every target
  member, nonmember = _attack_losses()
  # Targets: 30 tiny losses (members to the attack) and 30 large ones (non-members).
  target = np.concatenate([np.full(30, 0.01), np.full(30, 8.0)])
  got = membership_attack(member, nonmember, target, samples=200, seed=3, target_samples=7)
  assert got == membership_attack(member, nonmember, target, samples=200, seed=3,
                                  target_samples=7)
  assert got["mia_forget"] * 7 == pytest.approx(round(got["mia_forget"] * 7))  # k/7 of 7 judged
  everyone = membership_attack(member, nonmember, target, samples=200, seed=3)
  assert everyone["mia_forget"] == 0.5
  # A sample of every target judges the same rows (the fit and the held-out part do not move).
  assert membership_attack(member, nonmember, target, samples=200, seed=3,
                           target_samples=60) == everyone
  fractions = {membership_attack(member, nonmember, target, samples=200, seed=s,
                                 target_samples=7)["mia_forget"] for s in range(8)}
  assert len(fractions) > 1  # the sample follows the seed
  with pytest.raises(UserError, match="mia_target_samples"):
    membership_attack(member, nonmember, target, target_samples=0)


def _loss_model():
  """A model whose prediction is its input's first feature times a scale, and its variables."""
  def apply_fn(variables, x, *, train=False, rngs=None):
    del train, rngs
    return x[:, :1] * variables["scale"], {}

  return apply_fn, {"scale": jnp.float32(1.0)}


def _attack_data():
  """Losses by construction (L1 of x[:, 0] against 0): retain rows ~0.1, forget rows 40 (the
  attack has seen nothing like them among retain rows), test rows ~1."""
  r = np.random.default_rng(0)
  retain = r.exponential(0.1, 60)
  forget = np.full(20, 40.0) + r.random(20)
  test = r.exponential(1.0, 60) + 0.5
  tx = np.concatenate([retain, forget])[:, None].astype(np.float32)
  sx = test[:, None].astype(np.float32)
  zeros = lambda n: np.zeros((n, 1), np.float32)  # noqa: E731
  return EvalData(tx, zeros(80), np.arange(80) >= 60, sx, zeros(60), np.zeros(60, bool),
                  sx[:10], zeros(10), np.zeros(10, bool))


def _mia(data, augment=None, **settings):
  apply_fn, v = _loss_model()
  config = {"which": ["mia"], "mia_samples": 200, **settings}
  data = dataclasses.replace(data, train_augment=augment)
  return evaluate_models(apply_fn, {"original": v, "retrained": v}, data, task_loss=losses.l1,
                         error="mae", config=config, seed=2).results["original"]


def test_membership_attack_members_retain_or_train():
  data = _attack_data()
  retain, train_rows = _mia(data), _mia(data, mia_members="train")
  # Members without the forget rows: their huge losses look like nothing the attack called
  # member. Members with them: the attack learns that such losses are members.
  assert retain["mia_forget"] == 0.0
  assert train_rows["mia_forget"] == 1.0
  losses_ = np.abs(data.train_x[:, 0]).astype(np.float64)
  test = np.abs(data.test_x[:, 0]).astype(np.float64)
  forget = data.forget_train
  by_hand = membership_attack(losses_, test, losses_[forget], samples=200, seed=2)
  assert {k: train_rows[k] for k in by_hand} == by_hand
  by_hand = membership_attack(losses_[~forget], test, losses_[forget], samples=200, seed=2)
  assert {k: retain[k] for k in by_hand} == by_hand


def test_membership_attack_reads_the_augmentation_only_for_train_members(monkeypatch):
  data = _attack_data()
  calls = {"augment": 0, "predict": 0}

  def augment(x, rng):
    calls["augment"] += 1
    return x + np.float32(rng.integers(1, 3))  # training rows as training saw them, shifted

  predict = train.predict

  def counting_predict(*args, **kwargs):
    calls["predict"] += 1
    return predict(*args, **kwargs)

  monkeypatch.setattr(train, "predict", counting_predict)
  plain = _mia(data)
  assert calls == {"augment": 0, "predict": 4}  # train and test, for each of two models
  assert _mia(data, augment=augment) == plain  # "retain" ignores the augmentation
  assert calls == {"augment": 0, "predict": 8}
  calls.update(augment=0, predict=0)
  got = _mia(data, augment=augment, mia_members="train", mia_target_samples=15)
  assert calls == {"augment": 1, "predict": 6}  # augmented once; one more prediction per model
  shifted = augmented_inputs(data.train_x, augment, seed=2, batch_size=1024)
  assert not np.array_equal(shifted, data.train_x)
  aug_losses = np.abs(shifted[:, 0]).astype(np.float64)
  by_hand = membership_attack(aug_losses, np.abs(data.test_x[:, 0]).astype(np.float64),
                              aug_losses[data.forget_train], samples=200, seed=2,
                              target_samples=15)
  assert {k: got[k] for k in by_hand} == by_hand
  without = _mia(data, mia_members="train", mia_target_samples=15)  # no augmentation given
  assert without != got


def test_membership_attack_settings_are_config_defaults():
  d = metrics_defaults()
  assert d["mia_members"] == "retain" and d["mia_target_samples"] is None
  assert (d["mia_samples"], d["mia_holdout"]) == (2000, 0.3)
  c = configs.base_config()
  assert c.metrics.mia_members == "retain" and c.metrics.mia_target_samples is None
  published = resolve_settings({"mia_members": "train", "mia_target_samples": 2000,
                                "mia_holdout": 0.0})
  assert (published["mia_members"], published["mia_target_samples"]) == ("train", 2000)
  with pytest.raises(UserError, match="mia_members"):
    resolve_settings({"mia_members": "forget"})
  for bad in (0, 2.5, True, "2000"):
    with pytest.raises(UserError, match="mia_target_samples"):
      resolve_settings({"mia_target_samples": bad})


# AIN


def _relearn_problem():
  r = np.random.default_rng(0)
  x = r.normal(size=(100, 3)).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.5)[:, None]
  return x, y, (x[:20], y[:20])


def _reference_relearn_steps(apply_fn, variables, x, y, val, target, *, lr, batch_size, epochs,
                             dp):
  """The same relearning as one Python round trip per step: ArrayLoader + the train step."""
  tx = train.make_optimizer(lr)
  state = train.create_state(jax.tree_util.tree_map(jnp.copy, variables), tx, dp)
  step = train.make_train_step(apply_fn, train.supervised_loss(losses.mse), tx, dp)
  predict_fn = train.make_predict_fn(apply_fn, dp)
  loader = ArrayLoader({"x": x, "y": y}, batch_size, seed=0, dp=dp)
  steps = 0
  for epoch in range(epochs):
    for batch in loader(epoch):
      state, _ = step(state, parallel.resolve(dp).put_batch(batch), jax.random.key(0))
      steps += 1
      pred = train.predict(predict_fn, state.variables, val[0])
      if np.mean((pred - val[1]) ** 2) <= target:
        return steps, False
  return steps, True


@pytest.mark.parametrize("devices", [None, 4])
def test_relearn_counts_the_same_steps_as_a_python_loop(devices):
  x, y, val = _relearn_problem()
  apply_fn, v = _mlp(hidden=(16,))
  dp = parallel.DataParallel.create(devices) if devices else None
  relearner = Relearner(apply_fn, losses.mse, lr=0.01, batch_size=30, dp=dp)
  data = relearner.prepare((x, y), val, max_epochs=3, seed=0)
  start = relearner.error(v, data)
  by_hand = np.mean((np.asarray(apply_fn(v, val[0], train=False)[0]) - val[1]) ** 2)
  np.testing.assert_allclose(start, by_hand, rtol=1e-5)
  target = 0.8 * start
  got = relearner.steps(v, data, target)
  expected = _reference_relearn_steps(apply_fn, v, x, y, val, target, lr=0.01, batch_size=30,
                                      epochs=3, dp=dp)
  assert got == expected and 1 < got[0] < 12
  assert relearner.steps(v, data, 0.0) == (12, True)  # 3 epochs of 4 steps (30, 30, 30, 10)
  assert relearner.steps(v, data, 1e9) == (1, False)  # the first check follows one step


def test_relearn_far_needs_more_steps_than_near_and_leaves_inputs_unchanged():
  x, y, val = _relearn_problem()
  apply_fn, fresh = _mlp(hidden=(16,))
  relearner = Relearner(apply_fn, losses.mse, lr=0.01, batch_size=32)
  data = relearner.prepare((x, y), val, max_epochs=30, seed=0)
  tx = train.make_optimizer(0.01)
  state = train.create_state(jax.tree_util.tree_map(jnp.copy, fresh), tx)
  fitted = train.fit(state, train.make_train_step(apply_fn, train.supervised_loss(losses.mse), tx),
                     ArrayLoader({"x": x, "y": y}, 32, seed=1), epochs=40,
                     rng=jax.random.key(0)).state.variables
  target = relearn_target(relearner.error(fitted, data), 0.05)
  near = jax.tree_util.tree_map(lambda a: a * 0.97, fitted)
  before = jax.device_get((near, fresh))
  near_steps, near_cap = relearner.steps(near, data, target)
  far_steps, _ = relearner.steps(fresh, data, target)
  assert not near_cap and near_steps < far_steps, (near_steps, far_steps)
  chex.assert_trees_all_equal(jax.device_get((near, fresh)), before)  # not donated, not changed


def test_relearn_loop_compiles_once_for_every_model():
  x, y, val = _relearn_problem()
  traces = []

  def counting_mse(pred, y):
    traces.append(1)
    return losses.mse(pred, y)

  apply_fn, v1 = _mlp(1, hidden=(16,))
  _, v2 = _mlp(2, hidden=(16,))
  relearner = Relearner(apply_fn, counting_mse, lr=0.01, batch_size=30, check_every=2)
  data = relearner.prepare((x, y), val, max_epochs=2, seed=0)
  first = relearner.steps(v1, data, 0.5)
  after_first = len(traces)
  second = relearner.steps(v2, data, 0.7)
  assert after_first > 0 and len(traces) == after_first, "the relearn loop was traced again"
  assert first[0] % 2 == 0  # checked every 2 steps (8 in all, so the last one is even too)
  assert second[0] >= 1


def test_relearning_caps_and_ain():
  x, y, val = _relearn_problem()
  apply_fn, v = _mlp(hidden=(16,))
  relearner = Relearner(apply_fn, losses.mse, lr=0.01, batch_size=50)
  steps, hit_cap = relearner.steps(v, relearner.prepare((x, y), val, max_epochs=2, seed=0), 0.0)
  assert (steps, hit_cap) == (4, True)
  assert anamnesis_index(6, 3) == 2.0 and anamnesis_index(3, 3) == 1.0
  assert relearn_target(2.0, 0.05) == pytest.approx(2.1)
  with pytest.raises(UserError, match="alpha"):
    relearn_target(1.0, -0.1)
  with pytest.raises(UserError, match="forget-validation"):
    Relearner(apply_fn, losses.mse).prepare((x, y), (x[:0], y[:0]))
