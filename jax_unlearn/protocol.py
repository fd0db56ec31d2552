"""The tuning protocol: a choice of settings is graded only on models its tuning never saw.

`jax-unlearn tune` records, beside the settings it chose for each method, the member seeds and
the forget request it tuned on (`record`). A run that uses those choices (`config.tuned`, the
path of a tune.json) gets, for each method of its `methods` that was tuned, an entry
"<label>_tuned" with the chosen settings beside the default one (`apply`), and is refused
before any work when its seeds overlap the tuning seeds or its forget request is the one tuned
on: its original and retrained models would then be ones the choice was fitted to.
"""
import json
from typing import Any, Mapping, Sequence

import ml_collections

from jax_unlearn import configs
from jax_unlearn.errors import UserError

TUNED_SUFFIX = "_tuned"


def record(config: ml_collections.ConfigDict, seeds: Sequence[int],
           chosen: Mapping[str, Mapping[str, Any]]) -> dict:
  """What a tune.json carries for `apply`: the tuning seeds and forget request, and per method
  the chosen candidate's label and settings (its changes over the method's defaults)."""
  return {"seeds": [int(s) for s in seeds], "forget": config.forget.to_dict(),
          "data": config.data.name, "chosen_per_method": dict(chosen)}


def apply(config: ml_collections.ConfigDict) -> None:
  """In place: the tuned entries of `config.tuned` added to `config.methods`, after the checks
  (see the module docstring). No-op when `config.tuned` is empty."""
  path = config.get("tuned") or ""
  if not path:
    return
  try:
    with open(path) as f:
      tuned = json.load(f)
    chosen = tuned["chosen_per_method"]
    tuned_seeds, tuned_forget = set(tuned["seeds"]), tuned["forget"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"config tuned={path!r} is not a tune.json with chosen settings per method "
                    f"({type(e).__name__}: {e}).",
                    "pass the tune.json that `jax-unlearn tune` wrote.") from None
  seeds = set(configs.member_seeds(config))
  if seeds & tuned_seeds:
    raise UserError(
        f"the settings in {path} were tuned on seeds {sorted(tuned_seeds)}; this run's seeds "
        f"{sorted(seeds)} share {sorted(seeds & tuned_seeds)}, whose original and retrained "
        "models the choice saw.",
        f"evaluate on other seeds, e.g. --config.seeds={_fresh(tuned_seeds, len(seeds))}.")
  if config.forget.to_dict() == tuned_forget:
    raise UserError(
        f"the settings in {path} were tuned on this very forget request ({tuned_forget}).",
        "tune on another forget set of the same kind (other random seed, a neighbouring label "
        "range, another group) and evaluate here.")
  for label in list(config.methods):
    method = configs.method_of(config, label)
    if method in chosen and label + TUNED_SUFFIX not in config.methods:
      config.methods[label + TUNED_SUFFIX] = configs.method_variant(
          method, **chosen[method]["settings"])


def _fresh(taken: set, count: int) -> str:
  """`count` seeds above every tuning seed, as a command line takes them."""
  start = max(taken) + 1 if taken else 0
  return "[" + ",".join(str(s) for s in range(start, start + count)) + "]"
