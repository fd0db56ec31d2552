"""TensorBoard event files of a run, written without TensorFlow (tensorboardX).

`recording(root)` makes a writer current for the duration; while it is, every training stage
(`train.train_model`, whatever method runs it) logs its epoch records under `root/<stage>`:
the train loss and every part the step reports (e.g. a method's retain and forget terms), the
validation loss and the learning rate, against the optimizer step. An ensemble's per-member
values are logged as their mean and under "<key>/member_<k>". `final_metrics` adds the
evaluation's results per model. `read_scalars` reads the files back (no TensorBoard needed).

  tensorboard --logdir runs/demo/tensorboard
"""
import contextlib
import contextvars
import glob
import importlib
import os
import struct
import sys
from typing import Any, Iterator, Mapping

import numpy as np

_CURRENT: contextvars.ContextVar["EventLog | None"] = contextvars.ContextVar("events",
                                                                            default=None)
# Record fields that are not curves.
_SKIPPED = ("epoch", "best_val")


def _summary_writer():
  """tensorboardX's SummaryWriter, imported without torch where this process has not imported it:
  tensorboardX imports torch, when installed (the benchmark's peer), only to accept torch
  tensors, and we log floats. That import costs about a second in every process that logs."""
  if "tensorboardX" not in sys.modules and "torch" not in sys.modules:
    sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX expects
    try:
      importlib.import_module("tensorboardX")
    finally:
      del sys.modules["torch"]
  from tensorboardX import SummaryWriter
  return SummaryWriter


class EventLog:
  """One SummaryWriter per run directory under `root`, opened on first use."""

  def __init__(self, root: str):
    self.root = root
    self._writers: dict[str, Any] = {}

  def writer(self, run: str):
    if run not in self._writers:
      path = os.path.join(self.root, *(_safe(part) for part in run.split("/")))
      self._writers[run] = _summary_writer()(path, flush_secs=30)
    return self._writers[run]

  def scalars(self, run: str, step: int, values: Mapping[str, Any]) -> None:
    """Each number (or per-member list of numbers) of `values` at `step`."""
    w = self.writer(run)
    for key, value in values.items():
      if key in _SKIPPED or value is None:
        continue
      v = np.asarray(value, np.float64)
      if v.ndim == 0:
        w.add_scalar(key, float(v), step)
      elif v.ndim == 1 and v.size:
        w.add_scalar(key, float(v.mean()), step)
        for k, member in enumerate(v):
          w.add_scalar(f"{key}/member_{k}", float(member), step)

  def close(self) -> None:
    for w in self._writers.values():
      w.close()
    self._writers.clear()


def _safe(part: str) -> str:
  """A run-name part as a directory name ("blindspot_beta0:blindspot_model" has a colon)."""
  return part.replace(os.sep, "_").replace(":", "_")


@contextlib.contextmanager
def recording(root: str | None) -> Iterator["EventLog | None"]:
  """Makes an `EventLog` under `root` current (none for None); closes it at the end."""
  if root is None:
    yield None
    return
  log = EventLog(root)
  token = _CURRENT.set(log)
  try:
    yield log
  finally:
    _CURRENT.reset(token)
    log.close()


def current() -> "EventLog | None":
  return _CURRENT.get()


def epoch(stage: str, step: int, record: Mapping[str, Any]) -> None:
  """Logs one epoch record of a training stage to the current log, if any."""
  log = current()
  if log is not None:
    log.scalars(stage, step, record)


def final_metrics(models: Mapping[str, Mapping[str, Any]]) -> None:
  """Each model's numeric results (means over seeds for summaries) under run "metrics/<model>"."""
  log = current()
  if log is None:
    return
  for name, row in models.items():
    values = {k: (v["mean"] if isinstance(v, Mapping) else v) for k, v in row.items()}
    log.scalars(f"metrics/{name}", 0, {k: v for k, v in values.items()
                                       if isinstance(v, (int, float)) and not isinstance(v, bool)})


def read_scalars(root: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
  """run -> tag -> [(step, value)] of every event file under `root` (in file order)."""
  from tensorboardX.proto import event_pb2

  out: dict[str, dict[str, list]] = {}
  for path in sorted(glob.glob(os.path.join(root, "**", "events.out.tfevents.*"),
                               recursive=True)):
    run = os.path.relpath(os.path.dirname(path), root)
    tags = out.setdefault(run, {})
    for data in _records(path):
      event = event_pb2.Event.FromString(data)
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
  return out


def _records(path: str) -> Iterator[bytes]:
  """The payloads of a TFRecord file: [length u64][crc u32][data][crc u32] each."""
  with open(path, "rb") as f:
    while True:
      head = f.read(12)
      if len(head) < 12:
        return
      (length,) = struct.unpack("<Q", head[:8])
      data = f.read(length)
      f.read(4)
      if len(data) < length:
        return
      yield data
