"""Unlearning methods by name: each `method(ctx, original_variables, data, config)` is a small
procedure over the one generic train step (`train.train_model`), model-agnostic through
`Context.apply_fn`.

  retrained  a fresh model trained on the retain set (the gold reference)
  finetune   the original trained further on the retain set
  gaussian   the original trained on all rows, forget labels replaced by Gaussian draws
  blindspot  the original distilled towards a partially trained model on the forget rows
"""
from typing import Callable, Mapping

from jax_unlearn.errors import unknown_name
from jax_unlearn.unlearn import blindspot, finetune, gaussian, retrained
from jax_unlearn.unlearn.base import Context, MethodResult, UnlearnData
from jax_unlearn.unlearn.blindspot import attention_distance, attention_map, make_blindspot_loss

_METHODS: dict[str, Callable[..., MethodResult]] = {
    "retrained": retrained.retrained,
    "finetune": finetune.finetune,
    "gaussian": gaussian.gaussian,
    "blindspot": blindspot.blindspot,
}


def method_names() -> list[str]:
  return list(_METHODS)


def get_method(name: str) -> Callable[..., MethodResult]:
  """The method function registered under `name`."""
  if name not in _METHODS:
    raise unknown_name("unlearning method", name, _METHODS)
  return _METHODS[name]


def run_method(name: str, ctx: Context, original_variables: Mapping, data: UnlearnData,
               config: Mapping | None = None) -> MethodResult:
  """Runs method `name`; `config` (dict or ConfigDict) overrides its defaults."""
  return get_method(name)(ctx, original_variables, data, config)


__all__ = ["Context", "MethodResult", "UnlearnData", "attention_distance", "attention_map",
           "get_method", "make_blindspot_loss", "method_names", "run_method"]
