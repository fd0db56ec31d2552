import chex
import jax.numpy as jnp
import numpy as np
import pytest

from jax_unlearn import losses
from jax_unlearn.errors import UserError


class LossesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_computed_values(self):
    pred = jnp.array([[1.0], [2.0], [4.0]])
    y = jnp.array([[2.0], [2.0], [1.0]])
    np.testing.assert_allclose(self.variant(losses.l1)(pred, y), [1.0, 0.0, 3.0])
    np.testing.assert_allclose(self.variant(losses.mse)(pred, y), [1.0, 0.0, 9.0])
    np.testing.assert_allclose(self.variant(losses.huber)(pred, y), [0.5, 0.0, 2.5])
    # The batch MSE by hand: (1 + 0 + 9) / 3, and masked to the first two rows: (1 + 0) / 2.
    per_example = self.variant(losses.mse)(pred, y)
    np.testing.assert_allclose(losses.masked_mean(per_example, jnp.ones(3)), 10.0 / 3.0, rtol=1e-6)
    np.testing.assert_allclose(losses.masked_mean(per_example, jnp.array([1.0, 1.0, 0.0])), 0.5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_quantile_loss(self):
    y = jnp.array([[1.0, 2.0]])  # [B=1, H=2]
    pred = jnp.array([[[0.0, 1.0, 2.0], [2.0, 2.0, 2.0]]])  # [1, 2, Q=3]
    # horizon 1: e = 1, 0, -1 -> 0.1*1, 0, 0.1*1 ; horizon 2: e = 0 -> 0.
    expected = (0.1 + 0.0 + (0.9 - 1.0) * -1.0) / 6.0
    got = self.variant(losses.quantile)(pred, y)
    np.testing.assert_allclose(got, [expected], rtol=1e-6)

  def test_masked_mean_ignores_padding_and_empty_is_zero(self):
    v = jnp.array([1.0, 3.0, 100.0])
    np.testing.assert_allclose(losses.masked_mean(v, jnp.array([1, 1, 0])), 2.0)
    assert float(losses.masked_mean(v, jnp.zeros(3))) == 0.0

  def test_label_without_output_axis_is_accepted(self):
    np.testing.assert_allclose(losses.l1(jnp.ones((2, 1)), jnp.zeros(2)), [1.0, 1.0])

  def test_shape_mismatch_and_unknown_name(self):
    with pytest.raises(ValueError, match="does not match"):
      losses.l1(jnp.ones((2, 3)), jnp.ones((2, 2)))
    with pytest.raises(UserError, match="did you mean 'huber'"):
      losses.get_loss("hubber")
