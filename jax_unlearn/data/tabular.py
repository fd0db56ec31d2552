"""Tabular and bring-your-own data: scikit-learn's diabetes set and user .npz files."""
import os

import numpy as np

from jax_unlearn.data.base import SPLITS, Dataset, Split, make_dataset, split_indices, standardise
from jax_unlearn.errors import UserError

LOSS_ERROR = {"l1": "mae", "mse": "mse"}
KIND_BY_NDIM = {2: "tabular", 3: "series", 4: "image"}


def diabetes(*, seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
             ) -> Dataset:
  """scikit-learn's diabetes data: 442 patients, 10 features, disease progression after a year.

  Features are standardised with train statistics; the target keeps its units (25-346), so the
  L1 loss and the MAE read directly as progression points, and label-range forgetting uses them.
  """
  from sklearn.datasets import load_diabetes

  x, y = load_diabetes(return_X_y=True)
  parts = split_indices(len(x), fractions, np.random.default_rng(seed))
  xs = standardise(*(x[p] for p in parts))
  splits = [Split(xi, y[p, None].astype(np.float32)) for xi, p in zip(xs, parts)]
  return make_dataset("diabetes", *splits, loss="l1", error="mae", kind="tabular",
                      label="disease progression")


def npz(*, path: str | None = None, seed: int = 0, loss: str = "l1", kind: str | None = None,
        label: str = "label") -> Dataset:
  """Bring your own data: an .npz with `x`, `y`, `split` and optionally `group` and `time`.

  Args:
    path: the .npz file; `split` holds the strings "train", "val" or "test" per row (a string
      array, np.array([...], dtype=str): object arrays need pickle, which is refused).
    seed: unused (the file fixes the split); accepted like every dataset's.
    loss: "l1" (error MAE) or "mse" (error MSE).
    kind: "image", "text", "series" or "tabular"; by default from x's rank (2 tabular, 3 series,
      4 image; text pairs [N, 2, T, E] must say kind="text").
    label: what y measures, for reports.

  Arrays are used as given (no normalisation); y of shape [N] becomes [N, 1].
  """
  del seed
  if not path or not os.path.isfile(path):
    raise UserError(f"the .npz file {path!r} does not exist.", "set data.kwargs.path to it.")
  if loss not in LOSS_ERROR:
    raise UserError(f"npz loss must be one of {sorted(LOSS_ERROR)}, got {loss!r}.",
                    "set data.kwargs.loss to 'l1' or 'mse'.")
  try:
    with np.load(path, allow_pickle=False) as f:
      arrays = {k: f[k] for k in f.files}
  except ValueError as e:
    raise UserError(f"cannot read {path!r} without pickle: {e}",
                    "save plain numeric arrays and split as a string array (dtype=str).") from None
  missing = {"x", "y", "split"} - set(arrays)
  if missing:
    raise UserError(f"{path!r} lacks the arrays {sorted(missing)} (has {sorted(arrays)}).",
                    "np.savez(path, x=..., y=..., split=...) with split in train/val/test.")
  x, y, split = arrays["x"], arrays["y"], arrays["split"]
  n = len(x)
  for key in ("y", "split", "group", "time"):
    if key in arrays and len(arrays[key]) != n:
      raise UserError(f"{path!r}: x has {n} rows but {key} has {len(arrays[key])}.",
                      "give one row of every array per sample.")
  if split.dtype.kind not in "US":
    raise UserError(f"{path!r}: split must be a string array, got dtype {split.dtype}.",
                    "store split as np.array([...], dtype=str).")
  split = split.astype(str)
  unknown = sorted(set(np.unique(split).tolist()) - set(SPLITS))  # str, not np.str_ reprs
  if unknown:
    raise UserError(f"{path!r}: unknown split values {unknown[:5]}.",
                    f"use only {', '.join(SPLITS)}.")
  for key in ("x", "y"):
    if not np.issubdtype(arrays[key].dtype, np.number) or arrays[key].dtype.kind == "c":
      raise UserError(f"{path!r}: {key} must be real numbers, got dtype {arrays[key].dtype}.",
                      f"convert {key} to float32.")
  if y.ndim == 1:
    y = y[:, None]
  kind = kind or KIND_BY_NDIM.get(x.ndim, "tabular")
  splits = []
  for name in SPLITS:
    rows = split == name
    if not rows.any():
      raise UserError(f"{path!r} has no {name!r} rows.",
                      "mark at least one sample for each of train, val and test.")
    splits.append(Split(x[rows].astype(np.float32), y[rows].astype(np.float32),
                        *(arrays[k][rows].astype(np.int64) if k in arrays else None
                          for k in ("group", "time"))))
  return make_dataset("npz", *splits, loss=loss, error=LOSS_ERROR[loss], kind=kind, label=label,
                      path=os.path.abspath(path))
