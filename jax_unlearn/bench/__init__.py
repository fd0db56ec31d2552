"""Throughput benchmark of the jitted steps users run, with a PyTorch eager peer in the same run.

  python -m jax_unlearn.bench --models allcnn --batch-sizes 64 --out runs/bench
  jax-unlearn bench --models allcnn,resnet18 --dtype bfloat16 --devices 4
  jax-unlearn bench --models "" --no-torch --pipeline   # only the demo, end to end
  jax-unlearn bench --models "" --no-torch --ensemble 16  # only the ensemble rows
  jax-unlearn bench --models "" --no-torch --audit 32     # only the audit rows
  jax-unlearn bench --models "" --no-torch --epochs 64    # only the scanned-epoch rows
  jax-unlearn bench --models "" --no-torch --loader 64,112,224  # only the input rows

Cases, per model and batch size (random inputs of the model's data contract, L1 loss, or the
quantile loss for the forecasting model):
  train      the original training step (library `make_train_step`, Adam); fine-tuning and
             Gaussian fine-tuning run this same compiled program on other labels, so this row
             is their time too
  blindspot  the Blindspot unlearning step: student forward + backward, frozen blindspot
             forward, output and attention-transfer losses (library `make_blindspot_loss`,
             configured as the method does: 25 % forget rows, frozen forward on those only)
  predict    batched evaluation-mode prediction (library `make_predict_fn`)

Each case reports compile seconds, the step time (median, quartiles, min/max over `--steps`
timed steps after `--warmup`), samples/s, FLOPs per step (XLA's cost analysis of the step
lowered with XLA's own convolutions: compiled programs' analyses miss library calls such as
cuDNN's and oneDNN's), achieved FLOP/s and MFU against the device's peak (a table for
accelerators; on CPU the best matmul rate measured in the same run), the compiled program's
memory (arguments + temporaries + outputs, per program on every backend) and the process's
peak memory so far (GPU/TPU allocator peak, CPU peak RSS). Convolutional models run with the
`--kernels` setting; what it resolves to (`ops.kernels_info`) is in bench.md's header and in
every row of bench.jsonl under "kernels".

With `--ensemble K`, rows of K small models (an MLP on tabular rows, AllCNN width 0.25 on
32x32x1 images, batch 64, XLA's convolutions plus one row with the default kernels) trained
by one vmapped ensemble step against K calls of the single-model step, interleaved, at K = 1, 4,
16, ... up to K (the MLP also at 4 K): step times, the speedup, models x samples/s, MFU, the
compiled programs' memory against one member, and the chunk size `ensemble.choose_chunk` picks
for the device's memory and for a small budget (timed against the unchunked step).

With `--audit N`, rows of N shadow MLPs trained as one vmapped ensemble against N single-model
runs (end to end, compilation included) at N = 8, 16, ... up to N, and the seconds of LiRA and
the epsilon score over them.

With `--epochs K`, rows of whole epochs fed batch by batch against epochs scanned in one program
(`train.scan`): an MLP, the LSTM, the TFT and AllCNN at the offline defaults' sizes, one model
and K vmapped members (K = 4, 16, 64 as far as each model's row list and K allow), seconds per
epoch after a compiled one.

With `--loader SIZES`, rows of the input pipeline at each image size: generated JPEG faces
prepared by the AgeDB builder, one epoch read in memory, streamed by grain threads and by worker
processes, against the samples/s the AllCNN train step consumes at that size.

The PyTorch peer (jax_unlearn/bench/torch_peer.py) runs the same architecture, losses and Adam
on the same batch. Before timing, its weights are copied from ours and both must produce the
same loss on two consecutive steps (the second checks the gradients and the optimizer update
too), else the case is reported as a guard failure and not compared. Then our step and the
peer's alternate, one each per round with the order flipped every round, so machine noise (other
processes, clock changes) hits both alike; "ours/torch" is the peer's median time over ours
(> 1: we are faster).

  measure     compile clock, interleaved timing, device peaks, memory, FLOPs
  cases       models, batches, our steps and the peer's, the guard, one model's rows
  ensembles   K models in one vmapped step against K single steps, memory and chunking
  epochs      epochs batch by batch against one scanned program, one model and K members
  audit       N shadow models at once against N runs; the audit's statistics over N
  loader      streamed faces against the in-memory loader and the train step's need
  report      bench.md, and the whole pipeline as configured against paper style
  torch_peer  the PyTorch twins of the models and steps
"""
import argparse
import dataclasses
import json
import os
import sys
from typing import Sequence

import jax

from jax_unlearn.bench import audit, ensembles, epochs, loader, measure, report
from jax_unlearn.bench.cases import (CASES, DEFAULT_BATCH_SIZES, MODELS, ModelSpec, Options,
                                     bench_model, build_model, configure_torch, guard_tolerance,
                                     jax_case, relative_error, setup_model, torch_case)
from jax_unlearn.bench.measure import device_info, peak_flops
from jax_unlearn.bench.report import markdown, pipeline_comparison, pipeline_markdown
from jax_unlearn import config_io, ops
from jax_unlearn.errors import UserError, unknown_name
from jax_unlearn.files import write_text

__all__ = ["CASES", "MODELS", "ModelSpec", "Options", "bench_model", "build_model",
           "device_info", "guard_tolerance", "jax_case", "main", "markdown", "parse_args",
           "peak_flops", "pipeline_comparison", "pipeline_markdown", "relative_error",
           "setup_model", "torch_case"]


def _csv(text: str) -> list[str]:
  return [t for t in text.split(",") if t]


def parse_args(argv: Sequence[str] | None):
  p = argparse.ArgumentParser(prog="jax-unlearn bench", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="allcnn,resnet18,lstm,tft",
                 help=f"comma-separated, from {', '.join(MODELS)}")
  p.add_argument("--cases", default=",".join(CASES),
                 help=f"comma-separated, from {', '.join(CASES)}")
  p.add_argument("--batch-sizes", default=None,
                 help="comma-separated; default 64,256 on CPU and 256,1024 on accelerators")
  p.add_argument("--steps", type=int, default=20, help="timed steps per case (>= 20 for reports)")
  p.add_argument("--warmup", type=int, default=3)
  p.add_argument("--devices", type=int, default=1,
                 help="also run data-parallel over N devices and report scaling from 1 to N")
  p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                 help="compute dtype of both sides (parameters and Adam stay float32)")
  p.add_argument("--kernels", choices=ops.KERNELS, default="auto",
                 help="convolution kernels of the convolutional models (see jax_unlearn.ops)")
  p.add_argument("--device-kind", choices=("auto", "cpu", "gpu", "tpu"), default="auto")
  p.add_argument("--no-torch", action="store_true", help="skip the PyTorch peer")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--shards", type=int, default=0,
                 help="also time each step with this many fixed batch shards (batch_shards), "
                      "interleaved with the plain step; reports the time ratio")
  p.add_argument("--ensemble", type=int, default=0, metavar="K",
                 help="also time K-member ensembles (vmapped) against K single steps; e.g. 16 "
                      "on CPU (about 15 minutes on 2 cores), 64 on a GPU; 0: not")
  p.add_argument("--ensemble-models", default=",".join(ensembles.ENSEMBLE_MODELS),
                 help=f"comma-separated, from {', '.join(ensembles.ENSEMBLE_MODELS)}")
  p.add_argument("--ensemble-steps", type=int, default=5,
                 help="timed rounds of the ensemble rows (each round runs every variant once)")
  p.add_argument("--ensemble-seconds", type=float, default=Options.min_seconds,
                 help="steps of milliseconds get more rounds, up to this many timed seconds "
                      "of each variant of an ensemble row")
  p.add_argument("--audit", type=int, default=0, metavar="N",
                 help="also time N shadow models vmapped against N runs, and the audit's "
                      "statistics (N = 8, 16, ... up to N)")
  p.add_argument("--epochs", type=int, default=0, metavar="K",
                 help="also time epochs batch by batch against scanned epochs, for one model and "
                      "up to K members (e.g. 64; about 4 minutes on 2 CPU cores); 0: not")
  p.add_argument("--loader", default="", metavar="SIZES",
                 help="also time the input pipeline at these image sizes, e.g. 64,112,224")
  p.add_argument("--loader-images", type=int, default=loader.IMAGES, metavar="N",
                 help="generated JPEGs per loader row")
  p.add_argument("--out", default="runs/bench", help="directory for bench.jsonl and bench.md")
  p.add_argument("--pipeline", nargs="?", const="demo", default=None, metavar="CONFIG",
                 help="also time a whole experiment (a shipped config's name or a path; default "
                      "demo) as configured and with the published code's per-row metric loops; "
                      "written to pipeline.json")
  return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the benchmark; 0 on success, 1 if a correctness guard failed, 2 on bad input."""
  args = parse_args(argv)
  try:
    return _main(args)
  except UserError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2


def _torch(info, use: bool) -> tuple[bool, str | None, float | None]:
  """(whether the peer runs, torch's version, its CPU matmul rate) after setting it up."""
  if not use:
    return False, None, None
  try:
    import torch
  except ImportError:
    print("PyTorch is not installed (pip install torch); benchmarking JAX only.")
    return False, None, None
  configure_torch(info)
  rate = None
  if info["backend"] == "cpu":
    from jax_unlearn.bench import torch_peer
    rate = torch_peer.gemm_flops_per_s()
  return True, torch.__version__, rate


def _main(args) -> int:
  models, cases = _csv(args.models), _csv(args.cases)
  for m in models:
    if m not in MODELS:
      raise unknown_name("model", m, MODELS)
  for c in cases:
    if c not in CASES:
      raise unknown_name("benchmark case", c, CASES)
  ensemble_models = _csv(args.ensemble_models) if args.ensemble else []
  for m in ensemble_models:
    if m not in ensembles.ENSEMBLE_MODELS:
      raise unknown_name("ensemble model", m, ensembles.ENSEMBLE_MODELS)
  if args.audit < 0 or args.epochs < 0:
    raise UserError("--audit and --epochs must be >= 0.", "e.g. --audit 32 --epochs 64.")
  try:
    loader_sizes = [int(v) for v in _csv(args.loader)]
  except ValueError:
    raise UserError(f"--loader takes image sizes, got {args.loader!r}.",
                    "e.g. --loader 64,112,224.") from None
  if any(not 8 <= v <= 1024 for v in loader_sizes) or args.loader_images < 20:
    raise UserError("--loader sizes must be in [8, 1024] and --loader-images >= 20.",
                    "e.g. --loader 64,112,224 --loader-images 512.")
  if args.ensemble < 0 or args.ensemble_steps < 1 or not args.ensemble_seconds >= 0:
    raise UserError("--ensemble must be >= 0, --ensemble-steps >= 1 and --ensemble-seconds "
                    ">= 0.", "e.g. --ensemble 16 --ensemble-steps 5 --ensemble-seconds 2.")
  if args.pipeline is not None:
    config_io.check_config_name(args.pipeline)  # names the shipped configs if it is none of them
  if args.steps < 1 or args.warmup < 0 or args.shards < 0:
    raise UserError("--steps must be >= 1, --warmup and --shards >= 0.",
                    "e.g. --steps 20 --warmup 3 --shards 4.")
  info = measure.device_info(args.device_kind)
  if args.devices > info["device_count"]:
    raise UserError(f"--devices {args.devices} but {info['device_count']} are available.",
                    "on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N.")
  kernels = ops.kernels_info(args.kernels)  # fails here if the setting cannot run
  sizes = ([int(b) for b in _csv(args.batch_sizes)] if args.batch_sizes
           else list(DEFAULT_BATCH_SIZES.get(info["backend"], (64, 256))))
  use_torch, torch_version, torch_rate = _torch(info, not args.no_torch)
  peak, source = measure.peak_flops(info, args.dtype, torch_rate)
  opts = Options(args.steps, args.warmup, args.dtype, args.devices, use_torch, args.seed,
                 args.shards, args.kernels)
  print(f"{info['device_kind']} ({info['backend']}, {info['device_count']} devices), {args.dtype}; "
        f"{report.kernels_line(kernels)}; peak {report.fmt(peak, '.1f', 1e-9)} GFLOP/s ({source})")
  rows = []
  for m in models:
    for b in sizes:
      rows += bench_model(m, MODELS[m], b, opts, info, peak, cases=cases)
  header = {**info, "dtype": args.dtype, "jax": jax.__version__, "torch": torch_version,
            "kernels": kernels, "peak_flops_per_s": peak, "peak_source": source,
            "steps": args.steps, "warmup": args.warmup}
  md = markdown(rows, header)
  if ensemble_models:
    ens_opts = dataclasses.replace(ensembles.ENSEMBLE_OPTIONS, steps=args.ensemble_steps,
                                   warmup=min(args.warmup, 1), dtype=args.dtype, seed=args.seed,
                                   min_seconds=args.ensemble_seconds)
    ens_rows = ensembles.bench_ensembles(args.ensemble, models=ensemble_models, opts=ens_opts,
                                         info=info, peak=peak)
    rows += ens_rows
    md += ensembles.markdown(ens_rows)
  if args.epochs:
    epoch_rows = epochs.bench_epochs(max_members=args.epochs, seed=args.seed)
    rows += epoch_rows
    md += epochs.markdown(epoch_rows)
  if args.audit:
    audit_rows = audit.bench_audit(args.audit, seed=args.seed)
    rows += audit_rows
    md += audit.markdown(audit_rows)
  if loader_sizes:
    loader_rows = loader.bench_loader(loader_sizes, images=args.loader_images, seed=args.seed)
    rows += loader_rows
    md += loader.markdown(loader_rows)
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
