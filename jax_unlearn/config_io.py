"""Loading experiment configs and applying `--config.a.b=value` overrides, with clear errors.

Config files are Python modules with a `get_config()`; they are code the user runs, like any
script: load only configs you trust. A config is named by its path, or by the name of a file in
the shipped `experiments/configs/` ("demo"), where configs also find each other by name.
Override values are parsed with `ast.literal_eval` (never `eval`) and must match the type of
the field they replace.
"""
import ast
import difflib
import importlib.util
import os

import ml_collections

from jax_unlearn.errors import UserError


# The shipped experiment configs: experiments/configs/ of the source tree beside the package.
CONFIG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          "experiments", "configs")


def shipped_configs() -> list[str]:
  """Names of the shipped configs (`jax-unlearn run --config NAME`)."""
  if not os.path.isdir(CONFIG_DIR):
    return []
  return sorted(f[:-3] for f in os.listdir(CONFIG_DIR)
                if f.endswith(".py") and not f.startswith("_"))


def find_config(name_or_path: str) -> str:
  """The file of a config given by path or by shipped name."""
  if os.path.isfile(name_or_path):
    return name_or_path
  shipped = os.path.join(CONFIG_DIR, f"{name_or_path}.py")
  if os.sep not in name_or_path and not name_or_path.endswith(".py") and os.path.isfile(shipped):
    return shipped
  names = shipped_configs()
  close = difflib.get_close_matches(os.path.splitext(os.path.basename(name_or_path))[0], names,
                                    n=1)
  hint = (f"did you mean {close[0]!r}? " if close else "") + (
      f"shipped configs: {', '.join(names)}; or pass a path to a config file."
      if names else "pass a path to a config file with get_config().")
  raise UserError(f"config {name_or_path!r} is neither a file nor a shipped config.", hint)


def load_config(name_or_path: str, *args) -> ml_collections.ConfigDict:
  """The ConfigDict returned by `get_config(*args)` of a config file (a path or shipped name)."""
  path = find_config(name_or_path)
  name = "jax_unlearn_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)  # the user's own config file, like running a script
  if not hasattr(module, "get_config"):
    raise UserError(f"config file {path!r} has no get_config() function.",
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
