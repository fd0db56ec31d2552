"""The ensemble rows: K small models trained by one vmapped step against K runs of the single step.

For each model and member count K, the ensemble step (`train.ensemble.make_ensemble_step`) and K
calls of the single-model step (`train.make_train_step`, one call per member, each on its own
state, batch and key, blocking once after the last) alternate round by round
(`measure.time_interleaved`), so both see the same machine. At the largest K the ensemble step
in chunks (members a few at a time, as `ensemble.choose_chunk` picks for a small budget) then
alternates with the unchunked one for one round or more (on XLA's CPU backend convolutions
inside the chunk loop run many times slower, so a round can take minutes). Steps of
milliseconds get more rounds, up to `Options.min_seconds` of each variant, so their medians
hold. FLOPs are K times the single step's (the vmapped program does the same arithmetic);
memory is each compiled program's (`measure.program_bytes`).
"""
import dataclasses
import math
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn.bench import measure
from jax_unlearn.bench.cases import ModelSpec, Options, build_model, make_batch
from jax_unlearn.bench.report import fmt
from jax_unlearn import losses, ops, parallel, train
from jax_unlearn.models import from_linen, init_linen
from jax_unlearn.train import ensemble

ENSEMBLE_MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec({"hidden": (64, 64)}, (10,), (1,)),  # diabetes-like tabular rows
    "allcnn": ModelSpec({"width": 0.25}, (32, 32, 1), (1,)),  # the digit images' shape
}
ENSEMBLE_BATCH = 64
# The ensemble rows' defaults: few rounds (quick steps get more, see `rounds`), XLA's kernels.
ENSEMBLE_OPTIONS = Options(steps=5, warmup=1, kernels="xla")
CHEAP = ("mlp",)  # models also run at 4 K members: their steps are dispatch-bound and quick
MAX_ROUNDS = 1000
SMALL_BUDGET_MEMBERS = 4  # the illustrative budget: this many members' step memory (< K / 2)


def small_budget_members(k: int) -> int:
  """Members' worth of memory in the illustrative budget: at most half of K, so it chunks."""
  return max(1, min(SMALL_BUDGET_MEMBERS, k // 2))


def member_counts(name: str, k: int) -> list[int]:
  """1, 4, 16, ... below `k`, then `k` (and 4 `k` for the cheap models): speedup against K."""
  counts = [4**i for i in range(8) if 4**i < k] + [k]
  return counts + [4 * k] if name in CHEAP else counts


class EnsembleRun:
  """One ensemble step of K members per call, carrying the donated state."""

  def __init__(self, step, state, batch, rngs):
    self.step, self.state, self.batch, self.rngs = step, state, batch, rngs

  def __call__(self) -> jax.Array:
    self.state, metrics = self.step(self.state, self.batch, self.rngs)
    return jax.block_until_ready(metrics)["loss"]

  def program(self):
    return self.step.jitted, (self.state, self.batch, self.rngs, None)


class SequentialRun:
  """K calls of the single step per call, member by member; blocks once, after the last."""

  def __init__(self, step, states: list, batches: list, keys: list):
    self.step, self.states, self.batches, self.keys = step, states, batches, keys

  def __call__(self) -> list:
    out = []
    for k, (batch, key) in enumerate(zip(self.batches, self.keys)):
      self.states[k], metrics = self.step(self.states[k], batch, key)
      out.append(metrics["loss"])
    return jax.block_until_ready(out)

  def program(self):
    return self.step.jitted, (self.states[0], self.batches[0], self.keys[0], None)


class EnsembleSetup:
  """K members of one model (own initial weights, batch and key), the ensemble's pieces and the
  single step's, built from the same host arrays."""

  def __init__(self, name: str, spec: ModelSpec, k: int, batch_size: int, dtype: str,
               kernels: str, seed: int = 0):
    self.name, self.k, self.batch_size = name, k, batch_size
    module = build_model(name, spec, dtype, kernels)
    self.convolutional = hasattr(module, "kernels")
    host = [make_batch(spec, batch_size, seed + i) for i in range(k)]
    self.host = {key: np.stack([h[key] for h in host]) for key in ("x", "y", "mask")}
    keys = jax.random.split(jax.random.key(seed), k)
    x0 = jnp.asarray(self.host["x"][0, :2])
    self.variables = jax.device_get(jax.vmap(lambda key: init_linen(module, key, x0))(keys))
    self.apply_fn = from_linen(module)
    self.loss_fn = train.supervised_loss(losses.l1)
    self.tx = train.make_optimizer(1e-3)
    self.rngs = jax.vmap(jax.random.key)(jnp.arange(seed, seed + k))

  def ensemble(self, chunk: int | None = None) -> EnsembleRun:
    members = parallel.Members.create(1)
    step = ensemble.make_ensemble_step(self.apply_fn, self.loss_fn, self.tx, chunk=chunk,
                                       members=members)
    state = ensemble.create_ensemble_state(self.variables, self.tx, members)
    return EnsembleRun(step, state, members.put_batch(self.host), members.put(self.rngs))

  def sequential(self) -> SequentialRun:
    step = train.make_train_step(self.apply_fn, self.loss_fn, self.tx)
    states = [train.create_state(ensemble.member(self.variables, i), self.tx)
              for i in range(self.k)]
    batches = [jax.device_put({key: a[i] for key, a in self.host.items()}) for i in range(self.k)]
    return SequentialRun(step, states, batches, [self.rngs[i] for i in range(self.k)])


def _compiled(run) -> tuple[Any, float]:
  """(the first call's output, its compile seconds)."""
  return measure.compile_clock().measure(run)


def rounds(fns: Sequence[Callable], at_least: int, seconds: float) -> int:
  """Rounds that give the quickest of `fns` (timed once here) `seconds`, >= `at_least`."""
  quickest = float("inf")
  for fn in fns:
    t0 = time.perf_counter()
    fn()
    quickest = min(quickest, time.perf_counter() - t0)
  return int(min(max(at_least, math.ceil(seconds / max(quickest, 1e-9))), MAX_ROUNDS))


def bench_ensemble(name: str, spec: ModelSpec, k: int, *, batch_size: int, opts: Options,
                   info: Mapping[str, Any], peak: float | None, chunked: bool = False,
                   budget: tuple[int, str] | None = None) -> dict[str, Any]:
  """One row: the K-member ensemble step against K single steps, `opts.steps` rounds or more
  (and, if `chunked`, the ensemble in the chunks that `small_budget_members(k)` members' memory
  allows, against the unchunked one, one round or more)."""
  dtype, kernels = opts.dtype, opts.kernels
  s = EnsembleSetup(name, spec, k, batch_size, dtype, kernels, opts.seed)
  ens, seq = s.ensemble(), s.sequential()
  _, compile_s = _compiled(ens)
  _, single_compile_s = _compiled(seq)
  single_stats = measure.program_stats(*seq.program())
  per_member = single_stats["program_bytes"]
  row = {"model": name, "case": "ensemble", "members": k, "batch_size": batch_size,
         "dtype": dtype, "backend": info["backend"], "device_kind": info["device_kind"],
         "kernels": ops.kernels_info(kernels), "convolutional": s.convolutional,
         "peak_flops_per_s": peak, "compile_s": compile_s, "single_compile_s": single_compile_s,
         "program_bytes": measure.program_bytes(*ens.program()),
         "single_program_bytes": per_member, "min_seconds": opts.min_seconds}
  times = measure.time_interleaved({"ensemble": ens, "sequential": seq},
                                   steps=rounds((ens, seq), opts.steps, opts.min_seconds),
                                   warmup=opts.warmup)
  chunk_times = None
  if chunked and per_member:
    row["small_budget_members"] = small_budget_members(k)
    small = row["small_budget_members"] * per_member
    row.update(small_budget_bytes=small, chunk_small_budget=ensemble.choose_chunk(
        k, per_member, small))
    if budget is not None:
      row.update(budget_bytes=budget[0], budget_source=budget[1],
                 chunk_for_budget=ensemble.choose_chunk(k, per_member, budget[0]))
    if row["chunk_small_budget"] is not None:
      chunks = s.ensemble(chunk=row["chunk_small_budget"])
      chunks()  # compiles it
      row["chunked_program_bytes"] = measure.program_bytes(*chunks.program())
      chunk_times = measure.time_interleaved(
          {"ensemble": ens, "chunked": chunks},
          steps=rounds((ens, chunks), 1, opts.min_seconds), warmup=0)
  return finish(row, times, single_stats["flops"], chunk_times)


def finish(row: dict, times: Mapping[str, Sequence[float]], single_flops: float | None,
           chunk_times: Mapping[str, Sequence[float]] | None = None) -> dict:
  """The row's times, ratios, throughputs, FLOP rates and memory ratios from measured times
  (`chunk_times`: the chunked step's rounds against the unchunked one)."""
  k, b = row["members"], row["batch_size"]
  ens = measure.summarize(times["ensemble"])
  row.update({"ensemble_" + key: v for key, v in ens.items()})
  row["steps"] = len(times["ensemble"])
  row["sequential_step_s"] = measure.summarize(times["sequential"])["step_s"]
  row["single_step_s"] = row["sequential_step_s"] / k
  row["speedup"] = row["sequential_step_s"] / row["ensemble_step_s"]
  row["ensemble_samples_per_s"] = k * b / row["ensemble_step_s"]  # models x samples / s
  row["sequential_samples_per_s"] = k * b / row["sequential_step_s"]
  flops = k * single_flops if single_flops else None
  row["flops_per_step"] = flops
  peak = row["peak_flops_per_s"]
  for side in ("ensemble", "sequential"):
    rate = flops / row[f"{side}_step_s"] if flops else None
    row[f"{side}_flops_per_s"] = rate
    row[f"{side}_mfu"] = rate / peak if rate and peak else None
  if chunk_times:
    row["chunked_steps"] = len(chunk_times["chunked"])
    row["chunked_step_s"] = measure.summarize(chunk_times["chunked"])["step_s"]
    row["unchunked_step_s"] = measure.summarize(chunk_times["ensemble"])["step_s"]
    row["chunked_time_ratio"] = row["chunked_step_s"] / row["unchunked_step_s"]
    if row.get("chunked_program_bytes") and row["program_bytes"]:
      row["chunked_bytes_ratio"] = row["chunked_program_bytes"] / row["program_bytes"]
  row["peak_bytes"] = measure.peak_memory_bytes()
  return row


def bench_ensembles(k: int, *, models: Sequence[str] = tuple(ENSEMBLE_MODELS),
                    specs: Mapping[str, ModelSpec] | None = None,
                    batch_size: int = ENSEMBLE_BATCH, opts: Options = ENSEMBLE_OPTIONS,
                    info: Mapping[str, Any], peak: float | None,
                    log: Callable[[str], None] = print) -> list[dict]:
  """Rows of every model at each of `member_counts(model, k)`; at `k` the chunked step too, and
  for convolutional models a row with the `auto` kernels when they resolve to other kernels
  than `opts.kernels`."""
  specs = specs or ENSEMBLE_MODELS
  dtype, kernels = opts.dtype, opts.kernels
  budget = measure.memory_budget()
  rows = []
  for name in models:
    counts = member_counts(name, k)
    variants = [(kernels, n) for n in counts]
    other = ops.kernels_info("auto")["conv"] != ops.kernels_info(kernels)["conv"]
    if other and hasattr(build_model(name, specs[name], dtype), "kernels"):
      variants.append(("auto", k))  # what the default kernels do to the ensemble
    for kern, n in variants:
      row = bench_ensemble(name, specs[name], n, batch_size=batch_size,
                           opts=dataclasses.replace(opts, kernels=kern), info=info, peak=peak,
                           chunked=n == k, budget=budget)
      rows.append(row)
      log("  " + short(row))
  for one in [r for r in rows if r["members"] == 1 and r["program_bytes"]]:
    for r in rows:  # memory against the same model's one-member ensemble, same kernels
      if (r["model"], r["kernels"]) == (one["model"], one["kernels"]) and r["program_bytes"]:
        r["program_bytes_vs_one"] = r["program_bytes"] / one["program_bytes"]
  return rows


def short(row: Mapping) -> str:
  """One row as one line of progress output."""
  msg = (f"{row['model']:6s} ensemble K={row['members']:<3d} {row['kernels']['conv']:7s} "
         f"{row['ensemble_step_s'] * 1e3:9.2f} ms  {row['members']} x single "
         f"{row['sequential_step_s'] * 1e3:9.2f} ms  speedup {row['speedup']:.2f}")
  if "chunked_step_s" in row:
    msg += f"  chunk {row['chunk_small_budget']}: {row['chunked_time_ratio']:.2f}x time"
  return msg


def _mb(v) -> str:
  return fmt(v, ".2f", 2**-20)


def markdown(rows: Sequence[Mapping]) -> str:
  """The ensemble table and, per model at the largest K, the memory and chunking line."""
  if not rows:
    return ""
  lines = ["", "## Ensembles: K models in one vmapped step against K single steps", "",
           f"Batch {rows[0]['batch_size']} per member; medians of at least "
           f"{min(r['steps'] for r in rows)} timed rounds after warm-up (more for quick steps: "
           f"{rows[0]['min_seconds']:g} s of each), the two interleaved; \"K x single\" = K calls "
           "of the single-model step one after another; speedup = K x single / ensemble; "
           "throughput in models x samples/s; MFU of K times the single step's FLOPs; memory: the compiled "
           "program's (arguments + temporaries + outputs, less donated buffers).", "",
           "| model | convs | K | rounds | ensemble ms | K x single ms | speedup "
           "| ensemble models·samples/s | K x single models·samples/s | MFU ensemble / single "
           "| program MB | vs K=1 |",
           "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
  for r in rows:
    convs = r["kernels"]["conv"] if r["convolutional"] else "—"
    lines.append(
        f"| {r['model']} | {convs} | {r['members']} | {r['steps']} "
        f"| {r['ensemble_step_s'] * 1e3:.2f} "
        f"| {r['sequential_step_s'] * 1e3:.2f} | {r['speedup']:.2f} "
        f"| {r['ensemble_samples_per_s']:.0f} | {r['sequential_samples_per_s']:.0f} "
        f"| {fmt(r['ensemble_mfu'], '.1%')} / {fmt(r['sequential_mfu'], '.1%')} "
        f"| {_mb(r['program_bytes'])} | {fmt(r.get('program_bytes_vs_one'), '.2f')} |")
  lines.append("")
  for r in rows:
    if "chunk_small_budget" not in r:
      continue
    chosen = r.get("chunk_for_budget")
    convs = f" ({r['kernels']['conv']} convolutions)" if r["convolutional"] else ""
    line = (f"- {r['model']}{convs} K={r['members']}: {_mb(r['single_program_bytes'])} MB per "
            "member; "
            f"`choose_chunk` for {fmt(r.get('budget_bytes'), '.1f', 2**-30)} GB "
            f"({r.get('budget_source', 'no budget')}): "
            f"{'all at once' if chosen is None else f'chunks of {chosen}'}; for "
            f"{r['small_budget_members']} members' worth ({_mb(r['small_budget_bytes'])} MB): "
            f"chunks of {r['chunk_small_budget']}")
    if "chunked_step_s" in r:
      line += (f", {r['chunked_step_s'] * 1e3:.2f} ms/step ({r['chunked_time_ratio']:.2f}x the "
               f"unchunked step's {r['unchunked_step_s'] * 1e3:.2f} ms in the same "
               f"{r['chunked_steps']} round(s); program {_mb(r.get('chunked_program_bytes'))} "
               f"MB = {fmt(r.get('chunked_bytes_ratio'), '.2f')}x)")
    lines.append(line + ".")
  return "\n".join(lines) + "\n"
