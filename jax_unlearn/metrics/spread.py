"""The spread of results over seeds: summaries, paired differences between models, a noise floor.

One seed is one draw of the data split, the initialisations and the unlearning run; a claim
that one method beats another, or matches the retrained model, needs the spread over several
seeds. Every output is plain Python (floats, lists, None for an undefined value), so it goes
into results.json as it is.
"""
import itertools
import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.stats

from jax_unlearn.files import finite_or_none
from jax_unlearn.errors import UserError
from jax_unlearn.metrics import base

FLOOR = "retrained (other seed)"


def floor_partner(k: int, members: int) -> int:
  """The member whose retrained model is member k's noise floor (`FLOOR`): the next seed's."""
  return (k + 1) % members

# The level at which `compare` names a better model (two-sided Wilcoxon signed-rank test).
ALPHA = 0.05
# Keys that already measure a distance to the retrained model: compared as they are.
DISTANCES = ("wasserstein_to_retrained", "activation_distance_to_retrained")


def _is_bool(value) -> bool:
  return isinstance(value, (bool, np.bool_))


def _is_number(value) -> bool:
  return isinstance(value, (int, float, np.integer, np.floating)) and not _is_bool(value)


def is_summary(value) -> bool:
  """Whether `value` is a cell of `aggregate` (a dict with the per-seed "values")."""
  return isinstance(value, Mapping) and "values" in value


def is_bool_summary(summary: Mapping[str, Any]) -> bool:
  """Whether a summary is over booleans (its mean is the fraction true)."""
  values = [v for v in summary.get("values", ()) if v is not None]
  return bool(values) and all(_is_bool(v) for v in values)


def point(value):
  """The scalar view of a cell: a summary's mean, True if any seed of a bool summary is True;
  anything else as it is. What a column's mark reads."""
  if not is_summary(value):
    return value
  if is_bool_summary(value):
    return any(bool(v) for v in value["values"] if v is not None)
  return value.get("mean")


def summarize(values: Sequence) -> dict[str, Any]:
  """{"mean", "std", "ci95", "values"} of one result over seeds.

  None (and NaN or infinite) values are undefined: kept as None in "values", left out of the
  rest. "std" is the sample standard deviation (ddof=1; 0.0 for one value), "ci95" the Student-t
  95% interval of the mean ([mean, mean] for one value). Booleans give "mean" = fraction true and
  no std or interval. Every field is None when no value is defined.
  """
  values = list(values)
  for v in values:
    if v is not None and not (_is_bool(v) or _is_number(v)):
      raise UserError(f"summarize takes numbers or booleans over seeds, got {v!r}.",
                      "summarize one numeric result key at a time (aggregate keeps the rest).")
  defined = [v for v in values if v is not None and (_is_bool(v) or finite_or_none(v) is not None)]
  if defined and all(_is_bool(v) for v in defined):
    return {"mean": sum(bool(v) for v in defined) / len(defined), "std": None, "ci95": None,
            "values": [None if v is None else bool(v) for v in values]}
  clean = [None if v is None else finite_or_none(v) for v in values]
  numbers = np.array([v for v in clean if v is not None], np.float64)  # [n]
  if len(numbers) == 0:
    return {"mean": None, "std": None, "ci95": None, "values": clean}
  mean = float(np.mean(numbers))
  if len(numbers) == 1:
    return {"mean": finite_or_none(mean), "std": 0.0, "ci95": [finite_or_none(mean)] * 2,
            "values": clean}
  std = float(np.std(numbers, ddof=1))
  half = float(scipy.stats.t.ppf(0.975, len(numbers) - 1)) * std / math.sqrt(len(numbers))
  return {"mean": finite_or_none(mean), "std": finite_or_none(std),
          "ci95": [finite_or_none(mean - half), finite_or_none(mean + half)], "values": clean}


def _ordered_union(groups) -> list:
  out = {}
  for group in groups:
    out.update(dict.fromkeys(group))
  return list(out)


def aggregate(per_seed: Sequence[Mapping[str, Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
  """model -> key -> `summarize` of that result over seeds, from one `Evaluation.results` per
  seed.

  Models and keys follow the first seed's order (any seen later only come after); a model or key
  missing in a seed counts as None there. A key with non-numeric values (strings, lists, dicts)
  keeps only {"values": [per-seed values]}.
  """
  per_seed = list(per_seed)
  if not per_seed:
    raise UserError("aggregate needs the results of at least one seed.",
                    "pass one Evaluation.results per seed.")
  out = {}
  for model in _ordered_union(per_seed):
    rows = [seed.get(model) or {} for seed in per_seed]
    out[model] = {}
    for key in _ordered_union(rows):
      values = [row.get(key) for row in rows]
      numeric = all(v is None or _is_bool(v) or _is_number(v) for v in values)
      out[model][key] = summarize(values) if numeric else {"values": values}
  return out


def paired_difference(a: Sequence[float], b: Sequence[float], *, resamples: int = 10000,
                      seed: int = 0) -> dict[str, Any]:
  """The per-seed differences a_k - b_k of two models measured on the same seeds.

  Returns {"n", "mean", "ci95", "wilcoxon_p", "values"}: pairs where either side is None (or
  non-finite) are dropped; "ci95" is the 2.5-97.5 percentile interval of the mean difference over
  a paired bootstrap of the seeds (`resamples` draws of numpy's default_rng(seed)); "wilcoxon_p"
  the two-sided Wilcoxon signed-rank p-value (None for fewer than 2 pairs or all differences
  zero). With n seeds the smallest attainable p is 2 / 2**n (0.25 for 3 seeds, 0.0625 for 5), so
  a few seeds can never reach 0.05: this is why the interval is reported too.
  """
  a, b = list(a), list(b)
  if len(a) != len(b):
    raise UserError(f"a paired difference needs one value per seed on both sides, got {len(a)} "
                    f"and {len(b)}.", "pass the two models' values over the same seeds.")
  if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
    raise UserError(f"resamples must be an integer >= 1, got {resamples!r}.",
                    "use e.g. resamples=10000.")
  pairs = [(finite_or_none(x), finite_or_none(y)) for x, y in zip(a, b)]
  diffs = [x - y for x, y in pairs if x is not None and y is not None]
  n = len(diffs)
  if n == 0:
    return {"n": 0, "mean": None, "ci95": None, "wilcoxon_p": None, "values": []}
  d = np.array(diffs, np.float64)  # [n]
  if np.all(d == d[0]):  # every resample has the same mean: no need to draw
    ci95 = [float(d[0])] * 2
  else:
    rows = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # [R, n]
    means = d[rows].mean(axis=1)  # [R]
    ci95 = [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]
  p = None
  if n >= 2 and np.any(d != 0):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      p = finite_or_none(scipy.stats.wilcoxon(d, alternative="two-sided").pvalue)
  return {"n": n, "mean": finite_or_none(np.mean(d)), "ci95": [finite_or_none(v) for v in ci95],
          "wilcoxon_p": p, "values": [float(v) for v in d]}


def _series(per_seed, model: str, key: str) -> list:
  """[K] the value of `key` for `model` in each seed, None where missing."""
  return [(seed.get(model) or {}).get(key) for seed in per_seed]


def _check_models(per_seed, names: Sequence[str]) -> None:
  seen = _ordered_union(per_seed)
  missing = [n for n in names if n not in seen]
  if missing:
    raise UserError(f"no seed has results for {', '.join(map(repr, missing))}.",
                    f"name models of the results: {', '.join(seen)}.")


def _direction(key: str) -> str:
  column = base.columns().get(key)
  return column.direction if column is not None else ""


def compare(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], names: Sequence[str],
            keys: Sequence[str], *, reference: str = "retrained") -> dict[str, dict[str, Any]]:
  """Paired differences between every two models over seeds, per key.

  Returns {"<a> vs <b>": {key: {...paired_difference..., "direction", "measure", "better"}}} for
  each unordered pair of `names` (a before b, in their order). What is compared follows the key's
  column direction (`direction`):
    ↓ (e.g. retain_test_error, wasserstein_to_retrained): raw values a_k - b_k; lower is better.
    ↑ (e.g. the R² keys): raw values; higher is better.
    ≈ retrained (e.g. forget_test_error, mia_forget, ain): the distance to the `reference`
      model's value of the same seed, |a_k - ref_k| - |b_k - ref_k|; lower is better
      ("measure" says so). Keys in DISTANCES already are distances and are compared raw.
    no direction (a key no column declares): raw values, and no winner.
  "better" is the model whose side the whole 95% interval lies on when the Wilcoxon test agrees
  (p < ALPHA); None otherwise. A bootstrap over a handful of seeds is nearly their range, too
  narrow to stand alone; the test's smallest p is 2 / 2**n, so fewer than 6 seeds never name a
  winner.
  """
  per_seed, names, keys = list(per_seed), list(names), list(keys)
  _check_models(per_seed, names)
  needs_reference = any(_direction(k) == base.RETRAINED and k not in DISTANCES for k in keys)
  if needs_reference:
    _check_models(per_seed, [reference])
  out = {}
  for a, b in itertools.combinations(names, 2):
    out[f"{a} vs {b}"] = row = {}
    for key in keys:
      direction = _direction(key)
      va, vb = _series(per_seed, a, key), _series(per_seed, b, key)
      measure = "value"
      if direction == base.RETRAINED and key not in DISTANCES:
        ref = _series(per_seed, reference, key)
        measure = f"distance to {reference}"
        va, vb = (_distance(v, ref) for v in (va, vb))
      diff = paired_difference(va, vb)
      lower = direction in (base.LOWER, base.RETRAINED)
      significant = diff["wilcoxon_p"] is not None and diff["wilcoxon_p"] < ALPHA
      row[key] = dict(diff, direction=direction, measure=measure,
                      better=_better(diff["ci95"], a, b, lower, direction == base.HIGHER)
                      if significant else None)
  return out


def _distance(values: list, ref: list) -> list:
  """[K] |v_k - ref_k|, None where either is undefined."""
  out = []
  for v, r in zip(values, ref):
    v, r = finite_or_none(v), finite_or_none(r)
    out.append(None if v is None or r is None else abs(v - r))
  return out


def _better(ci95, a: str, b: str, lower: bool, higher: bool) -> str | None:
  """Which of a, b the interval of a - b favours; None when it contains 0 or nothing wins."""
  if ci95 is None or None in ci95 or not (lower or higher):
    return None
  lo, hi = ci95
  if hi < 0:
    return a if lower else b
  if lo > 0:
    return b if lower else a
  return None


def noise_floor(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], names: Sequence[str], *,
                floor: str = FLOOR, key: str = "wasserstein_to_retrained"
                ) -> dict[str, dict[str, Any]]:
  """Whether each model is as close to the retrained model as another retrained model is.

  The `floor` row is a retrained model of another seed measured against this seed's retrained
  model: the distance that training noise alone gives. Returns {name: {...paired_difference of
  name's `key` minus the floor's over seeds..., "key", "floor", "inside"}}; "inside" is True
  when the interval's lower bound is <= 0 (the model cannot be told farther from the retrained
  model than another retrained model is), False when it is above 0, None when undefined.
  """
  per_seed, names = list(per_seed), [n for n in names if n != floor]
  _check_models(per_seed, names + [floor])
  floor_values = _series(per_seed, floor, key)
  out = {}
  for name in names:
    diff = paired_difference(_series(per_seed, name, key), floor_values)
    ci95 = diff["ci95"]
    inside = None if ci95 is None or ci95[0] is None else ci95[0] <= 0
    out[name] = dict(diff, key=key, floor=floor, inside=inside)
  return out
