"""The sentence-pair similarity regressor of the paper's STS-B experiment."""
import jax.numpy as jnp
from flax import linen as nn

from jax_unlearn.errors import unknown_name

# What the model exposes as activations (see LSTMPairRegressor).
ACTIVATIONS = ("final", "sequence", "published")


class LSTMPairRegressor(nn.Module):
  """One shared LSTM encodes both sentences; a ReLU MLP regresses from the joined final states.

  Input x [B, 2, T, E]: two sentences of T word vectors, pre-padded with zeros so the final
  state is the one after the last real word. Returns (pred [B, out_dim], acts).

  `dropout`: rate of the dropout on the LSTM's output sequences (train mode only, from the
  "dropout" rng); the head reads the last step of the dropped sequence. Default 0.0 (ours, which
  existing results were made with); the published STS-B model uses 0.3.
  `activations`: what acts holds. Default "final" (ours): "sentence_a", "sentence_b" are the
  final hidden states [B, hidden] and "dense1".."dense3" the hidden layers after their ReLU.
  "sequence": "sentence_a", "sentence_b" are the whole output sequences [B, T, hidden], the
  published model's first two activations (attention maps over time are not degenerate);
  dense1..3 as with "final". "published": the published model's four activations, the two
  sequences and "dense1", "dense2" before their ReLU (its linear1 and linear2 outputs).
  The predictions are the same under every `activations` setting.
  """
  hidden: int = 64
  dense: tuple[int, ...] = (64, 32, 16)
  out_dim: int = 1
  dtype: jnp.dtype = jnp.float32
  dropout: float = 0.0
  activations: str = "final"

  def __post_init__(self):
    if self.activations not in ACTIVATIONS:
      raise unknown_name("LSTM activations", self.activations, ACTIVATIONS)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    del mask  # no batch statistics
    b, _, t, e = x.shape
    # Both sentences go through the same LSTM as one batch of 2B sequences.
    rnn = nn.RNN(nn.OptimizedLSTMCell(self.hidden, dtype=self.dtype), return_carry=True)
    (_, h), ys = rnn(x.reshape(b * 2, t, e).astype(self.dtype))  # h [2B, H], ys [2B, T, H]
    if self.dropout == 0.0 and self.activations == "final":
      h = h.reshape(b, 2, self.hidden).astype(self.dtype)  # the carry stays float32
      acts = {"sentence_a": h[:, 0], "sentence_b": h[:, 1]}
    else:
      # As published: dropout on the whole output sequences, the head on their last step.
      ys = nn.Dropout(self.dropout, deterministic=not train)(ys.astype(self.dtype))
      ys = ys.reshape(b, 2, t, self.hidden)  # [B, 2, T, H]
      h = ys[:, :, -1]  # [B, 2, H]
      seq = self.activations != "final"
      acts = {"sentence_a": ys[:, 0] if seq else h[:, 0],
              "sentence_b": ys[:, 1] if seq else h[:, 1]}
    x = h.reshape(b, 2 * self.hidden)  # [B, 2 * hidden]
    for i, width in enumerate(self.dense, start=1):
      x = nn.Dense(width, dtype=self.dtype)(x)
      if self.activations == "published":
        if i <= 2:
          acts[f"dense{i}"] = x
        x = nn.relu(x)
      else:
        x = acts[f"dense{i}"] = nn.relu(x)
    pred = nn.Dense(self.out_dim, dtype=self.dtype)(x)
    return pred.astype(jnp.float32), acts
