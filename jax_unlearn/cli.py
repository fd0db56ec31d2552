"""The `jax-unlearn` command (also `python -m jax_unlearn`): run, demo, tune, bench.

Bad input ends with one line naming the problem and the fix and exit code 2; `--debug` shows
the traceback too.
"""
import argparse
import os
import sys


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog="jax-unlearn",
      description="Machine unlearning of deep regression models: train, unlearn, evaluate.")
  sub = p.add_subparsers(dest="command", required=True)
  run = sub.add_parser(
      "run", help="run an experiment config end to end",
      description="Train the original and retrained models, run every unlearning method, "
      "evaluate all of them and write results.json, results.md and plots/ into --workdir. "
      "Override any config field with --config.FIELD=VALUE, e.g. --config.train.epochs=5.")
  tune = sub.add_parser(
      "tune", help="choose among a config's method settings on validation rows",
      description="Train the original, the retrained model and every entry of the config's "
      "methods, score each on the validation split only (forget-cohort distance to the "
      "retrained model, retain-cohort error) and write tune.json and tune.md into --workdir.")
  for s in (run, tune):
    s.add_argument("--config", required=True,
                   help="a shipped config's name (e.g. demo) or a path to a file with get_config()")
    s.add_argument("--workdir", required=True, help="output directory (checkpoints, results)")
  demo = sub.add_parser("demo", help="the offline default experiment (a few minutes on a CPU)",
                        description="Runs the shipped config demo; accepts --config.* too.")
  demo.add_argument("--workdir", default="runs/demo", help="output directory (default runs/demo)")
  for s in (run, tune, demo):
    s.add_argument("--fresh", action="store_true",
                   help="delete earlier checkpoints in the workdir instead of reusing them")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.add_argument("--cache-dir", default=None,
                   help="persistent compilation cache (default WORKDIR/.jax_cache; 'none' = off)")
  sub.add_parser("bench", help="throughput benchmark (see `jax-unlearn bench --help`)",
                 add_help=False)
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  return p


def main(argv: list[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  debug = "--debug" in argv
  if debug:
    argv.remove("--debug")
  from jax_unlearn.errors import UserError, report
  try:
    if argv and argv[0] == "bench":
      from jax_unlearn import bench
      return bench.main(argv[1:]) or 0
    args, rest = _parser().parse_known_args(argv)
    return _run(args, rest)
  except UserError as e:
    if debug:
      raise
    return report(e)
  except KeyboardInterrupt as e:
    # Training saves a checkpoint at the current step and says where; elsewhere finished
    # stages and epochs are already checkpointed.
    where = f"{e}. " if str(e) else "finished stages and epochs are checkpointed. "
    print(f"interrupted: {where}Run the same command again to resume.", file=sys.stderr)
    return 130


def _init_hosts() -> None:
  """Joins a multi-host run (see README, "Several hosts"): the one JAX_NUM_PROCESSES > 1 with
  JAX_COORDINATOR_ADDRESS and JAX_PROCESS_ID describe; JAX_NUM_PROCESSES=auto lets JAX find it
  (Cloud TPU pod slices, Slurm, Open MPI); with no variable set, a Slurm or Open MPI launch of
  several processes is joined on its own."""
  from jax_unlearn import parallel

  given = os.environ.get("JAX_NUM_PROCESSES", "")
  if given == "auto":
    parallel.initialize_distributed(auto=True)
  elif given:
    num = int(given)
    if num > 1:
      parallel.initialize_distributed(os.environ["JAX_COORDINATOR_ADDRESS"], num,
                                      int(os.environ["JAX_PROCESS_ID"]))
  elif (cluster := parallel.detected_cluster()) is not None:
    print(f"joining a {cluster[0]} run of {cluster[1]} processes", file=sys.stderr)
    parallel.initialize_distributed(auto=True)


def _run(args, rest) -> int:
  from jax_unlearn import config_io
  from jax_unlearn.train import NonFiniteLossError

  _init_hosts()
  config = config_io.load_config("demo" if args.command == "demo" else args.config)
  overrides = config_io.parse_overrides(rest)
  from jax_unlearn import pipeline, runtime
  cache = args.cache_dir or os.path.join(args.workdir, ".jax_cache")
  if cache != "none":
    runtime.enable_compilation_cache(cache)
  if args.command == "tune":
    from jax_unlearn import tuning
    run = tuning.tune_experiment
  else:
    run = pipeline.run_experiment
  try:
    run(config, args.workdir, overrides=overrides, quiet=args.quiet, fresh=args.fresh)
  except NonFiniteLossError as e:
    print(f"error: {e}", file=sys.stderr)
    return 3
  return 0


if __name__ == "__main__":
  sys.exit(main())
