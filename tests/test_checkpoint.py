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


def _train(tmp_path, linear_data, epochs, plateau_patience=None, lr=0.01, identity=(),
           scan=True, progress=None, **kw):
  x, y = linear_data
  apply_fn, variables = _model()
  recipe = train.Recipe(epochs=epochs, batch_size=32, lr=lr,
                        plateau_factor=None if plateau_patience is None else 0.1,
                        plateau_patience=plateau_patience or 10, scan=scan)
  return train.train_model(apply_fn, train.ensemble.one(variables),
                           train.supervised_loss(losses.mse), {"x": x, "y": y}, recipe,
                           rng=jax.random.key(1)[None], seeds=[0],
                           stage=train.Stage(directory=str(tmp_path / "ck"),
                                             identity=dict(identity), progress=progress), **kw)


def test_round_trip_into_a_sharding(tmp_path):
  dp = parallel.DataParallel.create(4)
  _, variables = _model()
  tx = train.make_optimizer(0.01)
  state = train.create_state(variables, tx, dp)
  with Checkpointer(str(tmp_path / "a")) as ck:
    ck.save(3, state, {"epoch": 3})
    restored, meta = ck.restore(state)
    assert ck.latest_step() == 3 and meta["epoch"] == 3
  chex.assert_trees_all_equal(jax.device_get(restored), jax.device_get(state))
  leaf = jax.tree_util.tree_leaves(restored.params)[0]
  assert leaf.sharding == dp.replicated


def test_restore_into_another_architecture_fails_clearly(tmp_path):
  _, small = _model((8,))
  _, big = _model((16,))
  with Checkpointer(str(tmp_path / "a")) as ck:
    ck.save(1, small)
    with pytest.raises(UserError, match="another architecture"):
      ck.restore(big)


def test_delete_all_discards_every_step(tmp_path):
  _, variables = _model()
  with Checkpointer(str(tmp_path / "b"), max_to_keep=2) as ck:
    for step in (1, 2, 3):
      ck.save(step, variables, {"epoch": step})
    assert ck.all_steps() == [2, 3]
    ck.delete_all()
    assert ck.latest_step() is None and ck.all_steps() == []


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
                 plateau_patience=1)
  resumed = _train(tmp_path, linear_data, epochs=4, validate=lambda v: next(vals),
                   plateau_patience=1)
  assert [h["best_val"] for h in resumed.history] == [3.0, 1.0, 1.0, 1.0]
  assert resumed.history[-1]["lr"] == pytest.approx(0.001)
  chex.assert_trees_all_close(jax.device_get(resumed.variables), jax.device_get(first.variables))


def test_batch_larger_than_data_is_a_user_error(tmp_path, linear_data):
  x, y = linear_data
  apply_fn, variables = _model()
  with pytest.raises(UserError, match="larger than"):
    train.train_model(apply_fn, train.ensemble.one(variables), train.supervised_loss(losses.mse),
                      {"x": x[:10], "y": y[:10]}, train.Recipe(epochs=1, batch_size=32, lr=0.01),
                      rng=jax.random.key(0)[None], seeds=[0])


@pytest.mark.parametrize("scan, lands_at", [(False, (1, 2)), (True, (2, 0))])
def test_ctrl_c_saves_a_checkpoint_and_resume_matches(tmp_path, linear_data, scan, lands_at):
  """Fed batch by batch, a Ctrl-C lands mid-epoch, after the step in flight; scanned, after the
  epoch in flight. Resuming either way (the other way too) gives the uninterrupted model."""
  import os
  import signal

  def interrupt_in_epoch_two(it, epoch, epochs, total):
    for i, batch in enumerate(it):
      yield batch
      if epoch == 1 and i == 0:  # the flag is seen after the next step (or scanned epoch)
        os.kill(os.getpid(), signal.SIGINT)

  full = _train(tmp_path / "full", linear_data, epochs=3)
  with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
    _train(tmp_path / "cut", linear_data, epochs=3, progress=interrupt_in_epoch_two, scan=scan)
  meta = Checkpointer(str(tmp_path / "cut" / "ck")).read_meta()
  assert (meta["epoch"], meta["batch"]) == lands_at
  resumed = _train(tmp_path / "cut", linear_data, epochs=3, scan=not scan)
  assert resumed.steps == full.steps == 9
  chex.assert_trees_all_close(jax.device_get(full.variables), jax.device_get(resumed.variables),
                              rtol=1e-6)


def test_a_changed_setting_recomputes_and_the_log_says_why(tmp_path, linear_data, caplog):
  first = _train(tmp_path, linear_data, epochs=2)
  again = _train(tmp_path, linear_data, epochs=2)
  assert again.reused and again.fingerprint == first.fingerprint
  with caplog.at_level("INFO", logger="jax_unlearn"):
    changed = _train(tmp_path, linear_data, epochs=2, lr=0.02)
  assert not changed.reused and changed.resumed_from_epoch == 0
  assert changed.fingerprint != first.fingerprint
  assert "recipe.lr: 0.01 -> 0.02" in caplog.text
  # What the loop cannot see (a loss setting) enters through the stage's identity.
  with caplog.at_level("INFO", logger="jax_unlearn"):
    tagged = _train(tmp_path, linear_data, epochs=2, lr=0.02, identity={"beta": 1})
  assert not tagged.reused and "beta: (unset) -> 1" in caplog.text


def test_fewer_epochs_than_a_finished_run_recompute(tmp_path, linear_data):
  _train(tmp_path, linear_data, epochs=3)
  shorter = _train(tmp_path, linear_data, epochs=2)
  assert not shorter.reused and shorter.steps == 6
  fresh = _train(tmp_path / "fresh", linear_data, epochs=2)
  chex.assert_trees_all_close(jax.device_get(fresh.variables), jax.device_get(shorter.variables))


def test_another_start_recomputes(tmp_path, linear_data):
  """A stage that starts from another model (a parent stage that was recomputed) reruns."""
  x, y = linear_data
  apply_fn, variables = _model()
  recipe = train.Recipe(epochs=1, batch_size=32, lr=0.01)

  def run(start):
    return train.train_model(apply_fn, train.ensemble.one(start),
                             train.supervised_loss(losses.mse), {"x": x, "y": y},
                             recipe, rng=jax.random.key(1)[None], seeds=[0],
                             stage=train.Stage(directory=str(tmp_path / "ck")))

  run(variables)
  assert run(variables).reused
  moved = jax.tree_util.tree_map(lambda a: a + 1.0, variables)
  assert not run(moved).reused
