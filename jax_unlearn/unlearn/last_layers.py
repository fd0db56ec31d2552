"""EU-k and CF-k: the last k layers retrained from fresh weights, or fine-tuned, on the retain rows.

Goel, Prabhu, Sanyal, Lim, Torr, Kumaraguru, "Towards adversarial evaluation for inexact machine
unlearning" (2022): the field's standard cheap baselines. EU-k ("exact unlearning" of the last
k layers) replaces the weights of the last `k` layers by fresh ones (the model's own init, keyed
by the run) and trains only them on the retain rows; the layers below keep the original's
weights, which did see the forget rows, so only the last layers are unlearned exactly. CF-k
("catastrophic forgetting") fine-tunes only the last k layers, from the original's weights.

A layer is a top-level entry of the parameters that holds a kernel (a weight matrix or filter):
`k` counts those from the output back. Entries without a kernel (normalisation scales and
biases) belong to the layer they follow, so the last k layers include the norms between them.
The order is the forward pass's: an entry's place is where the traced model first uses it
(`layer_order`), so it needs no naming convention and holds for any `apply_fn`. The frozen
layers get zero gradients (`importance.scale_gradients`); BatchNorm running statistics of the
frozen layers still follow the retain rows in training mode, as they would in the published
training loops. The record names the trained entries ("layers").
"""
from typing import Mapping, Sequence

import jax
import jax.extend.core as jax_core
import jax.numpy as jnp
import numpy as np

from jax_unlearn import train
from jax_unlearn.errors import UserError
from jax_unlearn.unlearn import base, importance

DEFAULTS = {"epochs": 5, "lr": 1e-3, "k": 2, "keep_best": False}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [3e-4, 1e-3, 3e-3], "epochs": [3, 5, 10], "k": [1, 2, 3]}


def layer_order(apply_fn, params: Mapping, x: np.ndarray, rest: Mapping) -> list[str]:
  """The top-level entries of `params` in the order the forward pass first uses them (ties and
  unused entries: by name)."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)

  def forward(*leaves):
    return apply_fn({**rest, "params": jax.tree_util.tree_unflatten(treedef, leaves)},
                    jnp.asarray(x[:2]), train=False)

  jaxpr = jax.make_jaxpr(forward)(*[leaf for _, leaf in flat]).jaxpr
  first_use = {}
  for index, eqn in enumerate(jaxpr.eqns):
    for var in eqn.invars:
      if isinstance(var, jax_core.Var) and var not in first_use:
        first_use[var] = index
  place = {name: len(jaxpr.eqns) for name in params}
  for var, (path, _) in zip(jaxpr.invars, flat):
    name = path[0].key
    place[name] = min(place[name], first_use.get(var, len(jaxpr.eqns)))
  return sorted(params, key=lambda n: (place[n], n))


def last_layers(order: Sequence[str], params: Mapping, k: int) -> list[str]:
  """The entries of the last `k` kernel-holding layers of `order`, and every entry after the
  first of them."""
  kernels = [i for i, n in enumerate(order)
             if any("kernel" in jax.tree_util.keystr(path)
                    for path, _ in jax.tree_util.tree_flatten_with_path(params[n])[0])]
  if not 1 <= k <= len(kernels):
    raise UserError(f"the model has {len(kernels)} layers with kernels; k = {k} is not one of "
                    "them.", f"set k between 1 and {len(kernels)}.")
  return list(order[kernels[-k]:])


def trainable_mask(params: Mapping, trained: Sequence[str]):
  """1.0 on every parameter of the `trained` entries, 0.0 elsewhere (the gradient scale)."""
  return {n: jax.tree_util.tree_map(
      lambda a, on=n in trained: jnp.full(a.shape, 1.0 if on else 0.0, a.dtype), sub)
      for n, sub in params.items()}


def _train_last_layers(name: str, ctx: base.Context, original_variables: Mapping,
                       data: base.UnlearnData, config: Mapping | None,
                       fresh: bool) -> base.MethodResult:
  s = base.settings(name, config, DEFAULTS)
  one = train.ensemble.member(original_variables, 0)
  params = one["params"]
  rest = {k: v for k, v in one.items() if k != "params"}
  trained = last_layers(layer_order(ctx.apply_fn, params, data.x, rest), params, int(s["k"]))
  variables = dict(original_variables)
  if fresh:
    new = base.fresh_variables(ctx, original_variables, base.PURPOSE_INIT, f"{name} layers")
    variables = {collection: {n: (new[collection][n] if n in trained else tree[n])
                              for n in tree}
                 for collection, tree in original_variables.items()}
  mask = train.ensemble.stack([trainable_mask(params, trained)] * ctx.members)
  outcome = base.fit(
      ctx, variables,
      train.Objective(train.supervised_loss(ctx.loss), {"k": int(s["k"]), "layers": trained},
                      frozen=mask, param_hook=importance.gradient_scale_hook),
      data.arrays(retain_only=True), train.Recipe.from_settings(s), name=name,
      augment=data.augment, validate=base.validation_loss(ctx, data, s["keep_best"]))
  return base.MethodResult(outcome.variables, base.record(outcome, layers=trained))


def eu_k(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
         config: Mapping | None = None) -> base.MethodResult:
  """The last k layers from fresh weights, trained alone on the retain rows."""
  return _train_last_layers("eu_k", ctx, original_variables, data, config, fresh=True)


def cf_k(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
         config: Mapping | None = None) -> base.MethodResult:
  """The original's last k layers fine-tuned alone on the retain rows."""
  return _train_last_layers("cf_k", ctx, original_variables, data, config, fresh=False)
