"""BatchNorm whose padding mask is one weight per row, as our batches have.

`flax.linen.BatchNorm(mask=...)` takes an element mask broadcastable to the input and averages
with `mean(where=mask)`: every statistic then pays a select over the whole activation and a
count that reduces the broadcast mask element by element (on CPU these were about a tenth of
a training step of AllCNN). With a row mask `w` [B], the statistics are weighted sums
`sum(x * w) / (sum(w) * H * W)`, which fuse into the reductions XLA already does.

Same variables ("params": scale, bias; "batch_stats": mean, var), formulas (E[x^2] - E[x]^2
clipped at 0, float32 statistics) and running-average update as flax's BatchNorm, so it is a
drop-in replacement for models and checkpoints.
"""
import jax.numpy as jnp
from flax import linen as nn
from jax import lax


class BatchNorm(nn.Module):
  """Batch normalisation over every axis but the last, statistics over rows with mask > 0.

  Attributes:
    use_running_average: normalise with the running statistics (evaluation mode).
    momentum: decay of the running averages (flax convention: 0.9 keeps 90 %).
    epsilon: added to the variance.
    dtype: dtype of the output (statistics are float32).
  """
  use_running_average: bool | None = None
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: jnp.dtype | None = None

  @nn.compact
  def __call__(self, x, use_running_average: bool | None = None, *, mask=None):
    """x [B, ..., C]; mask [B] (or broadcastable [B, 1, ..., 1]), 0 on padded rows."""
    use_running_average = nn.merge_param("use_running_average", self.use_running_average,
                                         use_running_average)
    features = x.shape[-1]
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))
    axes = tuple(range(x.ndim - 1))
    if use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      xf = x.astype(jnp.float32)
      if mask is None:
        mean, mean2 = jnp.mean(xf, axes), jnp.mean(jnp.square(xf), axes)
      else:
        w = jnp.reshape(mask, (x.shape[0],) + (1,) * (x.ndim - 1)).astype(jnp.float32)
        count = jnp.sum(w) * (xf.size // (x.shape[0] * features))  # rows * positions per row
        # A reciprocal, not a division: XLA turns `array / scalar` into a multiplication by the
        # reciprocal in some programs and not in others, which would make the result depend on
        # what surrounds the layer (see train.make_train_step's fixed shards).
        inv_count = 1.0 / jnp.maximum(count, 1.0)
        xw = xf * w
        mean, mean2 = jnp.sum(xw, axes) * inv_count, jnp.sum(xw * xf, axes) * inv_count
      var = jnp.maximum(0.0, mean2 - jnp.square(mean))
      if not self.is_initializing():
        ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
        ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    y = (x - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias
    return y.astype(self.dtype or jnp.promote_types(x.dtype, jnp.float32))
