"""Orbax checkpoints of train states and frozen variables: save, restore the latest, discard.

Each checkpoint stores the pytree and a small JSON record with a fingerprint of the tree's
structure (paths, shapes, dtypes), so restoring into another architecture fails with a clear
message instead of an Orbax shape error. What a stage's record says about the settings that
made it is `train.train_model`'s business (stage fingerprints).
"""
import hashlib
import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jax_unlearn.errors import UserError


def fingerprint(tree: Any) -> str:
  """A short hash of a pytree's structure, shapes and dtypes (not its values)."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  desc = [(jax.tree_util.keystr(p), tuple(np.shape(x)), str(getattr(x, "dtype", None)
                                                            or np.asarray(x).dtype))
          for p, x in leaves]
  return hashlib.sha256(json.dumps(desc).encode()).hexdigest()[:16]


def _cause(e: Exception) -> str:
  """The first sentence of an error, short: Orbax/TensorStore errors append pages of specs."""
  text = (str(e).strip().splitlines() or [""])[0].split(". ")[0]
  text = text if len(text) <= 160 else text[:157] + "..."
  return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _abstract(tree: Any) -> Any:
  """Shapes, dtypes and shardings of `tree`, the restore target for Orbax."""

  def leaf(x):
    sharding = getattr(x, "sharding", None)
    return jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=sharding)

  return jax.tree_util.tree_map(leaf, tree)


def _on_host(tree: Any) -> bool:
  """Whether this process holds every value of `tree`: Orbax then reads and writes host copies,
  3-4x faster than device arrays replicated over several devices (it visits each replica)."""
  return all(getattr(x, "is_fully_addressable", True) for x in jax.tree_util.tree_leaves(tree))


class Checkpointer:
  """An Orbax CheckpointManager for one model/stage directory.

  `save(step, tree, meta)` writes the pytree and a JSON dict; `restore(target)` reads the latest
  (or a given) step into the structure and shardings of `target`; `delete_all()` discards every
  step (a stage whose settings changed).
  """

  def __init__(self, directory: str, *, max_to_keep: int | None = 2,
               save_interval_steps: int = 1):
    self.directory = os.path.abspath(directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, save_interval_steps=save_interval_steps,
        enable_async_checkpointing=False, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def delete_all(self) -> None:
    for step in self.all_steps():
      self._manager.delete(step)

  def save(self, step: int, tree: Any, meta: dict | None = None, *, force: bool = False) -> bool:
    """Saves `tree` at `step` with a JSON `meta` dict."""
    meta = dict(meta or {})
    meta["fingerprint"] = fingerprint(tree)
    if _on_host(tree):
      tree = jax.device_get(tree)
    saved = self._manager.save(
        int(step), args=ocp.args.Composite(tree=ocp.args.StandardSave(tree),
                                           meta=ocp.args.JsonSave(meta)), force=force)
    self._manager.wait_until_finished()
    return saved

  def read_meta(self, step: int | None = None) -> dict:
    """The JSON record of `step` (latest by default); a UserError when it cannot be read."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    try:
      return dict(self._manager.restore(
          step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])
    except Exception as e:  # a truncated or foreign directory
      where = os.path.join(self.directory, str(step))
      raise UserError(f"checkpoint {where} cannot be read ({_cause(e)}).",
                      f"delete {self.directory} or rerun with --fresh.") from e

  def restore(self, target: Any, step: int | None = None) -> tuple[Any, dict]:
    """(tree, meta) of `step` (latest by default), placed like `target`'s arrays.

    Raises UserError when the checkpoint holds another architecture or cannot be read.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    where = os.path.join(self.directory, str(step))
    meta = self.read_meta(step)
    if meta.get("fingerprint") != fingerprint(target):
      raise UserError(
          f"checkpoint {where} holds a model of another architecture than the one configured.",
          "use the model settings it was trained with, or rerun with --fresh.")
    on_host = _on_host(target)
    into = (jax.tree_util.tree_map(lambda x: np.empty(np.shape(x), x.dtype), target) if on_host
            else _abstract(target))
    try:
      tree = self._manager.restore(
          step, args=ocp.args.Composite(tree=ocp.args.StandardRestore(into)))["tree"]
    except Exception as e:
      raise UserError(f"checkpoint {where} is truncated or corrupted ({_cause(e)}).",
                      f"delete {self.directory} or rerun with --fresh.") from e
    if on_host:  # placed like the target's arrays
      tree = jax.tree_util.tree_map(
          lambda x, t: jax.device_put(x, t.sharding) if isinstance(t, jax.Array) else x,
          tree, target)
    return tree, meta

  def close(self) -> None:
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
