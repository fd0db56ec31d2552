"""TensorBoard events: written without TensorFlow, read back."""
import os

import pytest

from jax_unlearn import config_io, configs, events, pipeline


def test_scalars_and_members_read_back(tmp_path):
  with events.recording(str(tmp_path)) as log:
    assert events.current() is log
    events.epoch("original", 10, {"epoch": 1, "train_loss": 2.5, "best_val": 1.0,
                                  "val_loss": [1.0, 3.0]})
    events.epoch("original", 20, {"epoch": 2, "train_loss": 1.5, "val_loss": [0.5, 1.5]})
  assert events.current() is None
  runs = events.read_scalars(str(tmp_path))
  tags = runs["original"]
  assert tags["train_loss"] == [(10, 2.5), (20, 1.5)]
  assert tags["val_loss"] == [(10, 2.0), (20, 1.0)]  # the mean over members
  assert tags["val_loss/member_1"] == [(10, 3.0), (20, 1.5)]
  assert "epoch" not in tags and "best_val" not in tags


def test_nothing_is_written_without_a_log(tmp_path):
  events.epoch("original", 1, {"train_loss": 1.0})
  with events.recording(None) as log:
    assert log is None and events.current() is None
  assert events.read_scalars(str(tmp_path)) == {}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  c = config_io.load_config("diabetes_mlp")
  c.smoke = True
  configs.set_methods(c, {"blindspot": ("blindspot", {}), "finetune": ("finetune", {})})
  workdir = str(tmp_path_factory.mktemp("events"))
  return workdir, pipeline.run_experiment(c, workdir, quiet=True)


def test_every_stage_and_the_final_metrics_are_logged(run):
  workdir, results = run
  runs = events.read_scalars(os.path.join(workdir, "tensorboard"))
  epochs = results["config"]["train"]["epochs"]
  original = runs["original"]
  assert len(original["train_loss"]) == len(original["val_loss"]) == epochs
  assert {"lr", "val_loss"} <= set(runs["retrained"])
  assert "finetune" in runs and "blindspot model" in runs
  # A method's loss parts are curves of their own.
  assert {"train_retain_loss", "train_forget_loss", "train_loss"} <= set(runs["blindspot"])
  steps = [s for s, _ in original["train_loss"]]
  assert steps == sorted(set(steps)) and steps[0] > 0  # against the optimizer step
  retrained = [s for s, _ in runs["retrained"]["train_loss"]]
  assert retrained[-1] == results["records"]["retrained"]["steps"]
  final = runs["metrics/original"]
  assert final["retain_test_error"] == [(0, pytest.approx(
      results["models"]["original"]["retain_test_error"]))]


def test_tensorboard_off_writes_no_events(tmp_path):
  c = config_io.load_config("diabetes_mlp")
  c.smoke, c.tensorboard = True, False
  configs.set_methods(c, {"finetune": ("finetune", {})})
  pipeline.run_experiment(c, str(tmp_path), quiet=True)
  assert not os.path.exists(tmp_path / "tensorboard")
