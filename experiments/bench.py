"""Throughput benchmark of the jitted steps users run, with a PyTorch eager peer in the same run.

  python -m experiments.bench --models allcnn --batch-sizes 64 --out runs/bench
  jax-unlearn bench --models allcnn,resnet18 --dtype bfloat16 --devices 4
  jax-unlearn bench --models "" --no-torch --pipeline   # only the demo, end to end

Cases, per model and batch size (random inputs of the model's data contract, L1 loss, or the
quantile loss for the forecasting model):
  train      the original training step (library `make_train_step`, Adam)
  blindspot  the Blindspot unlearning step: student forward + backward, frozen blindspot
             forward, output and attention-transfer losses (library `make_blindspot_loss`,
             configured as the method does: 25 % forget rows, frozen forward on those only)
  finetune   fine-tuning and Gaussian fine-tuning run the training step's compiled program on
             other labels, so this row repeats the train row's timings
  predict    batched evaluation-mode prediction (library `make_predict_fn`)

Each case reports compile seconds, the step time (median, quartiles, min/max over `--steps`
timed steps after `--warmup`), samples/s, FLOPs per step (XLA's cost analysis of the step
lowered with XLA's own convolutions: compiled programs' analyses miss library calls such as
cuDNN's and oneDNN's), achieved FLOP/s and MFU against the device's peak (a table for
accelerators; on CPU the best matmul rate measured in the same run), the compiled program's
memory (arguments + temporaries + outputs, per program on every backend) and the process's
peak memory so far (GPU/TPU allocator peak, CPU peak RSS).

The PyTorch peer (experiments/torch_peer.py) runs the same architecture, losses and Adam on the
same batch. Before timing, its weights are copied from ours and both must produce the same loss
on two consecutive steps (the second checks the gradients and the optimizer update too), else the
case is reported as a guard failure and not compared. Then our step and the peer's alternate,
one each per round with the order flipped every round, so machine noise (other processes, clock
changes) hits both alike; "ours/torch" is the peer's median time over ours (> 1: we are faster).
"""
import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import losses, ops, parallel, train
from jax_unlearn.errors import UserError, unknown_name
from jax_unlearn.files import write_text
from jax_unlearn.models import from_linen, get_model, init_linen
from jax_unlearn.unlearn import blindspot

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

CASES = ("train", "blindspot", "finetune", "predict")
DEFAULT_BATCH_SIZES = {"cpu": (64, 256), "gpu": (256, 1024), "tpu": (256, 1024)}
FORGET_FRACTION = 0.25  # forget rows per batch in the blindspot case


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to benchmark one zoo model: its settings and the shape of one input row and label."""
  kwargs: Mapping[str, Any]
  sample_shape: tuple[int, ...]
  label_shape: tuple[int, ...]
  quantiles: tuple[float, ...] | None = None
  series_ids: int = 0  # > 0: the last input channel is a series id in [0, series_ids)
  peer: bool = True  # whether experiments.torch_peer has a twin of the model


MODELS: dict[str, ModelSpec] = {
    "allcnn": ModelSpec({}, (32, 32, 3), (1,)),
    "resnet18": ModelSpec({}, (32, 32, 3), (1,)),
    "lstm": ModelSpec({}, (2, 10, 50), (1,)),
    # The Electricity setting: 168 past + 24 future hours of (load, hour, weekday, customer id).
    # No PyTorch twin: a TFT port is a project of its own, so this row is ours only.
    "tft": ModelSpec({"horizon": 24, "hidden": 64, "num_ids": 370}, (192, 4), (24,),
                     quantiles=(0.1, 0.5, 0.9), series_ids=370, peer=False),
}


# --- measurement helpers ------------------------------------------------------------------------

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


def peak_flops(info: Mapping[str, Any], dtype: str, torch_rate: float | None) -> tuple[float | None, str]:
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


def model_flops(jitted, args: tuple) -> float:
  """FLOPs of one call of `jitted`: XLA's CPU cost model over the program with XLA's own
  convolutions, lowered for one device.

  The compiled programs' cost analyses miss work done in library calls (cuDNN on GPUs, our
  oneDNN convolutions on CPU), so the count comes from this reference lowering; it is the same
  on every backend and for every kernel choice.
  """
  avals = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), args)
  fn = jitted.__wrapped__
  with ops.convolutions("xla"):  # a fresh function object, so nothing is reused from cache
    lowered = jax.jit(lambda *a: fn(*a)).trace(*avals).lower(lowering_platforms=("cpu",))
  return _flops(lowered.cost_analysis())


def program_stats(jitted, args: tuple) -> dict[str, Any]:
  """Model FLOPs and the compiled program's memory (per device for SPMD programs)."""
  compiled = jitted.lower(*args).compile()
  mem = compiled.memory_analysis()
  program = None
  if mem is not None:
    program = int(mem.argument_size_in_bytes + mem.temp_size_in_bytes + mem.output_size_in_bytes
                  - mem.alias_size_in_bytes)
  return {"flops": model_flops(jitted, args) or None, "program_bytes": program}


# --- the JAX side -------------------------------------------------------------------------------

def make_batch(spec: ModelSpec, batch_size: int, seed: int = 0,
               forget_fraction: float = FORGET_FRACTION) -> dict[str, np.ndarray]:
  """A random host batch of the model's data contract with a fixed number of forget rows."""
  r = np.random.default_rng(seed)
  x = r.normal(size=(batch_size, *spec.sample_shape)).astype(np.float32)
  if spec.series_ids:
    x[..., -1] = r.integers(0, spec.series_ids, size=(batch_size, 1)).astype(np.float32)
  y = r.normal(size=(batch_size, *spec.label_shape)).astype(np.float32)
  forget = np.zeros(batch_size, np.float32)
  forget[r.permutation(batch_size)[:max(1, round(forget_fraction * batch_size))]] = 1.0
  return {"x": x, "y": y, "forget": forget, "mask": np.ones(batch_size, np.float32)}


class JaxStep:
  """Runs one library train step repeatedly on one batch, carrying the donated state."""

  def __init__(self, step, state: train.TrainState, batch, frozen: tuple = ()):
    self.step, self.state, self.batch, self.frozen = step, state, batch, frozen
    self.rng = jax.random.key(0)

  def __call__(self) -> float:
    self.state, metrics = self.step(self.state, self.batch, self.rng, *self.frozen)
    return jax.block_until_ready(metrics)["loss"]

  def program(self):
    """(the jitted step, its arguments), for cost and memory analysis."""
    return self.step.jitted[len(self.frozen)], (self.state, self.batch, self.rng, *self.frozen)


class JaxPredict:
  def __init__(self, predict_fn, variables, x):
    self.fn, self.variables, self.x = predict_fn, variables, x

  def __call__(self):
    return jax.block_until_ready(self.fn(self.variables, self.x))

  def program(self):
    return self.fn, (self.variables, self.x)


def _frozen_blindspot(module, spec: ModelSpec, x: np.ndarray, seed: int) -> dict:
  """A blindspot model: fresh weights and non-trivial BatchNorm running statistics."""
  variables = init_linen(module, jax.random.key(seed), jnp.asarray(x[:2]))
  if "batch_stats" in variables:
    r = np.random.default_rng(seed)
    variables["batch_stats"] = jax.tree_util.tree_map_with_path(
        lambda path, a: (r.uniform(0.5, 1.5, a.shape) if "var" in str(path[-1])
                         else 0.1 * r.normal(size=a.shape)).astype(np.float32),
        variables["batch_stats"])
  return variables


@dataclasses.dataclass
class JaxSetup:
  """Everything a model's JAX cases need: the module, host copies of both models' variables."""
  name: str
  spec: ModelSpec
  apply_fn: Callable
  variables: dict  # numpy
  blindspot_variables: dict  # numpy
  host_batch: dict
  per_example: Callable


def setup_model(name: str, spec: ModelSpec, batch_size: int, dtype: str, seed: int = 0) -> JaxSetup:
  module = get_model(name, dtype=jnp.dtype(dtype), **spec.kwargs)
  host = make_batch(spec, batch_size, seed)
  variables = jax.device_get(init_linen(module, jax.random.key(seed), jnp.asarray(host["x"][:2])))
  bs_variables = jax.device_get(_frozen_blindspot(module, spec, host["x"], seed + 1))
  per_example = (losses.get_loss("quantile", quantiles=spec.quantiles) if spec.quantiles
                 else losses.l1)
  return JaxSetup(name, spec, from_linen(module), variables, bs_variables, host, per_example)


def blindspot_loss(s: JaxSetup, batch_size: int, mesh=None, shards: int | None = None):
  """The library's blindspot loss, configured as the method configures it for this batch."""
  rows = blindspot.forget_rows_for(FORGET_FRACTION, batch_size, mesh, shards)
  return blindspot.make_blindspot_loss(s.apply_fn, s.per_example, forget_rows=rows)


def jax_case(s: JaxSetup, case: str, mesh=None, shards: int | None = None):
  """The callable that runs one step of `case` (fresh state from the same initial weights),
  with the batch in `shards` fixed blocks if given (see `train.make_train_step`)."""
  batch = (parallel.shard_batch(s.host_batch, mesh) if mesh is not None
           else jax.device_put(s.host_batch))
  variables = jax.device_put(s.variables)
  if case == "predict":
    fn = train.make_predict_fn(s.apply_fn, mesh, shards)
    if mesh is not None:
      variables = jax.device_put(variables, parallel.replicated(mesh))
    return JaxPredict(fn, variables, batch["x"])
  tx = train.make_optimizer(1e-3)
  state = train.create_state(variables, tx, mesh)
  if case == "train":
    return JaxStep(train.make_train_step(s.apply_fn, train.supervised_loss(s.per_example), tx,
                                         mesh, shards=shards), state, batch)
  if case == "blindspot":
    frozen = jax.device_put(s.blindspot_variables)
    if mesh is not None:
      frozen = jax.device_put(frozen, parallel.replicated(mesh))
    loss_fn = blindspot_loss(s, len(s.host_batch["x"]), mesh, shards)
    return JaxStep(train.make_train_step(s.apply_fn, loss_fn, tx, mesh, shards=shards), state,
                   batch, (frozen,))
  raise unknown_name("benchmark case", case, CASES)


# --- the PyTorch side ---------------------------------------------------------------------------

def torch_device(info: Mapping[str, Any]) -> str | None:
  """The peer's device: the same kind as ours, or None when PyTorch cannot use it."""
  import torch
  if info["backend"] == "cpu":
    return "cpu"
  if info["backend"] == "gpu" and torch.cuda.is_available():
    return "cuda"
  return None


def torch_case(s: JaxSetup, case: str, device: str, dtype: str) -> Callable[[], Any]:
  """The peer's step of `case`, blocking, with weights copied from the same initial variables."""
  import torch
  from experiments import torch_peer

  kwargs = {**s.spec.kwargs, "in_features": s.spec.sample_shape[-1]}
  model = torch_peer.make_peer(s.name, s.variables, device, **kwargs)
  batch = {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in s.host_batch.items()}
  bs = (torch_peer.make_peer(s.name, s.blindspot_variables, device, **kwargs)
        if case == "blindspot" else None)
  autocast = torch.bfloat16 if dtype == "bfloat16" else None
  steps = torch_peer.Steps(model, batch, blindspot=bs, autocast=autocast)
  fn = {"train": steps.train, "blindspot": steps.blindspot_step, "predict": steps.predict}[case]

  def run():
    out = fn()
    torch_peer.synchronize(device)
    return out

  return run


def configure_torch(info: Mapping[str, Any]) -> None:
  import torch
  if info["backend"] == "gpu":
    torch.backends.cudnn.benchmark = True
    # XLA's default f32 precision on GPUs uses TF32 tensor cores; let the peer do the same.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


# Adam's first update is about lr * sign(gradient) for every weight, so gradient entries that
# are rounding noise (equal to ~1e-6 on both sides) still move by lr and the two losses after one
# step drift apart by ~1e-4..1e-3 although the gradients agree (checked to 2e-6 relative).
STEP2_TOLERANCE = 5e-3


def guard_tolerance(backend: str, dtype: str) -> float:
  if dtype == "bfloat16":
    return 5e-2
  return 1e-4 if backend == "cpu" else 5e-3  # accelerators: TF32 on both sides


def relative_error(ours, theirs) -> float:
  a = np.asarray(jax.device_get(ours), np.float64)
  b = np.asarray(theirs.detach().cpu().numpy() if hasattr(theirs, "detach") else theirs,
                 np.float64)
  return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


# --- one model ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Options:
  steps: int = 20
  warmup: int = 3
  dtype: str = "float32"
  devices: int = 1
  torch: bool = True
  seed: int = 0
  shards: int = 0  # also time each step with this many fixed batch shards (0: not)


def _row(s: JaxSetup, case: str, batch_size: int, devices: int, opts: Options,
         info: Mapping[str, Any], peak: float | None) -> dict[str, Any]:
  return {"model": s.name, "case": case, "batch_size": batch_size, "devices": devices,
          "dtype": opts.dtype, "backend": info["backend"], "device_kind": info["device_kind"],
          "peak_flops_per_s": peak}


def _finish(row: dict, stats: Mapping, times: Sequence[float], compile_s: float) -> dict:
  row.update(summarize(times))
  row["steps"] = len(times)
  row["compile_s"] = compile_s
  row["samples_per_s"] = row["batch_size"] / row["step_s"]
  flops = stats["flops"]
  row["flops_per_step"] = flops  # the whole batch's
  row["flops_per_s"] = row["flops_per_step"] / row["step_s"] if flops else None
  peak = row["peak_flops_per_s"]
  row["mfu"] = (row["flops_per_s"] / (peak * row["devices"])
                if flops and peak else None)
  row["program_bytes"] = stats["program_bytes"]
  row["peak_bytes"] = peak_memory_bytes()
  return row


def bench_model(name: str, spec: ModelSpec, batch_size: int, opts: Options,
                info: Mapping[str, Any], peak: float | None, *,
                cases: Sequence[str] = CASES, log: Callable[[str], None] = print) -> list[dict]:
  """Rows of every case of one model at one batch size (and each device count)."""
  s = setup_model(name, spec, batch_size, opts.dtype, opts.seed)
  dev = None
  if opts.torch and spec.peer:
    dev = torch_device(info)
    if dev is None:
      log(f"  {name}: PyTorch cannot use the {info['backend']} device; JAX only")
  device_counts = [1] + ([opts.devices] if opts.devices > 1 else [])
  rows = []
  for case in cases:
    if case == "finetune":
      continue
    by_devices = {}
    for n in device_counts:
      if batch_size % max(n, opts.shards):
        raise UserError(f"batch size {batch_size} does not split over {n} devices and "
                        f"{opts.shards} shards.",
                        f"pick batch sizes divisible by {max(n, opts.shards)}.")
      mesh = parallel.make_mesh(n) if n > 1 else None
      ours = jax_case(s, case, mesh)
      row = _row(s, case, batch_size, n, opts, info, peak)
      first, compile_s = compile_clock().measure(ours)
      stats = program_stats(*ours.program())
      fns = {"ours": ours}
      if opts.shards:
        parallel.batch_multiple(mesh, opts.shards)  # a multiple of the device count
        fns["sharded"] = jax_case(s, case, mesh, opts.shards)
      if dev is not None and n == 1:
        theirs = torch_case(s, case, dev, opts.dtype)
        tol = guard_tolerance(info["backend"], opts.dtype)
        row["guard_rel_err"] = relative_error(first, theirs())
        row["guard_ok"] = row["guard_rel_err"] <= tol
        if case != "predict":  # the loss after one update checks gradients and Adam too
          row["guard_rel_err_step2"] = relative_error(ours(), theirs())
          row["guard_ok"] &= row["guard_rel_err_step2"] <= max(10 * tol, STEP2_TOLERANCE)
        if row["guard_ok"]:
          fns["torch"] = theirs
        else:
          log(f"  {name}/{case}: correctness guard FAILED (relative error "
              f"{row['guard_rel_err']:.1e}, after one step "
              f"{row.get('guard_rel_err_step2', 0.0):.1e}); not compared")
      times = time_interleaved(fns, steps=opts.steps, warmup=opts.warmup)
      row = _finish(row, stats, times["ours"], compile_s)
      if "sharded" in times:
        row["shards"] = opts.shards
        row["sharded_step_s"] = summarize(times["sharded"])["step_s"]
        row["shards_time_ratio"] = row["sharded_step_s"] / row["step_s"]
      if "torch" in times:
        row["torch_step_s"] = summarize(times["torch"])["step_s"]
        row["torch_step_s_min"] = min(times["torch"])
        row["speedup_vs_torch"] = row["torch_step_s"] / row["step_s"]
        row["speedup_vs_torch_min"] = row["torch_step_s_min"] / row["step_s_min"]
      by_devices[n] = row
      rows.append(row)
      log("  " + _short(row))
      del ours, fns
    if len(by_devices) > 1:
      one, many = by_devices[1], by_devices[opts.devices]
      many["scaling_efficiency"] = many["samples_per_s"] / (one["samples_per_s"] * opts.devices)
    if case == "train" and "finetune" in cases:
      for n, row in by_devices.items():
        rows.append({**row, "case": "finetune",
                     "note": "same compiled program as train (other labels)"})
  for n in device_counts:
    by_case = {r["case"]: r for r in rows if r["devices"] == n}
    if "train" in by_case and "blindspot" in by_case and by_case["train"]["program_bytes"]:
      by_case["blindspot"]["program_bytes_vs_train"] = (
          by_case["blindspot"]["program_bytes"] / by_case["train"]["program_bytes"])
  return rows


def _short(row: Mapping) -> str:
  msg = (f"{row['model']:9s} {row['case']:9s} b={row['batch_size']:<5d} dev={row['devices']} "
         f"{row['step_s'] * 1e3:9.1f} ms  {row['samples_per_s']:9.1f} samples/s")
  if "speedup_vs_torch" in row:
    msg += f"  torch {row['torch_step_s'] * 1e3:9.1f} ms  ours/torch {row['speedup_vs_torch']:.2f}"
  if "shards_time_ratio" in row:
    msg += f"  {row['shards']} shards {row['shards_time_ratio']:.2f}x time"
  return msg


# --- the whole pipeline ------------------------------------------------------------------------

# The published code's way of computing the metrics, as overrides of the same pipeline: every
# row predicted in a call of its own, and the relearning of the Anamnesis Index handed back to
# the host after every step to check its error. (Its evaluation inside a relearning check still
# runs in one compiled call, so this is a lower bound on that code's cost.)
PAPER_STYLE = ("--config.metrics.predict_batch_size=1", "--config.metrics.ain_steps_per_call=1")


def run_pipeline(config: str, workdir: str, overrides: Sequence[str] = ()) -> dict:
  """Runs the experiment in a fresh process and workdir (no compilation cache); its seconds."""
  cmd = [sys.executable, "-m", "jax_unlearn", "run", "--config", config, "--workdir", workdir,
         "--fresh", "--quiet", "--cache-dir", "none", *overrides]
  start = time.perf_counter()
  done = subprocess.run(cmd, capture_output=True, text=True)
  wall = time.perf_counter() - start
  if done.returncode != 0:
    raise UserError(f"the pipeline failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}",
                    "run that command alone to see the whole error.")
  with open(os.path.join(workdir, "results.json")) as f:
    seconds = json.load(f)["seconds"]
  return {"wall_s": wall, **{k: v for k, v in seconds.items() if isinstance(v, float)}}


def pipeline_comparison(config: str, out_dir: str, overrides: Sequence[str] = ()) -> dict:
  """The experiment end to end as configured, then with the published code's metric loops.

  `overrides` (command-line config overrides) apply to both runs.
  """
  ours = run_pipeline(config, os.path.join(out_dir, "pipeline_ours"), overrides)
  print(f"  pipeline as configured: {ours['wall_s']:.1f} s")
  paper = run_pipeline(config, os.path.join(out_dir, "pipeline_paper_style"),
                       (*overrides, *PAPER_STYLE))
  print(f"  pipeline, per-row metrics and per-step relearning checks: {paper['wall_s']:.1f} s")
  return {"config": config, "ours": ours, "paper_style": paper, "overrides": list(PAPER_STYLE),
          "speedup": paper["wall_s"] / ours["wall_s"],
          "metrics_share": ours["metrics"] / ours["total"]}


def pipeline_markdown(p: Mapping[str, Any]) -> str:
  stages = [k for k in p["ours"] if k not in ("wall_s", "total", "compile")]
  lines = ["", f"## Whole pipeline: `{p['config']}`", "",
           "Seconds per stage, fresh process and workdir, no compilation cache; \"paper style\" "
           f"= {' '.join(p['overrides'])} (predictions one row per call, relearning checked on "
           "the host after every step).", "",
           "| | " + " | ".join(stages) + " | compile | wall |",
           "|---|" + "---|" * (len(stages) + 2)]
  for name in ("ours", "paper_style"):
    r = p[name]
    lines.append(f"| {name.replace('_', ' ')} | "
                 + " | ".join(f"{r.get(k, 0.0):.1f}" for k in stages)
                 + f" | {r['compile']:.1f} | {r['wall_s']:.1f} |")
  lines += ["", f"ours {p['speedup']:.2f}x faster end to end; metrics take "
            f"{p['metrics_share']:.0%} of our pipeline's time."]
  return "\n".join(lines) + "\n"


# --- report -------------------------------------------------------------------------------------

def _fmt(v, spec: str, scale: float = 1.0) -> str:
  return "—" if v is None else format(v * scale, spec)


def markdown(rows: Sequence[Mapping], header: Mapping[str, Any]) -> str:
  lines = [f"# Benchmark: {header['device_kind']} ({header['backend']}), {header['dtype']}", "",
           f"jax {header['jax']}, torch {header['torch'] or 'not used'}; peak for MFU: "
           f"{_fmt(header['peak_flops_per_s'], '.1f', 1e-9)} GFLOP/s ({header['peak_source']}); "
           f"step times over {header['steps']} steps after {header['warmup']} warm-up, "
           "ours and torch interleaved.", "",
           "| model | case | batch | dev | compile s | step ms: median [q1, q3] | samples/s "
           "| GFLOP/step | GFLOP/s | MFU | program MB | torch ms | ours/torch (of minima) |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    step = (f"{r['step_s'] * 1e3:.1f} [{r['step_s_q1'] * 1e3:.1f}, {r['step_s_q3'] * 1e3:.1f}]")
    speed = (f"{r['speedup_vs_torch']:.2f} ({r['speedup_vs_torch_min']:.2f})"
             if "speedup_vs_torch" in r else "—")
    if r.get("guard_ok") is False:
      speed = "guard failed"
    extra = []
    if r.get("scaling_efficiency") is not None:
      extra.append(f"scaling {r['scaling_efficiency']:.0%}")
    if r.get("program_bytes_vs_train") is not None:
      extra.append(f"mem {r['program_bytes_vs_train']:.2f}x train")
    if r.get("shards_time_ratio") is not None:
      extra.append(f"{r['shards']} fixed shards: {r['shards_time_ratio']:.2f}x time")
    if r.get("note"):
      extra.append(r["note"])
    case = r["case"] + (f" ({'; '.join(extra)})" if extra else "")
    lines.append(
        f"| {r['model']} | {case} | {r['batch_size']} | {r['devices']} | {r['compile_s']:.1f} "
        f"| {step} | {r['samples_per_s']:.1f} | {_fmt(r['flops_per_step'], '.1f', 1e-9)} "
        f"| {_fmt(r['flops_per_s'], '.1f', 1e-9)} | {_fmt(r['mfu'], '.1%')} "
        f"| {_fmt(r['program_bytes'], '.0f', 2**-20)} | {_fmt(r.get('torch_step_s'), '.1f', 1e3)} "
        f"| {speed} |")
  return "\n".join(lines) + "\n"


# --- command line -------------------------------------------------------------------------------

def _csv(text: str) -> list[str]:
  return [t for t in text.split(",") if t]


def parse_args(argv: Sequence[str] | None):
  p = argparse.ArgumentParser(prog="jax-unlearn bench", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="allcnn,resnet18,lstm,tft",
                 help=f"comma-separated, from {', '.join(MODELS)}")
  p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
  p.add_argument("--batch-sizes", default=None,
                 help="comma-separated; default 64,256 on CPU and 256,1024 on accelerators")
  p.add_argument("--steps", type=int, default=20, help="timed steps per case (>= 20 for reports)")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--devices", type=int, default=1,
                 help="also run data-parallel over N devices and report scaling from 1 to N")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="compute dtype of both sides (parameters and Adam stay float32)")
  p.add_argument("--device-kind", choices=("auto", "cpu", "gpu", "tpu"), default="auto")
  p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--shards", type=int, default=0,
                 help="also time each step with this many fixed batch shards (batch_shards), "
                      "interleaved with the plain step; reports the time ratio")
  p.add_argument("--out", default="runs/bench", help="directory for bench.jsonl and bench.md")
  p.add_argument("--pipeline", nargs="?", const="experiments/configs/demo.py", default=None,
                 metavar="CONFIG",
                 help="also time a whole experiment (default: the demo) as configured and with "
                      "the published code's per-row metric loops; written to pipeline.json")
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the benchmark; 0 on success, 1 if a correctness guard failed."""
  args = parse_args(argv)
  try:
    return _main(args)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _main(args) -> int:
  models, cases = _csv(args.models), _csv(args.cases)
  for m in models:
    if m not in MODELS:
      raise unknown_name("model", m, MODELS)
  for c in cases:
    if c not in CASES:
      raise unknown_name("benchmark case", c, CASES)
  if args.pipeline is not None and not os.path.isfile(args.pipeline):
    raise UserError(f"--pipeline config {args.pipeline!r} does not exist.",
                    "give a file from experiments/configs/, e.g. experiments/configs/demo.py.")
  if args.steps < 1 or args.warmup < 0 or args.shards < 0:
    raise UserError("--steps must be >= 1, --warmup and --shards >= 0.",
                    "e.g. --steps 20 --warmup 3 --shards 4.")
  info = device_info(args.device_kind)
  if args.devices > info["device_count"]:
    raise UserError(f"--devices {args.devices} but {info['device_count']} are available.",
                    "on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N.")
  sizes = ([int(b) for b in _csv(args.batch_sizes)] if args.batch_sizes
           else list(DEFAULT_BATCH_SIZES.get(info["backend"], (64, 256))))
  use_torch, torch_version, torch_rate = not args.no_torch, None, None
  if use_torch:
    try:
      import torch
    except ImportError:
      print("PyTorch is not installed (pip install torch); benchmarking JAX only.")
      use_torch = False
    else:
      torch_version = torch.__version__
      configure_torch(info)
      if info["backend"] == "cpu":
        from experiments import torch_peer
        torch_rate = torch_peer.gemm_flops_per_s()
  peak, source = peak_flops(info, args.dtype, torch_rate)
  opts = Options(args.steps, args.warmup, args.dtype, args.devices, use_torch, args.seed,
                 args.shards)
  print(f"{info['device_kind']} ({info['backend']}, {info['device_count']} devices), {args.dtype}; "
        f"peak {_fmt(peak, '.1f', 1e-9)} GFLOP/s ({source})")
  rows = []
  for m in models:
    for b in sizes:
      rows += bench_model(m, MODELS[m], b, opts, info, peak, cases=cases)
  header = {**info, "dtype": args.dtype, "jax": jax.__version__, "torch": torch_version,
            "peak_flops_per_s": peak, "peak_source": source, "steps": args.steps,
            "warmup": args.warmup}
  md = markdown(rows, header)
  files = {"bench.jsonl": "".join(json.dumps(r) + "\n" for r in rows)}
  if args.pipeline is not None:
    pipeline = pipeline_comparison(args.pipeline, args.out)
    files["pipeline.json"] = json.dumps(pipeline, indent=1) + "\n"
    md += pipeline_markdown(pipeline)
  files["bench.md"] = md
  os.makedirs(args.out, exist_ok=True)
  for fname, text in files.items():
    write_text(os.path.join(args.out, fname), text)
  print()
  print(md)
  return 1 if any(r.get("guard_ok") is False for r in rows) else 0


if __name__ == "__main__":
  sys.exit(main())
