"""Parity of our metrics with the published definitions (deep-regression-unlearning, metrics.py
and the AgeDB notebook), each transcribed here in numpy, scikit-learn or plain JAX.

The transcriptions follow the published functions step by step: `get_membership_attack_prob`
(an SVC(C=3, gamma="auto", RBF) fitted on [member losses; test losses] with labels [1...; 0...]
after a shuffle, then its mean prediction on each set), `scipy.stats.wasserstein_distance` on two
models' forget-set predictions (as the notebook calls it), and `relearn_time` / `ain` (Adam on
the training data, the forget-validation loss checked after every step until it is within 5% of
the original model's, at most 10 epochs; rl_coeff = steps(model) / steps(gold)).

Intended differences that the tests neutralise, so that only the definitions are compared:
  - Order. The published attack shuffles its training rows with an unseeded `random.Random()`
    and relearning reads an unseeded shuffled DataLoader; ours draws both from the run's seed.
    The tests hand both sides the same order: the published attack gets the row order our
    seeded sample produces, and the published relearning gets our epoch orders
    (`data.epoch_order`).
  - The held-out split. Ours holds out part of the attack's rows to report its accuracy and AUC
    (mia_holdout=0.3); the published attack has none, so the tests set mia_holdout=0 and a
    sample size above every split (all rows, as the published code after its df.sample).
  - Members. Ours defaults to retain-train rows (mia_members="retain"); the published attack's
    members are a sample of every training row. The attack test feeds both sides the same
    member losses, so it holds for either setting.
  - Augmented inputs. The published attack and Wasserstein distance read training rows through
    the train transform, drawn afresh for every model; ours (mia_members="train" with the
    evaluator's `augment`) augments once for every model, and the Wasserstein distance reads
    plain inputs. The tests compare the definitions on the same losses and predictions.
  - Relearning in place. The published `ain` relearns the gold model itself, so every later
    call starts from an already relearned gold model and its steps shrink; ours relearns a
    copy. The transcription here is functional (it never changes the variables it is given),
    which is the published definition without that side effect.
  - Forget-validation loss. The published `evaluate` averages per-batch means, which weighs a
    smaller last batch more; ours is the mean over rows. The tests use a forget-validation set
    that fits one batch, where both are the same number.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from sklearn.svm import SVC

from jax_unlearn import data as data_lib
from jax_unlearn import losses
from jax_unlearn.metrics import (EvalData, anamnesis_index, evaluate_models, membership_attack,
                                 Relearner, relearn_target, wasserstein)

# Membership attack


def published_attack_prob(member_losses, test_losses, prediction_sets, index_shuf):
  """`get_membership_attack_prob` on precomputed losses; `index_shuf` replaces its unseeded
  shuffle. (The published fit passes labels as a column, which scikit-learn ravels.)"""
  x_train = np.concatenate([member_losses, test_losses])
  y_train = np.concatenate([np.ones(len(member_losses)), np.zeros(len(test_losses))])
  x_train, y_train = x_train[index_shuf], y_train[index_shuf]
  clf = SVC(C=3, gamma="auto", kernel="rbf").fit(x_train[:, np.newaxis], y_train)
  return {name: clf.predict(losses_[:, np.newaxis]).mean()
          for name, losses_ in prediction_sets.items()}


def _losses(seed):
  """Float32 L1 losses like the published torch features: members low, test rows higher, and
  forget rows in between."""
  r = np.random.default_rng(seed)
  member = r.exponential(0.4, 90).astype(np.float32)
  test = (r.exponential(1.0, 70) + 0.2).astype(np.float32)
  forget = (r.exponential(0.7, 25) + 0.05).astype(np.float32)
  return member, test, forget


def _our_order(n_member, n_test, seed):
  """The row order our attack fits on with mia_holdout=0 and every row sampled: a seeded
  permutation of the members, then one of the non-members, from one generator."""
  rng = np.random.default_rng(seed)
  members = rng.permutation(n_member)
  nonmembers = rng.permutation(n_test)
  return np.concatenate([members, n_member + nonmembers])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_membership_attack_equals_the_published_attack_on_the_same_order(seed):
  member, test, forget = _losses(seed)
  ours = membership_attack(member, test, forget, samples=10_000, holdout=0.0, seed=seed)
  published = published_attack_prob(member, test, {"forget_data": forget, "train": member},
                                    _our_order(len(member), len(test), seed))
  assert ours["mia_forget"] == published["forget_data"]
  assert 0.0 < ours["mia_forget"] < 1.0  # an informative case, not a trivial 0 or 1
  assert ours["mia_attack_accuracy"] is None and ours["mia_attack_auc"] is None
  # Other (published-style, interleaved) shuffles: the SVC's optimum does not depend on the row
  # order, only libsvm's path to it within its stopping tolerance does, so a prediction could
  # change only for a loss that close to the decision boundary; none of these is.
  for k in range(3):
    shuffle = np.random.default_rng(100 + k).permutation(len(member) + len(test))
    again = published_attack_prob(member, test, {"forget_data": forget}, shuffle)
    assert again["forget_data"] == ours["mia_forget"]


# Wasserstein


@pytest.mark.parametrize("seed", [0, 1])
def test_wasserstein_equals_scipy_on_forget_predictions(seed):
  """The notebook: wasserstein_distance(model outputs, gold outputs) on the forget-train rows,
  predictions squeezed from [F, 1] to [F]."""
  r = np.random.default_rng(seed)
  model_pred = (r.normal(30, 8, (41, 1))).astype(np.float32)  # [F, 1]
  gold_pred = (r.normal(34, 6, (41, 1))).astype(np.float32)
  published = scipy.stats.wasserstein_distance(np.squeeze(model_pred), np.squeeze(gold_pred))
  assert wasserstein(model_pred, gold_pred) == pytest.approx(published, rel=1e-12, abs=1e-12)


# AIN


def _linear(variables, x, *, train=False, rngs=None):
  del train, rngs
  p = variables["params"]
  return x @ p["w"] + p["b"], {}  # [B, 1]


def _l1_mean(params, x, y):
  """F.l1_loss(out, labels): the mean absolute error over the batch."""
  return jnp.mean(jnp.abs(x @ params["w"] + params["b"] - y))


def published_evaluate(params, x, y, batch_size):
  """`evaluate`: the mean of per-batch mean losses over a non-shuffled loader."""
  return float(np.mean([float(_l1_mean(params, x[s:s + batch_size], y[s:s + batch_size]))
                        for s in range(0, len(x), batch_size)]))


def published_relearn_time(params, x, y, val, req_loss, *, lr, batch_size, orders):
  """`relearn_time`: Adam steps over shuffled batches (the orders given), the forget-validation
  loss checked after every step, until it is <= req_loss; at most 10 epochs. torch.optim.Adam's
  update (betas 0.9, 0.999, eps 1e-8, no weight decay), written out."""
  grad = jax.jit(jax.grad(_l1_mean))
  b1, b2, eps = 0.9, 0.999, 1e-8
  m = jax.tree_util.tree_map(jnp.zeros_like, params)
  v = jax.tree_util.tree_map(jnp.zeros_like, params)
  rltime, t, curr = 0, 0, np.inf
  for epoch in range(10):
    order = orders[epoch]
    for start in range(0, len(x), batch_size):
      idx = order[start:start + batch_size]
      g = grad(params, x[idx], y[idx])
      t += 1
      m = jax.tree_util.tree_map(lambda m_, g_: b1 * m_ + (1 - b1) * g_, m, g)
      v = jax.tree_util.tree_map(lambda v_, g_: b2 * v_ + (1 - b2) * g_ * g_, v, g)
      params = jax.tree_util.tree_map(
          lambda p_, m_, v_: p_ - lr * (m_ / (1 - b1 ** t)) / (jnp.sqrt(v_ / (1 - b2 ** t)) + eps),
          params, m, v)
      curr = published_evaluate(params, *val, batch_size)
      rltime += 1
      if curr <= req_loss:
        break
    if curr <= req_loss:
      break
  return rltime


def _ain_problem():
  """48 training rows of a noisy linear rule, an 8-row forget-validation set of the same rule
  (one batch of 8), and three linear models: the original at the rule, a gold model far from it
  and an unlearned one nearer."""
  r = np.random.default_rng(0)
  w = np.array([[1.0], [-2.0], [0.5]], np.float32)
  x = r.normal(size=(48, 3)).astype(np.float32)
  y = (x @ w + 0.5 + 0.5 * r.normal(size=(48, 1))).astype(np.float32)
  vx = r.normal(size=(8, 3)).astype(np.float32)
  vy = (vx @ w + 0.5 + 0.5 * r.normal(size=(8, 1))).astype(np.float32)
  params = lambda w_, b_: {"params": {"w": jnp.asarray(w_, jnp.float32),  # noqa: E731
                                      "b": jnp.asarray([b_], jnp.float32)}}
  models = {"original": params(w, 0.5), "retrained": params(w * 0.6, -0.5),
            "unlearned": params(w * 0.8, 0.0)}
  return x, y, (vx, vy), models


LR, BATCH, SEED = 0.05, 8, 3  # 6 batches an epoch, a cap of 60 steps


def test_relearn_steps_and_ain_equal_the_published_relearn_time():
  x, y, val, models = _ain_problem()
  orders = [data_lib.epoch_order(SEED, e, len(x)) for e in range(10)]
  original_loss = published_evaluate(models["original"]["params"], *val, BATCH)
  req = (1 + 0.05) * original_loss
  published = {name: published_relearn_time(models[name]["params"], x, y, val, req, lr=LR,
                                            batch_size=BATCH, orders=orders)
               for name in ("retrained", "unlearned")}
  target = relearn_target(original_loss, 0.05)
  relearner = Relearner(_linear, losses.l1, lr=LR, batch_size=BATCH, check_every=1)
  data = relearner.prepare((x, y), val, max_epochs=10, seed=SEED)
  ours = {name: relearner.steps(models[name], data, target) for name in ("retrained", "unlearned")}
  assert {name: steps for name, (steps, _) in ours.items()} == published
  assert not any(hit for _, hit in ours.values())
  assert 1 < published["unlearned"] < published["retrained"] < 60  # neither trivial nor capped
  rl_coeff = published["unlearned"] / published["retrained"]
  assert anamnesis_index(ours["unlearned"][0], ours["retrained"][0]) == rl_coeff
  # An unreachable target: both run the 10-epoch cap.
  capped = published_relearn_time(models["unlearned"]["params"], x, y, val, 0.0, lr=LR,
                                  batch_size=BATCH, orders=orders)
  assert relearner.steps(models["unlearned"], data, 0.0) == (capped, True) == (60, True)


def test_evaluator_ain_and_wasserstein_equal_the_published_definitions():
  """The same through `evaluate_models`: AIN's target from the original model, relearning on
  every training row, and the Wasserstein distance on forget-train predictions."""
  x, y, (vx, vy), models = _ain_problem()
  forget = np.arange(48) < 12
  r = np.random.default_rng(1)
  sx = r.normal(size=(20, 3)).astype(np.float32)
  data = EvalData(x, y, forget, sx, sx @ np.ones((3, 1), np.float32), np.zeros(20, bool),
                  np.concatenate([vx, sx[:5]]), np.concatenate([vy, sx[:5, :1]]),
                  np.arange(13) < 8)
  config = {"which": ["wasserstein", "ain"], "ain_lr": LR, "ain_batch_size": BATCH,
            "ain_check_every": 1, "ain_max_epochs": 10}
  ev = evaluate_models(_linear, models, data, task_loss=losses.l1, error="mae", config=config,
                       seed=SEED)
  orders = [data_lib.epoch_order(SEED, e, len(x)) for e in range(10)]
  req = (1 + 0.05) * published_evaluate(models["original"]["params"], vx, vy, BATCH)
  steps = {name: published_relearn_time(models[name]["params"], x, y, (vx, vy), req, lr=LR,
                                        batch_size=BATCH, orders=orders)
           for name in models}
  gold = np.squeeze(np.asarray(_linear(models["retrained"], x[forget])[0]))
  for name in models:
    res = ev.results[name]
    assert res["ain_steps"] == steps[name]
    assert res["ain"] == steps[name] / steps["retrained"]
    outputs = np.squeeze(np.asarray(_linear(models[name], x[forget])[0]))
    assert res["wasserstein_to_retrained"] == pytest.approx(
        scipy.stats.wasserstein_distance(outputs, gold), rel=1e-6, abs=1e-6)
  assert 0 < ev.results["unlearned"]["ain"] < 1
