"""A compact Temporal Fusion Transformer (Lim et al., 2021) for quantile forecasting.

Input windows x [B, L + H, F]: channel 0 the scaled target (zeros over the H horizon steps),
channels 1..F-2 known inputs, channel F-1 the series id as a float. The past L steps feed the
encoder with every channel but the id; the H future steps feed the decoder with the known
inputs only; the id is the static covariate (when `num_ids` > 0).
"""
import functools
import math
from typing import Sequence

import jax.numpy as jnp
from flax import linen as nn

from jax_unlearn.errors import UserError


class GateAddNorm(nn.Module):
  """LayerNorm(skip + GLU(dropout(x))): the gated skip connection used throughout the TFT."""
  features: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, skip, *, train: bool):
    x = nn.Dropout(self.dropout, deterministic=not train)(x)
    value, gate = jnp.split(nn.Dense(2 * self.features, dtype=self.dtype)(x), 2, axis=-1)
    return nn.LayerNorm(dtype=self.dtype)(skip + value * nn.sigmoid(gate))


class GatedResidualNetwork(nn.Module):
  """ELU MLP of the input (plus an optional context), GLU-gated onto a skip of the input.

  Gating lets the network fall back to (a projection of) its input where extra depth does not
  help. `context` [B, 1 or T, C] is added before the nonlinearity.
  """
  features: int
  hidden: int | None = None
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, a, context=None, *, train: bool):
    hidden = self.hidden or self.features
    skip = a if a.shape[-1] == self.features else nn.Dense(self.features, dtype=self.dtype)(a)
    h = nn.Dense(hidden, dtype=self.dtype)(a)
    if context is not None:
      h = h + nn.Dense(hidden, use_bias=False, dtype=self.dtype)(context)
    h = nn.Dense(self.features, dtype=self.dtype)(nn.elu(h))
    return GateAddNorm(self.features, self.dropout, self.dtype)(h, skip, train=train)


def stacked_grn(grn: GatedResidualNetwork, x, *, in_axis, out_axis, size=None, train: bool):
  """`grn` with separate parameters (and dropout) per index of an axis, as one vmapped network.

  One batched network rather than a Python loop, so the program does not grow with the axis.
  """
  def apply(module, a):
    return module(a, train=train)

  return nn.vmap(apply, in_axes=in_axis, out_axes=out_axis, axis_size=size,
                 variable_axes={"params": 0}, split_rngs={"params": True, "dropout": True})(grn, x)


class ScalarEmbedding(nn.Module):
  """A separate linear embedding of each real-valued variable: [..., V] -> [..., V, features]."""
  features: int

  @nn.compact
  def __call__(self, x):
    shape = (x.shape[-1], self.features)
    kernel = self.param("kernel", nn.initializers.normal(1.0), shape)
    bias = self.param("bias", nn.initializers.zeros, shape)
    return x[..., None] * kernel.astype(x.dtype) + bias.astype(x.dtype)


class VariableSelection(nn.Module):
  """Softmax weights over variables (from all of them and the static context) mix per-variable GRNs.

  emb [B, T, V, hidden] -> ([B, T, hidden], weights [B, T, V]).
  """
  hidden: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, emb, context=None, *, train: bool):
    b, t, v, h = emb.shape
    grn = functools.partial(GatedResidualNetwork, dropout=self.dropout, dtype=self.dtype)
    logits = grn(v, self.hidden)(emb.reshape(b, t, v * h), context, train=train)  # [B, T, V]
    weights = nn.softmax(logits.astype(jnp.float32), axis=-1).astype(emb.dtype)
    processed = stacked_grn(grn(self.hidden), emb, in_axis=2, out_axis=2,
                            train=train)  # [B, T, V, hidden]
    return jnp.einsum("btv,btvh->bth", weights, processed), weights


class InterpretableAttention(nn.Module):
  """Multi-head attention whose heads share one value projection and are averaged.

  With shared values, the mean of the heads' attention weights is a faithful picture of which
  time steps the forecast draws on. `mask` [Tq, Tk] is True where a query may attend.
  """
  hidden: int
  heads: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, query, memory, mask, *, train: bool):
    d = max(1, self.hidden // self.heads)
    dense = functools.partial(nn.DenseGeneral, dtype=self.dtype)
    q = dense((self.heads, d))(query)  # [B, Tq, n, d]
    k = dense((self.heads, d))(memory)  # [B, Tk, n, d]
    v = dense(d)(memory)  # [B, Tk, d], shared by the heads
    logits = jnp.einsum("bqnd,bknd->bnqk", q, k).astype(jnp.float32) / math.sqrt(d)
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    weights = nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout, deterministic=not train)(weights)
    out = jnp.einsum("bnqk,bkd->bqd", weights, v) / self.heads  # mean over heads
    return dense(self.hidden)(out), weights


class TemporalFusionTransformer(nn.Module):
  """Temporal Fusion Transformer: one output per horizon step and quantile.

  Variable selection, static covariate contexts, an LSTM encoder-decoder, static enrichment,
  interpretable causal attention and gated skips, as in the paper, at a compact size.
  Returns (pred [B, H, Q] float32, acts) with acts "encoder" [B, L, hidden], "decoder"
  [B, H, hidden] (LSTM outputs after the gated skip), "attention" [B, H, hidden] (after the
  attention's gated skip) and "features" [B, hidden] (the final layer averaged over the horizon).
  """
  horizon: int
  quantiles: Sequence[float] = (0.1, 0.5, 0.9)
  hidden: int = 32
  heads: int = 4
  num_ids: int = 0
  dropout: float = 0.1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    del mask  # no batch statistics
    _, steps, channels = x.shape
    past = steps - self.horizon
    if past < 1 or channels < 2:
      raise UserError(
          f"a forecasting window of shape {x.shape[1:]} cannot hold horizon {self.horizon}.",
          "windows are [L + horizon, F] with L >= 1 and F >= 2 (target, ..., series id).")
    kw = {"dropout": self.dropout, "dtype": self.dtype}
    grn = functools.partial(GatedResidualNetwork, self.hidden, **kw)
    gate = functools.partial(GateAddNorm, self.hidden, **kw)
    x = x.astype(self.dtype)

    # Static covariate encoders: four contexts from the series id embedding.
    c_select = c_enrich = carry = None
    if self.num_ids:
      ids = jnp.clip(jnp.round(x[:, 0, -1]).astype(jnp.int32), 0, self.num_ids - 1)
      static = grn()(nn.Embed(self.num_ids, self.hidden, dtype=self.dtype)(ids), train=train)
      contexts = stacked_grn(grn(), static, in_axis=None, out_axis=1, size=4, train=train)
      c_select, c_enrich, c_h, c_c = jnp.split(contexts, 4, axis=1)  # each [B, 1, hidden]
      carry = (c_c[:, 0], c_h[:, 0])  # the LSTM cell's (c, h)

    # Variable selection: past steps see the target and known inputs, future ones known only.
    selected = VariableSelection(self.hidden, **kw)(
        ScalarEmbedding(self.hidden)(x[:, :past, :-1]), c_select, train=train)[0]  # [B, L, h]
    if channels > 2:
      future = VariableSelection(self.hidden, **kw)(
          ScalarEmbedding(self.hidden)(x[:, past:, 1:-1]), c_select, train=train)[0]
    else:
      future = jnp.zeros((x.shape[0], self.horizon, self.hidden), self.dtype)
    selected = jnp.concatenate([selected, future], axis=1)  # [B, L + H, hidden]

    # LSTM encoder over the past, decoder over the horizon from the encoder's final state.
    cell = functools.partial(nn.OptimizedLSTMCell, self.hidden, dtype=self.dtype)
    carry, encoded = nn.RNN(cell(), return_carry=True)(selected[:, :past], initial_carry=carry)
    decoded = nn.RNN(cell())(selected[:, past:], initial_carry=carry)
    temporal = gate()(jnp.concatenate([encoded, decoded], axis=1), selected, train=train)
    acts = {"encoder": temporal[:, :past], "decoder": temporal[:, past:]}

    enriched = grn()(temporal, c_enrich, train=train)  # [B, L + H, hidden]
    # Horizon step i (absolute position past + i) attends to positions <= past + i.
    causal = jnp.arange(steps)[None, :] <= past + jnp.arange(self.horizon)[:, None]  # [H, L+H]
    attended, _ = InterpretableAttention(self.hidden, self.heads, **kw)(
        enriched[:, past:], enriched, causal, train=train)
    y = acts["attention"] = gate()(attended, enriched[:, past:], train=train)  # [B, H, hidden]
    y = gate()(grn()(y, train=train), temporal[:, past:], train=train)
    acts["features"] = jnp.mean(y, axis=1)  # [B, hidden]
    pred = nn.Dense(len(self.quantiles), dtype=self.dtype)(y)  # [B, H, Q]
    return pred.astype(jnp.float32), acts
