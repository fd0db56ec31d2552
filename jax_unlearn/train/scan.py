"""Whole epochs as one compiled program: the training rows stay on the device and an epoch is one
`lax.scan` of the step over its batches, one dispatch per epoch instead of one per batch.

The batches are the loader's own: its `plan(epoch, start)` gives each batch's row indices and
padding (the same numpy permutation of (seed, epoch) the per-step loop reads), and the program
gathers those rows from the device copy, so a scanned epoch trains on exactly the batches the
per-step loop would feed it. It serves rows held in memory without host-side augmentation
(`on_device`) that fit in `DEVICE_ROWS_BYTES` on each device; streamed rows and numpy
augmentation keep the per-step loop. An ensemble's members scan together, each its own batches.
"""
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# The most bytes of training rows kept on each device; larger data is fed batch by batch.
DEVICE_ROWS_BYTES = 1 << 30


def scanned_epochs(step, batches: Any, place) -> "ScannedEpochs | None":
  """`ScannedEpochs` of `step` over `batches` (an `ArrayLoader` or `EnsembleBatches`), or None
  where their rows cannot stay on the device (streamed, augmented on the host, or too large)."""
  if not getattr(batches, "on_device", False):
    return None
  rows = batches.device_rows()
  if sum(np.asarray(a).nbytes for a in rows.values()) > DEVICE_ROWS_BYTES:
    return None
  return ScannedEpochs(step, batches, place, rows)


class ScannedEpochs:
  """`epochs(state, epoch, start, rng, frozen) -> (state, metrics)`: batches `start`, ... of
  `epoch` in one program, metrics stacked over them ([batches], or [batches, K] for members).

  `step` is a traceable step `(state, batch, rng, frozen) -> (state, metrics)` (a step's
  `.pure`); `rows` are the batches' `device_rows()`; `place` (a `parallel.DataParallel` or
  `parallel.Members`) places the rows, the plan and, inside the program, each batch and state as
  the jitted step would.
  """

  def __init__(self, step, batches, place, rows: dict[str, np.ndarray]):
    self.batches, self.place = batches, place
    self.rows = place.put_batch(rows) if batches.per_member_rows else place.replicate(rows)
    self._run = _program(step, place, batches.per_member_rows)

  def __call__(self, state, epoch: int, start: int, rng, frozen):
    idx, valid = self.batches.plan(epoch, start)
    plan = self.place.put_plan({"idx": idx, "valid": valid})
    return self._run(state, self.rows, plan, rng, frozen)


def _program(step, place, per_member_rows: bool):
  """The jitted epoch of `step`, kept on the step function (it lives and goes with the step) per
  placement and row layout: a step that runs several `fit`s (or resumes) compiles its epoch once."""
  if not hasattr(step, "epoch_programs"):
    step.epoch_programs = {}
  key = (place, per_member_rows)
  if key not in step.epoch_programs:
    step.epoch_programs[key] = jax.jit(functools.partial(_epoch, step, place, per_member_rows),
                                       donate_argnums=(0,))
  return step.epoch_programs[key]


def _take(rows: dict, idx: jax.Array) -> dict:
  return {key: jnp.take(value, idx, axis=0) for key, value in rows.items()}


def _epoch(step, place, per_member_rows: bool, state, rows, plan, rng, frozen):
  take = jax.vmap(_take) if per_member_rows else _take

  def body(state, batch_plan):
    batch = take(rows, batch_plan["idx"])
    valid = batch_plan["valid"]
    batch["mask"] = valid * batch["mask"] if "mask" in batch else valid
    state, metrics = step(state, place.constrain_batch(batch), rng, frozen)
    return place.constrain_state(state), metrics

  return jax.lax.scan(body, state, plan)
