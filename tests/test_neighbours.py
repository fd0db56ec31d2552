"""Neighbour relabelling: the labels it builds, and that it moves the toy model toward retrained."""
import jax
import numpy as np
import pytest

import toy
from jax_unlearn import train
from jax_unlearn.errors import UserError
from jax_unlearn.unlearn import run_method
from jax_unlearn.unlearn import neighbours
from jax_unlearn.unlearn.neighbours import neighbour_labels


def test_forget_labels_are_the_mean_of_their_nearest_retain_labels():
  x = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [1.2], [10.4]], np.float32)
  y = np.array([[0.0], [10.0], [20.0], [100.0], [110.0], [-5.0], [-7.0]], np.float32)
  forget = np.array([0, 0, 0, 0, 0, 1, 1], bool)
  out = neighbour_labels(x, y, forget, 2, chunk=1)  # one forget row per chunk
  np.testing.assert_allclose(out[:5], y[:5])  # retain rows keep their labels
  np.testing.assert_allclose(out[5:, 0], [15.0, 105.0])  # {1, 2} and {10, 11}
  assert neighbour_labels(x, y, forget, 50)[5, 0] == pytest.approx(np.mean(y[:5]))  # k capped
  with pytest.raises(UserError, match="neighbours"):
    neighbour_labels(x, y, forget, 0)


def test_features_are_standardised_so_no_feature_dominates():
  # Feature 0 spans 1000x feature 1's range; standardised, both count.
  x = np.array([[0.0, 0.0], [1000.0, 1.0], [0.0, 1.0], [1000.0, 0.1]], np.float32)
  y = np.array([[1.0], [2.0], [3.0], [0.0]], np.float32)
  forget = np.array([0, 0, 0, 1], bool)
  # Raw distances pick row 1 (2.0); standardised (std 471 and 0.47), row 1 is at 0.9/0.47 in
  # feature 1 only, row 0 at 1000/471 in feature 0: still row 1.
  assert neighbour_labels(x, y, forget, 1)[3, 0] == 2.0
  x[3] = [500.0, 0.1]  # halfway in feature 0: standardised, feature 1 decides -> row 0
  assert neighbour_labels(x, y, forget, 1)[3, 0] == 1.0


def test_neighbour_relabelling_moves_the_forget_error_toward_the_retrained_model():
  data, original, test = toy.problem()
  orig_retain, orig_forget = toy.errors(original, test)
  ctx = toy.context(7)
  result = run_method("neighbours", ctx, original, data, {"batch_size": 32, "epochs": 3})
  retain, forget = toy.errors(result.variables, test)
  # The retrained model bridges the peak at about 0.5 (forget MSE > 0.1); the neighbours of the
  # peak's rows are its shoulders, labelled about 0.5 too.
  assert forget > 0.05 and forget > 100 * orig_forget, (forget, orig_forget)
  assert retain < 0.02, retain
  assert result.record["search_seconds"] >= 0 and result.record["steps"] == 3 * 8


def test_a_weight_below_one_blends_the_original_prediction_into_the_targets():
  data, stacked, _ = toy.problem()
  original = train.ensemble.member(stacked, 0)
  ctx = toy.context(7)
  labels = neighbour_labels(data.x, data.y, data.forget, 5)
  blended = neighbours.blend_with_prediction(ctx, train.make_predict_fn(toy.APPLY), original,
                                             data, labels, 0.25)
  pred = toy.APPLY(original, data.x, train=False)[0]
  np.testing.assert_allclose(blended[data.forget], 0.25 * labels[data.forget]
                             + 0.75 * np.asarray(pred)[data.forget], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(blended[~data.forget], data.y[~data.forget])
  with pytest.raises(UserError, match="neighbour_weight"):
    run_method("neighbours", ctx, stacked, data, {"neighbour_weight": 0.0})


def test_each_ensemble_member_blends_its_own_originals_predictions():
  import chex
  import jax.numpy as jnp
  data, original, _ = toy.problem()
  other = jax.tree_util.tree_map(lambda a: a * 0.9, original)
  keys = [7, 8]
  settings = {"epochs": 1, "batch_size": 32, "neighbour_weight": 0.5}
  both = jax.tree_util.tree_map(lambda *a: jnp.concatenate(a), original, other)
  out = run_method("neighbours", toy.context(keys), both, data, settings)
  for k, (key, start) in enumerate(zip(keys, [original, other])):
    single = run_method("neighbours", toy.context(key), start, data, settings)
    chex.assert_trees_all_close(jax.device_get(train.ensemble.member(out.variables, k)),
                                jax.device_get(train.ensemble.member(single.variables, 0)),
                                rtol=1e-4, atol=1e-5)
