"""The paper's methods on the toy problem of `tests/toy.py` (a forget range a retrained model
cannot predict)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_unlearn import losses, parallel, train
from jax_unlearn.errors import UserError
from jax_unlearn.models import from_function
from jax_unlearn.unlearn import (Context, UnlearnData, get_method, method_names, run_method,
                                 sisa)
from jax_unlearn.unlearn.gaussian import gaussian_labels

import toy

METHODS = ["retrained", "finetune", "gaussian", "blindspot"]
APPLY, MODEL, _init, _errors = toy.APPLY, toy.MODEL, toy.init, toy.errors


@pytest.fixture(scope="module")
def problem():
  return toy.problem()


FULL = {"retrained": {"epochs": 40, "batch_size": 32},
        "finetune": {"batch_size": 32},
        "gaussian": {"batch_size": 32, "epochs": 3},
        "blindspot": {"batch_size": 32, "epochs": 3}}


@pytest.fixture(scope="module")
def errors(problem):
  data, original, test = problem
  out = {"original": _errors(original, test)}
  for name in METHODS:
    ctx = Context(APPLY, _init, losses.mse, jax.random.key(7)[None])
    out[name] = _errors(run_method(name, ctx, original, data, FULL[name]).variables, test)
  return out


def test_retrained_cannot_predict_the_forget_range(errors):
  (orig_retain, orig_forget), (re_retain, re_forget) = errors["original"], errors["retrained"]
  assert orig_forget < 0.01 and orig_retain < 0.01, errors
  assert re_forget > 0.1 and re_retain < 0.02, errors


@pytest.mark.parametrize("name", ["gaussian", "blindspot"])
def test_forget_error_rises_toward_retrained_and_retain_error_stays_low(errors, name):
  """Forget error gains >= 20% of the gap to the retrained model's; retain error stays < 15x the
  original's (which fits almost perfectly: 15x is still < 10% of the retain labels' variance)."""
  (orig_retain, orig_forget), (_, re_forget) = errors["original"], errors["retrained"]
  retain, forget = errors[name]
  assert forget > orig_forget + 0.2 * (re_forget - orig_forget), errors
  assert retain < 15 * orig_retain, errors


def test_finetune_keeps_retain_error_close_to_the_original(errors):
  """Within 2x of the original's retain error (it may also improve)."""
  assert errors["finetune"][0] < 2 * errors["original"][0], errors


SHORT = {"retrained": {"epochs": 2, "batch_size": 64},
         "finetune": {"epochs": 1, "batch_size": 64},
         "gaussian": {"epochs": 1, "batch_size": 64},
         "blindspot": {"epochs": 1, "blindspot_epochs": 1, "batch_size": 64}}


@pytest.mark.parametrize("name", METHODS)
def test_seeded_and_the_same_on_four_devices(problem, name):
  data, original, _ = problem

  def params(key, dp=None):
    ctx = Context(APPLY, _init, losses.mse, jax.random.key(key)[None], dp=dp)
    return jax.device_get(run_method(name, ctx, original, data, SHORT[name]).variables["params"])

  first = params(11)
  chex.assert_trees_all_equal(first, params(11))
  other = params(12)
  assert not np.array_equal(first["Dense_0"]["kernel"], other["Dense_0"]["kernel"])
  assert not np.array_equal(first["Dense_0"]["kernel"], original["params"]["Dense_0"]["kernel"])
  chex.assert_trees_all_close(first, params(11, parallel.DataParallel.create(4)), rtol=1e-5,
                              atol=1e-5)


def _plain_mlp(params, x):
  return jax.nn.relu(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]


def _plain_init(key):
  k1, k2 = jax.random.split(key)
  return {"params": {"w1": jax.random.normal(k1, (1, 16)), "b1": jnp.zeros(16),
                     "w2": jax.random.normal(k2, (16, 1)) / 4, "b2": jnp.zeros(1)}}


@pytest.mark.parametrize("name", METHODS)
def test_a_plain_function_model(problem, name):
  data, _, test = problem
  apply_fn = from_function(_plain_mlp)
  original = train.ensemble.one(_plain_init(jax.random.key(0)))
  ctx = Context(apply_fn, _plain_init, losses.mse, jax.random.key(1)[None])
  result = run_method(name, ctx, original, data, SHORT[name])
  chex.assert_trees_all_equal_shapes(result.variables, original)
  assert result.record["steps"] > 0 and result.record["seconds"] > 0
  assert all(np.isfinite(_errors(result.variables, test, apply_fn)))
  assert not np.array_equal(result.variables["params"]["w2"], original["params"]["w2"])


def test_blindspot_on_a_quantile_forecaster(problem):
  """y [N, 2] (two horizon steps), pred [N, 2, 3] (three quantiles): the loss shapes work."""
  data, _, _ = problem
  y = np.concatenate([data.y, 2 * data.y], axis=1)
  data = UnlearnData(data.x, y, data.forget, data.val_x, np.repeat(data.val_y, 2, axis=1))

  def quantile_mlp(params, x):
    return _plain_mlp(params, x).reshape(-1, 2, 3)

  def init(key):
    variables = _plain_init(key)
    variables["params"]["w2"] = jnp.tile(variables["params"]["w2"], (1, 6))
    variables["params"]["b2"] = jnp.zeros(6)
    return variables

  original = train.ensemble.one(init(jax.random.key(0)))
  ctx = Context(from_function(quantile_mlp), init, losses.get_loss("quantile"),
                jax.random.key(1)[None])
  result = run_method("blindspot", ctx, original, data, SHORT["blindspot"])
  pred = train.predict(train.make_predict_fn(from_function(quantile_mlp)),
                       train.ensemble.member(result.variables, 0), data.x[:5])
  assert pred.shape == (5, 2, 3) and np.all(np.isfinite(pred))


def test_gaussian_labels_per_output_dimension():
  r = np.random.default_rng(0)
  y = np.stack([r.normal(5.0, 1.0, 4000), r.normal(-100.0, 10.0, 4000)], 1).astype(np.float32)
  forget = np.arange(4000) % 2 == 0
  out = gaussian_labels(y, forget, jax.random.key(0))
  np.testing.assert_array_equal(out[~forget], y[~forget])
  assert not np.any(out[forget] == y[forget])
  assert np.all(np.abs(out[forget].mean(0) - y.mean(0)) < 0.1 * y.std(0))
  np.testing.assert_allclose(out[forget].std(0), y.std(0), rtol=0.06)
  np.testing.assert_array_equal(out, gaussian_labels(y, forget, jax.random.key(0)))


def test_a_context_wants_one_key_per_member():
  with pytest.raises(UserError, match=r"one key per member \(\[K\] keys\)"):
    Context(APPLY, _init, losses.mse, jax.random.key(0))
  assert Context(APPLY, _init, losses.mse, jax.random.split(jax.random.key(0), 3)).members == 3


def test_registry():
  assert method_names()[:4] == METHODS
  assert set(method_names()) >= {"neggrad", "scrub", "bad_teacher", "ssd", "lfssd", "fisher",
                                 "salun", "l1_sparse", "msg", "jit_lipschitz", "neighbours"}
  with pytest.raises(UserError, match="did you mean 'blindspot'"):
    get_method("blindspott")


def _data(**changes):
  x = np.zeros((6, 1), np.float32)
  y = np.arange(6, dtype=np.float32)[:, None]
  kw = dict(x=x, y=y, forget=y[:, 0] > 3, val_x=x[:2], val_y=y[:2])
  kw.update(changes)
  return UnlearnData(**kw)


@pytest.mark.parametrize("changes, message", [
    ({"forget": np.zeros(6, bool)}, "forget set is empty"),
    ({"forget": np.ones(6, bool)}, "retain set is empty"),
    ({"forget": np.ones(7, bool)}, "forget set not contained in the training set"),
    ({"forget": np.array([0, 4, 5, 0, 0, 0])}, "must be boolean"),
    ({"y": np.array([[0.0], [np.nan], [2], [3], [4], [5]], np.float32)}, "training labels"),
    ({"val_y": np.array([[np.inf], [0.0]], np.float32)}, "validation labels"),
    ({"y": np.zeros((5, 1), np.float32)}, "differ in length"),
])
def test_bad_data_is_a_user_error(changes, message):
  with pytest.raises(UserError, match=message):
    _data(**changes)


def test_data_views():
  data = _data(forget=np.array([1, 0, 0, 0, 0, 1]))
  np.testing.assert_array_equal(data.arrays()["forget"], [1, 0, 0, 0, 0, 1])
  np.testing.assert_array_equal(data.retain_y[:, 0], [1, 2, 3, 4])
  assert data.forget.dtype == bool


@pytest.mark.parametrize("config, message", [
    ({"epoch": 2}, "did you mean 'epochs'"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"blindspot_epochs": 1.5}, "blindspot_epochs must be a positive integer"),
    ({"lr": -1.0}, "lr must be a positive number"),
])
def test_bad_settings_are_user_errors(problem, config, message):
  data, original, _ = problem
  ctx = Context(APPLY, _init, losses.mse, jax.random.key(0)[None])
  with pytest.raises(UserError, match=message):
    run_method("blindspot", ctx, original, data, config)


@pytest.mark.parametrize("name, config", [
    ("finetune", {"epochs": 3, "keep_best": True}),
    ("gaussian", {"epochs": 3, "keep_best": True}),
    ("blindspot", {"epochs": 2, "blindspot_epochs": 2, "keep_best": True,
                   "blindspot_keep_best": True}),
])
def test_keep_best_returns_the_best_validation_epoch(problem, name, config):
  data, original, _ = problem
  ctx = Context(APPLY, _init, losses.mse, jax.random.key(4)[None])
  result = run_method(name, ctx, original, data, {"batch_size": 64, **config})
  validate = train.make_validation_loss(APPLY, losses.mse, data.val_x, data.val_y)
  assert validate(train.ensemble.member(result.variables, 0)) == pytest.approx(
      result.record["best_val_loss"], rel=1e-6)
  if name == "blindspot":  # the blindspot model is the best of its epochs too, and reported
    assert "blindspot_model" in result.auxiliary
  final = run_method(name, ctx, original, data, {"batch_size": 64, **config, "keep_best": False})
  assert "best_val_loss" not in final.record


@pytest.mark.parametrize("name", METHODS)
def test_ensemble_member_equals_the_single_run_of_its_key(problem, name):
  """Every method on K = 2 members at once: member k is the method's run with key k alone."""
  data, original, _ = problem
  keys = [7, 8]
  settings = {"epochs": 1, "batch_size": 32, "blindspot_epochs": 1} if name == "blindspot" else (
      {"epochs": 1, "batch_size": 32})
  stacked = jax.tree_util.tree_map(lambda a: jnp.concatenate([a, a]), original)
  out = run_method(name, toy.context(keys), stacked, data, settings)
  assert train.ensemble.size(out.variables) == 2
  alone = lambda tree: jax.device_get(train.ensemble.member(tree, 0))  # noqa: E731
  for k, key in enumerate(keys):
    single = run_method(name, toy.context(key), original, data, settings)
    chex.assert_trees_all_close(jax.device_get(train.ensemble.member(out.variables, k)),
                                alone(single.variables), rtol=1e-4, atol=1e-5)
    for aux, value in out.auxiliary.items():
      chex.assert_trees_all_close(jax.device_get(train.ensemble.member(value, k)),
                                  alone(single.auxiliary[aux]), rtol=1e-4, atol=1e-5)
  a, b = (train.ensemble.member(out.variables, k) for k in range(2))
  assert not np.allclose(np.asarray(a["params"]["Dense_0"]["kernel"]),
                         np.asarray(b["params"]["Dense_0"]["kernel"]))


@pytest.mark.parametrize("name", method_names())
def test_every_registered_method_runs_with_its_defaults(problem, name):
  """One short run per method at its own defaults (one epoch): the same architecture back,
  finite predictions, a record with steps and seconds, settings that are plain JSON values."""
  import json
  data, original, test = problem
  method = get_method(name)
  json.dumps(method.defaults)
  overrides = {"epochs": 1, "batch_size": 32} if "epochs" in method.own_defaults else {}
  if name == "retrained":
    overrides = {"epochs": 1, "batch_size": 32}
  ctx = Context(APPLY, _init, losses.mse, jax.random.key(3)[None])
  result = run_method(name, ctx, original, data, overrides)
  params = result.variables["params"]
  if sisa.sharded_key(result.variables):  # a sharded model: shards of the architecture
    params = train.ensemble.member(params[sisa.sharded_key(result.variables)], 0)
  assert (jax.tree_util.tree_structure(params)
          == jax.tree_util.tree_structure(original["params"]))
  assert all(np.isfinite(_errors(result.variables, test, sisa.serving(APPLY))))
  assert result.record["steps"] >= 0 and result.record["seconds"] >= 0
