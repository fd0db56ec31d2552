"""The blindspot objective against hand-computed values, and the method on a BatchNorm CNN."""
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jax_unlearn import losses, parallel, train
from jax_unlearn.errors import UserError
from jax_unlearn.models import from_linen, init_linen
from jax_unlearn.models.allcnn import ConvBlock
from jax_unlearn.unlearn import (Context, UnlearnData, attention_distance, attention_map,
                                 make_blindspot_loss, run_method)
from jax_unlearn.unlearn.blindspot import blindspot, forget_rows_for

JIT = pytest.mark.parametrize("wrap", [lambda f: f, jax.jit], ids=["eager", "jit"])


def _stored_apply(variables, x, *, train, rngs=None):
  """A "model" whose outputs are stored in its variables: the blindspot side of the tests."""
  del x, train, rngs
  return variables["params"]["pred"], dict(variables["params"]["acts"])


# Four rows, the last one padding. Forget rows 0 and 2, retain row 1.
PRED = jnp.array([[1.0], [2.0], [3.0], [9.0]])
Y = jnp.array([[0.0], [0.0], [1.0], [0.0]])
ACTS = {
    "dense": jnp.array([[1.0, 0.0], [3.0, 0.0], [1.0, 1.0], [5.0, 5.0]]),  # [B, F]
    "conv": jnp.array([[[[1.0, 1.0], [0.0, 0.0]]], [[[1.0, 2.0], [3.0, 4.0]]],
                       [[[1.0, 0.0], [1.0, 0.0]]], [[[7.0, 7.0], [7.0, 7.0]]]]),  # [B, 1, 2, 2]
}
BLINDSPOT = {"params": {
    "pred": jnp.array([[0.0], [2.0], [1.0], [5.0]]),
    "acts": {"dense": jnp.array([[0.0, 2.0], [0.0, 3.0], [2.0, 2.0], [1.0, 0.0]]),
             "conv": jnp.array([[[[0.0, 0.0], [3.0, 4.0]]], [[[1.0, 2.0], [3.0, 4.0]]],
                                [[[0.0, 2.0], [0.0, 2.0]]], [[[0.0, 1.0], [0.0, 0.0]]]])},
}}
MASK = jnp.array([1.0, 1.0, 1.0, 0.0])


def _loss(wrap, forget, attention="features", **kw):
  loss_fn = make_blindspot_loss(_stored_apply, losses.mse, beta=2.0, attention=attention, **kw)
  batch = {"x": jnp.zeros((4, 1)), "y": Y, "forget": jnp.array(forget), "mask": MASK}
  return wrap(loss_fn)(PRED, ACTS, batch, jax.random.key(0), BLINDSPOT)


@JIT
def test_mixed_batch_by_hand(wrap):
  # L_retain = (2 - 0)^2 = 4. Output term over rows 0, 2: ((1 - 0)^2 + (3 - 1)^2) / 2 = 2.5.
  # dense maps: row 0 [1, 0] vs [0, 1] -> 1, row 2 equal -> 0; mean 0.5.
  # conv maps: row 0 [1, 0] vs [0, 1] -> 1, row 2 equal -> 0; mean 0.5.
  # L_forget = 2.5 + 2 * (0.5 + 0.5) = 4.5; c = 2/3; loss = 2/3 * 4.5 + 1/3 * 4 = 13/3.
  loss, m = _loss(wrap, [1.0, 0.0, 1.0, 0.0])
  np.testing.assert_allclose(loss, 13 / 3, rtol=1e-6)
  np.testing.assert_allclose(m["retain_loss"], 4.0, rtol=1e-6)
  np.testing.assert_allclose(m["forget_loss"], 4.5, rtol=1e-6)
  np.testing.assert_allclose(m["attention"], 1.0, rtol=1e-6)
  np.testing.assert_allclose(m["forget_fraction"], 2 / 3, rtol=1e-6)


@JIT
def test_all_forget_batch_is_exactly_the_forget_term(wrap):
  # Row 1 joins: output (2 - 2)^2 = 0, dense [1, 0] vs [0, 1] -> 1, conv equal -> 0.
  # L_forget = (1 + 0 + 4) / 3 + 2 * (2/3 + 1/3) = 11/3, with no retain row.
  loss, m = _loss(wrap, [1.0, 1.0, 1.0, 1.0])
  np.testing.assert_allclose(loss, 11 / 3, rtol=1e-6)
  assert float(loss) == float(m["forget_loss"])
  assert float(m["retain_loss"]) == 0.0 and float(m["forget_fraction"]) == 1.0


@JIT
def test_all_retain_batch_is_exactly_the_retain_term(wrap):
  loss, m = _loss(wrap, [0.0, 0.0, 0.0, 1.0])  # the padded row's flag does not count
  np.testing.assert_allclose(loss, (1 + 4 + 4) / 3, rtol=1e-6)
  assert float(loss) == float(m["retain_loss"])
  assert float(m["forget_loss"]) == 0.0 and float(m["forget_fraction"]) == 0.0


def test_reference_mode_drops_the_2d_term_and_layers_select():
  # Only conv (0.5) remains: L_forget = 2.5 + 2 * 0.5 = 3.5; loss = 2/3 * 3.5 + 4/3 = 11/3.
  loss, m = _loss(jax.jit, [1.0, 0.0, 1.0, 0.0], attention="reference")
  np.testing.assert_allclose(loss, 11 / 3, rtol=1e-6)
  _, m = _loss(jax.jit, [1.0, 0.0, 1.0, 0.0], layers=["dense"])
  np.testing.assert_allclose(m["attention"], 0.5, rtol=1e-6)


def test_reference_2d_term_is_zero_up_to_rounding():
  # Every map is the constant 1 (times a rounded reciprocal: within an ulp of 1).
  r = np.random.default_rng(0)
  a, b = (jnp.asarray(r.normal(size=(5, 7)), jnp.float32) for _ in range(2))
  assert float(attention_distance(a, b, "reference").max()) < 1e-13
  assert float(attention_distance(a, b, "features").min()) > 0


def test_attention_map_by_hand():
  act = jnp.array([[[[1.0, 1.0], [2.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]]])  # [1, 2, 2, 2]
  # channel means of squares: [1, 2, 0, 2], norm 3.
  np.testing.assert_allclose(attention_map(act), [[1 / 3, 2 / 3, 0.0, 2 / 3]], rtol=1e-6)
  # [B, F]: squares [1, 4, 4, 16], norm sqrt(1 + 16 + 16 + 256) = 17.
  np.testing.assert_allclose(attention_map(jnp.array([[1.0, 2.0, 2.0, 4.0]])),
                             [[1 / 17, 4 / 17, 4 / 17, 16 / 17]], rtol=1e-6)
  # Other ranks are flattened: [B, T, F] acts like [B, T * F].
  seq = jnp.arange(12.0).reshape(2, 3, 2)
  np.testing.assert_allclose(attention_map(seq), attention_map(seq.reshape(2, 6)), rtol=1e-6)


def test_zero_activations_give_no_nan_values_or_gradients():
  zeros = jnp.zeros((2, 3, 3, 4))
  np.testing.assert_array_equal(attention_map(zeros), np.zeros((2, 9)))
  grad = jax.grad(lambda a: attention_distance(a, zeros).sum())(zeros)
  assert np.all(np.isfinite(grad))


def test_quantile_predictions_use_the_mean_absolute_difference():
  loss_fn = make_blindspot_loss(_stored_apply, losses.get_loss("quantile"), beta=1.0)
  pred = jnp.array([[[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]]])  # [B=2, H=1, Q=3]
  bs = {"params": {"pred": jnp.array([[[0.0, 2.0, 5.0]], [[9.0, 9.0, 9.0]]]), "acts": {}}}
  batch = {"x": jnp.zeros((2, 1)), "y": jnp.zeros((2, 1)), "forget": jnp.array([1.0, 1.0]),
           "mask": jnp.array([1.0, 1.0])}
  loss, _ = loss_fn(pred, {}, batch, None, bs)
  np.testing.assert_allclose(loss, ((1 + 0 + 2) / 3 + 9) / 2, rtol=1e-6)


def test_blindspot_variables_are_a_step_argument_not_a_constant():
  """The train step takes the blindspot model as its frozen argument: another blindspot model
  reuses the compiled step (no retrace) and gives another loss."""

  student = {"params": {"pred": PRED, "acts": ACTS}}
  traced = []

  def apply_fn(variables, x, *, train, rngs=None):
    traced.append(1)
    return _stored_apply(variables, x, train=train)

  loss_fn = make_blindspot_loss(apply_fn, losses.mse, beta=2.0)
  step = train.make_train_step(apply_fn, loss_fn, train.make_optimizer(0.1), donate=False)
  state = train.create_state(student, train.make_optimizer(0.1))
  batch = {"x": jnp.zeros((4, 1)), "y": Y, "forget": jnp.array([1.0, 0.0, 1.0, 0.0]),
           "mask": MASK}
  _, first = step(state, batch, jax.random.key(0), BLINDSPOT)
  traces = len(traced)
  moved = jax.tree_util.tree_map(lambda v: v + 1.0, BLINDSPOT)
  _, second = step(state, batch, jax.random.key(0), moved)
  assert len(traced) == traces  # the same program
  assert float(first["loss"]) != float(second["loss"])


def test_the_method_passes_its_blindspot_model_as_the_frozen_argument(cnn, monkeypatch):
  apply_fn, init_fn, original, data = cnn
  seen = []
  real = train.train_model

  def spy(apply_fn, variables, objective, *args, **kwargs):
    seen.append(getattr(objective, "frozen", None))
    return real(apply_fn, variables, objective, *args, **kwargs)

  monkeypatch.setattr(train, "train_model", spy)
  ctx = Context(apply_fn, init_fn, losses.mse, jax.random.key(3)[None])
  marked = jax.tree_util.tree_map(lambda a: a + 0.5, original)
  blindspot(ctx, original, data, CNN_CONFIG, blindspot_variables=marked)
  chex.assert_trees_all_equal(seen[-1], marked)


def test_bad_settings_are_user_errors():
  with pytest.raises(UserError, match="attention mode"):
    make_blindspot_loss(_stored_apply, losses.mse, attention="channels")
  with pytest.raises(UserError, match="not returned by both models"):
    _loss(lambda f: f, [1.0, 0.0, 1.0, 0.0], layers=["block9"])


# The method on a tiny BatchNorm CNN: 4-D activations, running statistics, checkpoints.


class TinyCNN(nn.Module):
  """Two of AllCNN's conv blocks (Conv -> BatchNorm -> ReLU); compiles in a fraction of it."""

  @nn.compact
  def __call__(self, x, *, train, mask=None):
    acts = {}
    x = acts["block1"] = ConvBlock(4)(x, train=train, mask=mask)  # [B, 8, 8, 4]
    x = acts["block2"] = ConvBlock(4, stride=2)(x, train=train, mask=mask)  # [B, 4, 4, 4]
    x = acts["features"] = x.mean(axis=(1, 2))  # [B, 4]
    return nn.Dense(1)(x), acts


@pytest.fixture(scope="module")
def cnn():
  r = np.random.default_rng(0)
  x = r.normal(size=(48, 8, 8, 1)).astype(np.float32)
  y = x[:, :4, :, 0].mean(axis=(1, 2))[:, None].astype(np.float32)
  model = TinyCNN()
  apply_fn = from_linen(model)
  init_fn = jax.jit(lambda key: init_linen(model, key, x[:1]))
  original = train.ensemble.one(init_fn(jax.random.key(0)))  # what is unlearned does not matter
  data = UnlearnData(x, y, y[:, 0] > 0.2, x[:8], y[:8])
  return apply_fn, init_fn, original, data


CNN_CONFIG = {"epochs": 1, "blindspot_epochs": 1, "batch_size": 16}


def test_cnn_blindspot_checkpoints_and_reuses_its_stages(cnn, tmp_path):
  apply_fn, init_fn, original, data = cnn
  ctx = Context(apply_fn, init_fn, losses.mse, jax.random.key(3)[None],
                checkpoint_dir=str(tmp_path / "blindspot"))
  first = run_method("blindspot", ctx, original, data, CNN_CONFIG)
  assert sorted(os.listdir(tmp_path / "blindspot")) == ["blindspot_model", "unlearn"]
  assert first.record["blindspot_steps"] == 3 and first.record["steps"] == 3 + 3
  chex.assert_trees_all_equal_shapes(first.variables, original)
  assert not np.allclose(first.variables["params"]["Dense_0"]["kernel"],
                         original["params"]["Dense_0"]["kernel"])
  assert not np.allclose(first.variables["batch_stats"]["ConvBlock_0"]["BatchNorm_0"]["mean"],
                         original["batch_stats"]["ConvBlock_0"]["BatchNorm_0"]["mean"])
  again = run_method("blindspot", ctx, original, data, CNN_CONFIG)  # finished stages reused
  chex.assert_trees_all_equal(jax.device_get(first.variables), jax.device_get(again.variables))


def test_blindspot_model_of_another_architecture_is_rejected(cnn):
  apply_fn, init_fn, original, data = cnn
  other = jax.tree_util.tree_map(lambda a: a[..., :1], original)  # one channel per layer
  ctx = Context(apply_fn, init_fn, losses.mse, jax.random.key(3)[None])
  with pytest.raises(UserError, match="blindspot model has another architecture"):
    blindspot(ctx, original, data, CNN_CONFIG, blindspot_variables=other)
  ctx = Context(apply_fn, lambda key: other, losses.mse, jax.random.key(3)[None])
  with pytest.raises(UserError, match="another architecture"):
    run_method("blindspot", ctx, original, data, CNN_CONFIG)


# The frozen forward on forget rows only: the same loss and gradients as on the whole batch.


def _linear_apply(variables, x, *, train, rngs=None):
  del train, rngs
  h = jnp.tanh(x @ variables["params"]["w1"])
  return h @ variables["params"]["w2"], {"hidden": h, "squared": h * h}


def _linear_variables(seed):
  r = np.random.default_rng(seed)
  return {"params": {"w1": jnp.asarray(r.normal(size=(3, 5)), jnp.float32),
                     "w2": jnp.asarray(r.normal(size=(5, 1)), jnp.float32)}}


@pytest.mark.parametrize("forget", [
    [1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],  # 3 <= 4 rows: gathered
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # none
    [1, 1, 0, 1, 0, 1, 1, 0, 0, 0, 1, 0, 0, 0, 0, 1],  # 7 > 4 rows: the whole batch
], ids=["few", "none", "many"])
def test_forget_rows_give_the_whole_batch_loss_and_gradients(forget):
  r = np.random.default_rng(1)
  batch = {"x": jnp.asarray(r.normal(size=(16, 3)), jnp.float32),
           "y": jnp.asarray(r.normal(size=(16, 1)), jnp.float32),
           "forget": jnp.array(forget, jnp.float32),
           "mask": jnp.array([1.0] * 14 + [0.0, 1.0])}  # a padded row among them
  student, frozen = _linear_variables(2), _linear_variables(3)
  frozen_rows = []  # rows of each frozen forward that ran

  def frozen_apply(variables, x, *, train, rngs=None):
    jax.debug.callback(lambda: frozen_rows.append(x.shape[0]))
    return _linear_apply(variables, x, train=train, rngs=rngs)

  def value_and_grad(forget_rows):
    loss_fn = make_blindspot_loss(frozen_apply, losses.l1, beta=3.0, forget_rows=forget_rows)

    def loss(params):
      pred, acts = _linear_apply({"params": params}, batch["x"], train=True)
      return loss_fn(pred, acts, batch, None, frozen)

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(student["params"])

  (whole, whole_aux), whole_grads = value_and_grad(None)
  (fast, fast_aux), fast_grads = value_and_grad(4)
  jax.effects_barrier()
  assert frozen_rows == [16, 4 if sum(forget) <= 4 else 16]
  np.testing.assert_allclose(fast, whole, rtol=1e-6)
  chex.assert_trees_all_close(fast_aux, whole_aux, rtol=1e-6, atol=1e-7)
  chex.assert_trees_all_close(fast_grads, whole_grads, rtol=1e-5, atol=1e-7)


def test_forget_rows_cover_the_likely_share_of_a_batch():
  # 64 rows, 25 % forget: 16 expected, sd 3.5 -> 29.9 -> 32 rows, half the frozen forward.
  assert forget_rows_for(0.25, 64) == 32
  assert forget_rows_for(0.1, 64) == 16  # 6.4 + 4 * 2.4 = 16.0
  assert forget_rows_for(0.02, 256) == 16  # 5.1 + 4 * 2.2 = 14.1
  assert forget_rows_for(0.5, 8) is None  # no saving worth a second branch
  assert forget_rows_for(0.25, 64, parallel.DataParallel.create(1)) == 32
  # A sharded batch: the whole path.
  assert forget_rows_for(0.25, 64, parallel.DataParallel.create(4)) is None


def test_reference_map_of_a_sequence_averages_over_time_as_published():
  act = jnp.array([[[1.0, 2.0], [3.0, 4.0]]])  # [B=1, T=2, F=2]
  # Squares [[1, 4], [9, 16]], mean over time [5, 10], L2-normalised.
  np.testing.assert_allclose(attention_map(act, "reference"), [[5 / 125**0.5, 10 / 125**0.5]],
                             rtol=1e-6)
  assert attention_map(act, "features").shape == (1, 4)  # flattened squares, unaveraged
