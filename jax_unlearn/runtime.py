"""What a run needs around its stages: a writable workdir with its log.txt, the persistent
compilation cache, a clock of seconds and XLA compilations, the versions of what computed the
results, and progress bars."""
import contextlib
import dataclasses
import logging
import os
import platform
import sys
import time
from importlib import metadata

import jax
from tqdm.auto import tqdm

from jax_unlearn.errors import UserError

log = logging.getLogger("jax_unlearn")

# XLA compilations of this process, read by each run's Clock. JAX times a persistent-cache hit as
# a backend compile too; the hits are counted apart and subtracted.
_COMPILES = {"count": 0, "seconds": 0.0, "cache_hits": 0}


def _on_duration(event: str, duration: float, **_) -> None:
  if event == "/jax/core/compile/backend_compile_duration":
    _COMPILES["count"] += 1
    _COMPILES["seconds"] += duration


def _on_event(event: str, **_) -> None:
  if event == "/jax/compilation_cache/cache_hits":
    _COMPILES["cache_hits"] += 1


jax.monitoring.register_event_duration_secs_listener(_on_duration)
jax.monitoring.register_event_listener(_on_event)

VERSIONED = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "chex", "numpy",
             "scikit-learn", "jax-unlearn")


@dataclasses.dataclass
class Clock:
  """Seconds and compilations since it started; `seconds` collects what each part took."""
  started: float = dataclasses.field(default_factory=time.perf_counter)
  compiles_before: dict = dataclasses.field(default_factory=lambda: dict(_COMPILES))
  seconds: dict = dataclasses.field(default_factory=dict)

  @contextlib.contextmanager
  def timing(self, part: str):
    """Adds the seconds of the block to `seconds[part]`."""
    t = time.perf_counter()
    try:
      yield
    finally:
      self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - t

  def finish(self) -> dict:
    """"total" and "compile" into `seconds`; returns {"compiles", "compile_cache_hits"}: the
    programs compiled since the start and those read from the persistent cache instead."""
    self.seconds["total"] = time.perf_counter() - self.started
    self.seconds["compile"] = _COMPILES["seconds"] - self.compiles_before["seconds"]
    hits = _COMPILES["cache_hits"] - self.compiles_before["cache_hits"]
    return {"compiles": _COMPILES["count"] - self.compiles_before["count"] - hits,
            "compile_cache_hits": hits}


def _check_writable(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    # One probe per process: hosts sharing the workdir must not remove each other's.
    probe = os.path.join(workdir, f".write-test-{jax.process_index()}-{os.getpid()}")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise UserError(f"cannot write to the workdir {workdir!r}: {e.strerror}.",
                    "pass a --workdir you can write to.") from e


class _Console(logging.StreamHandler):
  """Writes to whatever sys.stdout is now: notebooks and test runners replace (and close) it."""

  def __init__(self):
    super().__init__()
    self.setFormatter(logging.Formatter("%(message)s"))

  @property
  def stream(self):
    return sys.stdout

  @stream.setter
  def stream(self, _):
    pass


@contextlib.contextmanager
def workdir_log(workdir: str):
  """`workdir` checked writable, and the log written to its log.txt (and the console) within."""
  _check_writable(workdir)
  handler = logging.FileHandler(os.path.join(workdir, "log.txt"))
  handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
  log.addHandler(handler)
  log.setLevel(logging.INFO)
  log.propagate = False  # our own console handler; no second copy through the root logger
  if not any(isinstance(h, _Console) for h in log.handlers):
    log.addHandler(_Console())
  try:
    yield
  finally:
    log.removeHandler(handler)
    handler.close()


def enable_compilation_cache(directory: str) -> None:
  """Persistent XLA compilation cache: a second run of the same config skips most compiles."""
  jax.config.update("jax_compilation_cache_dir", directory)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def versions() -> dict:
  """The versions of the packages that computed a run's results, and Python's."""
  out = {}
  for pkg in VERSIONED:
    with contextlib.suppress(metadata.PackageNotFoundError):
      out[pkg] = metadata.version(pkg)
  out["python"] = platform.python_version()
  return out


def epoch_progress(stage: str, quiet: bool):
  """A progress-bar factory for `train.fit`: one bar per epoch with the stage name and ETA."""

  def wrap(iterable, epoch, epochs, batches):
    return tqdm(iterable, total=batches, desc=f"{stage} epoch {epoch + 1}/{epochs}", leave=False,
                disable=quiet, unit="batch", dynamic_ncols=True)

  return wrap


def progress(quiet: bool):
  """A progress-bar factory `(iterable, desc)` for loops over samples, or None when quiet."""
  return None if quiet else (lambda it, desc: tqdm(it, desc=desc, leave=False))
