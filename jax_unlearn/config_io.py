"""The door of every run: loading experiment configs, applying `--config.a.b=value` overrides and
checking the result (`prepare`), with clear errors.

A config is a shipped name ("demo": the module `jax_unlearn.configs.demo`, imported) or the path
of a Python file with a `get_config()`. A file is code the user runs, like any script: load only
configs you trust. Override values are parsed with `ast.literal_eval` (never `eval`) and must
match the type of the field they replace.
"""
import ast
import dataclasses
import difflib
import importlib
import importlib.util
import os
import pkgutil
from typing import Any, Mapping, Sequence

import jax
import ml_collections

from jax_unlearn import configs, metrics, ops, protocol, train
from jax_unlearn.errors import UserError

# Modules of jax_unlearn.configs that are not experiments.
_NOT_CONFIGS = ("base",)


def shipped_configs() -> list[str]:
  """Names of the shipped configs (`jax-unlearn run --config NAME`)."""
  return sorted(m.name for m in pkgutil.iter_modules(configs.__path__)
                if not m.name.startswith("_") and m.name not in _NOT_CONFIGS)


def check_config_name(name_or_path: str) -> None:
  """Raises a UserError naming the shipped configs unless `name_or_path` is one or a file."""
  names = shipped_configs()
  if name_or_path in names or os.path.isfile(name_or_path):
    return
  close = difflib.get_close_matches(os.path.splitext(os.path.basename(name_or_path))[0], names,
                                    n=1)
  hint = (f"did you mean {close[0]!r}? " if close else "") + (
      f"shipped configs: {', '.join(names)}; or pass a path to a config file.")
  raise UserError(f"config {name_or_path!r} is neither a file nor a shipped config.", hint)


def _module(name_or_path: str):
  """The config module of a shipped name (imported) or of a file path (run as a script)."""
  if name_or_path in shipped_configs():
    return importlib.import_module(f"{configs.__name__}.{name_or_path}")
  check_config_name(name_or_path)
  name = "jax_unlearn_config_" + os.path.splitext(os.path.basename(name_or_path))[0]
  spec = importlib.util.spec_from_file_location(name, name_or_path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # the user's own config file, like running a script
  return module


def load_config(name_or_path: str, *args) -> ml_collections.ConfigDict:
  """The ConfigDict returned by `get_config(*args)` of a shipped config or a config file."""
  module = _module(name_or_path)
  if not hasattr(module, "get_config"):
    raise UserError(f"config file {name_or_path!r} has no get_config() function.",
                    "define get_config() returning an ml_collections.ConfigDict.")
  return module.get_config(*args)


# Fields whose value is a count or a list.
COUNT_OR_LIST = ("seeds",)


def _parse(text: str, old):
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text  # a bare word is a string
  if old is None or value is None:
    return value
  if isinstance(old, bool):
    if isinstance(value, bool):
      return value
    if str(text).lower() in ("true", "false"):
      return str(text).lower() == "true"
  elif isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
    return float(value)
  elif isinstance(old, (list, tuple)) and isinstance(value, (list, tuple)):
    return type(old)(value)
  elif isinstance(value, type(old)) and not (isinstance(value, bool) and not isinstance(old, bool)):
    return value
  raise UserError(f"override value {text!r} is a {type(value).__name__}, but the field holds a "
                  f"{type(old).__name__} ({old!r}).", f"pass a value of type {type(old).__name__}.")


def apply_override(config: ml_collections.ConfigDict, dotted: str, text: str) -> None:
  """Sets `config.<dotted>` from the command-line text `text`, checking the field exists."""
  keys = dotted.split(".")
  node = config
  for i, key in enumerate(keys):
    if not isinstance(node, ml_collections.ConfigDict) or key not in node:
      known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
      where = ".".join(keys[:i]) or "config"
      close = difflib.get_close_matches(key, known, n=1)
      hint = (f"did you mean --config.{'.'.join(keys[:i] + [close[0]])}?" if close
              else f"fields of {where}: {', '.join(sorted(known))}.")
      # Fields under a free-form kwargs dict may be new (e.g. data.kwargs.path).
      if isinstance(node, ml_collections.ConfigDict) and keys[i - 1:i] == ["kwargs"] and \
          i == len(keys) - 1:
        node[key] = _parse(text, None)
        return
      raise UserError(f"unknown config field {dotted!r}.", hint)
    if i == len(keys) - 1:
      # `seeds` holds a count or a list of seeds (see configs.member_seeds).
      old = [] if dotted in COUNT_OR_LIST and isinstance(_parse(text, None), list) else node[key]
      with node.ignore_type():
        node[key] = _parse(text, old)
      return
    node = node[key]


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: Sequence[tuple[str, str]]) -> None:
  """`apply_override` for each (field, text) pair in order."""
  for dotted, text in overrides:
    apply_override(config, dotted, text)


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
  """`--config.a.b=v` / `--config.a.b v` arguments -> [(a.b, v)]; anything else is an error."""
  out, i = [], 0
  while i < len(args):
    arg = args[i]
    if not arg.startswith("--config."):
      raise UserError(f"unexpected argument {arg!r}.",
                      "overrides look like --config.train.lr=0.001.")
    body = arg[len("--config."):]
    if "=" in body:
      key, value = body.split("=", 1)
    elif i + 1 < len(args):
      key, value = body, args[i + 1]
      i += 1
    else:
      raise UserError(f"override {arg!r} has no value.", f"write {arg}=VALUE.")
    out.append((key, value))
    i += 1
  return out


@dataclasses.dataclass(frozen=True)
class RunSpec:
  """What a checked config resolves to, once: the stages read their part from here."""
  seeds: tuple[int, ...]  # of each stage's models
  train: Mapping[str, Any]  # the original's (and the retrained model's) settings
  methods: Mapping[str, tuple[str, Mapping[str, Any]]]  # label -> (registered method, settings)
  metrics: Mapping[str, Any]
  audit: Mapping[str, Any]  # with "lira": whether shadow models train


def check_config(c: ml_collections.ConfigDict) -> RunSpec:
  """Rejects unknown names and values out of range before any work starts; returns what the
  config resolves to."""
  seeds = tuple(configs.member_seeds(c))
  train_settings = configs.train_settings(c)
  train.Recipe.from_settings(train_settings)
  if metrics.audit.NULL_STAGE in c.methods:
    raise UserError(f"{metrics.audit.NULL_STAGE!r} names the audit's null stage, not a method.",
                    "give the method another label in config.methods.")
  methods = {name: (configs.method_of(c, name), configs.method_settings(c, name))
             for name in c.methods}
  metric_settings = metrics.resolve_settings(c.metrics)
  audit = metrics.audit.resolve_settings(c.audit, len(seeds))
  audit["lira"] = bool(audit["enabled"] and "lira" in audit["which"])
  ops.check_kernels(c.kernels)
  processes = jax.process_count()
  # An ensemble's members are spread whole over the processes, as many on each.
  for count, what in ((len(seeds), "models per stage (seeds)"),
                      (audit["shadows"] if audit["enabled"] else 1, "shadow models")):
    if count > 1 and count % processes:
      raise UserError(f"{count} {what} do not split over {processes} processes.",
                      f"use a multiple of {processes}, or one process.")
  return RunSpec(seeds, train_settings, methods, metric_settings, audit)


def prepare(config: ml_collections.ConfigDict, overrides: Sequence[tuple[str, str]] = ()
            ) -> tuple[ml_collections.ConfigDict, RunSpec]:
  """A checked copy of `config` with the command-line overrides applied, and its `RunSpec`.

  `overrides` are (field, text) pairs (`--config.a.b=v`); with `smoke` on, the smoke sizes
  replace every other field's value, so a value the user typed wins over them.
  """
  c = ml_collections.ConfigDict(config.to_dict())
  apply_overrides(c, overrides)
  if c.smoke:
    configs.shrink_for_smoke(c, keep=[dotted for dotted, _ in overrides])
  protocol.apply(c)  # tuned settings join as "<label>_tuned", or the run is refused
  return c, check_config(c)


def prepare_config(config: ml_collections.ConfigDict,
                   overrides: Sequence[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
  """`prepare` without the spec."""
  return prepare(config, overrides)[0]
