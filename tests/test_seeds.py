"""Several seeds through the whole pipeline: every stage an ensemble, every result with its
spread."""
import json
import os

import numpy as np
import pytest

from jax_unlearn import config_io, configs, pipeline
from jax_unlearn.errors import UserError
from jax_unlearn.metrics.spread import FLOOR

METHODS = ("finetune", "gaussian", "blindspot")
# Keys compared member by member with runs of one seed (the attack's and AIN's discrete outcomes
# aside, these move smoothly with float rounding).
SMOOTH = ("retain_train_error", "forget_train_error", "retain_test_error", "forget_test_error",
          "wasserstein_to_retrained")


def load(**overrides):
  """The tabular default at smoke size: what these tests check does not depend on the model
  (members of every method on a convolutional model are checked against single runs in
  test_unlearn.py and test_methods_*.py)."""
  c = config_io.load_config("diabetes_mlp")
  c.smoke = True
  for key, value in overrides.items():
    config_io.apply_override(c, key, str(value))
  return c


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("seeds"))
  return workdir, pipeline.run_experiment(load(seeds=2), workdir, quiet=True)


def test_every_result_has_mean_spread_interval_and_values(two_seeds):
  workdir, results = two_seeds
  assert results["seeds"] == [0, 1]
  assert list(results["models"])[:3] == ["original", "retrained", FLOOR]
  assert set(results["models"]) == {"original", "retrained", FLOOR, *METHODS}
  assert results["models"][FLOOR]["ain"]["mean"] is None  # the floor relearns like retrained
  for name, row in results["models"].items():
    for key in SMOOTH + ("mia_forget",) + (("ain",) if name != FLOOR else ()):
      cell = row[key]
      assert set(cell) == {"mean", "std", "ci95", "values"}, (name, key)
      assert len(cell["values"]) == 2, (name, key)
      assert cell["mean"] == pytest.approx(np.mean(cell["values"]))
      assert cell["ci95"][0] <= cell["mean"] <= cell["ci95"][1]
  # Two retrained models of different seeds are not the same model: the floor is above zero.
  assert results["models"]["retrained"]["wasserstein_to_retrained"]["values"] == [0.0, 0.0]
  assert all(v > 0 for v in results["models"][FLOOR]["wasserstein_to_retrained"]["values"])
  assert set(results["noise_floor"]) == set(METHODS)
  assert all(f["inside"] in (True, False) for f in results["noise_floor"].values())
  assert "finetune vs blindspot" in results["comparisons"] or \
      "blindspot vs finetune" in results["comparisons"]
  aux = results["auxiliary"]["blindspot_model"]["retain_test_error"]
  assert len(aux["values"]) == 2
  on_disk = json.load(open(os.path.join(workdir, "results.json")))
  assert on_disk["models"] == results["models"]
  table = open(os.path.join(workdir, "results.md")).read()
  assert "seeds 0, 1" in table and " ± " in table and f"| {FLOOR} |" in table
  assert "## The noise floor" in table and "## Paired comparisons" in table
  assert os.path.isfile(os.path.join(workdir, "plots", "seeds.png"))
  assert not os.path.exists(os.path.join(workdir, "plots", "errors.png"))  # bars of one seed


def test_member_k_is_the_run_of_seed_k(two_seeds, tmp_path):
  """Member 1 of the ensemble run equals a run with one model of seed 1 on the same data split
  (`seed` 0 splits the data; `seeds` seed the models), to float rounding, which a few training
  steps amplify a little."""
  _, results = two_seeds
  single = pipeline.run_experiment(load(seeds="[1]"), str(tmp_path), quiet=True)["models"]
  for name in ("original", "retrained", *METHODS):
    for key in SMOOTH:
      member = results["models"][name][key]["values"][1]
      assert member == pytest.approx(single[name][key], rel=2e-2, abs=0.05), (name, key)


def test_one_device_gives_the_numbers_of_four(two_seeds, tmp_path):
  """Two members on one device (one vmapped program) or one on each of two: the same numbers up
  to float rounding, not bitwise (a program of 2 members rounds unlike one of 1). Errors agree
  within 1%; distances between two models are small differences of predictions, which the
  methods' training amplifies (Blindspot's most), so they are compared against the seeds'
  spread instead: a device count moves them far less than another seed does."""
  _, four = two_seeds
  one = pipeline.run_experiment(load(seeds=2, devices=1), str(tmp_path), quiet=True)
  for name in four["models"]:
    for key in SMOOTH[:4]:
      np.testing.assert_allclose(one["models"][name][key]["values"],
                                 four["models"][name][key]["values"], rtol=1e-2,
                                 err_msg=f"{name} {key}")
  for name in METHODS:
    a = np.asarray(one["models"][name]["wasserstein_to_retrained"]["values"])
    b = np.asarray(four["models"][name]["wasserstein_to_retrained"]["values"])
    assert np.max(np.abs(a - b)) < 0.5 * max(np.ptp(a), np.ptp(b)), (name, a, b)


def test_rerun_of_an_ensemble_reuses_every_stage(two_seeds):
  workdir, first = two_seeds
  again = pipeline.run_experiment(load(seeds=2), workdir, quiet=True)
  assert sorted(again["reused"]) == sorted(("original", "retrained", *METHODS))
  assert again["models"] == first["models"]


@pytest.mark.parametrize("seeds, expected", [(1, [0]), (3, [0, 1, 2]), ([4, 2], [4, 2])])
def test_member_seeds(seeds, expected):
  c = load()
  config_io.apply_override(c, "seeds", str(seeds))
  assert configs.member_seeds(c) == expected


@pytest.mark.parametrize("text", ["0", "-1", "[1,1]", "[]", "[0.5]", "True"])
def test_bad_seeds_are_user_errors(text):
  with pytest.raises(UserError, match="seeds|is a bool"):
    config_io.prepare_config(load(), [("seeds", text)])


def test_seeds_from_the_command_line_take_a_list():
  c = config_io.prepare_config(load(), [("seeds", "[3,5,7]")])
  assert configs.member_seeds(c) == [3, 5, 7]
