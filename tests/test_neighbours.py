"""Neighbour relabelling: the labels it builds, and that it moves the toy model toward retrained."""
import jax
import numpy as np
import pytest

import toy
from jax_unlearn import losses
from jax_unlearn.errors import UserError
from jax_unlearn.unlearn import Context, run_method
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
  ctx = Context(toy.APPLY, toy.init, losses.mse, jax.random.key(7))
  result = run_method("neighbours", ctx, original, data, {"batch_size": 32, "epochs": 3})
  retain, forget = toy.errors(result.variables, test)
  # The retrained model bridges the peak at about 0.5 (forget MSE > 0.1); the neighbours of the
  # peak's rows are its shoulders, labelled about 0.5 too.
  assert forget > 0.05 and forget > 100 * orig_forget, (forget, orig_forget)
  assert retain < 0.02, retain
  assert result.record["search_seconds"] >= 0 and result.record["steps"] == 3 * 8
