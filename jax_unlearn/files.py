"""Atomic file writes, so an interrupted run never leaves a half-written report or plot, and the
one conversion of results to what JSON can hold."""
import math
import os
import uuid
from typing import Callable, Mapping

import numpy as np


def atomic_write(path: str, write: Callable[[str], None]) -> None:
  """Calls `write(tmp_path)` on a temporary file beside `path`, then renames it onto `path`.

  The rename is atomic on one file system, so readers see either the old file or the new one.
  """
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  # A unique name with default permissions (mkstemp would leave the file private).
  tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
  try:
    write(tmp)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""

  def write(tmp: str) -> None:
    with open(tmp, "w", encoding="utf-8") as f:
      f.write(text)

  atomic_write(path, write)


def write_npz(path: str, arrays: Mapping[str, np.ndarray]) -> None:
  """Writes named arrays to `path` as a compressed .npz, atomically (read it back with
  `np.load(path)`, which never unpickles numeric arrays)."""

  def write(tmp: str) -> None:
    with open(tmp, "wb") as f:
      np.savez_compressed(f, **{k: np.asarray(v) for k, v in arrays.items()})

  atomic_write(path, write)


def json_safe(tree):
  """A copy JSON can hold: numpy scalars and arrays to Python, non-finite floats to None (JSON
  has no NaN), keys to strings."""
  if isinstance(tree, dict):
    return {str(k): json_safe(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple, np.ndarray)):
    return [json_safe(v) for v in tree]
  if isinstance(tree, np.generic):
    tree = tree.item()
  if isinstance(tree, float) and not math.isfinite(tree):
    return None
  return tree


def finite_or_none(value) -> float | None:
  """A plain float, or None for a missing, non-numeric or non-finite value."""
  try:
    return json_safe(float(value))
  except (TypeError, ValueError):
    return None
