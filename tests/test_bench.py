"""The throughput benchmark on a tiny AllCNN: every reported field, the CLI, the PyTorch guard."""
import dataclasses
import json

import jax
import numpy as np
import pytest

from experiments import bench

TINY = bench.ModelSpec({"width": 0.1}, (8, 8, 3), (1,))
FIELDS = ("model", "case", "batch_size", "devices", "dtype", "backend", "device_kind", "compile_s",
          "step_s", "step_s_q1", "step_s_q3", "step_s_min", "step_s_max", "steps",
          "samples_per_s", "flops_per_step", "flops_per_s", "mfu", "peak_flops_per_s",
          "program_bytes", "peak_bytes")


def _info():
  return bench.device_info("cpu")


def test_jax_cases_report_every_field():
  opts = bench.Options(steps=3, warmup=1, torch=False)
  rows = bench.bench_model("allcnn", TINY, 4, opts, _info(), peak=1e9, log=lambda _: None)
  by_case = {r["case"]: r for r in rows}
  assert list(by_case) == ["train", "finetune", "blindspot", "predict"]
  for r in rows:
    assert all(k in r for k in FIELDS), sorted(set(FIELDS) - set(r))
    assert r["steps"] == 3 and r["step_s_min"] <= r["step_s"] <= r["step_s_max"]
    assert r["flops_per_step"] > 0 and r["program_bytes"] > 0 and r["peak_bytes"] > 0
    np.testing.assert_allclose(r["samples_per_s"], 4 / r["step_s"])
    np.testing.assert_allclose(r["mfu"], r["flops_per_s"] / 1e9)
  # The blindspot step also runs the frozen model forward, so it is more work than training.
  assert by_case["blindspot"]["flops_per_step"] > by_case["train"]["flops_per_step"]
  assert by_case["blindspot"]["program_bytes_vs_train"] > 0
  assert by_case["finetune"]["step_s"] == by_case["train"]["step_s"]
  assert "same compiled program" in by_case["finetune"]["note"]


def test_main_writes_jsonl_and_markdown(tmp_path, monkeypatch, capsys):
  monkeypatch.setitem(bench.MODELS, "allcnn", TINY)
  code = bench.main(["--models", "allcnn", "--cases", "train,predict", "--batch-sizes", "4",
                     "--steps", "2", "--warmup", "0", "--devices", "2", "--no-torch",
                     "--shards", "2", "--device-kind", "cpu", "--out", str(tmp_path)])
  assert code == 0
  rows = [json.loads(line) for line in (tmp_path / "bench.jsonl").read_text().splitlines()]
  assert [(r["case"], r["devices"]) for r in rows] == [("train", 1), ("train", 2),
                                                        ("predict", 1), ("predict", 2)]
  for r in rows:
    assert all(k in r for k in FIELDS)
    assert r["peak_flops_per_s"] > 0  # measured matmul rate of this CPU
  assert all(0 < r["scaling_efficiency"] for r in rows if r["devices"] == 2)
  assert all(r["shards"] == 2 and r["shards_time_ratio"] > 0 for r in rows)
  md = (tmp_path / "bench.md").read_text()
  assert md.count("| allcnn |") == 4 and "scaling" in md and "2 fixed shards" in md
  assert "| allcnn |" in capsys.readouterr().out


def test_bad_arguments_are_one_line_errors(tmp_path, capsys):
  assert bench.main(["--models", "alcnn", "--out", str(tmp_path)]) == 2
  assert "allcnn" in capsys.readouterr().err  # the closest name is suggested
  assert bench.main(["--devices", "64", "--no-torch", "--out", str(tmp_path)]) == 2
  assert not (tmp_path / "bench.jsonl").exists()


def test_torch_peer_computes_the_same_losses_and_is_compared():
  opts = bench.Options(steps=2, warmup=1)
  rows = bench.bench_model("allcnn", TINY, 4, opts, _info(), peak=None,
                           cases=("train", "blindspot", "predict"), log=lambda _: None)
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


def test_pipeline_comparison_runs_both_styles(tmp_path):
  p = bench.pipeline_comparison("experiments/configs/demo.py", str(tmp_path),
                                overrides=("--config.smoke=True",))
  configs = {style: json.loads((tmp_path / f"pipeline_{style}" / "results.json").read_text())
             ["config"]["metrics"] for style in ("ours", "paper_style")}
  assert configs["ours"]["predict_batch_size"] > 1
  assert configs["paper_style"]["predict_batch_size"] == 1
  assert configs["paper_style"]["ain_steps_per_call"] == 1
  for style in ("ours", "paper_style"):
    assert p[style]["wall_s"] > p[style]["total"] > p[style]["metrics"] > 0
  np.testing.assert_allclose(p["speedup"], p["paper_style"]["wall_s"] / p["ours"]["wall_s"])
  md = bench.pipeline_markdown(p)
  assert "| ours |" in md and "| paper style |" in md and "original" in md


def test_missing_pipeline_config_is_an_error_before_any_work(tmp_path, capsys):
  assert bench.main(["--pipeline", "no/such.py", "--no-torch", "--out", str(tmp_path)]) == 2
  assert "no/such.py" in capsys.readouterr().err
  assert not (tmp_path / "bench.md").exists()
