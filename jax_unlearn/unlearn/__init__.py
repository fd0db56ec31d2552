"""Unlearning methods by name: each `method(ctx, original_variables, data, config)` is a small
procedure over the one generic train step (`train.train_model`), model-agnostic through
`Context.apply_fn`.

  retrained      a fresh model trained on the retain set (the gold reference)
  finetune       the original trained further on the retain set
  gaussian       the original trained on all rows, forget labels replaced by Gaussian draws
  blindspot      the original distilled towards a partially trained model on the forget rows
  neggrad        NegGrad+: retain descent with a bounded ascent on the forget rows
  scrub          SCRUB: alternating max-steps away from the original (forget), min-steps (retain)
  bad_teacher    distillation from the original (retain) and an incompetent teacher (forget)
  ssd, lfssd     selective synaptic dampening (task-loss / label-free importances), no training
  fisher         noise scaled by the inverse retain Fisher, no training
  salun          Gaussian relabelling trained on the forget-salient weights only
  l1_sparse      retain fine-tuning with a decaying L1 penalty
  msg            re-initialised small-gradient weights, then damped retain fine-tuning
  jit_lipschitz  JiT: smoothing the output around the forget rows (forget data only)
  neighbours     forget labels replaced by their retain neighbours' mean, then fine-tuning
  eu_k, cf_k     the last k layers retrained from fresh weights / fine-tuned, on the retain rows
  sisa           exact unlearning by shards: only the shards holding forget rows retrain
"""
import dataclasses
import itertools
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jax_unlearn.errors import UserError, unknown_name
from jax_unlearn.unlearn import (bad_teacher, base, blindspot, finetune, fisher, gaussian,
                                 jit_lipschitz, l1_sparse, last_layers, msg, neggrad, neighbours,
                                 retrained, salun, scrub, sisa, ssd)
from jax_unlearn.unlearn.base import COMMON_DEFAULTS, Context, MethodResult, UnlearnData
from jax_unlearn.unlearn.blindspot import attention_distance, attention_map, make_blindspot_loss


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered method: its procedure, its own defaults (over COMMON_DEFAULTS), the bounds of
  its own bounded settings (`base.settings`), its tuning search space (setting -> candidate
  values, the defaults among them) and the settings a config fills from the original's recipe
  (`train`) unless it sets them (`inherits`: a method that trains models as the original does)."""
  name: str
  run: Callable[..., MethodResult]
  own_defaults: Mapping[str, Any]
  ranges: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
  search_space: Mapping[str, Sequence] = dataclasses.field(default_factory=dict)
  inherits: tuple[str, ...] = ()

  @classmethod
  def of(cls, name: str, module) -> "Method":
    """The method `name` as its module declares it: the function `name`, DEFAULTS, RANGES,
    SEARCH_SPACE and INHERITS."""
    return cls(name, getattr(module, name), module.DEFAULTS, getattr(module, "RANGES", {}),
               getattr(module, "SEARCH_SPACE", {}), tuple(getattr(module, "INHERITS", ())))

  @property
  def defaults(self) -> dict:
    """Every setting the method takes, with its default: configs are built from these."""
    return {**COMMON_DEFAULTS, **self.own_defaults}

  def settings(self, config: Mapping | None = None) -> dict:
    """The defaults updated by `config`, checked (unknown keys, ranges)."""
    return base.settings(self.name, config, self.own_defaults, self.ranges)

  def candidates(self, budget: int, seed: int = 0) -> list[dict]:
    """`budget` settings of the search space to tune over: the defaults first, then distinct
    points of the space's grid drawn at random by `seed` (the whole grid when it is smaller)."""
    if not self.search_space:
      raise UserError(f"method {self.name!r} declares no search space to tune over.",
                      "tune the methods that declare one (unlearn.tunable_methods()).")
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
      raise UserError(f"a tuning budget must be a positive number of candidates, got {budget!r}.",
                      "e.g. 8.")
    keys = sorted(self.search_space)
    default = tuple(self.defaults[k] for k in keys)
    others = [p for p in itertools.product(*(self.search_space[k] for k in keys)) if p != default]
    order = np.random.default_rng(seed).permutation(len(others))[:budget - 1]
    return [dict(zip(keys, point)) for point in [default] + [others[i] for i in sorted(order)]]


_METHODS = {m.name: m for m in (
    Method.of("retrained", retrained),
    Method.of("finetune", finetune),
    Method.of("gaussian", gaussian),
    Method.of("blindspot", blindspot),
    Method.of("neggrad", neggrad),
    Method.of("scrub", scrub),
    Method.of("bad_teacher", bad_teacher),
    Method.of("ssd", ssd),
    Method.of("lfssd", ssd),
    Method.of("fisher", fisher),
    Method.of("salun", salun),
    Method.of("l1_sparse", l1_sparse),
    Method.of("msg", msg),
    Method.of("jit_lipschitz", jit_lipschitz),
    Method.of("neighbours", neighbours),
    Method.of("eu_k", last_layers),
    Method.of("cf_k", last_layers),
    Method.of("sisa", sisa),
)}


def method_names() -> list[str]:
  return list(_METHODS)


def tunable_methods() -> list[str]:
  """The methods with a search space: every method but the retrained reference."""
  return [name for name, m in _METHODS.items() if m.search_space]


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
           "method_names", "run_method", "tunable_methods"]
