"""The paper's figures as PNG files: relative differences, errors per method, predictions, and
the results of every seed.

Figures are drawn on matplotlib's Agg canvas without pyplot (no global state, no display) and
written atomically, so a plot on disk is always complete.
"""
import math
import os
from typing import Any, Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from jax_unlearn import files
from jax_unlearn.files import finite_or_none
from jax_unlearn.metrics import base, distances
from jax_unlearn.metrics.evaluate import Evaluation

REFERENCES = ("original", "retrained")
PLOTTED_PER_SEED = ("forget_test_error", "retain_test_error", "wasserstein_to_retrained",
                    "mia_forget")


def _grid(n: int, title: str) -> tuple[Figure, list]:
  """A figure with one subplot per panel, at most three per row."""
  cols = max(min(n, 3), 1)
  rows = max(math.ceil(n / cols), 1)
  fig = Figure(figsize=(4.0 * cols, 3.2 * rows), layout="constrained")
  FigureCanvasAgg(fig)
  axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
  for ax in axes[n:]:
    ax.set_visible(False)
  fig.suptitle(title)
  return fig, axes[:n]


def _save(fig: Figure, path: str) -> str:
  files.atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
  return path


def plot_relative_difference(evaluation: Evaluation, labels_forget: np.ndarray,
                             out_dir: str) -> str:
  """Histogram per model of |pred - pred_retrained| / |y| on the forget-train set.

  The x-axis ends at the 99th percentile over all models; larger values land in the last bin.
  """
  preds = evaluation.predictions
  names = [n for n in preds if n != "retrained"]
  values = {n: distances.relative_difference(preds[n], preds["retrained"], labels_forget).ravel()
            for n in names}
  upper = float(np.percentile(np.concatenate(list(values.values())), 99)) if names else 1.0
  bins = np.linspace(0.0, upper if upper > 0 else 1.0, 41)
  fig, axes = _grid(len(names), "Relative difference to the retrained model (forget set)")
  for ax, name in zip(axes, names):
    ax.hist(np.minimum(values[name], bins[-1]), bins=bins, color="tab:blue")
    ax.set_title(name)
    ax.set_xlabel("|pred - pred_retrained| / |y|")
    ax.set_ylabel("samples")
  return _save(fig, os.path.join(out_dir, "relative_difference.png"))


def plot_errors(evaluation: Evaluation, out_dir: str,
                keys: Sequence[str] = ("forget_train_error", "retain_train_error",
                                       "forget_test_error", "retain_test_error")) -> str:
  """Bars per method for each error, with the retrained and original models as lines."""
  results, labels = evaluation.results, base.columns()
  keys = [k for k in keys if results["retrained"].get(k) is not None]
  methods = [n for n in results if n not in REFERENCES]
  fig, axes = _grid(len(keys), f"Errors ({evaluation.info.get('error', 'error')})")
  for ax, key in zip(axes, keys):
    heights = [np.nan if results[n].get(key) is None else results[n][key] for n in methods]
    ax.bar(range(len(methods)), heights, color="tab:blue")
    ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
    for ref, style in zip(REFERENCES, (":", "--")):
      if results.get(ref, {}).get(key) is not None:
        ax.axhline(results[ref][key], linestyle=style, color="black", label=ref)
    ax.set_title(labels[key].label if key in labels else key)
    ax.legend(loc="best", fontsize="small")
  return _save(fig, os.path.join(out_dir, "errors.png"))


def plot_predictions(evaluation: Evaluation, labels_forget: np.ndarray, out_dir: str) -> str:
  """Prediction against label on the forget-train set, one panel per model, with y = x."""
  preds = evaluation.predictions
  labels = np.asarray(labels_forget, np.float64).ravel()
  lo, hi = float(labels.min()), float(labels.max())
  fig, axes = _grid(len(preds), "Predictions on the forget set")
  for ax, (name, pred) in zip(axes, preds.items()):
    ax.scatter(labels, np.asarray(pred, np.float64).ravel(), s=4, alpha=0.5, color="tab:blue")
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1)
    ax.set_title(name)
    ax.set_xlabel("label")
    ax.set_ylabel("prediction")
  return _save(fig, os.path.join(out_dir, "predictions.png"))


def plot_seeds(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], out_dir: str,
               keys: Sequence[str] = PLOTTED_PER_SEED) -> str:
  """One dot per seed for each model, with a tick at the mean: the spread a bar would hide.

  One panel per key of `keys` that some model has a number for; `per_seed` holds one
  `Evaluation.results` per seed. Dots are spread sideways by seed index (the same every run).
  """
  per_seed = list(per_seed)
  models = list(dict.fromkeys(m for results in per_seed for m in results))
  values = {key: [[finite_or_none((results.get(m) or {}).get(key)) for results in per_seed]
                  for m in models] for key in keys}  # key -> [models][seeds]
  keys = [k for k in keys if any(v is not None for row in values[k] for v in row)]
  labels = base.columns()
  offsets = np.linspace(-0.2, 0.2, len(per_seed)) if len(per_seed) > 1 else np.zeros(1)  # [K]
  fig, axes = _grid(len(keys), f"Results over {len(per_seed)} seeds (dot: seed, tick: mean)")
  for ax, key in zip(axes, keys):
    for i, row in enumerate(values[key]):
      seeds = [(offsets[k], v) for k, v in enumerate(row) if v is not None]
      if not seeds:
        continue
      ax.scatter([i + o for o, _ in seeds], [v for _, v in seeds], s=14, color="tab:blue",
                 alpha=0.7, zorder=2)
      ax.hlines(float(np.mean([v for _, v in seeds])), i - 0.3, i + 0.3, color="black",
                linewidth=2, zorder=3)
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_xlim(-0.6, len(models) - 0.4)
    column = labels.get(key)
    ax.set_title(f"{column.label} {column.direction}".strip() if column else key)
  return _save(fig, os.path.join(out_dir, "seeds.png"))


def plot_tradeoff(per_seed: Sequence[Mapping[str, Mapping[str, Any]]], out_dir: str,
                  x_key: str = "retain_test_error",
                  y_key: str = "wasserstein_to_retrained") -> str | None:
  """Forget distance to the retrained model against retain error, one point per model and
  seed, the references marked: where each method sits between forgetting and keeping.

  The ideal model sits where the retrained one does (bottom: distance 0, at its retain error).
  None when no model has both numbers.
  """
  per_seed = list(per_seed)
  models = list(dict.fromkeys(m for results in per_seed for m in results))
  points = {m: [(finite_or_none((r.get(m) or {}).get(x_key)),
                 finite_or_none((r.get(m) or {}).get(y_key))) for r in per_seed] for m in models}
  points = {m: [(x, y) for x, y in p if x is not None and y is not None] for m, p in points.items()}
  points = {m: p for m, p in points.items() if p}
  if not points:
    return None
  fig, (ax,) = _grid(1, f"Forgetting against keeping ({len(per_seed)} seed(s): small points, "
                      "large: the mean)")
  fig.set_size_inches(8.0, 5.5)
  palette = matplotlib.colormaps["tab20"].colors
  marks = {"original": ("black", "s"), "retrained": ("black", "*")}
  others = [m for m in points if m not in marks]
  for m, p in points.items():
    color, marker = marks.get(m, (None, "o"))
    color = color or palette[others.index(m) % len(palette)]
    xs, ys = zip(*p)
    ax.scatter(xs, ys, s=14, color=color, marker=marker, alpha=0.5, zorder=2)
    ax.scatter([np.mean(xs)], [np.mean(ys)], s=90 if m in marks else 60, color=color,
               marker=marker, edgecolors="black", linewidths=0.6, label=m, zorder=3)
  labels = base.columns()
  for set_label, key in ((ax.set_xlabel, x_key), (ax.set_ylabel, y_key)):
    column = labels.get(key)
    set_label(f"{column.label} {column.direction}".strip() if column else key)
  ax.legend(fontsize=7, ncol=2, loc="best")
  return _save(fig, os.path.join(out_dir, "tradeoff.png"))


def plot_all(evaluation: Evaluation, labels_forget: np.ndarray, out_dir: str) -> list[str]:
  """Writes every figure into `out_dir`; returns their paths.

  Args:
    evaluation: from `evaluate_models`.
    labels_forget: [F, D] labels of the forget-train rows (`train_y[forget_train]`).
  """
  return [plot_relative_difference(evaluation, labels_forget, out_dir),
          plot_errors(evaluation, out_dir),
          plot_predictions(evaluation, labels_forget, out_dir)]


def plot_audit(audit: Mapping[str, Any], samples: Mapping[str, np.ndarray], forget: np.ndarray,
               out_dir: str) -> list[str]:
  """The audit's figures: ROC curves (LiRA on its shadows, U-LiRA per model), the per-sample
  epsilon histograms, and LiRA score distributions. Returns the paths written."""
  paths, info = [], audit["info"]
  curves = []
  if "lira" in info:
    curves += [(f"LiRA {side} (shadows)", info["lira"][side]["roc"])
               for side in ("online", "offline")]
  curves += [(f"U-LiRA {name}", roc) for name, roc in info.get("ulira", {}).get("roc", {}).items()]
  if curves:
    fig, (linear, logs) = _grid(2, "ROC curves of the audit's attacks")
    palette = matplotlib.colormaps["tab20"].colors
    for i, (label, roc) in enumerate(curves):
      for ax in (linear, logs):
        ax.plot(roc["fpr"], roc["tpr"], label=label, color=palette[i % len(palette)])
    for ax, scale in ((linear, "linear"), (logs, "log")):
      ax.plot([1e-4, 1], [1e-4, 1], color="grey", linestyle=":", linewidth=1)
      ax.set_xscale(scale)
      ax.set_yscale(scale)
      ax.set_xlabel("false-positive rate")
      ax.set_ylabel("true-positive rate")
    logs.set_xlim(1e-3, 1)
    logs.set_ylim(1e-3, 1)
    linear.legend(fontsize=6, loc="lower right")
    paths.append(_save(fig, os.path.join(out_dir, "audit_roc.png")))
  eps = {k.split("/")[0]: v for k, v in samples.items() if k.endswith("/epsilon")}
  if eps:
    # The scoring buckets of 0.5; every epsilon past the last (worth 0 points, perfect
    # separations included) in one bar beyond it.
    top = float(info["epsilon"]["upper"])
    bins = np.arange(0, top + 0.75, 0.5)
    fig, axes = _grid(len(eps), "Per-sample ε of the competition's attacks (forget rows; last "
                      f"bar: ε ≥ {top:g}, 0 points)")
    for ax, (name, values) in zip(axes, eps.items()):
      ax.hist(np.minimum(values, top + 0.25), bins=bins, color="tab:blue")
      ax.axvline(top, color="grey", linestyle=":")
      ax.set_title(name)
      ax.set_xlabel("ε")
      ax.set_ylabel("forget samples")
    paths.append(_save(fig, os.path.join(out_dir, "audit_epsilon.png")))
  if "shadows/online" in samples:
    keep, online = samples["shadows/keep"].astype(bool), samples["shadows/online"]
    panels = [("shadows (leave-one-out)", {"in": online[keep], "out": online[~keep]})]
    panels += [(name, {"retain": v[:, ~forget].ravel(), "forget": v[:, forget].ravel()})
               for name, v in ((k.split("/")[0], v) for k, v in samples.items()
                               if k.endswith("/lira_online"))]
    fig, axes = _grid(len(panels), "LiRA online scores (log-likelihood ratio; higher = member)")
    every = np.concatenate([np.ravel(v) for _, p in panels for v in p.values()])
    lo, hi = np.percentile(every, [1, 99])
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 41)
    for ax, (title, groups) in zip(axes, panels):
      for label, values in groups.items():
        ax.hist(np.clip(values, bins[0], bins[-1]), bins=bins, alpha=0.5, density=True,
                label=label)
      ax.set_title(title)
      ax.legend(fontsize=7)
    paths.append(_save(fig, os.path.join(out_dir, "audit_lira_scores.png")))
  return paths
