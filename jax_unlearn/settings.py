"""Settings of methods, metrics and training recipes: defaults merged with what is given, and
the one place their ranges are checked, so every error names the config field to fix."""
import math
from typing import Any, Mapping

from jax_unlearn.errors import UserError, unknown_name


def as_dict(settings: Mapping | None) -> dict:
  """A plain dict of a mapping or an ml_collections.ConfigDict (None is empty)."""
  if settings is None:
    return {}
  return dict(settings.to_dict() if hasattr(settings, "to_dict") else settings)


def merge(defaults: Mapping[str, Any], given: Mapping | None, where: str) -> dict:
  """`defaults` updated by the set (non-None) values of `given`, range-checked.

  An unknown key is an error naming the closest known one, so a typo is never ignored. `where`
  names the config section in messages (e.g. "methods.blindspot").
  """
  out = dict(defaults)
  for key, value in as_dict(given).items():
    if key not in defaults:
      raise unknown_name(f"setting of {where}", key, defaults)
    if value is not None:
      out[key] = value
  check_ranges(out, where)
  return out


def _is_count(key: str) -> bool:
  return key == "batch_size" or key.endswith("epochs") or key.endswith("batch_size")


def check_ranges(values: Mapping[str, Any], where: str) -> None:
  """Counts (`*epochs`, `*batch_size`) must be positive integers, rates (`lr`, `*_lr`) positive
  finite numbers; None is "not set" and passes."""
  for key, value in values.items():
    if value is None:
      continue
    if _is_count(key) and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
      raise UserError(f"config {where}.{key} must be a positive integer, got {value!r}.",
                      f"set --config.{where}.{key}=1 or more.")
    if (key == "lr" or key.endswith("_lr")) and not (
        isinstance(value, (int, float)) and not isinstance(value, bool)
        and 0 < value < math.inf):
      raise UserError(f"config {where}.{key} must be a positive number, got {value!r}.",
                      f"set --config.{where}.{key} to e.g. 1e-3.")


def check_number(values: Mapping[str, Any], where: str, key: str, low: float,
                 high: float = math.inf, *, low_open: bool = False) -> float:
  """The number `values[key]`, checked to lie in [low, high] ((low, high] with `low_open`):
  a method's own bounded setting (a share, a weight, a scale)."""
  value = values[key]
  number = isinstance(value, (int, float)) and not isinstance(value, bool)
  if not (number and math.isfinite(value) and low <= value <= high
          and not (low_open and value == low)):
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{']' if math.isfinite(high) else ')'}"
    raise UserError(f"config {where}.{key} must be a finite number in {interval}, got "
                    f"{value!r}.", f"set --config.{where}.{key} inside that range.")
  return float(value)
