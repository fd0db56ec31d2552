"""The results table a person reads: one row per model, one column per result key.

Labels, the better direction and cell marks come from the registered metrics' columns, so a
metric of your own shows up like the built-in ones; the text is deterministic (fixed number
formatting), so a table can be compared byte for byte across runs. Over several seeds a cell is
a summary (see `spread`) shown as "mean ± std", and the paired comparisons and the noise floor
get tables of their own.
"""
from typing import Any, Mapping, Sequence

import numpy as np

from jax_unlearn import files
from jax_unlearn.metrics import audit as audit_lib
from jax_unlearn.metrics import base, spread

LEGEND = ("↓ lower is better, ↑ higher is better, ≈ retrained: closer to the retrained model "
          "is better.")


def legend() -> str:
  """LEGEND and the note of every registered column that marks its cells (e.g. AIN's cap)."""
  return " ".join([LEGEND] + [c.note for c in base.columns().values() if c.note])


def format_value(value, interval: bool = False) -> str:
  """Deterministic cell text: 4 significant digits, "n/a" for a missing value.

  A summary over seeds (`spread.summarize`) reads "mean ± std", with "[lo, hi]" (its 95% interval)
  appended if `interval`; a summary of booleans reads as the fraction true.
  """
  if spread.is_summary(value):
    return _format_summary(value, interval)
  if value is None:
    return "n/a"
  if isinstance(value, (bool, np.bool_)):
    return "yes" if value else "no"
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  return f"{float(value):.4g}"


def _format_summary(summary: Mapping[str, Any], interval: bool) -> str:
  mean = summary.get("mean")
  if mean is None:
    return "n/a"
  if spread.is_bool_summary(summary) or summary.get("std") is None:
    return format_value(float(mean))
  # The spread to 2 significant digits: a third would claim a precision 3 seeds do not have.
  text = f"{format_value(float(mean))} ± {float(summary['std']):.2g}"
  ci95 = summary.get("ci95")
  if interval and ci95 is not None:
    text += " " + _format_interval(ci95)
  return text


def _format_interval(ci95) -> str:
  """"[lo, hi]", "n/a" when undefined."""
  if ci95 is None or None in ci95:
    return "n/a"
  return f"[{format_value(float(ci95[0]))}, {format_value(float(ci95[1]))}]"


def write_markdown(results: Mapping[str, Mapping[str, Any]], path: str | None = None,
                   columns: Sequence[str] | None = None, interval: bool = False) -> str:
  """The results as one markdown table (rows = models, in the given order); written atomically
  to `path` if given. Returns the text.

  `columns` are result keys (default: `base.default_columns()`); a key no metric declares is
  shown under its own name. `results` may be one seed's or `spread.aggregate` of several; then
  `interval` adds each cell's 95% interval, and a column's mark reads each summary's scalar view
  (a mean; for booleans, whether any seed was True).
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
    marked = {k: spread.point(v) for k, v in row.items()} if _has_summary(row) else row
    for key in columns:
      column = known.get(key)
      cell = format_value(row.get(key), interval)
      if column is not None and column.mark is not None:
        cell += column.mark(marked)
      cells.append(cell)
    lines.append("| " + " | ".join(cells) + " |")
  text = "\n".join(lines) + "\n\n" + legend() + "\n"
  if path is not None:
    files.write_text(path, text)
  return text


def _has_summary(row: Mapping[str, Any]) -> bool:
  return any(spread.is_summary(v) for v in row.values())


def _key_label(key: str) -> str:
  column = base.columns().get(key)
  return f"{column.label} {column.direction}".strip() if column else key


def write_comparisons(comparisons: Mapping[str, Mapping[str, Mapping[str, Any]]],
                      keys: Sequence[str] | None = None) -> str:
  """`spread.compare`'s paired differences as one markdown table, one row per pair and key.

  `keys` picks and orders the keys (default: every key of the comparisons, in their order).
  """
  if keys is None:
    keys = list(dict.fromkeys(k for pair in comparisons.values() for k in pair))
  lines = ["| A vs B | key | seeds | mean difference (A − B) | 95% interval | Wilcoxon p "
           "| better |", "|:--|:--|--:|--:|--:|--:|:--|"]
  for pair, row in comparisons.items():
    for key in keys:
      if key not in row:
        continue
      diff = row[key]
      label = _key_label(key)
      if diff.get("measure", "value") != "value":
        label += f" ({diff['measure']})"
      better = diff.get("better") or ("neither" if diff.get("mean") is not None else "n/a")
      cells = [pair, label, str(diff["n"]), format_value(diff["mean"]),
               _format_interval(diff["ci95"]), format_value(diff["wilcoxon_p"]), better]
      lines.append("| " + " | ".join(cells) + " |")
  note = ("Differences are paired over seeds; the interval is a bootstrap over seeds. Better: the "
          "model the whole interval favours, where the Wilcoxon test agrees (p < 0.05). With n "
          "seeds no Wilcoxon p is below 2 / 2^n, so fewer than 6 seeds name no better model.")
  return "\n".join(lines) + "\n\n" + note + "\n"


def write_floor(floor: Mapping[str, Mapping[str, Any]]) -> str:
  """`spread.noise_floor` as one markdown table: each model's distance minus the floor's."""
  first = next(iter(floor.values()), {})
  key = first.get("key", "wasserstein_to_retrained")
  floor_name = first.get("floor", spread.FLOOR)
  label = base.columns()[key].label if key in base.columns() else key
  lines = [f"| model | seeds | {label} − {floor_name} | 95% interval | inside the floor |",
           "|:--|--:|--:|--:|:--|"]
  for name, diff in floor.items():
    inside = diff.get("inside")
    cells = [name, str(diff["n"]), format_value(diff["mean"]), _format_interval(diff["ci95"]),
             "n/a" if inside is None else ("yes" if inside else "no")]
    lines.append("| " + " | ".join(cells) + " |")
  note = (f"Inside: the interval reaches 0, so the model cannot be told farther from the "
          f"retrained model than a retrained model of another seed ({floor_name!r}) is.")
  return "\n".join(lines) + "\n\n" + note + "\n"


def write_audit(audit: Mapping[str, Any]) -> str:
  """`metrics.audit.run_audit`'s results as markdown: LiRA's power on its shadow models, then one
  row per model and one column per audit result (per-seed values as mean ± std)."""
  s, info = audit["settings"], audit["info"]
  text = (f"## Audit\n\n{audit['members']} model(s) per stage; per-sample score: {s['score']}"
          f"; audits: {', '.join(s['which'])}.\n\n")
  if "lira" in info:
    lira = info["lira"]
    low = lambda side: ", ".join(  # noqa: E731
        f"TPR {format_value(v)} at FPR {float(k):g}" for k, v in lira[side]["tpr_at_fpr"].items())
    text += (f"LiRA's power on its {lira['shadows']} shadow models (each trained on half the "
             f"training rows, attacked leave-one-out): online AUC "
             f"{format_value(lira['online']['auc'])} ({low('online')}), offline AUC "
             f"{format_value(lira['offline']['auc'])} ({low('offline')}). The weaker it is, the "
             "less any model's LiRA numbers below can show.\n\n")
  columns = audit_lib.columns(s["which"])
  lines = ["| model | " + " | ".join(f"{c.label} {c.direction}".strip() for c in columns) + " |",
           "|:--" + "|--:" * len(columns) + "|"]
  for name, row in audit["models"].items():
    lines.append("| " + " | ".join([name] + [format_value(row.get(c.key)) for c in columns])
                 + " |")
  null = audit_lib.NULL
  note = (f"{null!r} is a second retrained ensemble on other seeds, audited like any model: what "
          "a perfect unlearner scores (→ null). ≈ retrained: closer to the retrained row is "
          "better. U-LiRA, ε and KS compare each model with the retrained models, so the "
          "retrained row has none.")
  text += "\n".join(lines) + "\n\n" + note + "\n"
  if audit.get("versus_null"):
    text += _write_versus_null(audit["versus_null"], audit["settings"]["permutations"])
  return text


def _write_versus_null(versus: Mapping[str, Any], permutations: int) -> str:
  """The table of each model's headline audit numbers minus the null's, with their p-values."""
  audits = list(dict.fromkeys(a for row in versus.values() for a in row))
  labels = {c.key: c.label for c in audit_lib.columns(audits)}
  header = [f"{labels.get(next(iter(versus.values()))[a]['key'], a)} − null (p)" for a in audits]
  lines = ["| model | " + " | ".join(header) + " | distinguishable from the null by |",
           "|:--" + "|--:" * len(audits) + "|:--|"]
  for name, row in versus.items():
    cells, found = [name], []
    for a in audits:
      test = row.get(a)
      if test is None:
        cells.append("")
        continue
      cells.append(f"{format_value(test['difference'])} ({format_value(test['p'])})")
      if test["distinguishable"]:
        found.append(a)
    cells.append(", ".join(found) or "none")
    lines.append("| " + " | ".join(cells) + " |")
  return (f"\n### Against the null\n\nEach model's value minus the null's; p: a two-sided "
          f"permutation test over models ({permutations} random exchanges of the model's members "
          "with the null's; the ε score's F on at most "
          f"{audit_lib.TEST_ROWS} forget rows per exchange). p < {audit_lib.ALPHA:g}: "
          "distinguishable from retraining.\n\n" + "\n".join(lines) + "\n")
