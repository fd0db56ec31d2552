"""Unlearning methods by name: each `method(ctx, original_variables, data, config)` is a small
procedure over the one generic train step (`train.train_model`), model-agnostic through
`Context.apply_fn`.

  retrained  a fresh model trained on the retain set (the gold reference)
  finetune   the original trained further on the retain set
  gaussian   the original trained on all rows, forget labels replaced by Gaussian draws
  blindspot  the original distilled towards a partially trained model on the forget rows
"""
import dataclasses
from typing import Any, Callable, Mapping

from jax_unlearn.errors import unknown_name
from jax_unlearn.unlearn import base, blindspot, finetune, gaussian, retrained
from jax_unlearn.unlearn.base import COMMON_DEFAULTS, Context, MethodResult, UnlearnData
from jax_unlearn.unlearn.blindspot import attention_distance, attention_map, make_blindspot_loss


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered method: its procedure and its own defaults (over COMMON_DEFAULTS)."""
  name: str
  run: Callable[..., MethodResult]
  own_defaults: Mapping[str, Any]

  @property
  def defaults(self) -> dict:
    """Every setting the method takes, with its default: configs are built from these."""
    return {**COMMON_DEFAULTS, **self.own_defaults}

  def settings(self, config: Mapping | None = None) -> dict:
    """The defaults updated by `config`, checked (unknown keys, ranges)."""
    return base.settings(self.name, config, self.own_defaults)


_METHODS = {m.name: m for m in (
    Method("retrained", retrained.retrained, retrained.DEFAULTS),
    Method("finetune", finetune.finetune, finetune.DEFAULTS),
    Method("gaussian", gaussian.gaussian, gaussian.DEFAULTS),
    Method("blindspot", blindspot.blindspot, blindspot.DEFAULTS),
)}


def method_names() -> list[str]:
  return list(_METHODS)


def get_method(name: str) -> Method:
  """The method registered under `name`."""
  if name not in _METHODS:
    raise unknown_name("unlearning method", name, _METHODS)
  return _METHODS[name]


def run_method(name: str, ctx: Context, original_variables: Mapping, data: UnlearnData,
               config: Mapping | None = None) -> MethodResult:
  """Runs method `name`; `config` (dict or ConfigDict) overrides its defaults."""
  return get_method(name).run(ctx, original_variables, data, config)


__all__ = ["COMMON_DEFAULTS", "Context", "Method", "MethodResult", "UnlearnData",
           "attention_distance", "attention_map", "get_method", "make_blindspot_loss",
           "method_names", "run_method"]
