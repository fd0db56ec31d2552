"""The throughput benchmark on a tiny AllCNN: every reported field, the CLI, the PyTorch guard."""
import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from jax_unlearn import bench
from jax_unlearn.bench import report
from jax_unlearn import ops
from jax_unlearn.errors import UserError
from jax_unlearn.ops import onednn

TINY = bench.ModelSpec({"width": 0.1}, (8, 8, 3), (1,))
FIELDS = ("model", "case", "batch_size", "devices", "dtype", "backend", "device_kind", "kernels",
          "compile_s", "step_s", "step_s_q1", "step_s_q3", "step_s_min", "step_s_max", "steps",
          "samples_per_s", "flops_per_step", "flops_per_s", "mfu", "peak_flops_per_s",
          "program_bytes", "peak_bytes")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _info():
  return bench.device_info("cpu")


def test_jax_cases_report_every_field():
  opts = bench.Options(steps=3, warmup=1, torch=False)
  rows = bench.bench_model("allcnn", TINY, 4, opts, _info(), peak=1e9, log=lambda _: None)
  by_case = {r["case"]: r for r in rows}
  assert list(by_case) == ["train", "blindspot", "predict"] == list(bench.CASES)
  for r in rows:
    assert all(k in r for k in FIELDS), sorted(set(FIELDS) - set(r))
    assert r["steps"] == 3 and r["step_s_min"] <= r["step_s"] <= r["step_s_max"]
    assert r["flops_per_step"] > 0 and r["program_bytes"] > 0 and r["peak_bytes"] > 0
    assert r["kernels"] == ops.kernels_info("auto")
    np.testing.assert_allclose(r["samples_per_s"], 4 / r["step_s"])
    np.testing.assert_allclose(r["mfu"], r["flops_per_s"] / 1e9)
  # The blindspot step also runs the frozen model forward, so it is more work than training.
  assert by_case["blindspot"]["flops_per_step"] > by_case["train"]["flops_per_step"]
  assert by_case["blindspot"]["program_bytes_vs_train"] > 0


def test_main_writes_jsonl_and_markdown_with_the_kernels(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(bench.MODELS, "allcnn", TINY)
  code = bench.main(["--models", "allcnn", "--cases", "train,predict", "--batch-sizes", "4",
                     "--steps", "2", "--warmup", "0", "--devices", "2", "--no-torch",
                     "--shards", "2", "--device-kind", "cpu", "--kernels", "xla",
                     "--out", str(tmp_path)])
  assert code == 0
  rows = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
  assert [(r["case"], r["devices"]) for r in rows] == [("train", 1), ("train", 2),
                                                        ("predict", 1), ("predict", 2)]
  for r in rows:
    assert all(k in r for k in FIELDS)
    assert r["peak_flops_per_s"] > 0  # measured matmul rate of this CPU
    assert r["kernels"] == ops.kernels_info("xla")
    assert r["kernels"]["conv"] == "xla"
  assert all(0 < r["scaling_efficiency"] for r in rows if r["devices"] == 2)
  assert all(r["shards"] == 2 and r["shards_time_ratio"] > 0 for r in rows)
  md = (tmp_path / "bench.md").read_text()
  assert md.count("| allcnn |") == 4 and "scaling" in md and "2 fixed shards" in md
  assert "convolutions 'xla': xla" in md.splitlines()[2]  # the header
  assert "| allcnn |" in capsys.readouterr().out


def _lowered_train_step(kernels: str) -> str:
  s = bench.setup_model("allcnn", TINY, 4, "float32", kernels=kernels)
  jitted, args = bench.jax_case(s, "train").program()
  return jitted.lower(*args).as_text()  # lowered only: nothing compiles or runs


def test_kernels_setting_reaches_the_lowered_train_step():
  assert bench.build_model("allcnn", TINY, "float32", "xla").kernels == "xla"
  assert "onednn" not in _lowered_train_step("xla")
  if onednn.available():  # the contrast: the same step calls oneDNN when asked to
    assert "jax_unlearn_onednn_conv" in _lowered_train_step("onednn")


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
  assert bench.main(["--models", "alcnn", "--out", str(tmp_path)]) == 2
  assert "allcnn" in capsys.readouterr().err  # the closest name is suggested
  assert bench.main(["--cases", "finetune", "--out", str(tmp_path)]) == 2
  assert "train" in capsys.readouterr().err
  assert bench.main(["--devices", "64", "--no-torch", "--out", str(tmp_path)]) == 2
  with pytest.raises(SystemExit):
    bench.main(["--kernels", "fast", "--out", str(tmp_path)])
  assert not (tmp_path / "bench.jsonl").exists()


def test_torch_peer_computes_the_same_losses_and_is_compared():
  opts = bench.Options(steps=2, warmup=1)
  rows = bench.bench_model("allcnn", TINY, 4, opts, _info(), peak=None, log=lambda _: None)
  assert [r["case"] for r in rows] == list(bench.CASES)
  for r in rows:
    assert r["guard_ok"], r
    assert r["guard_rel_err"] < 1e-5
    assert r["speedup_vs_torch"] > 0 and r["torch_step_s"] > 0


def test_torch_guard_detects_different_weights():
  s = bench.setup_model("allcnn", TINY, 4, "float32")
  other = jax.tree_util.tree_map(lambda a: a * 1.01, s.variables)
  theirs = bench.torch_case(dataclasses.replace(s, variables=other), "blindspot", "cpu", "float32")
  ours = bench.jax_case(s, "blindspot")
  assert bench.relative_error(ours(), theirs()) > bench.guard_tolerance("cpu", "float32")


def test_peak_table_picks_the_specific_device_first():
  gpu = {"backend": "gpu", "device_kind": "NVIDIA H100 PCIe"}
  assert bench.peak_flops(gpu, "bfloat16", None)[0] == 756e12
  assert bench.peak_flops({**gpu, "device_kind": "NVIDIA H100 80GB HBM3"}, "bfloat16",
                          None)[0] == 989.4e12
  assert bench.peak_flops({"backend": "tpu", "device_kind": "TPU v4"}, "float32", None)[0] is None
  assert bench.peak_flops({**gpu, "device_kind": "Quadro"}, "float32", None)[0] is None


def _fake_pipeline(commands, returncode=0):
  """Stands in for `jax-unlearn run`: records the command, writes a results.json like it."""

  def run(cmd):
    commands.append(list(cmd))
    workdir = cmd[cmd.index("--workdir") + 1]
    paper = "--config.metrics.predict_batch_size=1" in cmd
    os.makedirs(workdir, exist_ok=True)
    seconds = {"data": 0.5, "original": 2.0, "metrics": 6.0 if paper else 1.0,
               "metrics_per_model": {"original": 0.5}, "total": 9.0 if paper else 4.0,
               "compile": 1.5}
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump({"seconds": seconds}, f)
    return subprocess.CompletedProcess(cmd, returncode, "", "boom" if returncode else "")

  return run


def test_pipeline_comparison_runs_both_styles(tmp_path, monkeypatch):
  commands = []
  monkeypatch.setattr(report, "run_command", _fake_pipeline(commands))
  p = bench.pipeline_comparison("demo", str(tmp_path), overrides=("--config.smoke=True",),
                                log=lambda _: None)
  head = [sys.executable, "-m", "jax_unlearn", "run", "--config", "demo", "--workdir"]
  ours, paper = commands
  assert ours == [*head, str(tmp_path / "pipeline_ours"), "--fresh", "--quiet", "--cache-dir",
                  "none", "--config.smoke=True"]
  assert paper == [*head, str(tmp_path / "pipeline_paper_style"), "--fresh", "--quiet",
                   "--cache-dir", "none", "--config.smoke=True",
                   "--config.metrics.predict_batch_size=1",
                   "--config.metrics.ain_steps_per_call=1"]
  for style, total in (("ours", 4.0), ("paper_style", 9.0)):
    assert p[style]["total"] == total and p[style]["wall_s"] > 0
    assert "metrics_per_model" not in p[style]  # only the stages' seconds
  np.testing.assert_allclose(p["speedup"], p["paper_style"]["wall_s"] / p["ours"]["wall_s"])
  assert p["metrics_share"] == 0.25 and p["overrides"] == list(report.PAPER_STYLE)
  md = bench.pipeline_markdown(p)
  assert "| ours | 0.5 | 2.0 | 1.0 | 1.5 |" in md and "| paper style |" in md
  assert "original code" in md


def test_a_failing_pipeline_is_an_error_with_its_output(tmp_path, monkeypatch):
  monkeypatch.setattr(report, "run_command", _fake_pipeline([], returncode=1))
  with pytest.raises(UserError, match="boom"):
    bench.pipeline_comparison("demo", str(tmp_path), log=lambda _: None)


def test_missing_pipeline_config_is_an_error_before_any_work(tmp_path, capsys):
  assert bench.main(["--pipeline", "no/such.py", "--no-torch", "--out", str(tmp_path)]) == 2
  err = capsys.readouterr().err
  assert "no/such.py" in err and "demo" in err  # the shipped configs are named
  assert not (tmp_path / "bench.md").exists()
  assert bench.parse_args(["--pipeline"]).pipeline == "demo"


def test_the_package_runs_as_a_module():
  done = subprocess.run([sys.executable, "-m", "jax_unlearn.bench", "--help"], cwd=ROOT,
                        capture_output=True, text=True, timeout=60)
  assert done.returncode == 0, done.stderr
  assert "--kernels" in done.stdout and "--pipeline" in done.stdout


ENSEMBLE_FIELDS = ("model", "case", "members", "batch_size", "kernels", "compile_s", "steps",
                   "ensemble_step_s", "sequential_step_s", "single_step_s", "speedup",
                   "ensemble_samples_per_s", "sequential_samples_per_s", "flops_per_step",
                   "ensemble_mfu", "sequential_mfu", "program_bytes", "single_program_bytes",
                   "program_bytes_vs_one", "peak_bytes")
TINY_ENSEMBLE = {"mlp": bench.ModelSpec({"hidden": (8,)}, (3,), (1,))}


def test_ensemble_rows_are_computed_from_their_own_times(monkeypatch):
  from jax_unlearn.bench import ensembles
  assert ensembles.member_counts("mlp", 16) == [1, 4, 16, 64]  # the cheap model also at 4 K
  assert ensembles.member_counts("allcnn", 16) == [1, 4, 16]
  monkeypatch.setattr(ensembles, "CHEAP", ())  # K = 1, 2 only
  # No seconds: exactly the rounds asked for.
  opts = dataclasses.replace(ensembles.ENSEMBLE_OPTIONS, steps=2, warmup=0, min_seconds=0.0)
  rows = ensembles.bench_ensembles(2, specs=TINY_ENSEMBLE, models=("mlp",), batch_size=4,
                                   opts=opts, info=_info(), peak=1e9, log=lambda _: None)
  assert [r["members"] for r in rows] == [1, 2]
  for r in rows:
    assert all(k in r for k in ENSEMBLE_FIELDS), sorted(set(ENSEMBLE_FIELDS) - set(r))
    k = r["members"]
    assert r["steps"] == 2 and r["ensemble_step_s"] > 0 and r["sequential_step_s"] > 0
    np.testing.assert_allclose(r["speedup"], r["sequential_step_s"] / r["ensemble_step_s"])
    np.testing.assert_allclose(r["single_step_s"], r["sequential_step_s"] / k)
    np.testing.assert_allclose(r["ensemble_samples_per_s"], k * 4 / r["ensemble_step_s"])
    np.testing.assert_allclose(r["sequential_samples_per_s"], k * 4 / r["sequential_step_s"])
    np.testing.assert_allclose(r["ensemble_mfu"], r["flops_per_step"] / r["ensemble_step_s"] / 1e9)
    assert r["program_bytes"] > 0 and r["single_program_bytes"] > 0
  one, two = rows
  np.testing.assert_allclose(two["flops_per_step"], 2 * one["flops_per_step"])
  np.testing.assert_allclose(two["program_bytes_vs_one"],
                             two["program_bytes"] / one["program_bytes"])
  # At the largest K, a budget of one member's memory makes choose_chunk pick chunks of 1.
  assert "chunked_step_s" not in one
  assert two["chunk_small_budget"] == 1 and two["budget_bytes"] > 0
  assert two["chunk_for_budget"] is None  # a tiny MLP fits the machine's memory
  np.testing.assert_allclose(two["chunked_time_ratio"],
                             two["chunked_step_s"] / two["unchunked_step_s"])
  assert two["chunked_steps"] == 1 and two["chunked_bytes_ratio"] > 0
  md = ensembles.markdown(rows)
  assert md.count("| mlp |") == 2 and "chunks of 1" in md


def test_main_adds_the_ensemble_rows(tmp_path, monkeypatch):
  from jax_unlearn.bench import ensembles
  monkeypatch.setattr(ensembles, "ENSEMBLE_MODELS", TINY_ENSEMBLE)
  monkeypatch.setattr(ensembles, "ENSEMBLE_BATCH", 4)
  monkeypatch.setattr(ensembles, "CHEAP", ())
  code = bench.main(["--models", "", "--no-torch", "--ensemble", "2", "--ensemble-models", "mlp",
                     "--ensemble-steps", "1", "--ensemble-seconds", "0", "--device-kind", "cpu",
                     "--out", str(tmp_path)])
  assert code == 0
  rows = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
  assert [(r["case"], r["members"]) for r in rows] == [("ensemble", 1), ("ensemble", 2)]
  assert all(r["steps"] == 1 and r["peak_flops_per_s"] > 0 for r in rows)
  assert "## Ensembles" in (tmp_path / "bench.md").read_text()
  assert "(more for quick steps: 0 s of each)" in (tmp_path / "bench.md").read_text()
  assert bench.main(["--ensemble", "2", "--ensemble-models", "mpl", "--out", str(tmp_path)]) == 2


def test_quick_steps_get_more_rounds(monkeypatch):
  from jax_unlearn.bench import ensembles
  monkeypatch.setattr(ensembles, "MAX_ROUNDS", 50)
  assert ensembles.rounds([lambda: None], 3, 2.0) == 50  # microseconds: up to the cap
  assert ensembles.rounds([lambda: None], 3, 0.0) == 3


def test_audit_rows_time_both_ways_and_the_statistics(monkeypatch):
  from jax_unlearn.bench import audit
  monkeypatch.setattr(audit, "ROWS", 128)
  monkeypatch.setattr(audit, "FORGET", 16)
  assert audit.member_counts(32) == [8, 16, 32] and audit.member_counts(4) == [8]
  (row,) = audit.bench_audit(8, epochs=1)
  assert row["members"] == 8 and row["rows"] == 128
  assert row["speedup"] == pytest.approx(row["sequential_s"] / row["vmapped_s"])
  assert min(row["vmapped_s"], row["sequential_s"], row["lira_s"], row["epsilon_s"]) > 0
  assert "| 8 |" in audit.markdown([row])


def test_loader_rows_read_every_way_and_time_the_step():
  from jax_unlearn.bench import loader
  (row,) = loader.bench_loader([16], images=120, workers=(1,), steps=1)
  assert row["train_rows"] > loader.BATCH  # rates after the first batch
  assert set(row["samples_per_s"]) == {"memory", "threads", "workers=1"}
  assert min(row["samples_per_s"].values()) > 0 and row["step_samples_per_s"] > 0
  assert row["headroom"] == pytest.approx(
      max(row["samples_per_s"]["threads"], row["samples_per_s"]["workers=1"])
      / row["step_samples_per_s"])
  assert "| 16 |" in loader.markdown([row])


@pytest.mark.parametrize("args", [["--loader", "64,big"], ["--loader", "4"],
                                  ["--loader", "64", "--loader-images", "3"]])
def test_bad_loader_arguments(args, capsys):
  from jax_unlearn import bench
  assert bench.main(["--models", "", "--no-torch", *args]) == 2
  assert "--loader" in capsys.readouterr().err


def test_epoch_rows_time_both_ways(monkeypatch):
  from jax_unlearn.bench import epochs
  spec = epochs.EPOCH_MODELS["mlp"][0]
  monkeypatch.setattr(epochs, "EPOCH_MODELS", {"mlp": (spec, 40, 16, (1, 4, 16))})
  monkeypatch.setattr(epochs, "ROUNDS", 1)
  rows = epochs.bench_epochs(max_members=4)
  assert [r["members"] for r in rows] == [1, 4]
  for row in rows:
    assert row["batches"] == 3 and min(row["stepped_epoch_s"], row["scanned_epoch_s"]) > 0
    assert row["speedup"] == pytest.approx(row["stepped_epoch_s"] / row["scanned_epoch_s"])
  assert "| mlp | 4 |" in epochs.markdown(rows)
