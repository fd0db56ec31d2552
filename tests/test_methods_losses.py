"""NegGrad+, SCRUB, Bad-Teacher and JiT: their objectives against hand-computed values, and the
methods on the toy problem of `tests/toy.py` (a forget range a retrained model cannot predict)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_unlearn import losses, train
from jax_unlearn.errors import UserError
from jax_unlearn.models import from_function
from jax_unlearn.unlearn import UnlearnData
from jax_unlearn.unlearn import bad_teacher, jit_lipschitz, neggrad, scrub

import toy

METHODS = {"neggrad": neggrad.neggrad, "scrub": scrub.scrub, "bad_teacher": bad_teacher.bad_teacher,
           "jit_lipschitz": jit_lipschitz.jit_lipschitz}
# A "model" f(x) = w * x, for teachers of known outputs.
SCALED = from_function(lambda params, x: params["w"] * x)


def _teacher(w):
  return {"params": {"w": jnp.float32(w)}}


def _batch(y, forget=None, mask=None, x=None):
  y = jnp.asarray(y, jnp.float32)
  rows = len(y)
  return {"x": jnp.zeros_like(y) if x is None else jnp.asarray(x, jnp.float32), "y": y,
          "forget": jnp.zeros(rows) if forget is None else jnp.asarray(forget, jnp.float32),
          "mask": jnp.ones(rows) if mask is None else jnp.asarray(mask, jnp.float32)}


def test_neggrad_loss_by_hand():
  # Per-row MSE [0, 4, 9, 1] and a padded forget row; forget rows 1, 2; bound 5 caps row 2.
  # L_retain = (0 + 1) / 2, L_forget = (4 + 5) / 2; loss = 0.75 * 0.5 - 0.25 * 4.5 = -0.75.
  pred = jnp.array([[1.0], [2.0], [3.0], [4.0], [100.0]])
  batch = _batch([[1.0], [0.0], [0.0], [3.0], [0.0]], forget=[0, 1, 1, 0, 1],
                 mask=[1, 1, 1, 1, 0])
  loss_fn = neggrad.make_neggrad_loss(losses.mse, alpha=0.75)
  loss, metrics = jax.jit(loss_fn)(pred, {}, batch, None, jnp.float32(5.0))
  np.testing.assert_allclose(loss, -0.75, rtol=1e-6)
  np.testing.assert_allclose(metrics["retain_loss"], 0.5, rtol=1e-6)
  np.testing.assert_allclose(metrics["forget_loss"], 4.5, rtol=1e-6)
  # Row 1 ascends: -0.25 / 2 * 2 * (2 - 0); the capped row 2 and the padded row get nothing.
  grad = jax.grad(lambda p: loss_fn(p, {}, batch, None, jnp.float32(5.0))[0])(pred)
  np.testing.assert_allclose(grad[:, 0], [0.0, -0.5, 0.0, 0.75 * 0.5 * 2 * 1.0, 0.0], atol=1e-6)


def test_scrub_losses_by_hand():
  # The teacher predicts x: [1, 2, 3]; the student [1, 4, 0]: distances (MSE) [0, 4, 9].
  pred = jnp.array([[1.0], [4.0], [0.0], [50.0]])
  batch = _batch([[1.0], [1.0], [1.0], [0.0]], x=[[1.0], [2.0], [3.0], [0.0]], mask=[1, 1, 1, 0])
  max_loss = scrub.make_max_loss(SCALED, losses.mse)
  loss, metrics = jax.jit(max_loss)(pred, {}, batch, None, (_teacher(1.0), jnp.float32(5.0)))
  np.testing.assert_allclose(loss, -(0 + 4 + 5) / 3, rtol=1e-6)  # row 2 capped at the bound
  np.testing.assert_allclose(metrics["distance"], 3.0, rtol=1e-6)
  # Task loss to y = 1: (0 + 9 + 1) / 3; distance 13 / 3; gamma 0.5, alpha 2.
  min_loss = scrub.make_min_loss(SCALED, losses.mse, alpha=2.0, gamma=0.5)
  loss, metrics = jax.jit(min_loss)(pred, {}, batch, None, _teacher(1.0))
  np.testing.assert_allclose(metrics["task_loss"], 10 / 3, rtol=1e-6)
  np.testing.assert_allclose(metrics["distance"], 13 / 3, rtol=1e-6)
  np.testing.assert_allclose(loss, 0.5 * 10 / 3 + 2 * 13 / 3, rtol=1e-6)


@pytest.mark.parametrize("incompetent, expected", [
    # Targets by row: competent x = 1, 3 (retain rows 0, 2), incompetent -x = -2, -4 (forget
    # rows 1, 3): distances [0, 4, 1, 4].
    (_teacher(-1.0), (0 + 4 + 1 + 4) / 4),
    # Gaussian labels: the forget rows' targets are their labels 1 and 0: [0, 1, 1, 4].
    (None, (0 + 1 + 1 + 4) / 4),
])
def test_bad_teacher_loss_by_hand(incompetent, expected):
  pred = jnp.array([[1.0], [0.0], [2.0], [-2.0], [7.0]])
  batch = _batch([[9.0], [1.0], [9.0], [0.0], [0.0]], forget=[0, 1, 0, 1, 1],
                 mask=[1, 1, 1, 1, 0], x=[[1.0], [2.0], [3.0], [4.0], [5.0]])
  loss_fn = bad_teacher.make_bad_teacher_loss(SCALED, losses.mse)
  loss, metrics = jax.jit(loss_fn)(pred, {}, batch, None, (_teacher(1.0), incompetent))
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics["retain_distance"], 0.5, rtol=1e-6)


def test_jit_ratio_of_a_linear_model_is_its_slope_norm():
  """f(x) = x w + b with one input and two outputs: every ||f(x) - f(x')|| / |x - x'| is |w|."""
  linear = from_function(lambda params, x: x @ params["w"] + params["b"])
  variables = {"params": {"w": jnp.array([[3.0, 4.0]]), "b": jnp.array([1.0, -1.0])}}
  apply_fn = jit_lipschitz.perturbed_apply(linear, samples=5, sigma=0.3)
  x = jnp.linspace(-1.0, 1.0, 8)[:, None]
  pred, acts = apply_fn(variables, x, train=True, rngs={"dropout": jax.random.key(0)})
  assert acts[jit_lipschitz.PERTURBED].shape == (8, 5, 2)
  assert acts[jit_lipschitz.INPUT_DISTANCE].shape == (8, 5)
  assert 0.05 < float(jnp.mean(acts[jit_lipschitz.INPUT_DISTANCE])) < 0.5  # sigma-scaled noise
  loss, _ = jit_lipschitz.lipschitz_loss(pred, acts, _batch(pred), None, None)
  np.testing.assert_allclose(loss, 5.0, rtol=1e-5)
  # Outside training the wrapper is the model itself.
  plain, extra = apply_fn(variables, x, train=False)
  np.testing.assert_array_equal(plain, linear(variables, x, train=False)[0])
  assert extra == {}


@pytest.fixture(scope="module")
def problem():
  return toy.problem()


_ctx = toy.context


# Settings for the toy: 256 rows train for few steps, so rates are above the defaults (meant for
# datasets of thousands of rows). Bad-Teacher distils on every retain row: with 30% of them, the
# toy's forget third would outweigh the retain rows in every batch.
TOY = {"neggrad": {"epochs": 6, "batch_size": 32, "lr": 1e-3},
       "scrub": {"batch_size": 32, "lr": 1e-3},
       "bad_teacher": {"epochs": 3, "batch_size": 32, "lr": 1e-3, "retain_fraction": 1.0},
       "jit_lipschitz": {"epochs": 5, "batch_size": 32, "lr": 1e-3}}


@pytest.fixture(scope="module")
def runs(problem, tmp_path_factory):
  data, original, _ = problem
  out = {}
  for name, run in METHODS.items():
    where = str(tmp_path_factory.mktemp(name))
    out[name] = run(_ctx(checkpoint_dir=where), original, data, TOY[name]), where
  return out


@pytest.fixture(scope="module")
def errors(problem, runs):
  _, original, test = problem
  return {"original": toy.errors(original, test),
          **{name: toy.errors(result.variables, test) for name, (result, _) in runs.items()}}


# (forget MSE at least this many times the original's, retain MSE at most this many times the
# original's). The original's forget MSE is 3e-5, the retrained model's 0.25. Measured: NegGrad+
# raises the forget MSE 145x (to 0.005, under its bound); SCRUB 17x, as its min passes repair much
# of what its max passes undid; Bad-Teacher 2700x (to 0.09) but its retain MSE 9x, as the smooth
# network drags the forget range's neighbours along; JiT, which only smooths, 6x. The others keep
# the retain MSE below the original's.
EXPECTED = {"neggrad": (30, 2), "scrub": (5, 2), "bad_teacher": (800, 15), "jit_lipschitz": (3, 2)}


@pytest.mark.parametrize("name", METHODS)
def test_forget_error_rises_and_retain_error_stays_low(errors, name):
  (orig_retain, orig_forget), (retain, forget) = errors["original"], errors[name]
  rises, keeps = EXPECTED[name]
  assert forget > rises * orig_forget, errors
  assert retain < keeps * orig_retain, errors


def test_jit_pulls_forget_outputs_towards_their_neighbourhood(problem, runs):
  """JiT's step moves f(x) towards the outputs on its perturbations (f(x') detached): on the toy's
  peak the forget rows' outputs come down towards the original's mean output around them. (The
  Lipschitz estimate itself barely moves in these few steps: see the module docstring.)"""
  data, original, _ = problem
  x = jnp.asarray(data.x[data.forget])
  apply_fn = jit_lipschitz.perturbed_apply(toy.APPLY, samples=25, sigma=0.5)
  original = train.ensemble.member(original, 0)
  _, acts = apply_fn(original, x, train=True, rngs={"dropout": jax.random.key(3)})
  around = jnp.mean(acts[jit_lipschitz.PERTURBED], axis=1)

  def gap(variables):
    return float(jnp.mean(jnp.abs(toy.APPLY(variables, x, train=False)[0] - around)))

  assert gap(train.ensemble.member(runs["jit_lipschitz"][0].variables, 0)) < gap(original) - 0.003


def test_neggrad_bound_caps_the_forget_error(problem, errors):
  """A bound of half the original's validation loss stops the forget rows' ascent near it, where
  the default bound lets them rise further."""
  data, original, test = problem
  result = neggrad.neggrad(_ctx(), original, data, {**TOY["neggrad"], "forget_bound": 0.5})
  bound = 0.5 * float(neggrad.reference_loss(_ctx(), original, data)[0])
  assert result.record["forget_bound"] == pytest.approx(bound)
  assert toy.errors(result.variables, test)[1] < 2 * bound < errors["neggrad"][1], errors


def test_scrub_counts_every_pass_and_reuses_them(problem, runs):
  data, original, _ = problem
  result, where = runs["scrub"]
  passes = -(-int(data.forget.sum()) // 32), -(-int((~data.forget).sum()) // 32)
  assert result.record["max_steps"] == 2 * passes[0]  # max passes in 2 of the 3 epochs
  assert result.record["steps"] == 2 * passes[0] + 3 * passes[1]
  assert not result.record["reused"]
  again = scrub.scrub(_ctx(checkpoint_dir=where), original, data, TOY["scrub"])
  assert again.record["reused"] and again.record["steps"] == result.record["steps"]
  chex.assert_trees_all_equal(jax.device_get(again.variables), jax.device_get(result.variables))


def test_neggrad_traces_its_step_once(problem, monkeypatch):
  """Two epochs of steps with the bound as a frozen argument: one trace of the loss."""
  data, original, _ = problem
  make = neggrad.make_neggrad_loss
  monkeypatch.setattr(neggrad, "make_neggrad_loss",
                      lambda *a, **kw: chex.assert_max_traces(make(*a, **kw), n=1))
  result = neggrad.neggrad(_ctx(), original, data, {"epochs": 2, "batch_size": 64})
  assert result.record["steps"] == 8


@pytest.mark.parametrize("name", ["neggrad", "bad_teacher"])
def test_ensemble_member_equals_the_single_run_of_its_key(problem, name):
  """K = 2 members of two originals at once: member k is the single run of original k with key k
  (its own forget bound; its own teachers and retain subset)."""
  data, original, _ = problem
  originals = [original, jax.tree_util.tree_map(lambda a: 1.05 * a, original)]
  keys = [7, 8]
  settings = {"epochs": 1, "batch_size": 32, "lr": 1e-3}
  out = METHODS[name](_ctx(keys), jax.tree_util.tree_map(lambda *a: jnp.concatenate(a),
                                                          *originals), data, settings)
  for k, key in enumerate(keys):
    single = METHODS[name](_ctx(key), originals[k], data, settings)
    chex.assert_trees_all_close(jax.device_get(train.ensemble.member(out.variables, k)),
                                jax.device_get(train.ensemble.member(single.variables, 0)),
                                rtol=1e-4, atol=1e-5)
    for aux, value in out.auxiliary.items():
      chex.assert_trees_all_equal(jax.device_get(train.ensemble.member(value, k)),
                                  jax.device_get(train.ensemble.member(single.auxiliary[aux], 0)))
    if name == "neggrad":
      assert out.record["forget_bound"][k] == pytest.approx(single.record["forget_bound"])
  if name == "neggrad":
    assert out.record["forget_bound"][0] != pytest.approx(out.record["forget_bound"][1])


@pytest.mark.parametrize("name, config, message", [
    ("neggrad", {"alhpa": 0.5}, "did you mean 'alpha'"),
    ("neggrad", {"alpha": 1.5}, r"alpha must be a finite number in \[0, 1\]"),
    ("neggrad", {"forget_bound": 0.0}, r"forget_bound must be a finite number in \(0, inf\)"),
    ("scrub", {"gamma": -1.0}, r"gamma must be a finite number in \[0, inf\)"),
    ("scrub", {"max_epochs": 0}, "max_epochs must be a positive integer"),
    ("bad_teacher", {"bad_teacher": "noise"}, "unknown incompetent teacher"),
    ("bad_teacher", {"retain_fraction": 0.0},
     r"retain_fraction must be a finite number in \(0, 1\]"),
    ("jit_lipschitz", {"samples": 0}, "samples must be a positive integer"),
    ("jit_lipschitz", {"sigma": -0.5}, r"sigma must be a finite number in \(0, inf\)"),
])
def test_bad_settings_are_user_errors(problem, name, config, message):
  data, original, _ = problem
  with pytest.raises(UserError, match=message):
    METHODS[name](_ctx(), original, data, config)


def test_jit_needs_real_valued_inputs():
  ids = np.arange(6, dtype=np.int32)[:, None]
  y = np.arange(6, dtype=np.float32)[:, None]
  data = UnlearnData(ids, y, y[:, 0] > 3, ids[:2], y[:2])
  with pytest.raises(UserError, match="perturbs the inputs"):
    jit_lipschitz.jit_lipschitz(_ctx(), {"params": {}}, data)
