"""SISA (exact unlearning by shards) on the toy problem of `tests/toy.py`: its assignment, its
exactness (unlearned = the sharded training on the retain rows alone), one retrained shard for
a group request, removed shards, aggregation and resumption."""
import dataclasses

import chex
import jax
import numpy as np
import pytest

from jax_unlearn import train
from jax_unlearn.errors import UserError
from jax_unlearn.unlearn import sisa

import toy

SETTINGS = {"epochs": 2, "batch_size": 16, "lr": 3e-3}


@pytest.fixture(scope="module")
def problem():
  """The toy problem with 8 groups (row i in group i % 8), forgetting group 3."""
  data, original, test = toy.problem()
  group = np.arange(len(data.x)) % 8
  grouped = dataclasses.replace(data, forget=group == 3, group=group)
  return grouped, original, test


def _get(tree):
  return jax.device_get(tree)


def _from_scratch(ctx, data, s):
  """The sharded model trained on the retain rows alone, with the same assignment and keys."""
  s = sisa.settings(s)
  shard, slice_ = sisa.assign(len(data.x), s["shards"], s["slices"], s["assignment_seed"],
                              data.group if s["shard_by"] == "group" else None)
  plan = sisa.Plan(ctx, data, s, shard, slice_)
  return plan.served(plan.fit_slices(~data.forget, "scratch")[0][-1])


def test_assignment_is_seeded_balanced_and_keeps_groups_whole():
  shard, slice_ = sisa.assign(103, 4, 3, seed=0)
  assert sorted(np.bincount(shard)) == [25, 26, 26, 26]
  for t in range(4):
    assert np.ptp(np.bincount(slice_[shard == t])) <= 1
  again, _ = sisa.assign(103, 4, 3, seed=0)
  other, _ = sisa.assign(103, 4, 3, seed=1)
  np.testing.assert_array_equal(shard, again)
  assert np.any(shard != other)
  group = np.repeat(np.arange(6), [30, 20, 20, 10, 10, 10])
  by_group, _ = sisa.assign(len(group), 3, 1, seed=0, group=group)
  for g in range(6):
    assert len(set(by_group[group == g])) == 1
  assert sorted(np.bincount(by_group)) == [30, 30, 40]
  with pytest.raises(UserError, match="6 groups cannot fill 7 shards"):
    sisa.assign(len(group), 7, 1, seed=0, group=group)


@pytest.mark.parametrize("shard_by,members", [("random", 1), ("group", 2)])
def test_unlearned_is_the_sharded_training_on_the_retain_rows(problem, shard_by, members):
  """The guarantee: the same models as SISA trained without the forget rows (same assignment,
  keys and orders), here with 2 slices."""
  data, original, _ = problem
  ctx = toy.context((7, 8)[:members])
  original = jax.tree_util.tree_map(lambda a: np.concatenate([a] * members), original)
  s = {**SETTINGS, "shards": 4, "slices": 2, "shard_by": shard_by}
  result = sisa.sisa(ctx, original, data, s)
  chex.assert_trees_all_close(_get(result.variables), _get(_from_scratch(ctx, data, s)),
                              rtol=1e-5, atol=1e-6)
  touched = result.record["touched_shards"]
  assert touched == ([0, 1, 2, 3] if shard_by == "random" else [touched[0]])


def test_forget_rows_in_a_late_slice_retrain_from_the_slice_before(problem):
  """Forget rows only in shard 1's second slice: its first slice is kept, the second retrains,
  and the result is still the sharded training on the retain rows."""
  data, original, _ = problem
  s = {**SETTINGS, "shards": 4, "slices": 2}
  shard, slice_ = sisa.assign(len(data.x), 4, 2, seed=0)
  late = dataclasses.replace(data, forget=(shard == 1) & (slice_ == 1) & (data.y[:, 0] > 0))
  ctx = toy.context()
  result = sisa.sisa(ctx, original, late, s)
  assert result.record["touched_shards"] == [1] and result.record["first_forget_slices"] == [1]
  chex.assert_trees_all_close(_get(result.variables), _get(_from_scratch(ctx, late, s)),
                              rtol=1e-5, atol=1e-6)


def test_a_group_request_retrains_only_its_shard(problem):
  data, original, test = problem
  result = sisa.sisa(toy.context(), original, data, {**SETTINGS, "shards": 4,
                                                     "shard_by": "group"})
  (touched,) = result.record["touched_shards"]
  key = sisa.KEYS["mean"]
  after, before = (_get(train.ensemble.member(v, 0)["params"][key])
                   for v in (result.variables, result.auxiliary["sisa_original"]))
  for t in range(4):
    same = jax.tree_util.tree_map(lambda a, b, t=t: np.array_equal(a[t], b[t]), after, before)
    assert all(jax.tree_util.tree_leaves(same)) == (t != touched)
  # Two groups per shard: the touched shard retrains on its other group's 32 rows.
  assert result.record["retrained_rows"] == 32
  assert result.record["steps"] == SETTINGS["epochs"] * 2
  apply = sisa.serving(toy.APPLY)
  assert np.isfinite(toy.errors(result.variables, test, apply)).all()


def test_a_shard_left_without_rows_is_removed_from_the_aggregate(problem):
  data, original, test = problem
  result = sisa.sisa(toy.context(), original, data, {**SETTINGS, "shards": 8,
                                                     "shard_by": "group"})
  variables = train.ensemble.member(result.variables, 0)
  key = sisa.KEYS["mean"]
  (removed,) = result.record["touched_shards"]
  kernel = np.asarray(variables["params"][key]["Dense_0"]["kernel"])
  assert np.isnan(kernel[removed]).all() and np.isfinite(np.delete(kernel, removed, 0)).all()
  x = test[0][:5]
  pred = np.asarray(sisa.serving(toy.APPLY)(variables, x, train=False)[0])

  def shard(t):
    return {c: train.ensemble.member(tree[key], t) for c, tree in variables.items()}

  shards = [toy.APPLY(shard(t), x, train=False)[0] for t in range(8) if t != removed]
  np.testing.assert_allclose(pred, np.mean(shards, axis=0), rtol=1e-5, atol=1e-6)


def test_mean_and_median_aggregates():
  params = {"w": np.arange(3, dtype=np.float32)[:, None] * np.ones((3, 2), np.float32)}
  params["w"][2] = 10.0  # one shard far off: the median ignores it, the mean does not
  apply = sisa.serving(lambda v, x, *, train, rngs=None: (x @ v["params"]["w"][:, None], {}))
  x = np.ones((1, 2), np.float32)
  for rule, expected in (("mean", (0 + 2 + 20) / 3), ("median", 2.0)):
    pred = apply({"params": {sisa.KEYS[rule]: params}}, x, train=False)[0]
    assert float(pred[0, 0]) == pytest.approx(expected)
  plain = apply({"params": {"w": params["w"][0]}}, x, train=False)[0]  # one model passes through
  assert float(plain[0, 0]) == 0.0


def test_stages_are_reused_from_their_checkpoints(problem, tmp_path):
  data, original, _ = problem
  s = {**SETTINGS, "shards": 4, "shard_by": "group"}
  ctx = dataclasses.replace(toy.context(), checkpoint_dir=str(tmp_path))
  first = sisa.sisa(ctx, original, data, s)
  again = sisa.sisa(ctx, original, data, s)
  assert not first.record["reused"] and again.record["reused"]
  chex.assert_trees_all_equal(_get(first.variables), _get(again.variables))


@pytest.mark.parametrize("change,message", [
    ({"shards": 0}, "shards must be a positive integer"),
    ({"shard_by": "person"}, "shard_by must be one of"),
    ({"aggregate": "vote"}, "aggregate must be one of"),
])
def test_bad_settings_are_refused(change, message):
  with pytest.raises(UserError, match=message):
    sisa.settings(change)


def test_group_sharding_needs_group_ids(problem):
  data, original, _ = problem
  plain = dataclasses.replace(data, group=None)
  with pytest.raises(UserError, match="needs the training rows' group ids"):
    sisa.sisa(toy.context(), original, plain, {**SETTINGS, "shard_by": "group"})


def test_retrained_members_spread_over_fewer_devices_are_placed_back():
  """9 of 12 members retrain (3 seeds x 3 touched shards): the two ensembles sit on 3 and 4
  devices, and the retrained ones replace theirs."""
  devices = jax.devices()
  if len(devices) < 4:
    pytest.skip("needs 4 (simulated) devices")
  spread = lambda a, n: jax.device_put(a, jax.sharding.NamedSharding(  # noqa: E731
      jax.sharding.Mesh(np.array(devices[:n]), ("m",)), jax.sharding.PartitionSpec("m")))
  stacked = {"w": spread(np.zeros((12, 2), np.float32), 4)}
  chosen = [0, 1, 2, 4, 5, 6, 8, 9, 10]
  part = {"w": spread(np.ones((9, 2), np.float32), 3)}
  placed = sisa._place(stacked, part, chosen)
  expected = np.zeros((12, 2), np.float32)
  expected[chosen] = 1
  np.testing.assert_array_equal(np.asarray(placed["w"]), expected)
