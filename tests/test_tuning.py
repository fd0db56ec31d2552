"""Choosing settings on validation rows, the trade-off plot and the cost table."""
import os

import numpy as np
import pytest

from jax_unlearn import metrics, results, tuning, unlearn


def _scores(**rows):
  return {n: {"val_forget_wasserstein": list(w), "val_retain_error": list(r)}
          for n, (w, r) in rows.items()}


def test_choose_the_closest_to_retrained_that_keeps_the_retain_error():
  scores = _scores(original=([9.0, 9.0], [2.0, 2.0]), retrained=([0.0, 0.0], [2.0, 2.0]),
                   closest_but_damaging=([1.0, 1.0], [3.0, 2.0]),  # mean 2.5 > 1.2 x 2
                   close=([2.0, 4.0], [2.3, 2.5]),  # mean 2.4: allowed
                   far=([5.0, 5.0], [2.0, 2.0]))
  assert tuning.choose(scores, ["closest_but_damaging", "close", "far"]) == "close"
  assert tuning.choose(scores, ["closest_but_damaging"]) is None
  assert tuning.choose(scores, ["closest_but_damaging"], max_retain_ratio=1.3) == (
      "closest_but_damaging")


def test_tradeoff_plot_has_one_point_per_model_and_seed(tmp_path):
  per_seed = [{"original": {"retain_test_error": 1.0, "wasserstein_to_retrained": 5.0},
               "retrained": {"retain_test_error": 1.1, "wasserstein_to_retrained": 0.0},
               "m": {"retain_test_error": 1.5 + k, "wasserstein_to_retrained": None if k else 2.0}}
              for k in range(2)]
  path = metrics.plot_tradeoff(per_seed, str(tmp_path))
  assert path == os.path.join(str(tmp_path), "tradeoff.png") and os.path.getsize(path) > 1000
  assert metrics.plot_tradeoff([{"m": {"retain_test_error": 1.0}}], str(tmp_path)) is None


def test_cost_is_each_methods_seconds_against_retraining():
  out = results.cost({"retrained": {"seconds": 20.0}, "blindspot": {"seconds": 5.0}})
  assert out["retrained"] == {"seconds": 20.0, "vs_retrained": 1.0}
  assert out["blindspot"]["vs_retrained"] == pytest.approx(0.25)
  assert np.isfinite(out["blindspot"]["seconds"])


def test_tune_scores_every_candidate_on_validation_rows_and_writes_its_report(tmp_path):
  from jax_unlearn import config_io, configs
  c = config_io.load_config("tune_rotdigits")
  c.smoke = True
  with c.ignore_type():
    c.seeds = [100]
  keep = ["blindspot_c0", "blindspot_c1", "gaussian_c0"]
  for name in list(c.methods):
    if name not in keep:
      del c.methods[name]
  report = tuning.tune_experiment(c, str(tmp_path), quiet=True)
  assert set(report["scores"]) == {"original", "retrained", *keep}
  assert report["chosen"] in keep + [None]
  assert report["scores"]["retrained"]["val_forget_wasserstein"]["mean"] == 0.0
  assert report["settings"]["blindspot_c0"]["beta"] == 50.0  # c0: the method's defaults
  assert configs.method_of(c, "blindspot_c1") == "blindspot"
  # What a run that uses the choices needs: per method, the settings of its search space, and
  # the seeds and forget request it may not share.
  assert report["seeds"] == [100] and report["forget"]["low"] == 30.0
  for method, choice in report["chosen_per_method"].items():
    assert choice["label"] in keep and configs.method_of(c, choice["label"]) == method
    assert set(choice["settings"]) == set(unlearn.get_method(method).search_space)
  assert os.path.isfile(tmp_path / "tune.json") and "Chosen" in (tmp_path / "tune.md").read_text()
  assert not os.path.exists(tmp_path / "results.json")  # no test cohort was scored


def test_tuning_without_forget_rows_in_validation_fails_before_training(tmp_path):
  from jax_unlearn import config_io
  c = config_io.load_config("taylor_tft")  # a forgotten time window: no validation rows of it
  c.smoke, c.seeds = True, 1
  with pytest.raises(tuning.NoValidationRows, match="0 forget rows"):
    tuning.tune_experiment(c, str(tmp_path), quiet=True)
  assert not os.path.exists(tmp_path / "checkpoints")


def test_the_tune_command_exits_2_naming_what_tuning_lacks(tmp_path, capsys):
  from jax_unlearn import cli
  argv = ["tune", "--config", "taylor_tft", "--workdir", str(tmp_path), "--quiet",
          "--config.smoke=True"]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert "tuning needs validation rows" in err and "fix:" in err
