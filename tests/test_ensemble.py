import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_unlearn import losses, parallel, train
from jax_unlearn.data import ArrayLoader
from jax_unlearn.errors import UserError
from jax_unlearn.models import MLP, from_linen, get_model, init_linen
from jax_unlearn.train import ensemble

SEEDS = (0, 1, 2)


def _data(shape=(3,), n=40):
  r = np.random.default_rng(0)
  x = r.normal(size=(n,) + shape).astype(np.float32)
  y = r.normal(size=(n, 1)).astype(np.float32)
  return {"x": x, "y": y}


def _setup(arrays, model=None, k=len(SEEDS)):
  model = model or MLP(hidden=(16,))
  variables = [init_linen(model, jax.random.key(10 + i), arrays["x"][:2]) for i in range(k)]
  # 0.01: at larger rates the conv net's training amplifies float rounding (1e-7 -> 1e-3 in 6
  # steps), between any two programs that sum in different orders.
  return from_linen(model), variables, train.make_optimizer(0.01)


def _rngs(k):
  return jax.vmap(jax.random.key)(jnp.arange(k))  # [K] keys: member k gets key k


def _history(result):
  return np.asarray([h["train_loss"] for h in result.history]).reshape(len(result.history), -1)


def _ensemble(arrays, model=None, seeds=SEEDS, chunk=None, epochs=2, loss_fn=None, devices=1):
  apply_fn, variables, tx = _setup(arrays, model, len(seeds))
  loss_fn = loss_fn or train.supervised_loss(losses.mse)
  members = parallel.Members.create(len(seeds), jax.devices()[:devices])
  step = ensemble.make_ensemble_step(apply_fn, loss_fn, tx, chunk=chunk, members=members)
  state = ensemble.create_ensemble_state(variables, tx, members)
  batches = ensemble.ensemble_batches(arrays, 16, seeds)
  result = train.fit(state, step, batches, epochs=epochs, rng=members.put(_rngs(len(seeds))),
                     dp=members)
  return result.state, _history(result)


def _single(arrays, model, k, epochs=2):
  apply_fn, variables, tx = _setup(arrays, model, len(SEEDS))
  step = train.make_train_step(apply_fn, train.supervised_loss(losses.mse), tx)
  state = train.create_state(variables[k], tx)
  loader = ArrayLoader(arrays, 16, seed=SEEDS[k])
  return train.fit(state, step, loader, epochs=epochs, rng=jax.random.key(k))


def _close(a, b):
  chex.assert_trees_all_close(jax.device_get(a), jax.device_get(b), rtol=1e-5, atol=1e-6)


def test_stack_and_member():
  trees = [{"a": jnp.full((2,), i), "b": (jnp.asarray(i),)} for i in range(3)]
  stacked = ensemble.stack(trees)
  assert stacked["a"].shape == (3, 2) and stacked["b"][0].shape == (3,)
  for i, tree in enumerate(trees):
    _close(ensemble.member(stacked, i), tree)


@pytest.mark.parametrize("model_name", ["mlp", "allcnn"])
def test_member_equals_single_run(model_name):
  """Each member trains as the same model alone would: same init, order seed and rng key."""
  if model_name == "allcnn":
    arrays, model = _data((8, 8, 1)), get_model("allcnn", width=0.05)
  else:
    arrays, model = _data(), MLP(hidden=(16,))
  state, history = _ensemble(arrays, model)
  assert history.shape == (2, len(SEEDS))
  assert state.step.shape == (len(SEEDS),) and int(state.step[0]) == 2 * 3
  for k in range(len(SEEDS)):
    single = _single(arrays, model, k)
    _close(ensemble.member(state.params, k), single.state.params)
    _close(ensemble.member(state.batch_stats, k), single.state.batch_stats)
    _close(ensemble.member(state.opt_state, k), single.state.opt_state)
    np.testing.assert_allclose(history[:, k], [h["train_loss"] for h in single.history],
                               rtol=1e-5)
  if model_name == "allcnn":
    assert jax.tree_util.tree_leaves(state.batch_stats)


@pytest.mark.parametrize("chunk", [1, 3])
def test_chunked_equals_unchunked(chunk):
  arrays = _data()
  whole, whole_history = _ensemble(arrays)
  chunked, chunked_history = _ensemble(arrays, chunk=chunk)
  _close(chunked.params, whole.params)
  _close(chunked.opt_state, whole.opt_state)
  np.testing.assert_allclose(chunked_history, whole_history, rtol=1e-5)


@pytest.mark.parametrize("chunk", [None, 1])
def test_one_trace_for_all_members_and_steps(chunk):
  chex.clear_trace_counter()  # the counter is per function body, shared by the parameters
  base = train.supervised_loss(losses.mse)

  @chex.assert_max_traces(n=1)
  def loss_fn(pred, acts, batch, rng, frozen):
    return base(pred, acts, batch, rng, frozen)

  state, history = _ensemble(_data(), chunk=chunk, loss_fn=loss_fn)
  assert np.all(np.isfinite(history)) and int(state.step[0]) == 6


def test_seeds_make_different_members():
  """Same init for all members: only the data order (seed) and rng key tell them apart."""
  arrays = _data()
  apply_fn, variables, tx = _setup(arrays)
  step = ensemble.make_ensemble_step(apply_fn, train.supervised_loss(losses.mse), tx)
  state = ensemble.create_ensemble_state([variables[0]] * 2, tx)
  batches = ensemble.ensemble_batches(arrays, 16, (0, 1))
  first = next(iter(batches(0)))
  assert first["x"].shape == (2, 16, 3) and first["mask"].shape == (2, 16)
  assert not np.array_equal(first["x"][0], first["x"][1])
  state = train.fit(state, step, batches, epochs=1, rng=_rngs(2),
                    dp=parallel.Members.create(1)).state
  a, b = (ensemble.member(state.params, k)["Dense_0"]["kernel"] for k in range(2))
  assert not np.allclose(np.asarray(a), np.asarray(b))


def test_batches_match_loaders_with_padding():
  arrays = _data()
  batches = ensemble.ensemble_batches(arrays, 16, SEEDS)
  assert len(batches) == 3
  for k, seed in enumerate(SEEDS):
    for stacked, own in zip(batches(1), ArrayLoader(arrays, 16, seed=seed)(1)):
      for key in own:
        np.testing.assert_array_equal(stacked[key][k], own[key])
  last = list(batches(0))[-1]
  assert last["mask"].sum(axis=1).tolist() == [8.0] * len(SEEDS)  # 40 rows: 16 + 16 + 8


def test_single_member_ensemble():
  arrays = _data()
  state, history = _ensemble(arrays, seeds=(SEEDS[0],))
  assert history.shape == (2, 1)
  _close(ensemble.member(state.params, 0), _single(arrays, None, 0).state.params)


def test_bad_chunk_is_a_user_error():
  arrays = _data()
  with pytest.raises(UserError, match="chunks of 2"):
    _ensemble(arrays, chunk=2, epochs=1)
  apply_fn, _, tx = _setup(arrays)
  for chunk in (0, -1, 1.5, True):
    with pytest.raises(UserError, match="chunk"):
      ensemble.make_ensemble_step(apply_fn, train.supervised_loss(losses.mse), tx, chunk=chunk)


def test_frozen_has_a_leading_member_axis():
  """Each member gets its own slice of `frozen`: here a per-member weight of the loss."""
  arrays = _data()
  apply_fn, variables, tx = _setup(arrays)
  base = train.supervised_loss(losses.mse)

  def loss_fn(pred, acts, batch, rng, frozen):
    loss, metrics = base(pred, acts, batch, rng, frozen)
    return loss * frozen, metrics

  step = ensemble.make_ensemble_step(apply_fn, loss_fn, tx, donate=False)
  state = ensemble.create_ensemble_state([variables[0]] * 2, tx)
  batch = next(iter(ensemble.ensemble_batches(arrays, 16, (0, 0))(0)))
  _, metrics = step(state, batch, _rngs(2), jnp.asarray([1.0, 2.0]))  # [K]
  assert metrics["loss"].shape == (2,)
  np.testing.assert_allclose(metrics["loss"][1], 2 * metrics["loss"][0], rtol=1e-6)


def test_members_on_four_devices_equal_one_device():
  """Four members, one per device of the "model" axis: each computes what it does alone."""
  arrays, seeds = _data(), (0, 1, 2, 3)
  one, one_history = _ensemble(arrays, seeds=seeds, devices=1)
  four, four_history = _ensemble(arrays, seeds=seeds, devices=4)
  assert four.params["Dense_0"]["kernel"].sharding.num_devices == 4
  _close(four.params, one.params)
  np.testing.assert_allclose(four_history, one_history, rtol=1e-5)
  members = parallel.Members.create(6, jax.devices()[:4])
  assert members.devices == 3  # the most devices dividing the member count


def _train_model(arrays, seeds, tmp_path=None, epochs=2, validate=False, plateau=False, **kw):
  first = arrays if isinstance(arrays, dict) else arrays[0]
  apply_fn, variables, _ = _setup(first, None, len(seeds))
  loss = train.supervised_loss(losses.mse)
  recipe = train.Recipe(epochs=epochs, batch_size=16, lr=0.01,
                        plateau_factor=0.5 if plateau else None, plateau_patience=0)
  val = (train.make_validation_loss(apply_fn, losses.mse, first["x"][:8], first["y"][:8])
         if validate else None)
  return train.train_model(apply_fn, ensemble.stack(variables), loss, arrays, recipe,
                           rng=_rngs(len(seeds)), seeds=seeds, dp=parallel.DataParallel.create(),
                           validate=val,
                           stage=train.Stage(directory=str(tmp_path / "ckpt") if tmp_path
                                             else None), **kw)


def test_train_model_trains_members_as_single_runs():
  """train_model with one seed per member: member k = train_model of seed k, key k alone."""
  arrays = _data()
  out = _train_model(arrays, SEEDS, validate=True, plateau=True)
  assert np.asarray(out.history[-1]["train_loss"]).shape == (len(SEEDS),)
  apply_fn, variables, _ = _setup(arrays, None, len(SEEDS))
  for k, seed in enumerate(SEEDS):
    recipe = train.Recipe(epochs=2, batch_size=16, lr=0.01, plateau_factor=0.5,
                          plateau_patience=0)
    val = train.make_validation_loss(apply_fn, losses.mse, arrays["x"][:8], arrays["y"][:8])
    single = train.train_model(apply_fn, ensemble.one(variables[k]),
                               train.supervised_loss(losses.mse), arrays, recipe,
                               rng=jax.random.key(k)[None], seeds=[seed], validate=val)
    _close(ensemble.member(out.variables, k), ensemble.member(single.variables, 0))
    for h_ens, h_one in zip(out.history, single.history):
      np.testing.assert_allclose(h_ens["val_loss"][k], h_one["val_loss"], rtol=1e-5)
      assert h_ens["lr"][k] == pytest.approx(h_one["lr"])


def test_train_model_ensemble_resumes_and_reuses(tmp_path):
  arrays = _data()
  whole = _train_model(arrays, SEEDS, epochs=3, validate=True)
  _train_model(arrays, SEEDS, tmp_path, epochs=1, validate=True)
  resumed = _train_model(arrays, SEEDS, tmp_path, epochs=3, validate=True)
  assert resumed.resumed_from_epoch == 1 and not resumed.reused
  _close(resumed.variables, whole.variables)
  again = _train_model(arrays, SEEDS, tmp_path, epochs=3, validate=True)
  assert again.reused
  _close(again.variables, whole.variables)
  other = _train_model(arrays, (0, 1, 5), tmp_path, epochs=3, validate=True)
  assert not other.reused and other.resumed_from_epoch == 0  # another member seed: recomputed


def test_train_model_takes_arrays_per_member():
  arrays = _data()
  shifted = {**arrays, "y": arrays["y"] + 100.0}
  out = _train_model([arrays, shifted, arrays], SEEDS)
  loss = np.asarray(out.history[0]["train_loss"])
  assert loss[1] > 100 * max(loss[0], loss[2])
  with pytest.raises(UserError, match="one per member"):
    _train_model([arrays, arrays], SEEDS)


def test_choose_chunk():
  assert ensemble.choose_chunk(16, 10, 160) is None
  assert ensemble.choose_chunk(16, 10, 100) == 8  # the largest divisor of 16 with 10 * c <= 100
  assert ensemble.choose_chunk(12, 10, 50) == 4
  assert ensemble.choose_chunk(7, 10, 50) == 1
  assert ensemble.choose_chunk(4, 100, 50) == 1
  with pytest.raises(UserError):
    ensemble.choose_chunk(0, 10, 100)


def test_members_with_fixed_blocks_equal_single_runs_on_four_devices():
  """With batch shards a member's BatchNorm sees the blocks a single model's sees on a mesh."""
  arrays, model = _data((8, 8, 1)), get_model("allcnn", width=0.05)
  apply_fn, variables, _ = _setup(arrays, model, 2)
  recipe = train.Recipe(epochs=1, batch_size=16, lr=0.01)
  loss = train.supervised_loss(losses.mse)
  dp = parallel.DataParallel.create(4, 4)
  out = train.train_model(apply_fn, ensemble.stack(variables), loss, arrays, recipe, rng=_rngs(2),
                          seeds=[0, 1], dp=dp)
  for k in range(2):
    single = train.train_model(apply_fn, ensemble.one(variables[k]), loss, arrays, recipe,
                               rng=jax.random.key(k)[None], seeds=[k], dp=dp)
    _close(ensemble.member(out.variables, k), ensemble.member(single.variables, 0))


@pytest.mark.parametrize("scan", [True, False])
def test_members_of_unequal_lengths_train_as_single_runs(scan):
  """Ragged members (40, 25 and 10 rows, batches of 16): the shorter ones skip the padding
  batches that end their epochs, and the one shorter than a batch trains on all its rows."""
  full = _data()
  per = [full, {k: v[:25] for k, v in full.items()}, {k: v[:10] for k, v in full.items()}]
  apply_fn, variables, _ = _setup(full)
  loss_fn = train.supervised_loss(losses.mse)
  recipe = train.Recipe(epochs=3, batch_size=16, lr=0.01, scan=scan)
  out = train.train_model(apply_fn, ensemble.stack(variables), loss_fn, per, recipe,
                          rng=_rngs(len(SEEDS)), seeds=SEEDS)
  for k, seed in enumerate(SEEDS):
    alone = train.train_model(apply_fn, ensemble.one(variables[k]), loss_fn, per[k],
                              train.Recipe(epochs=3, batch_size=min(16, len(per[k]["x"])),
                                           lr=0.01, scan=scan),
                              rng=jax.random.key(k)[None], seeds=[seed])
    assert alone.steps == 3 * -(-len(per[k]["x"]) // 16)
    _close(ensemble.member(out.variables, k), ensemble.member(alone.variables, 0))
    np.testing.assert_allclose([h["train_loss"][k] for h in out.history],
                               [h["train_loss"] for h in alone.history], rtol=1e-5)


def test_one_member_trains_bitwise_as_the_lone_model_program():
  """K = 1 runs the lone model's data-parallel step and loader (here fixed blocks over 4
  devices), so an ensemble of one keeps the numbers of a model trained alone."""
  arrays = _data()
  apply_fn, variables, tx = _setup(arrays, k=1)
  loss = train.supervised_loss(losses.mse)
  dp = parallel.DataParallel.create(4, 4)
  out = train.train_model(apply_fn, ensemble.one(variables[0]), loss, arrays,
                          train.Recipe(epochs=2, batch_size=16, lr=0.01), rng=_rngs(1),
                          seeds=[3], dp=dp)
  alone = train.fit(train.create_state(variables[0], tx, dp),
                    train.make_train_step(apply_fn, loss, tx, dp),
                    ArrayLoader(arrays, 16, seed=3, dp=dp), epochs=2, rng=jax.random.key(0), dp=dp)
  chex.assert_trees_all_equal(jax.device_get(ensemble.member(out.variables, 0)),
                              jax.device_get(alone.state.variables))


def test_train_model_wants_one_seed_key_and_model_per_member():
  arrays = _data()
  apply_fn, variables, _ = _setup(arrays, k=2)
  loss = train.supervised_loss(losses.mse)
  recipe = train.Recipe(epochs=1, batch_size=16, lr=0.01)
  both = ensemble.stack(variables)
  with pytest.raises(UserError, match="seeds must be a sequence"):
    train.train_model(apply_fn, both, loss, arrays, recipe, rng=_rngs(2), seeds=3)
  with pytest.raises(UserError, match=r"3 seed\(s\) need variables and keys stacked over 3"):
    train.train_model(apply_fn, both, loss, arrays, recipe, rng=_rngs(3), seeds=[0, 1, 2])
  with pytest.raises(UserError, match=r"stacked over 1 member"):  # a lone model, not stacked
    train.train_model(apply_fn, variables[0], loss, arrays, recipe, rng=_rngs(1), seeds=[0])


def test_over_members_maps_over_members_and_runs_one_member_alone():
  def fn(w, x):
    return jnp.tanh(w @ x) * 1.7 + jnp.sum(w)

  w = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 5)), jnp.float32)
  x = jnp.linspace(-1.0, 1.0, 5)
  want = [jax.jit(fn)(w[k], x) for k in range(3)]
  for in_turn in (False, True):
    got = ensemble.over_members(fn, 3, in_turn=in_turn, shared=(1,))(w, x)
    for k in range(3):
      np.testing.assert_allclose(got[k], want[k], rtol=1e-6)
  one = ensemble.over_members(fn, 1, shared=(1,))(w[:1], x)
  assert one.shape == (1, 4)
  np.testing.assert_array_equal(one[0], want[0])  # the lone program's own bits


def test_a_record_keeps_one_members_value_plain():
  assert ensemble.record_value([0.5]) == 0.5
  assert ensemble.record_value([0.5, 0.25]) == [0.5, 0.25]


def test_one_member_with_fewer_rows_than_a_batch_trains_on_all_of_them():
  """As a short member of an ensemble does: rows of its own, fewer than a batch, are one batch."""
  short = {k: v[:10] for k, v in _data().items()}
  apply_fn, variables, _ = _setup(short, k=1)
  loss = train.supervised_loss(losses.mse)
  start = ensemble.one(variables[0])
  own = train.train_model(apply_fn, start, loss, [short],
                          train.Recipe(epochs=2, batch_size=16, lr=0.01), rng=_rngs(1), seeds=[0])
  whole = train.train_model(apply_fn, start, loss, short,
                            train.Recipe(epochs=2, batch_size=10, lr=0.01), rng=_rngs(1),
                            seeds=[0])
  assert own.steps == whole.steps == 2
  chex.assert_trees_all_equal(jax.device_get(own.variables), jax.device_get(whole.variables))
  with pytest.raises(UserError, match="batch size 16 is larger than the 10 samples"):
    train.train_model(apply_fn, start, loss, short, train.Recipe(epochs=1, batch_size=16, lr=0.01),
                      rng=_rngs(1), seeds=[0])
