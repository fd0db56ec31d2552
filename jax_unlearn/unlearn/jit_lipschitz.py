"""JiT, "just in time" unlearning (Foster, Fogarty, Schoepf, Dugue, Öztireli and Brintrup, 2024,
"Zero-shot machine unlearning at scale via Lipschitz regularization"): smooth the model around
the forget rows, with no retain data.

For each forget row x, `samples` perturbations x' = x + sigma * n (n standard Gaussian) are drawn
each step, and the original is trained to minimise the empirical Lipschitz constant

    loss = mean over rows and perturbations of ||f(x) - f(x')||_2 / ||x - x'||_2,

f(x') under stop_gradient as in the published code. The step is then not the estimate's gradient:
it pulls each f(x) towards the outputs around it, which stay where they are, so peaks come down
(the forget rows' outputs move towards their neighbourhood's) while the estimate itself may
barely fall. With few input dimensions ||x - x'|| is often near zero, and its weight 1 / ||x - x'||
makes the steps noisy; the published setting is images, where ||x - x'|| concentrates near
sigma sqrt(d). Without retain data, long runs flatten the model around the forget rows and their
neighbours alike.

How the perturbed outputs reach the loss: a train-step loss sees only the prediction of the current
parameters on the batch, and f(x') needs those same parameters. So the step runs a wrapped apply
function (`perturbed_apply`): in training it draws the noise from the step's model key (the one
dropout draws from), evaluates the model on x, then under stop_gradient on the perturbed rows (one
forward of samples x B rows: lower batch_size for a large model), and returns f(x) as the prediction
with f(x') and ||x - x'|| among the activations; the loss (`lipschitz_loss`) only reads them. Both
forwards run in training mode (dropout, BatchNorm batch statistics); the running statistics are
those of the clean forward. Outside training the wrapper is the model itself.

Changed for regression: the published noise is clipped to the batch's value range (images); row
features have no such range, so it is not. The published loss sums over the batch's rows; this
one takes the mean, so the rate does not depend on the batch size. Defaults: 25 perturbations
(published), sigma 0.5 (the published full-class setting, for inputs of unit scale such as
normalised images or standardised features), 1 epoch (one pass over the forget rows, as
published); the published SGD at lr 3e-4 on the row sum becomes Adam, the library's optimizer,
at 1e-4.
"""
import math
import dataclasses
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import losses, train
from jax_unlearn.errors import UserError
from jax_unlearn.models.adapters import accepts_mask
from jax_unlearn.unlearn import base

# Activations the wrapped apply function adds: f(x') [B, samples, ...], ||x - x'|| [B, samples].
PERTURBED = "jit_perturbed_prediction"
INPUT_DISTANCE = "jit_input_distance"

DEFAULTS = {"epochs": 1, "lr": 1e-4, "samples": 25, "sigma": 0.5}
# Bounded settings: name -> (low, high, low_open), checked with the others (base.settings).
RANGES = {"sigma": (0.0, math.inf, True)}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [3e-5, 1e-4, 3e-4], "epochs": [1, 3], "sigma": [0.1, 0.5, 1.0]}


def perturbed_apply(apply_fn: Callable, samples: int, sigma: float) -> Callable:
  """`apply_fn` that, in training, also returns the outputs on `samples` Gaussian perturbations
  of each row (std `sigma`, from the rngs' "dropout" key) and their input distances."""
  takes_mask = accepts_mask(apply_fn)

  def wrapped(variables, x, *, train: bool, rngs=None, mask=None):
    mask_kw = {"mask": mask} if takes_mask and mask is not None else {}
    if not train:
      return apply_fn(variables, x, train=False, rngs=rngs, **mask_kw)
    noise_key, model_key = jax.random.split(rngs["dropout"])
    rngs = {**rngs, "dropout": model_key}
    out = apply_fn(variables, x, train=True, rngs=rngs, **mask_kw)
    rows = x.shape[0]
    noise = sigma * jax.random.normal(noise_key, (samples,) + x.shape, jnp.float32)
    shifted = (x[None] + noise.astype(x.dtype)).reshape((samples * rows,) + x.shape[1:])
    if takes_mask and mask is not None:
      mask_kw = {"mask": jnp.tile(mask, samples)}
    far = jax.lax.stop_gradient(apply_fn(variables, shifted, train=True, rngs=rngs, **mask_kw)[0])
    far = jnp.swapaxes(far.reshape((samples, rows) + far.shape[1:]), 0, 1)  # [B, samples, ...]
    flat = noise.reshape(samples, rows, -1)
    acts = {**out[1], PERTURBED: far,
            INPUT_DISTANCE: jnp.sqrt(jnp.sum(jnp.square(flat), axis=-1)).T}  # [B, samples]
    return (out[0], acts) + tuple(out[2:])

  return wrapped


def lipschitz_loss(pred, acts, batch, rng, frozen):
  """The JiT objective as a train-step loss, reading the activations of `perturbed_apply`.

  Returns (loss, {"lipschitz"}): the masked mean over rows of the mean over perturbations of
  ||f(x) - f(x')|| / ||x - x'||.
  """
  del rng, frozen
  far = acts[PERTURBED]
  diff = (pred[:, None] - far).reshape(far.shape[:2] + (-1,)).astype(jnp.float32)
  out_distance = jnp.sqrt(jnp.sum(jnp.square(diff), axis=-1) + 1e-12)  # finite gradient at 0
  ratio = out_distance / jnp.maximum(acts[INPUT_DISTANCE], 1e-12)
  loss = losses.masked_mean(jnp.mean(ratio, axis=1), batch["mask"])
  return loss, {"lipschitz": loss}


def jit_lipschitz(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
                  config: Mapping | None = None) -> base.MethodResult:
  """The original smoothed around the forget rows (which alone it trains on)."""
  s = base.settings("jit_lipschitz", config, DEFAULTS, RANGES)
  samples = s["samples"]
  if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
    raise UserError(f"config methods.jit_lipschitz.samples must be a positive integer, got "
                    f"{samples!r}.", f"set --config.methods.jit_lipschitz.samples="
                    f"{DEFAULTS['samples']}.")
  if not np.issubdtype(data.x.dtype, np.floating):
    raise UserError(f"JiT perturbs the inputs with Gaussian noise, but they are {data.x.dtype}.",
                    "use it on models of real-valued inputs (not token ids).")
  perturbed = dataclasses.replace(
      ctx, apply_fn=perturbed_apply(ctx.apply_fn, samples, float(s["sigma"])))
  forget_arrays = data.arrays(forget_only=True)
  outcome = base.fit(
      perturbed, original_variables,
      train.Objective(lipschitz_loss, {k: s[k] for k in ("samples", "sigma")}), forget_arrays,
      base.capped_recipe(s, len(forget_arrays["x"])), name="jit_lipschitz", augment=data.augment)
  return base.MethodResult(outcome.variables, base.record(outcome))
