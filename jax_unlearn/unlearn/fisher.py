"""Fisher forgetting: scramble the weights the retain set does not pin down, without training.

Golatkar, Achille, Soatto, "Eternal sunshine of the spotless net: selective forgetting in deep
networks", CVPR 2020, as the SCRUB (Kurmanji et al. 2023) and SSD (Foster et al. 2024) code
bases implement it: every parameter gets Gaussian noise,

    theta += sqrt(alpha * min(1 / (F + 1e-8), variance_cap)) * N(0, 1),

F the diagonal Fisher of the retain rows. Weights that matter to the retain set (large F) barely
move; weights that only the forget set shaped get the most noise.

Published: alpha 1e-6, the cap 1e3 on 1 / (F + 1e-8) before alpha (so no variance exceeds
1e-3), F from per-example gradients (batches of one row: the default batch size here). The
published F is the true Fisher of a softmax classifier (labels drawn from the model); for
regression F is the squared gradient of the task loss to the labels, the empirical Fisher: for
MSE that of a Gaussian likelihood (of variance 1/2), for L1 of a Laplace one. F scales with the
square of the labels' scale, so the noise alpha gives depends on it. Not carried over: the
published code's averaging of the variance over each output unit's inputs, its x10 on
one-dimensional parameters and its lower cap (1e2) on the classifier layer, heuristics of its
ResNet classifiers; here the variance is elementwise. BatchNorm running statistics are left as
they are. Each ensemble member draws its own noise (its own key). The record gives the mean
noise standard deviation, "noise_std_mean".
"""
import math
import time
from typing import Mapping

import jax
import jax.numpy as jnp

from jax_unlearn import train
from jax_unlearn.unlearn import base, importance

PURPOSE_FISHER_NOISE = 40
_EPS = 1e-8  # added to F before inverting, as published

DEFAULTS = {"batch_size": 1, "alpha": 1e-6, "variance_cap": 1e3}
# Bounded settings: name -> (low, high, low_open), checked with the others (base.settings).
RANGES = {"alpha": (0.0, math.inf, False), "variance_cap": (0.0, math.inf, True)}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"alpha": [1e-8, 1e-7, 1e-6, 1e-5]}


def noise_std(fisher, alpha: float, variance_cap: float):
  """sqrt(alpha * min(1 / (F + 1e-8), variance_cap)) of every entry of the Fisher pytree."""
  return jax.tree_util.tree_map(
      lambda f: jnp.sqrt(alpha * jnp.minimum(1.0 / (f + _EPS), variance_cap)), fisher)


def perturb(params, std, key: jax.Array):
  """`params` plus `std` times standard normal noise, one key per parameter array."""
  leaves, treedef = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(key, len(leaves))
  noisy = [p + (s * jax.random.normal(k, p.shape, jnp.float32)).astype(p.dtype)
           for p, s, k in zip(leaves, treedef.flatten_up_to(std), keys)]
  return jax.tree_util.tree_unflatten(treedef, noisy)


def fisher(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
           config: Mapping | None = None) -> base.MethodResult:
  """The original's parameters plus noise scaled by the inverse retain Fisher."""
  s = base.settings("fisher", config, DEFAULTS, RANGES)
  t0 = time.perf_counter()
  alpha = float(s["alpha"])
  cap = float(s["variance_cap"])
  retain_fisher, _ = importance.gradient_statistic(
      ctx, original_variables, data.arrays(retain_only=True),
      importance.task_objective(ctx.loss), batch_size=s["batch_size"], squared=True)
  std = noise_std(retain_fisher, alpha, cap)
  params = train.ensemble.over_members(perturb, ctx.members)(
      original_variables["params"], std, ctx.key(PURPOSE_FISHER_NOISE))
  variables = {**original_variables, "params": params}
  jax.block_until_ready(variables)
  return base.MethodResult(variables, {
      "steps": 0, "seconds": time.perf_counter() - t0, "reused": False,
      "noise_std_mean": importance.member_mean(std, ctx.members)})
