"""The sentence-pair similarity regressor of the paper's STS-B experiment."""
import jax.numpy as jnp
from flax import linen as nn


class LSTMPairRegressor(nn.Module):
  """One shared LSTM encodes both sentences; a ReLU MLP regresses from the joined final states.

  Input x [B, 2, T, E]: two sentences of T word vectors, pre-padded with zeros so the final
  state is the one after the last real word. Returns (pred [B, out_dim], acts) with acts
  "sentence_a", "sentence_b" (final hidden states [B, hidden]) and "dense1".."dense3".
  """
  hidden: int = 64
  dense: tuple[int, ...] = (64, 32, 16)
  out_dim: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    del train, mask  # no dropout or batch statistics
    b, _, t, e = x.shape
    # Both sentences go through the same LSTM as one batch of 2B sequences.
    rnn = nn.RNN(nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype), return_carry=True)
    (_, h), _ = rnn(x.reshape(b * 2, t, e).astype(self.dtype))  # h [2B, hidden]
    h = h.reshape(b, 2, self.hidden).astype(self.dtype)  # the carry stays float32
    acts = {"sentence_a": h[:, 0], "sentence_b": h[:, 1]}
    x = h.reshape(b, 2 * self.hidden)  # [B, 2 * hidden]
    for i, width in enumerate(self.dense, start=1):
      x = acts[f"dense{i}"] = nn.relu(nn.Dense(width, dtype=self.dtype)(x))
    pred = nn.Dense(self.out_dim, dtype=self.dtype)(x)
    return pred.astype(jnp.float32), acts
