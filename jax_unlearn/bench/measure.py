"""Timing and accounting: compile seconds, interleaved step times, peaks, memory, FLOPs."""
import os
import resource
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import ops
from jax_unlearn.errors import UserError

# Dense (no sparsity) peak FLOP/s per chip from the vendors' datasheets. XLA's default float32
# precision on these GPUs runs matrix products on TF32 tensor cores (the PyTorch peer is set to
# do the same), so their float32 entry is the TF32 peak; without tensor cores an H100 does 67
# TFLOP/s and float32 MFU would exceed 100 %. The first entry whose name occurs in the device
# kind wins, so specific names come first.
PEAKS: tuple[tuple[str, Mapping[str, float]], ...] = (
    ("H100 PCIe", {"float32": 378e12, "bfloat16": 756e12}),
    ("H100", {"float32": 494.7e12, "bfloat16": 989.4e12}),
    ("H200", {"float32": 494.7e12, "bfloat16": 989.4e12}),
    ("A100", {"float32": 156e12, "bfloat16": 312e12}),
    ("TPU v4", {"bfloat16": 275e12}),
    ("TPU v5 lite", {"bfloat16": 197e12}),
    ("TPU v5e", {"bfloat16": 197e12}),
)


class CompileClock:
  """Sums JAX's tracing, lowering and backend-compile durations while active."""

  _EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
             "/jax/core/compile/jaxpr_to_mlir_module_duration",
             "/jax/core/compile/backend_compile_duration")

  def __init__(self):
    self.seconds, self.active = 0.0, False
    jax.monitoring.register_event_duration_secs_listener(self._listen)

  def _listen(self, event: str, duration: float, **_) -> None:
    if self.active and event in self._EVENTS:
      self.seconds += duration

  def measure(self, fn: Callable[[], Any]) -> tuple[Any, float]:
    self.seconds, self.active = 0.0, True
    try:
      out = fn()
    finally:
      self.active = False
    return out, self.seconds


_CLOCK: CompileClock | None = None


def compile_clock() -> CompileClock:
  """The process's one clock: JAX listeners cannot be unregistered, so they are not repeated."""
  global _CLOCK
  if _CLOCK is None:
    _CLOCK = CompileClock()
  return _CLOCK


def summarize(times: Sequence[float]) -> dict[str, float]:
  t = np.asarray(times, np.float64)
  q1, med, q3 = np.percentile(t, [25, 50, 75])
  return {"step_s": float(med), "step_s_q1": float(q1), "step_s_q3": float(q3),
          "step_s_min": float(t.min()), "step_s_max": float(t.max())}


def time_interleaved(fns: Mapping[str, Callable[[], Any]], *, steps: int,
                     warmup: int) -> dict[str, list[float]]:
  """Seconds per call of each function, one call of each per round, order flipped every round.

  Every function must block until its work is done.
  """
  names = list(fns)
  for _ in range(warmup):
    for n in names:
      fns[n]()
  times = {n: [] for n in names}
  for r in range(steps):
    for n in (names if r % 2 == 0 else names[::-1]):
      t0 = time.perf_counter()
      fns[n]()
      times[n].append(time.perf_counter() - t0)
  return times


def device_info(kind: str = "auto") -> dict[str, Any]:
  """Backend ("cpu", "gpu", "tpu"), device kind and count; `kind` other than auto must match."""
  backend = jax.default_backend()
  if kind not in ("auto", backend):
    raise UserError(f"--device-kind {kind} asked for, but JAX runs on {backend}.",
                    "install the matching jaxlib (e.g. jax[cuda12]) or use --device-kind auto.")
  dev = jax.devices()[0]
  return {"backend": backend, "device_kind": dev.device_kind, "device_count": jax.device_count()}


def matmul_flops_per_s(dtype, n: int = 2048, repeats: int = 5) -> float:
  """Best rate of an n x n matmul through XLA: the practical peak of a CPU."""
  a = jnp.asarray(np.random.default_rng(0).normal(size=(n, n)), dtype)
  mm = jax.jit(lambda a: a @ a)
  mm(a).block_until_ready()
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter()
    mm(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2.0 * n**3 / best


def peak_flops(info: Mapping[str, Any], dtype: str,
               torch_rate: float | None) -> tuple[float | None, str]:
  """(peak FLOP/s per device, where it comes from) for MFU."""
  if info["backend"] == "cpu":
    rates = {"xla float32": matmul_flops_per_s(jnp.float32)}
    if dtype != "float32":
      rates[f"xla {dtype}"] = matmul_flops_per_s(jnp.dtype(dtype))
    if torch_rate:
      rates["torch float32"] = torch_rate
    best = max(rates, key=rates.get)
    return rates[best], f"measured {best} matmul (2048^2), best of {len(rates)} rates"
  for name, peaks in PEAKS:
    if name.lower() in info["device_kind"].lower():
      if dtype in peaks:
        return peaks[dtype], f"{name} datasheet dense {'TF32' if dtype == 'float32' else dtype}"
      return None, f"{name}: no {dtype} peak in the table"
  return None, f"unknown device {info['device_kind']!r}"


def peak_memory_bytes() -> int:
  """Peak memory of this process so far: the allocator's peak on accelerators, RSS on CPU."""
  stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"])
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def _flops(cost) -> float:
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0] if cost else {}
  return float(cost.get("flops", 0.0)) if cost else 0.0


def _avals(args: tuple) -> tuple:
  return jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)


def reference_lowering(jitted, args: tuple):
  """`jitted`'s function lowered for one CPU device with XLA's own convolutions.

  Unsharded arguments and a fresh jit of the wrapped function, so the program is the whole
  batch's on one device whatever mesh `jitted` was built for.
  """
  fn = jitted.__wrapped__
  with ops.xla_convolutions():
    return jax.jit(fn).trace(*_avals(args)).lower(lowering_platforms=("cpu",))


def model_flops(jitted, args: tuple) -> float:
  """FLOPs of one call of `jitted`: XLA's CPU cost model over `reference_lowering`.

  The compiled programs' cost analyses miss work done in library calls (cuDNN on GPUs, our
  oneDNN convolutions on CPU), so the count comes from this reference lowering; it is the same
  on every backend and for every kernel choice.
  """
  return _flops(reference_lowering(jitted, args).cost_analysis())


def program_stats(jitted, args: tuple) -> dict[str, Any]:
  """Model FLOPs and the compiled program's memory (per device for SPMD programs)."""
  return {"flops": model_flops(jitted, args) or None, "program_bytes": program_bytes(jitted, args)}


def program_bytes(jitted, args: tuple) -> int | None:
  """The compiled program's memory: arguments + temporaries + outputs, less donated buffers."""
  mem = jitted.lower(*args).compile().memory_analysis()
  if mem is None:
    return None
  return int(mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
             - mem.alias_size_in_bytes)


def memory_budget() -> tuple[int, str]:
  """(bytes a step may use on the first device, where the figure comes from): the allocator's
  limit on accelerators, the memory available now on CPU."""
  dev = jax.devices()[0]
  stats = dev.memory_stats() if jax.default_backend() != "cpu" else None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"]), f"{dev.device_kind} allocator limit"
  try:
    import psutil
    return int(psutil.virtual_memory().available), "available RAM (psutil)"
  except ImportError:
    pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return int(pages), "available RAM (sysconf)"
