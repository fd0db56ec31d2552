"""AllCNN (Springenberg et al.), as used by the Deep Regression Unlearning paper's image experiments."""
import jax.numpy as jnp
from flax import linen as nn

from jax_unlearn import ops
from jax_unlearn.models.adapters import row_mask


class ConvBlock(nn.Module):
  """Conv -> BatchNorm -> ReLU."""
  features: int
  kernel: int = 3
  stride: int = 1
  dtype: jnp.dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    x = ops.Conv(self.features, (self.kernel, self.kernel), strides=self.stride,
                padding=(self.kernel - 1) // 2, use_bias=False, dtype=self.dtype,
                kernels=self.kernels)(x)
    x = ops.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(
        x, mask=row_mask(mask, x))
    return nn.relu(x)


class AllCNN(nn.Module):
  """8 conv blocks (96/192 filters times `width`), global average pool, linear head.

  Returns (pred [B, out_dim], acts) with acts "block1".."block8" (NHWC) and "features" [B, F].
  `mask` [B] keeps padded rows out of the BatchNorm statistics. `kernels`: the convolution
  kernels, one of `ops.KERNELS` (part of the model, so each setting is its own jitted function).
  """
  out_dim: int = 1
  width: float = 1.0
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    f1, f2 = max(1, int(96 * self.width)), max(1, int(192 * self.width))
    plan = [(f1, 3, 1), (f1, 3, 1), (f2, 3, 2), (f2, 3, 1), (f2, 3, 1), (f2, 3, 2), (f2, 3, 1),
            (f2, 1, 1)]
    acts = {}
    x = x.astype(self.dtype)
    for i, (features, kernel, stride) in enumerate(plan, start=1):
      x = acts[f"block{i}"] = ConvBlock(features, kernel, stride, self.dtype,
                                        kernels=self.kernels)(x, train=train, mask=mask)
      if i in (3, 6) and self.dropout:
        x = nn.Dropout(self.dropout, deterministic=not train)(x)
    x = acts["features"] = jnp.mean(x, axis=(1, 2))  # [B, f2]
    pred = nn.Dense(self.out_dim, dtype=self.dtype)(x)
    return pred.astype(jnp.float32), acts
