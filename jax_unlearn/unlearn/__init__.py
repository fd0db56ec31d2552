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
"""
import dataclasses
from typing import Any, Callable, Mapping

from jax_unlearn.errors import unknown_name
from jax_unlearn.unlearn import (bad_teacher, base, blindspot, finetune, fisher, gaussian,
                                 jit_lipschitz, l1_sparse, msg, neggrad, neighbours, retrained,
                                 salun, scrub, ssd)
from jax_unlearn.unlearn.base import COMMON_DEFAULTS, Context, MethodResult, UnlearnData
from jax_unlearn.unlearn.blindspot import attention_distance, attention_map, make_blindspot_loss


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered method: its procedure, its own defaults (over COMMON_DEFAULTS) and the
  bounds of its own bounded settings (`base.settings`)."""
  name: str
  run: Callable[..., MethodResult]
  own_defaults: Mapping[str, Any]
  ranges: Mapping[str, tuple] = dataclasses.field(default_factory=dict)

  @property
  def defaults(self) -> dict:
    """Every setting the method takes, with its default: configs are built from these."""
    return {**COMMON_DEFAULTS, **self.own_defaults}

  def settings(self, config: Mapping | None = None) -> dict:
    """The defaults updated by `config`, checked (unknown keys, ranges)."""
    return base.settings(self.name, config, self.own_defaults, self.ranges)


_METHODS = {m.name: m for m in (
    Method("retrained", retrained.retrained, retrained.DEFAULTS),
    Method("finetune", finetune.finetune, finetune.DEFAULTS),
    Method("gaussian", gaussian.gaussian, gaussian.DEFAULTS),
    Method("blindspot", blindspot.blindspot, blindspot.DEFAULTS),
    Method("neggrad", neggrad.neggrad, neggrad.DEFAULTS, neggrad.RANGES),
    Method("scrub", scrub.scrub, scrub.DEFAULTS, scrub.RANGES),
    Method("bad_teacher", bad_teacher.bad_teacher, bad_teacher.DEFAULTS, bad_teacher.RANGES),
    Method("ssd", ssd.ssd, ssd.DEFAULTS, ssd.RANGES),
    Method("lfssd", ssd.lfssd, ssd.DEFAULTS, ssd.RANGES),
    Method("fisher", fisher.fisher, fisher.DEFAULTS, fisher.RANGES),
    Method("salun", salun.salun, salun.DEFAULTS, salun.RANGES),
    Method("l1_sparse", l1_sparse.l1_sparse, l1_sparse.DEFAULTS, l1_sparse.RANGES),
    Method("msg", msg.msg, msg.DEFAULTS, msg.RANGES),
    Method("jit_lipschitz", jit_lipschitz.jit_lipschitz, jit_lipschitz.DEFAULTS,
           jit_lipschitz.RANGES),
    Method("neighbours", neighbours.neighbours, neighbours.DEFAULTS, neighbours.RANGES),
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
