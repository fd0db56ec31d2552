"""The report: bench.md's table, and the whole pipeline timed as configured and paper style."""
import json
import os
import subprocess
import sys
import time
from typing import Any, Mapping, Sequence

from jax_unlearn.errors import UserError

# --- the whole pipeline ------------------------------------------------------------------------

# The published code's way of computing the metrics, as overrides of the same pipeline: every
# row predicted in a call of its own, and the relearning of the Anamnesis Index handed back to
# the host after every step to check its error. (Its evaluation inside a relearning check still
# runs in one compiled call, so this is a lower bound on that code's cost.)
PAPER_STYLE = ("--config.metrics.predict_batch_size=1", "--config.metrics.ain_steps_per_call=1")


def pipeline_command(config: str, workdir: str, overrides: Sequence[str] = ()) -> list[str]:
  """`jax-unlearn run` of `config` (a shipped name or a path) in a fresh workdir, no cache."""
  return [sys.executable, "-m", "jax_unlearn", "run", "--config", config, "--workdir", workdir,
          "--fresh", "--quiet", "--cache-dir", "none", *overrides]


def run_command(cmd: Sequence[str]) -> subprocess.CompletedProcess:
  """Runs `cmd` to completion, capturing its output as text."""
  return subprocess.run(list(cmd), capture_output=True, text=True)


def run_pipeline(config: str, workdir: str, overrides: Sequence[str] = ()) -> dict:
  """Runs the experiment in a fresh process and workdir (no compilation cache); its seconds."""
  cmd = pipeline_command(config, workdir, overrides)
  start = time.perf_counter()
  done = run_command(cmd)
  wall = time.perf_counter() - start
  if done.returncode != 0:
    raise UserError(f"the pipeline failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}",
                    "run that command alone to see the whole error.")
  with open(os.path.join(workdir, "results.json")) as f:
    seconds = json.load(f)["seconds"]
  return {"wall_s": wall, **{k: v for k, v in seconds.items() if isinstance(v, float)}}


def pipeline_comparison(config: str, out_dir: str, overrides: Sequence[str] = (), *,
                        log=print) -> dict:
  """The experiment end to end as configured, then with the published code's metric loops.

  `config` is a shipped config's name or a path; `overrides` (command-line config overrides)
  apply to both runs.
  """
  ours = run_pipeline(config, os.path.join(out_dir, "pipeline_ours"), overrides)
  log(f"  pipeline as configured: {ours['wall_s']:.1f} s")
  paper = run_pipeline(config, os.path.join(out_dir, "pipeline_paper_style"),
                       (*overrides, *PAPER_STYLE))
  log(f"  pipeline, per-row metrics and per-step relearning checks: {paper['wall_s']:.1f} s")
  return {"config": config, "ours": ours, "paper_style": paper, "overrides": list(PAPER_STYLE),
          "speedup": paper["wall_s"] / ours["wall_s"],
          "metrics_share": ours["metrics"] / ours["total"]}


def pipeline_markdown(p: Mapping[str, Any]) -> str:
  stages = [k for k in p["ours"] if k not in ("wall_s", "total", "compile")]
  lines = ["", f"## Whole pipeline: `{p['config']}`", "",
           "Seconds per stage, fresh process and workdir, no compilation cache; \"paper style\" "
           f"= {' '.join(p['overrides'])} (the original code's metric loops: predictions one "
           "row per call, relearning checked on the host after every step).", "",
           "| | " + " | ".join(stages) + " | compile | wall |",
           "|---|" + "---|" * (len(stages) + 2)]
  for name in ("ours", "paper_style"):
    r = p[name]
    lines.append(f"| {name.replace('_', ' ')} | "
                 + " | ".join(f"{r.get(k, 0.0):.1f}" for k in stages)
                 + f" | {r.get('compile', 0.0):.1f} | {r['wall_s']:.1f} |")
  lines += ["", f"ours {p['speedup']:.2f}x faster end to end; metrics take "
            f"{p['metrics_share']:.0%} of our pipeline's time."]
  return "\n".join(lines) + "\n"


# --- the step table -----------------------------------------------------------------------------

def fmt(v, spec: str, scale: float = 1.0) -> str:
  return "—" if v is None else format(v * scale, spec)


def kernels_line(info: Mapping[str, Any]) -> str:
  """What the convolution setting ran as (see `ops.kernels_info`)."""
  return (f"convolutions {info['setting']!r}: {info['conv']} (partitioned programs "
          f"{info['conv_partitioned']}, other dtypes {info['conv_other_dtypes']}; oneDNN "
          f"{'available' if info['onednn'] else 'unavailable'})")


def markdown(rows: Sequence[Mapping], header: Mapping[str, Any]) -> str:
  lines = [f"# Benchmark: {header['device_kind']} ({header['backend']}), {header['dtype']}", "",
           f"jax {header['jax']}, torch {header['torch'] or 'not used'}; "
           f"{kernels_line(header['kernels'])}; peak for MFU: "
           f"{fmt(header['peak_flops_per_s'], '.1f', 1e-9)} GFLOP/s ({header['peak_source']}); "
           f"step times over {header['steps']} steps after {header['warmup']} warm-up, "
           "ours and torch interleaved. Fine-tuning and Gaussian fine-tuning run the train "
           "row's program.", "",
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
    case = r["case"] + (f" ({'; '.join(extra)})" if extra else "")
    lines.append(
        f"| {r['model']} | {case} | {r['batch_size']} | {r['devices']} | {r['compile_s']:.1f} "
        f"| {step} | {r['samples_per_s']:.1f} | {fmt(r['flops_per_step'], '.1f', 1e-9)} "
        f"| {fmt(r['flops_per_s'], '.1f', 1e-9)} | {fmt(r['mfu'], '.1%')} "
        f"| {fmt(r['program_bytes'], '.0f', 2**-20)} | {fmt(r.get('torch_step_s'), '.1f', 1e3)} "
        f"| {speed} |")
  return "\n".join(lines) + "\n"
