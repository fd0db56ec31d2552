"""The command line under stress: `kill -9` and Ctrl-C with resume, the NaN guard, and one clear
message (exit code 2, no traceback, earlier results intact) for every kind of bad input."""
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jax_unlearn import cli
from jax_unlearn.checkpoint import Checkpointer
from jax_unlearn.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIABETES = "diabetes_mlp"
NPZ = "npz_mlp"
# 30 steps an epoch for 12 epochs: long enough to stop the original or retrained model mid-way.
LONG = ("--config.train.epochs=12", "--config.train.batch_size=8")
WAIT_S = 240  # bound on every wait for a subprocess


def _args(workdir, *extra, config=DIABETES):
  # The conftest's persistent compilation cache: the subprocesses compile nothing twice.
  cache = jax.config.jax_compilation_cache_dir or "none"
  return ["run", "--config", config, "--workdir", str(workdir), "--config.smoke=True", "--quiet",
          "--cache-dir", cache, *extra]


def _results(workdir):
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def _log(workdir):
  with open(os.path.join(workdir, "log.txt")) as f:
    return f.read()


def _steps(directory):
  """Finished Orbax steps in a checkpoint directory (unfinished ones carry a tmp suffix)."""
  return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) \
      if os.path.isdir(directory) else []


def _start(workdir, out):
  return subprocess.Popen([sys.executable, "-m", "jax_unlearn", *_args(workdir, *LONG)], cwd=ROOT,
                          stdout=out, stderr=subprocess.STDOUT)


def _wait_for_checkpoint(proc, directory, out_path):
  deadline = time.monotonic() + WAIT_S
  while time.monotonic() < deadline:
    if _steps(directory):
      return
    if proc.poll() is not None:
      pytest.fail(f"the run ended (code {proc.returncode}) before a checkpoint in {directory}:\n"
                  + open(out_path).read()[-3000:])
    time.sleep(0.01)
  pytest.fail(f"no checkpoint in {directory} after {WAIT_S}s")


def _stop(proc):
  if proc.poll() is None:
    proc.kill()
  proc.wait(timeout=60)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
  """An uninterrupted run (in this process): (workdir, results)."""
  workdir = tmp_path_factory.mktemp("baseline")
  assert cli.main(_args(workdir, *LONG)) == 0
  return str(workdir), _results(workdir)


# Resume


def test_kill_9_in_original_then_in_retrained_resumes_to_identical_results(tmp_path, baseline):
  workdir = tmp_path / "run"
  ckpt = workdir / "checkpoints" / "mlp"
  for i, stage_dir in enumerate([ckpt / "original", ckpt / "retrained" / "unlearn"]):
    out_path = tmp_path / f"out{i}.txt"
    with open(out_path, "w") as out:
      proc = _start(workdir, out)
      try:
        _wait_for_checkpoint(proc, stage_dir, out_path)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
      finally:
        _stop(proc)
    assert proc.returncode == -signal.SIGKILL
  original = {p: os.stat(p).st_mtime_ns for p in glob.glob(str(ckpt / "original" / "**"),
                                                           recursive=True)}
  assert cli.main(_args(workdir, *LONG)) == 0  # the same command, a third time
  log = _log(workdir)
  assert "original: resuming from epoch" in log  # second run
  assert "retrained: resuming from epoch" in log  # third run
  assert "reused checkpoint" in log  # the finished original, not trained again ...
  assert {p: os.stat(p).st_mtime_ns for p in original} == original  # ... nor saved again
  assert _results(workdir)["models"] == baseline[1]["models"]


def test_ctrl_c_saves_a_checkpoint_exits_130_and_the_rerun_matches(tmp_path, baseline):
  workdir = tmp_path / "run"
  stage_dir = workdir / "checkpoints" / "mlp" / "original"
  out_path = tmp_path / "out.txt"
  with open(out_path, "w") as out:
    proc = _start(workdir, out)
    try:
      _wait_for_checkpoint(proc, stage_dir, out_path)
      proc.send_signal(signal.SIGINT)
      proc.wait(timeout=WAIT_S)
    finally:
      _stop(proc)
  output = open(out_path).read()
  assert proc.returncode == 130, output
  with Checkpointer(str(stage_dir)) as ck:
    step, meta = ck.latest_step(), ck.read_meta()
  assert meta["epoch"] < 12  # stopped during training ...
  assert (f"original interrupted after {meta['epoch']} epoch(s) and {meta['batch']} batch(es) "
          f"(step {step}); checkpoint saved") in output  # ... at the step it names
  assert "Run the same command again to resume." in output
  assert "Traceback" not in output
  assert cli.main(_args(workdir, *LONG)) == 0
  assert f"original: resuming from epoch {meta['epoch'] + 1}, batch {meta['batch']}" \
      in _log(workdir)
  assert _results(workdir)["models"] == baseline[1]["models"]


# Numerical guard


def test_nan_loss_exits_3_naming_stage_and_step_keeps_checkpoints_writes_no_results(
    tmp_path, capsys):
  assert cli.main(_args(tmp_path / "a", "--config.train.lr=1e20")) == 3
  err = capsys.readouterr().err
  assert "original: loss became" in err and "at epoch 1, batch" in err
  assert "Lower the learning rate" in err and "Traceback" not in err
  assert not os.path.exists(tmp_path / "a" / "results.json")

  # A later stage diverges: the earlier stages' checkpoints stay, no metric is computed.
  workdir = tmp_path / "b"
  assert cli.main(_args(workdir, "--config.methods.finetune.lr=1e20")) == 3
  assert "finetune: loss became" in capsys.readouterr().err
  ckpt = workdir / "checkpoints" / "mlp"
  for stage in ("original", "retrained/unlearn", "blindspot/unlearn"):
    assert _steps(ckpt / stage), stage
  assert not _steps(ckpt / "finetune" / "unlearn")
  assert not glob.glob(str(workdir / "results.*")) and not os.path.exists(workdir / "plots")


# Bad input


SPLIT = np.array(["train"] * 80 + ["val"] * 20 + ["test"] * 20)


def _npz(path, x, y=None, split=SPLIT):
  y = x.reshape(len(x), -1).sum(1).astype(np.float32) if y is None else y
  np.savez(path, x=x, y=y, split=split)
  return str(path)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """Broken .npz files and config files, by name."""
  d = tmp_path_factory.mktemp("inputs")
  r = np.random.default_rng(1)
  x = r.normal(size=(120, 3)).astype(np.float32)
  y = x.sum(1)
  y_nan, x_inf, bad_split = y.copy(), x.copy(), SPLIT.copy()
  y_nan[3], x_inf[90, 1], bad_split[7] = np.nan, np.inf, "trian"
  files = {
      "good": _npz(d / "good.npz", x=x, y=y),
      "nan_labels": _npz(d / "nan_labels.npz", x=x, y=y_nan),
      "inf_inputs": _npz(d / "inf_inputs.npz", x=x_inf, y=y),
      "short_y": _npz(d / "short_y.npz", x=x, y=y[:-1]),
      "short_split": _npz(d / "short_split.npz", x=x, y=y, split=SPLIT[:-2]),
      "bad_split": _npz(d / "bad_split.npz", x=x, y=y, split=bad_split),
      "gray": _npz(d / "gray.npz", x=r.normal(size=(120, 8, 8)).astype(np.float32)),
      "tabular": _npz(d / "tabular.npz", x=r.normal(size=(120, 5)).astype(np.float32)),
      "file": str(d / "good.npz"),
      "no_download": str(d / "agedb"),  # never created
  }
  (d / "allcnn_npz.py").write_text(
      "from jax_unlearn.config_io import load_config\n\n\n"
      "def get_config():\n  c = load_config('npz_mlp')\n  c.model.name = 'allcnn'\n"
      "  c.model.kwargs = {'width': 0.05}\n  return c\n")
  (d / "typo_method.py").write_text(
      "from jax_unlearn.config_io import load_config\n\n\n"
      "def get_config():\n  c = load_config('diabetes_mlp')\n"
      "  c.methods.finetun = {'epochs': 1, 'lr': 1e-3}\n  return c\n")
  files.update(allcnn_npz=str(d / "allcnn_npz.py"), typo_method=str(d / "typo_method.py"),
               tfds=str(d / "tfds"))
  return files


def _snapshot(workdir):
  """Bytes of every output file of a finished run (checkpoints aside)."""
  out = {}
  paths = glob.glob(os.path.join(workdir, "*")) + glob.glob(os.path.join(workdir, "plots", "*"))
  for path in paths:
    if os.path.isfile(path) and not path.endswith("log.txt"):
      with open(path, "rb") as f:
        out[path] = f.read()
  return out


def _check_refused(argv, capsys, message, fix, workdir):
  before = _snapshot(workdir)
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert "Traceback" not in err, err
  lines = [line for line in err.splitlines() if line.startswith(("error:", "fix:"))]
  assert [line.split(":")[0] for line in lines] == ["error", "fix"], err
  assert message in lines[0], err
  assert fix in lines[1], err
  assert _snapshot(workdir) == before  # earlier results intact ...
  assert not glob.glob(os.path.join(workdir, "**", "*.tmp"), recursive=True)  # ... no debris


BAD = {  # name -> (config, extra arguments, words of the message, words of the fix)
    "unknown dataset": (DIABETES, ["--config.data.name=diabetis"],
                        "unknown dataset 'diabetis'", "did you mean 'diabetes'?"),
    "unknown model": (DIABETES, ["--config.model.name=mpl"], "unknown model 'mpl'",
                      "did you mean 'mlp'?"),
    "unknown method": ("typo_method", [], "unknown unlearning method 'finetun'",
                       "did you mean 'finetune'?"),
    "override typo": (DIABETES, ["--config.train.epoch=3"], "unknown config field 'train.epoch'",
                      "did you mean --config.train.epochs?"),
    "override of the wrong type": (DIABETES, ["--config.train.epochs=many"],
                                   "override value 'many' is a str", "pass a value of type int"),
    "empty forget set": (NPZ, ["--config.data.kwargs.path=good", "--config.forget.high=-99.0"],
                         "selects no training sample", "widen the range"),
    "forget set = training set": (NPZ, ["--config.data.kwargs.path=good",
                                        "--config.forget.high=99.0"],
                                  "selects all 80 training samples", "narrow the forget set"),
    "NaN labels": (NPZ, ["--config.data.kwargs.path=nan_labels"],
                   "1 NaN or infinite values in the labels", "drop or impute"),
    "inf inputs": (NPZ, ["--config.data.kwargs.path=inf_inputs"],
                   "split 'val': 1 NaN or infinite values in the inputs", "drop or impute"),
    "x/y length": (NPZ, ["--config.data.kwargs.path=short_y"], "x has 120 rows but y has 119",
                   "one row of every array per sample"),
    "x/split length": (NPZ, ["--config.data.kwargs.path=short_split"],
                       "x has 120 rows but split has 118", "one row of every array per sample"),
    "unknown split": (NPZ, ["--config.data.kwargs.path=bad_split"],
                      "unknown split values ['trian']", "use only train, val, test"),
    "image without channel axis": ("allcnn_npz", ["--config.data.kwargs.path=gray"],
                                   "model 'allcnn' maps a batch of inputs of shape (2, 8, 8)",
                                   "with a channel axis for grayscale"),
    "tabular data for a CNN": ("allcnn_npz", ["--config.data.kwargs.path=tabular"],
                               "model 'allcnn' cannot take inputs of shape (5,) per sample",
                               "tabular [N, F] for mlp"),
    "missing manual download": ("agedb_allcnn",
                                ["--config.data.kwargs.path=no_download",
                                 "--config.data.kwargs.data_dir=tfds"],
                                "agedb is not prepared yet", "ibug.doc.ic.ac.uk"),
    "zero epochs": (DIABETES, ["--config.train.epochs=0"],
                    "train.epochs must be a positive integer, got 0", "--config.train.epochs=1"),
    "negative method epochs": (DIABETES, ["--config.methods.finetune.epochs=-1"],
                               "methods.finetune.epochs must be a positive integer",
                               "--config.methods.finetune.epochs=1"),
    "zero batch size": (DIABETES, ["--config.train.batch_size=0"],
                        "train.batch_size must be a positive integer, got 0",
                        "--config.train.batch_size"),
    "zero learning rate": (DIABETES, ["--config.train.lr=0"], "train.lr must be a positive number",
                           "--config.train.lr to e.g. 1e-3"),
    "negative method learning rate": (DIABETES, ["--config.methods.blindspot.lr=-0.001"],
                                      "methods.blindspot.lr must be a positive number",
                                      "--config.methods.blindspot.lr"),
    "batch larger than the data": (DIABETES, ["--config.train.batch_size=100000"],
                                   "train.batch_size 100000 is larger than the training data",
                                   "--config.train.batch_size=216 or less"),
    "batch shards the devices do not divide": (DIABETES, ["--config.batch_shards=6"],
                                               "batch shards must be a positive multiple of "
                                               "the 4 device(s) in use, got 6",
                                               "--config.batch_shards"),
    "unknown config name": ("dmeo", [], "config 'dmeo' is neither a file nor a shipped config",
                            "did you mean 'demo'?"),
    "unknown method setting": (DIABETES, ["--config.methods.blindspot.bta=1.0"],
                               "unknown config field 'methods.blindspot.bta'",
                               "did you mean --config.methods.blindspot.beta?"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_one_message_exit_2_and_leaves_results_intact(case, baseline, inputs,
                                                                     capsys):
  workdir = baseline[0]
  config, extra, message, fix = BAD[case]
  extra = [a.split("=")[0] + "=" + inputs.get(a.split("=")[1], a.split("=")[1]) for a in extra]
  _check_refused(_args(workdir, *extra, config=inputs.get(config, config)), capsys, message, fix,
                 workdir)


def test_unwritable_workdir(inputs, capsys):
  workdir = os.path.join(inputs["file"], "sub")  # under a regular file
  _check_refused(_args(workdir), capsys, f"cannot write to the workdir {workdir!r}",
                 "pass a --workdir you can write to", os.path.dirname(inputs["file"]))


def _truncate_data(step_dir):
  for path in glob.glob(os.path.join(step_dir, "tree", "**", "d", "*"), recursive=True):
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)


def _delete_meta(step_dir):
  os.remove(os.path.join(step_dir, "meta", "metadata"))


def test_damaged_checkpoints_are_named_and_fresh_recovers(baseline, tmp_path, capsys):
  for damage, message in [(_truncate_data, "is truncated or corrupted"),
                          (_delete_meta, "cannot be read")]:
    workdir = tmp_path / damage.__name__
    shutil.copytree(baseline[0], workdir)
    original = workdir / "checkpoints" / "mlp" / "original"
    step_dir = str(original / str(_steps(original)[-1]))
    damage(step_dir)
    _check_refused(_args(workdir, *LONG), capsys, f"checkpoint {step_dir} {message}",
                   "rerun with --fresh", str(workdir))
  assert cli.main(_args(workdir, *LONG, "--fresh")) == 0
  assert _results(workdir)["models"] == baseline[1]["models"]


def test_debug_shows_the_traceback(baseline):
  with pytest.raises(UserError, match="unknown dataset"):
    cli.main(_args(baseline[0], "--config.data.name=diabetis") + ["--debug"])


def test_fresh_with_bad_input_keeps_the_checkpoints(baseline, capsys):
  workdir = baseline[0]
  before = {p: os.stat(p).st_mtime_ns for p in glob.glob(
      os.path.join(workdir, "checkpoints", "**"), recursive=True)}
  _check_refused(_args(workdir, "--fresh", "--config.model.name=mpl"), capsys,
                 "unknown model 'mpl'", "did you mean 'mlp'?", workdir)
  assert {p: os.stat(p).st_mtime_ns for p in before} == before


def test_explicit_overrides_win_over_smoke_sizes(baseline):
  config = baseline[1]["config"]
  assert config["smoke"] and config["train"]["epochs"] == 12 and config["train"]["batch_size"] == 8
  assert config["data"]["kwargs"]["max_samples"] == 240  # the smoke size
