"""experiments/member_axis.py: one model on the member axis against the single path, measured."""
import dataclasses

from experiments import member_axis
from jax_unlearn.bench import ensembles


def test_the_table_compares_the_paths_and_the_single_path_keeps_its_bits(monkeypatch, capsys):
  monkeypatch.setattr(ensembles, "ENSEMBLE_OPTIONS", dataclasses.replace(
      ensembles.ENSEMBLE_OPTIONS, steps=1, warmup=0, min_seconds=0.0))
  assert member_axis.main(["--models", "mlp", "--rows", "64", "--epochs", "1"]) == 0
  rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()
          if line.startswith("| mlp")]
  assert [r[1] for r in rows] == ["1", "4", "step, 1"]
  for r in rows[:2]:
    assert float(r[2]) < 1e-5  # an MLP's one epoch: float rounding at most
    assert r[3] == "yes"  # fixed blocks: the single path's bits on 1 and 4 devices
  assert member_axis.main(["--models", "nope"]) == 2
  assert "unknown model 'nope'" in capsys.readouterr().err


def test_largest_difference_is_zero_only_for_the_same_bits():
  a = {"w": [1.0, 2.0]}
  assert member_axis.largest_difference(a, {"w": [1.0, 2.0]}) == 0.0
  assert member_axis.largest_difference(a, {"w": [1.0, 2.5]}) == 0.5
