"""A multilayer perceptron for tabular regression (and the smallest model for tests)."""
from typing import Sequence

import jax.numpy as jnp
from flax import linen as nn


class MLP(nn.Module):
  """Dense -> ReLU layers; flattens any input. acts: "layer1".."layerN" [B, F]."""
  hidden: Sequence[int] = (64, 64)
  out_dim: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool):
    del train
    x = x.reshape(x.shape[0], -1).astype(self.dtype)
    acts = {}
    for i, h in enumerate(self.hidden, start=1):
      x = acts[f"layer{i}"] = nn.relu(nn.Dense(h, dtype=self.dtype)(x))
    return nn.Dense(self.out_dim, dtype=self.dtype)(x).astype(jnp.float32), acts
