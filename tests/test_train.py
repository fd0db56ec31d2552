import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jax_unlearn import losses, parallel, train
from jax_unlearn.data import ArrayLoader
from jax_unlearn.errors import UserError
from jax_unlearn.models import MLP, from_function, from_linen, from_nnx, get_model, init_linen


def _dp(devices, shards=None):
  return parallel.DataParallel.create(devices, shards)


def _setup(x, model=None, lr=0.05, dp=None):
  model = model or MLP(hidden=(16,))
  apply_fn = from_linen(model)
  variables = init_linen(model, jax.random.key(1), x[:2])
  tx = train.make_optimizer(lr)
  state = train.create_state(variables, tx, dp)
  step = train.make_train_step(apply_fn, train.supervised_loss(losses.mse), tx, dp)
  return apply_fn, state, step


def _run(x, y, dp, epochs=3, batch_size=30, model=None):
  apply_fn, state, step = _setup(x, model=model, dp=dp)
  loader = ArrayLoader({"x": x, "y": y}, batch_size, seed=0, dp=dp)
  result = train.fit(state, step, loader, epochs=epochs, rng=jax.random.key(2), dp=dp)
  return apply_fn, result


def test_tiny_model_learns(linear_data):
  x, y = linear_data
  apply_fn, result = _run(x, y, None, epochs=30)
  first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
  assert last < first / 10, (first, last)
  pred = train.predict(train.make_predict_fn(apply_fn), result.state.variables, x)
  assert pred.shape == (96, 1)


@pytest.mark.parametrize("model_name", ["mlp", "allcnn"])
def test_one_and_four_devices_agree(model_name):
  """Batch 30 does not divide 4 devices: padded and masked, the same update as on 1 device up to
  float rounding (the order of the gradient sum), which two epochs grow to ~1e-5."""
  r = np.random.default_rng(0)
  if model_name == "allcnn":
    x = r.normal(size=(40, 8, 8, 1)).astype(np.float32)
    model = get_model("allcnn", width=0.05)
  else:
    x = r.normal(size=(40, 3)).astype(np.float32)
    model = MLP(hidden=(16,))
  y = r.normal(size=(40, 1)).astype(np.float32)
  assert len(jax.devices()) == 4
  _, one = _run(x, y, _dp(1), epochs=2, model=model)
  _, four = _run(x, y, _dp(4), epochs=2, model=model)
  chex.assert_trees_all_close(jax.device_get(one.state.params),
                              jax.device_get(four.state.params), rtol=1e-4, atol=1e-5)
  chex.assert_trees_all_close(jax.device_get(one.state.batch_stats),
                              jax.device_get(four.state.batch_stats), rtol=1e-4, atol=1e-5)


def _sharded_run(x, y, model, loss_fn, devices, shards, batch_size, frozen=None):
  """Params and batch stats after one epoch of `loss_fn` with fixed `shards` on `devices`."""
  dp = _dp(devices, shards)
  apply_fn = from_linen(model)
  variables = init_linen(model, jax.random.key(1), x[:2])
  tx = train.make_optimizer(0.01)
  step = train.make_train_step(apply_fn, loss_fn, tx, dp)
  state = train.create_state(variables, tx, dp)
  arrays = {"x": x, "y": y, "forget": (np.arange(len(x)) % 3 == 0).astype(np.float32)}
  loader = ArrayLoader(arrays, batch_size, seed=0, dp=dp)
  result = train.fit(state, step, loader, epochs=1, rng=jax.random.key(2), dp=dp,
                     frozen=dp.replicate(frozen))
  assert all(np.isfinite(h["train_loss"]) for h in result.history)
  return jax.device_get((result.state.params, result.state.batch_stats))


def test_fixed_shards_give_bitwise_equal_parameters_on_1_2_and_4_devices():
  """BatchNorm model, batches of 30 (padded to 32) and a last batch of 9 rows (padded to 12: a
  block of padding only). Without fixed shards the same runs differ by float rounding."""
  r = np.random.default_rng(0)
  x = r.normal(size=(99, 8, 8, 1)).astype(np.float32)
  y = r.normal(size=(99, 1)).astype(np.float32)
  model = get_model("allcnn", width=0.05)
  loss_fn = train.supervised_loss(losses.l1)
  runs = {n: _sharded_run(x, y, model, loss_fn, n, 4, 30) for n in (1, 2, 4)}
  for n in (2, 4):
    chex.assert_trees_all_equal(runs[1], runs[n])


def test_predictions_in_fixed_shards_are_the_same_on_1_2_and_4_devices():
  r = np.random.default_rng(3)
  x = r.normal(size=(50, 8, 8, 1)).astype(np.float32)  # 3 chunks of 20 rows, 10 padded
  model = get_model("allcnn", width=0.05)
  apply_fn, variables = from_linen(model), init_linen(model, jax.random.key(1), x[:2])
  preds = {n: train.predict(train.make_predict_fn(apply_fn, _dp(n, 4)), variables, x,
                            batch_size=20) for n in (1, 2, 4)}
  assert preds[1].shape == (50, 1)
  np.testing.assert_array_equal(preds[1], preds[2])
  np.testing.assert_array_equal(preds[1], preds[4])
  np.testing.assert_allclose(preds[1], train.predict(train.make_predict_fn(apply_fn), variables, x),
                             rtol=1e-5, atol=1e-5)


def test_fixed_shards_compute_the_whole_batch_objective():
  """Without BatchNorm, blocks weighted by their unmasked rows give the whole batch's loss and
  gradient: plain supervised and the blindspot objective (per-row terms, shares of the batch,
  forget rows gathered per block)."""
  from jax_unlearn.unlearn.blindspot import forget_rows_for, make_blindspot_loss
  r = np.random.default_rng(1)
  x = r.normal(size=(300, 3)).astype(np.float32)
  y = r.normal(size=(300, 1)).astype(np.float32)
  model = MLP(hidden=(16,))
  apply_fn = from_linen(model)
  frozen = init_linen(model, jax.random.key(5), x[:2])
  rows = forget_rows_for(1 / 3, 256, _dp(1, 4))
  assert rows == 40  # 64 rows a block, about 21 of them forget rows
  cases = {"supervised": (train.supervised_loss(losses.mse), None),
           "blindspot": (make_blindspot_loss(apply_fn, losses.l1, forget_rows=rows), frozen)}
  for name, (loss_fn, extra) in cases.items():
    whole = _sharded_run(x, y, model, loss_fn, 1, None, 256, frozen=extra)
    blocks = _sharded_run(x, y, model, loss_fn, 4, 4, 256, frozen=extra)
    chex.assert_trees_all_close(whole, blocks, rtol=1e-5, atol=1e-6, custom_message=name)


def test_fixed_shards_reject_a_device_count_they_do_not_split_into():
  with pytest.raises(UserError, match="multiple of the 4 device"):
    _dp(4, 6)
  assert _dp(2, 6).batch_multiple == 6
  assert _dp(2, 6).rows_per_block(32) == 6  # padded to 36 rows: 6 blocks of 6
  assert _dp(4).batch_multiple == 4 and _dp(4).padded(30) == 32
  apply_fn, state, _ = _setup(np.zeros((4, 3), np.float32))
  step = train.make_train_step(apply_fn, train.supervised_loss(losses.mse),
                               train.make_optimizer(0.1), _dp(1, 4))
  batch = parallel.pad_batch({"x": np.zeros((6, 3), np.float32),
                              "y": np.zeros((6, 1), np.float32)}, 6)
  with pytest.raises(ValueError, match="does not split into 4 shards"):
    step(state, batch, jax.random.key(0))


def test_no_recompilation_across_steps_and_ragged_last_batch(linear_data):
  x, y = linear_data
  dp = _dp(4)
  model = MLP(hidden=(8,))
  apply_fn = from_linen(model)
  variables = init_linen(model, jax.random.key(1), x[:2])
  tx = train.make_optimizer(0.01)

  @chex.assert_max_traces(n=1)
  def loss_fn(pred, acts, batch, rng, frozen):
    return losses.masked_mean(losses.mse(pred, batch["y"]) * frozen["scale"], batch["mask"]), {}

  step = train.make_train_step(apply_fn, loss_fn, tx, dp)
  state = train.create_state(variables, tx, dp)
  loader = ArrayLoader({"x": x[:70], "y": y[:70]}, 32, seed=0, dp=dp)  # 32, 32, 6 rows
  # A frozen pytree whose values change between calls: an argument, so no retrace.
  for scale in (1.0, 2.0):
    state = train.fit(state, step, loader, epochs=1, rng=jax.random.key(0), dp=dp,
                      frozen=dp.replicate({"scale": jnp.float32(scale)})).state


def test_ragged_batch_gradient_is_exact(linear_data):
  """A padded batch gives exactly the gradient of the unpadded rows."""
  x, y = linear_data
  model = MLP(hidden=(8,))
  apply_fn = from_linen(model)
  variables = init_linen(model, jax.random.key(1), x[:2])
  tx = optax.sgd(0.1)
  step = train.make_train_step(apply_fn, train.supervised_loss(losses.l1), tx, donate=False)
  state = train.TrainState(jnp.zeros((), jnp.int32), variables["params"], {},
                           tx.init(variables["params"]))
  exact = {"x": x[:5], "y": y[:5], "forget": np.zeros(5), "mask": np.ones(5, np.float32)}
  padded = parallel.pad_batch(exact, 8)
  assert padded["mask"].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]
  a, _ = step(state, exact, jax.random.key(0))
  b, _ = step(state, padded, jax.random.key(0))
  chex.assert_trees_all_close(a.params, b.params, rtol=1e-6)


def test_plain_function_and_nnx_module_train():
  r = np.random.default_rng(0)
  x = r.normal(size=(64, 2)).astype(np.float32)
  y = (x @ np.array([1.0, 2.0], np.float32))[:, None]
  loader = ArrayLoader({"x": x, "y": y}, 16, seed=0)

  def linear(params, xb):
    return xb @ params["w"] + params["b"]

  class Net(nnx.Module):

    def __init__(self, rngs):
      self.dense = nnx.Linear(2, 1, rngs=rngs)

    def __call__(self, xb):
      return self.dense(xb), {"out": xb}

  nnx_apply, nnx_vars = from_nnx(Net(nnx.Rngs(0)))
  plain = (from_function(linear), {"params": {"w": jnp.zeros((2, 1)), "b": jnp.zeros((1,))}})
  for apply_fn, variables in [plain, (nnx_apply, nnx_vars)]:
    tx = train.make_optimizer(0.1)
    step = train.make_train_step(apply_fn, train.supervised_loss(losses.mse), tx)
    result = train.fit(train.create_state(variables, tx), step, loader, epochs=20,
                       rng=jax.random.key(0))
    assert result.history[-1]["train_loss"] < 0.01 * result.history[0]["train_loss"]


def test_plateau_lowers_learning_rate_and_best_variables_are_kept(linear_data):
  x, y = linear_data
  apply_fn, state, step = _setup(x, lr=0.01)
  loader = ArrayLoader({"x": x, "y": y}, 32, seed=0)
  vals = iter([5.0, 4.0, 4.5, 4.5, 4.5, 4.5])
  result = train.fit(state, step, loader, epochs=6, rng=jax.random.key(0),
                     validation=train.Validation(lambda v: next(vals), train.Plateau(patience=2)))
  assert [h["lr"] for h in result.history] == pytest.approx([0.01] * 4 + [0.001] * 2)
  assert result.best_variables is not None
  assert result.history[-1]["best_val"] == 4.0


def test_nonfinite_loss_stops_with_a_hint(linear_data):
  x, y = linear_data
  y = y.copy()
  y[3] = np.nan
  _, state, step = _setup(x)
  with pytest.raises(train.NonFiniteLossError, match="Lower the learning rate"):
    train.fit(state, step, ArrayLoader({"x": x, "y": y}, 32, seed=0), epochs=1,
              rng=jax.random.key(0))


def test_bad_settings_are_user_errors(linear_data):
  x, y = linear_data
  with pytest.raises(UserError, match="learning rate"):
    train.make_optimizer(0.0)
  with pytest.raises(UserError, match="batch size"):
    ArrayLoader({"x": x, "y": y}, 0)
  with pytest.raises(UserError, match="different lengths"):
    ArrayLoader({"x": x, "y": y[:5]}, 8)


def test_loader_epoch_covers_every_sample_once_and_is_seeded():
  x = np.arange(50, dtype=np.float32)[:, None]
  loader = ArrayLoader({"x": x, "y": x}, 16, seed=3, dp=_dp(4))
  rows = np.concatenate([b["x"][b["mask"] > 0, 0] for b in loader(0)])
  assert sorted(rows.tolist()) == list(range(50))
  again = np.concatenate([b["x"][b["mask"] > 0, 0] for b in loader(0)])
  other = np.concatenate([b["x"][b["mask"] > 0, 0] for b in loader(1)])
  assert rows.tolist() == again.tolist() and rows.tolist() != other.tolist()


def test_param_hook_fixes_masked_weights_and_adds_its_penalty(linear_data):
  """Weights the hook stops the gradient of never move (fresh Adam, zero gradients); the
  penalty is added to the loss, reported, and sees the step count."""
  x, y = linear_data
  model = MLP(hidden=(8,))
  apply_fn = from_linen(model)
  variables = init_linen(model, jax.random.key(0), x[:1])
  mask = jax.tree_util.tree_map(lambda a: (jnp.arange(a.size).reshape(a.shape) % 2)
                                .astype(jnp.float32), variables["params"])

  def hook(params, frozen, step):
    forward = jax.tree_util.tree_map(
        lambda p, m: m * p + (1 - m) * jax.lax.stop_gradient(p), params, frozen)
    return forward, 0.5 * step.astype(jnp.float32)

  objective = train.Objective(train.supervised_loss(losses.mse),
                              frozen=train.ensemble.one(mask), param_hook=hook)
  out = train.train_model(apply_fn, train.ensemble.one(variables), objective, {"x": x, "y": y},
                          train.Recipe(epochs=1, batch_size=96, lr=0.1),
                          rng=jax.random.key(1)[None], seeds=[0])
  trained = train.ensemble.member(out.variables, 0)
  moved = jax.tree_util.tree_map(lambda a, b: np.abs(np.asarray(a - b)), trained["params"],
                                 variables["params"])
  for d, m in zip(jax.tree_util.tree_leaves(moved), jax.tree_util.tree_leaves(mask)):
    m = np.asarray(m)
    assert np.all(d[m == 0] == 0) and np.all(d[m == 1] > 0)
  tx = train.make_optimizer(0.1)
  step = train.make_train_step(apply_fn, train.supervised_loss(losses.mse), tx, param_hook=hook)
  state = train.create_state(variables, tx)
  batch = {"x": x, "y": y, "forget": np.zeros(96, np.float32), "mask": np.ones(96, np.float32)}
  plain = float(np.mean(losses.mse(apply_fn(variables, x, train=False)[0], y)))
  state, first = step(state, batch, jax.random.key(2), mask)
  _, second = step(state, batch, jax.random.key(2), mask)
  assert float(first["penalty"]) == 0.0 and float(first["loss"]) == pytest.approx(plain, rel=1e-5)
  assert float(second["penalty"]) == 0.5
  assert float(second["loss"]) - 0.5 < plain  # the task loss fell after one step
