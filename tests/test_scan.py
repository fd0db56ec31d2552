"""Scanned epochs (`train.scan`) train on the batches, and compute the updates, of the per-step
loop: the same rows to the row, and the same updates bit for bit where XLA compiles the step
alike inside the scan (here: fixed row blocks over several devices, and ensemble members in
blocks); elsewhere it fuses the step differently and weights differ by an ulp."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_unlearn import losses, parallel, train
from jax_unlearn.data import ArrayLoader
from jax_unlearn.models import MLP, from_linen, get_model, init_linen
from jax_unlearn.train import ensemble, scan


def _arrays(n=45, shape=(3,), seed=0):
  r = np.random.default_rng(seed)
  return {"x": r.normal(size=(n,) + shape).astype(np.float32),
          "y": r.normal(size=(n, 1)).astype(np.float32),
          "forget": (r.random(n) < 0.3).astype(np.int64),
          "mask": (r.random(n) < 0.9).astype(np.float32)}


def _weighted_loss(pred, acts, batch, rng, frozen):
  """Reads every batch entry the gather builds, and a frozen argument."""
  del acts, rng
  per = losses.mse(pred, batch["y"]) * (1.0 + frozen["w"] * batch["forget"])
  return losses.masked_mean(per, batch["mask"]), {"forget_rows": jnp.sum(batch["forget"])}


def _single(arrays, model, dp, flag, epochs=2, resume=None):
  apply_fn = from_linen(model)
  tx = train.make_optimizer(0.01)
  state = train.create_state(init_linen(model, jax.random.key(1), arrays["x"][:2]), tx, dp)
  step = train.make_train_step(apply_fn, _weighted_loss, tx, dp)
  loader = ArrayLoader(arrays, 16, seed=3, dp=dp)
  return train.fit(state, step, loader, epochs=epochs, rng=jax.random.key(2), dp=dp,
                   frozen=parallel.resolve(dp).replicate({"w": jnp.float32(0.5)}), scan=flag,
                   resume=resume)


@pytest.mark.parametrize("model_name, devices, shards, exact", [
    ("mlp", 4, 4, True), ("allcnn", 4, 4, True), ("mlp", 1, 1, False), ("mlp", 1, None, False),
    ("mlp", 2, None, False)])
def test_one_model_scanned_equals_stepped(model_name, devices, shards, exact):
  shape = (8, 8, 1) if model_name == "allcnn" else (3,)
  model = get_model("allcnn", width=0.05) if model_name == "allcnn" else MLP(hidden=(16,))
  arrays = _arrays(shape=shape)
  dp = parallel.DataParallel.create(devices, shards)
  stepped, scanned = (jax.device_get(_single(arrays, model, dp, flag)) for flag in (False, True))
  if exact:
    chex.assert_trees_all_equal(stepped.state, scanned.state)
  else:  # 1 ulp in a few weights or Adam moments after 6 steps
    chex.assert_trees_all_close(stepped.state, scanned.state, rtol=1e-6, atol=1e-8)
  assert stepped.steps == scanned.steps == 6
  for a, b in zip(stepped.history, scanned.history):
    assert a["train_forget_rows"] == b["train_forget_rows"]  # the same rows, to the row
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)


def test_a_resumed_epoch_scans_from_its_batch():
  arrays = _arrays()
  resume = train.Resume(epoch=1, batch=2)
  dp = parallel.DataParallel.create(1, 1)
  stepped, scanned = (_single(arrays, MLP(hidden=(8,)), dp, flag, epochs=3, resume=resume)
                      for flag in (False, True))
  chex.assert_trees_all_equal(jax.device_get(stepped.state), jax.device_get(scanned.state))
  assert stepped.steps == scanned.steps == 1 + 3


def _members(arrays, flag, k=4):
  """K members over 2 devices, in fixed row blocks, each with its own frozen weight."""
  model = MLP(hidden=(8,))
  apply_fn = from_linen(model)
  tx = train.make_optimizer(0.01)
  x = (arrays if isinstance(arrays, dict) else arrays[0])["x"]
  variables = [init_linen(model, jax.random.key(i), x[:2]) for i in range(k)]
  place = parallel.Members.create(k, jax.devices()[:2])
  state = ensemble.create_ensemble_state(variables, tx, place)
  step = ensemble.make_ensemble_step(apply_fn, _weighted_loss, tx, members=place, blocks=2)
  batches = ensemble.ensemble_batches(arrays, 16, range(k), blocks=2)
  frozen = place.put({"w": jnp.linspace(0.0, 1.0, k)})
  rngs = place.put(jax.vmap(jax.random.key)(jnp.arange(k)))
  return train.fit(state, step, batches, epochs=2, rng=rngs, dp=place, frozen=frozen, scan=flag)


@pytest.mark.parametrize("per_member_rows", [False, True])
def test_members_scanned_equal_stepped(per_member_rows):
  """Shared rows, or each member its own rows (as relabelling methods give them)."""
  arrays = [_arrays(seed=s) for s in range(4)] if per_member_rows else _arrays()
  stepped, scanned = (_members(arrays, flag) for flag in (False, True))
  chex.assert_trees_all_equal(jax.device_get(stepped.state), jax.device_get(scanned.state))
  np.testing.assert_array_equal([h["train_forget_rows"] for h in stepped.history],
                                [h["train_forget_rows"] for h in scanned.history])


def test_one_compile_for_every_epoch_and_fit():
  arrays = _arrays()
  dp = parallel.DataParallel.create(4)
  model = MLP(hidden=(8,))
  tx = train.make_optimizer(0.01)

  @chex.assert_max_traces(n=1)
  def loss_fn(pred, acts, batch, rng, frozen):
    return _weighted_loss(pred, acts, batch, rng, frozen)

  step = train.make_train_step(from_linen(model), loss_fn, tx, dp)
  state = train.create_state(init_linen(model, jax.random.key(1), arrays["x"][:2]), tx, dp)
  loader = ArrayLoader(arrays, 16, seed=0, dp=dp)
  for w in (0.0, 1.0):  # a second fit with other frozen values reuses the program
    state = train.fit(state, step, loader, epochs=2, rng=jax.random.key(0), dp=dp,
                      frozen=dp.replicate({"w": jnp.float32(w)})).state


def test_what_does_not_scan(monkeypatch):
  arrays = _arrays()
  step = train.make_train_step(from_linen(MLP(hidden=(4,))), _weighted_loss,
                               train.make_optimizer(0.01)).pure
  place = parallel.resolve(None)
  assert scan.scanned_epochs(step, ArrayLoader(arrays, 16), place) is not None
  augmented = ArrayLoader(arrays, 16, augment=lambda x, rng: x)  # numpy draws: host only
  assert scan.scanned_epochs(step, augmented, place) is None
  monkeypatch.setattr(scan, "DEVICE_ROWS_BYTES", 100)  # rows beyond the device's share
  assert scan.scanned_epochs(step, ArrayLoader(arrays, 16), place) is None
