"""The results table a person reads: one row per model, one column per result key.

Labels, the better direction and cell marks come from the registered metrics' columns, so a
metric of your own shows up like the built-in ones; the text is deterministic (fixed number
formatting), so a table can be compared byte for byte across runs.
"""
from typing import Any, Mapping, Sequence

import numpy as np

from jax_unlearn import files
from jax_unlearn.metrics import base, builtin  # noqa: F401  (builtin registers)

LEGEND = ("↓ lower is better, ↑ higher is better, ≈ retrained: closer to the retrained model "
          "is better.")


def legend() -> str:
  """LEGEND and the note of every registered column that marks its cells (e.g. AIN's cap)."""
  return " ".join([LEGEND] + [c.note for c in base.columns().values() if c.note])


def format_value(value) -> str:
  """Deterministic cell text: 4 significant digits, "n/a" for a missing value."""
  if value is None:
    return "n/a"
  if isinstance(value, (bool, np.bool_)):
    return "yes" if value else "no"
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  return f"{float(value):.4g}"


def write_markdown(results: Mapping[str, Mapping[str, Any]], path: str | None = None,
                   columns: Sequence[str] | None = None) -> str:
  """The results as one markdown table (rows = models, in the given order); written atomically
  to `path` if given. Returns the text.

  `columns` are result keys (default: `base.default_columns()`); a key no metric declares is
  shown under its own name.
  """
  columns = base.default_columns() if columns is None else tuple(columns)
  known = base.columns()
  header = ["model"]
  for key in columns:
    column = known.get(key)
    header.append(f"{column.label} {column.direction}".strip() if column else key)
  lines = ["| " + " | ".join(header) + " |", "|:--" + "|--:" * len(columns) + "|"]
  for name, row in results.items():
    cells = [name]
    for key in columns:
      column = known.get(key)
      cell = format_value(row.get(key))
      if column is not None and column.mark is not None:
        cell += column.mark(row)
      cells.append(cell)
    lines.append("| " + " | ".join(cells) + " |")
  text = "\n".join(lines) + "\n\n" + legend() + "\n"
  if path is not None:
    files.write_text(path, text)
  return text
