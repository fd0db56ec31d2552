"""EU-k and CF-k: which layers are the last k, and that only they change (on the toy problem of
`tests/toy.py`)."""
import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_unlearn import train
from jax_unlearn.bench.cases import MODELS
from jax_unlearn.errors import UserError
from jax_unlearn.models import from_linen, get_model, init_linen
from jax_unlearn.unlearn import last_layers

import toy


@pytest.fixture(scope="module")
def problem():
  return toy.problem()


def test_layers_are_ordered_by_their_first_use_in_the_forward_pass():
  spec = MODELS["lstm"]
  model = get_model("lstm", **spec.kwargs)
  x = np.zeros((2,) + spec.sample_shape, np.float32)
  params = init_linen(model, jax.random.key(0), x)["params"]
  order = last_layers.layer_order(from_linen(model), params, x, {})
  assert sorted(params) == sorted(order)
  assert order[0] == "OptimizedLSTMCell_0" and order[-1] == "Dense_3"  # by name it is last


def test_the_last_k_layers_count_kernels_and_keep_the_norms_between():
  params = {n: ({"kernel": jnp.ones(2)} if n[0] in "CD" else {"scale": jnp.ones(2)})
            for n in ("Conv_0", "BatchNorm_0", "Conv_1", "BatchNorm_1", "Dense_0")}
  order = list(params)
  assert last_layers.last_layers(order, params, 1) == ["Dense_0"]
  assert last_layers.last_layers(order, params, 2) == ["Conv_1", "BatchNorm_1", "Dense_0"]
  for k in (4, 0):  # k = 0 would slice from the first kernel on: every layer
    with pytest.raises(UserError, match="3 layers with kernels"):
      last_layers.last_layers(order, params, k)


@pytest.mark.parametrize("method", [last_layers.eu_k, last_layers.cf_k])
def test_only_the_last_layers_change_and_the_retain_rows_are_kept(problem, method):
  data, original, test = problem
  result = method(toy.context(), original, data, {"k": 1, "epochs": 20, "lr": 0.01})
  params, before = result.variables["params"], original["params"]
  assert result.record["layers"] == ["Dense_2"]
  for frozen in ("Dense_0", "Dense_1"):
    chex.assert_trees_all_equal(jax.device_get(params[frozen]), jax.device_get(before[frozen]))
  assert not np.allclose(params["Dense_2"]["kernel"], before["Dense_2"]["kernel"])
  retain, _ = toy.errors(result.variables, test)
  assert retain < 0.05  # a tenth of the labels' variance: the head fits the retain rows


def test_eu_k_starts_its_layers_from_fresh_weights(problem):
  """With no training step, EU-k's last layer is the fresh init's, the others the original's."""
  data, original, _ = problem
  result = last_layers.eu_k(toy.context(), original, data, {"k": 1, "lr": 1e-12, "epochs": 1})
  fresh = toy.init(jax.random.fold_in(jax.random.key(7), 1))  # PURPOSE_INIT of the run's key
  np.testing.assert_allclose(result.variables["params"]["Dense_2"]["kernel"][0],
                             fresh["params"]["Dense_2"]["kernel"], atol=1e-8)
  chex.assert_trees_all_equal(jax.device_get(result.variables["params"]["Dense_0"]),
                              jax.device_get(original["params"]["Dense_0"]))


def test_ensemble_members_equal_single_runs(problem):
  data, original, _ = problem
  config = {"k": 2, "epochs": 1}
  both = jax.tree_util.tree_map(lambda a: jnp.concatenate([a, a]), original)
  stacked = last_layers.eu_k(toy.context((0, 1)), both, data, config)
  for k in (0, 1):
    single = last_layers.eu_k(toy.context(k), original, data, config)
    chex.assert_trees_all_close(train.ensemble.member(stacked.variables, k),
                                train.ensemble.member(single.variables, 0), rtol=1e-4, atol=1e-6)
