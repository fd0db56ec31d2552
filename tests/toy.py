"""A tiny regression problem whose forget range a retrained model cannot predict, shared by the
method tests.

y = cos(pi x) on [-1, 1]; the forget set is y > 0.5, i.e. the central peak |x| < 1/3. A model
trained without it bridges the gap at about 0.5, so its forget error is large, while the
original fits the peak.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import losses, train
from jax_unlearn.models import MLP, from_linen, init_linen
from jax_unlearn.unlearn import Context, UnlearnData

MODEL = MLP(hidden=(32, 32))
APPLY = from_linen(MODEL)


def init(key):
  return init_linen(MODEL, key, jnp.zeros((1, 1)))


def context(key=7, **kw):
  """A method's Context on the toy model, one member per key (an int: one model)."""
  keys = jnp.stack([jax.random.key(k) for k in np.atleast_1d(key)])
  return Context(APPLY, init, losses.mse, keys, **kw)


def _cosine(r, n):
  x = r.uniform(-1, 1, size=(n, 1)).astype(np.float32)
  return x, np.cos(np.pi * x).astype(np.float32)


@functools.lru_cache(maxsize=1)
def problem():
  """(UnlearnData, the original's variables (an ensemble of one), (test x, test y)); built once
  per process."""
  r = np.random.default_rng(0)
  (x, y), (vx, vy), (tx, ty) = _cosine(r, 256), _cosine(r, 64), _cosine(r, 256)
  original = train.train_model(APPLY, train.ensemble.one(init(jax.random.key(0))),
                               train.supervised_loss(losses.mse), {"x": x, "y": y},
                               train.Recipe(epochs=60, batch_size=32, lr=0.01),
                               rng=jax.random.key(1)[None], seeds=[0]).variables
  keep = vy[:, 0] <= 0.5
  data = UnlearnData(x, y, y[:, 0] > 0.5, vx[keep], vy[keep])
  return data, original, (tx, ty)


def errors(variables, test, apply_fn=APPLY, k=0):
  """(retain, forget) test MSE of member k of stacked variables."""
  tx, ty = test
  member = train.ensemble.member(variables, k)
  sq = ((train.predict(train.make_predict_fn(apply_fn), member, tx) - ty) ** 2)[:, 0]
  forget = ty[:, 0] > 0.5
  return float(sq[~forget].mean()), float(sq[forget].mean())
