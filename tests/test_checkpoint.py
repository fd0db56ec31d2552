import chex
import jax
import numpy as np
import pytest

from jax_unlearn import losses, parallel, train
from jax_unlearn.checkpoint import Checkpointer
from jax_unlearn.errors import UserError
from jax_unlearn.models import MLP, from_linen, init_linen


def _model(hidden=(8,)):
  model = MLP(hidden=hidden)
  return from_linen(model), init_linen(model, jax.random.key(0), np.zeros((2, 3), np.float32))


def _train(tmp_path, linear_data, epochs, **kw):
  x, y = linear_data
  apply_fn, variables = _model()
  return train.train_model(apply_fn, variables, train.supervised_loss(losses.mse),
                           {"x": x, "y": y}, epochs=epochs, batch_size=32, lr=0.01,
                           rng=jax.random.key(1), checkpoint_dir=str(tmp_path / "ck"), **kw)


def test_round_trip_into_a_sharding(tmp_path):
  mesh = parallel.make_mesh(4)
  _, variables = _model()
  tx = train.make_optimizer(0.01)
  state = train.create_state(variables, tx, mesh)
  with Checkpointer(str(tmp_path / "a")) as ck:
    ck.save(3, state, {"epoch": 3})
    restored, meta = ck.restore(state)
    assert ck.latest_step() == 3 and meta["epoch"] == 3
  chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))
  leaf = jax.tree_util.tree_leaves(restored.params)[0]
  assert leaf.sharding == parallel.replicated(mesh)


def test_restore_into_another_architecture_fails_clearly(tmp_path):
  _, small = _model((8,))
  _, big = _model((16,))
  with Checkpointer(str(tmp_path / "a")) as ck:
    ck.save(1, small)
    with pytest.raises(UserError, match="another architecture"):
      ck.restore(big)


def test_keep_best_by_metric(tmp_path):
  _, variables = _model()
  with Checkpointer(str(tmp_path / "b"), max_to_keep=1, keep_best=True) as ck:
    for step, metric in [(1, 3.0), (2, 1.0), (3, 2.0)]:
      ck.save(step, variables, {"metric": metric})
    assert ck.best_step() == 2


def test_resume_matches_uninterrupted_run_and_finished_run_is_reused(tmp_path, linear_data):
  full = _train(tmp_path / "full", linear_data, epochs=4)
  _train(tmp_path / "part", linear_data, epochs=2)  # "killed" after 2 epochs ...
  resumed = _train(tmp_path / "part", linear_data, epochs=4)  # ... and run again
  assert resumed.resumed_from_epoch == 2 and not resumed.reused
  chex.assert_trees_all_close(jax.device_get(full.variables), jax.device_get(resumed.variables),
                              rtol=1e-6)
  assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
  again = _train(tmp_path / "part", linear_data, epochs=4)
  assert again.reused and again.steps == full.steps
  chex.assert_trees_all_close(jax.device_get(again.variables), jax.device_get(full.variables))


def test_resume_keeps_best_validation_and_plateau(tmp_path, linear_data):
  x, _ = linear_data
  vals = iter([3.0, 1.0, 2.0, 2.0, 2.0, 2.0])
  first = _train(tmp_path, linear_data, epochs=2, validate=lambda v: next(vals),
                 plateau=train.Plateau(patience=1))
  resumed = _train(tmp_path, linear_data, epochs=4, validate=lambda v: next(vals),
                   plateau=train.Plateau(patience=1))
  assert [h["best_val"] for h in resumed.history] == [3.0, 1.0, 1.0, 1.0]
  assert resumed.history[-1]["lr"] == pytest.approx(0.001)
  chex.assert_trees_all_close(jax.device_get(resumed.variables), jax.device_get(first.variables))


def test_batch_larger_than_data_is_a_user_error(tmp_path, linear_data):
  x, y = linear_data
  apply_fn, variables = _model()
  with pytest.raises(UserError, match="larger than"):
    train.train_model(apply_fn, variables, train.supervised_loss(losses.mse),
                      {"x": x[:10], "y": y[:10]}, epochs=1, batch_size=32, lr=0.01,
                      rng=jax.random.key(0))


def test_ctrl_c_saves_mid_epoch_and_resume_matches(tmp_path, linear_data):
  import os
  import signal

  def interrupt_after_two_batches(it, epoch, epochs, total):
    for i, batch in enumerate(it):
      yield batch
      if epoch == 1 and i == 0:  # the flag is seen after the next step
        os.kill(os.getpid(), signal.SIGINT)

  full = _train(tmp_path / "full", linear_data, epochs=3)
  with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
    _train(tmp_path / "cut", linear_data, epochs=3, progress=interrupt_after_two_batches)
  meta = Checkpointer(str(tmp_path / "cut" / "ck")).read_meta()
  assert (meta["epoch"], meta["batch"]) == (1, 2)
  resumed = _train(tmp_path / "cut", linear_data, epochs=3)
  assert resumed.steps == full.steps == 9
  chex.assert_trees_all_close(jax.device_get(full.variables), jax.device_get(resumed.variables),
                              rtol=1e-6)
