"""The benchmarked steps: models, batches, our jitted steps, the PyTorch peer's, the guard."""
import dataclasses
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn.bench import measure
from jax_unlearn import losses, ops, parallel, train
from jax_unlearn.errors import UserError, unknown_name
from jax_unlearn.models import from_linen, get_model, init_linen
from jax_unlearn.unlearn import blindspot

CASES = ("train", "blindspot", "predict")
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
  peer: bool = True  # whether jax_unlearn.bench.torch_peer has a twin of the model


MODELS: dict[str, ModelSpec] = {
    "allcnn": ModelSpec({}, (32, 32, 3), (1,)),
    "resnet18": ModelSpec({}, (32, 32, 3), (1,)),
    "lstm": ModelSpec({}, (2, 10, 50), (1,)),
    # The Electricity setting: 168 past + 24 future hours of (load, hour, weekday, customer id).
    # No PyTorch twin: a TFT port is a project of its own, so this row is ours only.
    "tft": ModelSpec({"horizon": 24, "hidden": 64, "num_ids": 370}, (192, 4), (24,),
                     quantiles=(0.1, 0.5, 0.9), series_ids=370, peer=False),
}


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

  def __init__(self, step, state: train.TrainState, batch, frozen: Any = None):
    self.step, self.state, self.batch, self.frozen = step, state, batch, frozen
    self.rng = jax.random.key(0)

  def __call__(self) -> jax.Array:
    self.state, metrics = self.step(self.state, self.batch, self.rng, self.frozen)
    return jax.block_until_ready(metrics)["loss"]

  def program(self):
    """(the jitted step, its arguments), for cost and memory analysis."""
    return self.step.jitted, (self.state, self.batch, self.rng, self.frozen)


class JaxPredict:
  """Runs one library prediction repeatedly on one batch's inputs."""

  def __init__(self, predict_fn: train.PredictFn, variables, x):
    self.fn, self.variables, self.x = predict_fn, variables, x

  def __call__(self) -> jax.Array:
    return jax.block_until_ready(self.fn(self.variables, self.x))

  def program(self):
    return self.fn.jitted, (self.variables, self.x)


def _frozen_blindspot(module, x: np.ndarray, seed: int) -> dict:
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


def build_model(name: str, spec: ModelSpec, dtype: str, kernels: str = "auto"):
  """The zoo model with the benchmark's settings; `kernels` where the model has convolutions."""
  module = get_model(name, dtype=jnp.dtype(dtype), **spec.kwargs)
  if hasattr(module, "kernels"):
    module = module.clone(kernels=ops.check_kernels(kernels))
  return module


def setup_model(name: str, spec: ModelSpec, batch_size: int, dtype: str, seed: int = 0,
                kernels: str = "auto") -> JaxSetup:
  module = build_model(name, spec, dtype, kernels)
  host = make_batch(spec, batch_size, seed)
  variables = jax.device_get(init_linen(module, jax.random.key(seed), jnp.asarray(host["x"][:2])))
  bs_variables = jax.device_get(_frozen_blindspot(module, host["x"], seed + 1))
  per_example = (losses.get_loss("quantile", quantiles=spec.quantiles) if spec.quantiles
                 else losses.l1)
  return JaxSetup(name, spec, from_linen(module), variables, bs_variables, host, per_example)


def blindspot_loss(s: JaxSetup, batch_size: int, dp: parallel.DataParallel | None = None):
  """The library's blindspot loss, configured as the method configures it for this batch."""
  d = blindspot.DEFAULTS
  rows = blindspot.forget_rows_for(FORGET_FRACTION, batch_size, dp)
  return blindspot.make_blindspot_loss(s.apply_fn, s.per_example, beta=d["beta"],
                                       attention=d["attention"], layers=d["layers"],
                                       forget_rows=rows)


def jax_case(s: JaxSetup, case: str, dp: parallel.DataParallel | None = None):
  """The callable that runs one step of `case` (fresh state from the same initial weights) on
  `dp` (one device by default; fixed batch blocks if `dp.shards`, see `train.make_train_step`)."""
  dp = parallel.resolve(dp)
  batch = dp.put_batch(s.host_batch)
  if case == "predict":
    return JaxPredict(train.make_predict_fn(s.apply_fn, dp), dp.replicate(s.variables),
                      batch["x"])
  tx = train.make_optimizer(1e-3)
  state = train.create_state(s.variables, tx, dp)
  if case == "train":
    loss_fn = train.supervised_loss(s.per_example)
    return JaxStep(train.make_train_step(s.apply_fn, loss_fn, tx, dp), state, batch)
  if case == "blindspot":
    loss_fn = blindspot_loss(s, len(s.host_batch["x"]), dp)
    return JaxStep(train.make_train_step(s.apply_fn, loss_fn, tx, dp), state, batch,
                   dp.replicate(s.blindspot_variables))
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
  from jax_unlearn.bench import torch_peer

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

@dataclasses.dataclass(frozen=True)
class Options:
  steps: int = 20
  warmup: int = 3
  dtype: str = "float32"
  devices: int = 1
  torch: bool = True
  seed: int = 0
  shards: int = 0  # also time each step with this many fixed batch shards (0: not)
  kernels: str = "auto"  # the convolution kernels of the models that have convolutions
  # Ensemble rows: steps of milliseconds get more rounds, up to this many timed seconds of each
  # variant, so their medians hold.
  min_seconds: float = 2.0


def _row(s: JaxSetup, case: str, batch_size: int, devices: int, opts: Options,
         info: Mapping[str, Any], peak: float | None) -> dict[str, Any]:
  return {"model": s.name, "case": case, "batch_size": batch_size, "devices": devices,
          "dtype": opts.dtype, "backend": info["backend"], "device_kind": info["device_kind"],
          "kernels": ops.kernels_info(opts.kernels), "peak_flops_per_s": peak}


def _finish(row: dict, stats: Mapping, times: Sequence[float], compile_s: float) -> dict:
  row.update(measure.summarize(times))
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
  row["peak_bytes"] = measure.peak_memory_bytes()
  return row


def _guard(row: dict, first, ours: Callable, theirs: Callable, case: str,
           info: Mapping[str, Any], dtype: str) -> bool:
  """Whether the peer computes our loss, on the first step and (training cases) the next."""
  tol = guard_tolerance(info["backend"], dtype)
  row["guard_rel_err"] = relative_error(first, theirs())
  row["guard_ok"] = row["guard_rel_err"] <= tol
  if case != "predict":  # the loss after one update checks gradients and Adam too
    row["guard_rel_err_step2"] = relative_error(ours(), theirs())
    row["guard_ok"] &= row["guard_rel_err_step2"] <= max(10 * tol, STEP2_TOLERANCE)
  return row["guard_ok"]


def bench_model(name: str, spec: ModelSpec, batch_size: int, opts: Options,
                info: Mapping[str, Any], peak: float | None, *,
                cases: Sequence[str] = CASES, log: Callable[[str], None] = print) -> list[dict]:
  """Rows of every case of one model at one batch size (and each device count)."""
  s = setup_model(name, spec, batch_size, opts.dtype, opts.seed, opts.kernels)
  dev = None
  if opts.torch and spec.peer:
    dev = torch_device(info)
    if dev is None:
      log(f"  {name}: PyTorch cannot use the {info['backend']} device; JAX only")
  device_counts = [1] + ([opts.devices] if opts.devices > 1 else [])
  rows = []
  for case in cases:
    by_devices = {}
    for n in device_counts:
      if batch_size % max(n, opts.shards):
        raise UserError(f"batch size {batch_size} does not split over {n} devices and "
                        f"{opts.shards} shards.",
                        f"pick batch sizes divisible by {max(n, opts.shards)}.")
      dp = parallel.DataParallel.create(n)
      ours = jax_case(s, case, dp)
      row = _row(s, case, batch_size, n, opts, info, peak)
      first, compile_s = measure.compile_clock().measure(ours)
      stats = measure.program_stats(*ours.program())
      fns = {"ours": ours}
      if opts.shards:  # DataParallel checks that shards are a multiple of the device count
        fns["sharded"] = jax_case(s, case, dataclasses.replace(dp, shards=opts.shards))
      if dev is not None and n == 1:
        theirs = torch_case(s, case, dev, opts.dtype)
        if _guard(row, first, ours, theirs, case, info, opts.dtype):
          fns["torch"] = theirs
        else:
          log(f"  {name}/{case}: correctness guard FAILED (relative error "
              f"{row['guard_rel_err']:.1e}, after one step "
              f"{row.get('guard_rel_err_step2', 0.0):.1e}); not compared")
      times = measure.time_interleaved(fns, steps=opts.steps, warmup=opts.warmup)
      row = _finish(row, stats, times["ours"], compile_s)
      if "sharded" in times:
        row["shards"] = opts.shards
        row["sharded_step_s"] = measure.summarize(times["sharded"])["step_s"]
        row["shards_time_ratio"] = row["sharded_step_s"] / row["step_s"]
      if "torch" in times:
        row["torch_step_s"] = measure.summarize(times["torch"])["step_s"]
        row["torch_step_s_min"] = min(times["torch"])
        row["speedup_vs_torch"] = row["torch_step_s"] / row["step_s"]
        row["speedup_vs_torch_min"] = row["torch_step_s_min"] / row["step_s_min"]
      by_devices[n] = row
      rows.append(row)
      log("  " + short(row))
      del ours, fns
    if len(by_devices) > 1:
      one, many = by_devices[1], by_devices[opts.devices]
      many["scaling_efficiency"] = many["samples_per_s"] / (one["samples_per_s"] * opts.devices)
  for n in device_counts:
    by_case = {r["case"]: r for r in rows if r["devices"] == n}
    if "train" in by_case and "blindspot" in by_case and by_case["train"]["program_bytes"]:
      by_case["blindspot"]["program_bytes_vs_train"] = (
          by_case["blindspot"]["program_bytes"] / by_case["train"]["program_bytes"])
  return rows


def short(row: Mapping) -> str:
  """One row as one line of progress output."""
  msg = (f"{row['model']:9s} {row['case']:9s} b={row['batch_size']:<5d} dev={row['devices']} "
         f"{row['step_s'] * 1e3:9.1f} ms  {row['samples_per_s']:9.1f} samples/s")
  if "speedup_vs_torch" in row:
    msg += f"  torch {row['torch_step_s'] * 1e3:9.1f} ms  ours/torch {row['speedup_vs_torch']:.2f}"
  if "shards_time_ratio" in row:
    msg += f"  {row['shards']} shards {row['shards_time_ratio']:.2f}x time"
  return msg
