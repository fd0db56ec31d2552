"""The tuning protocol: every method tuned from its own search space with one budget, and a
choice never graded on the seeds or the forget request it was tuned on."""
import itertools
import json
import os

import pytest

from jax_unlearn import cli, config_io, configs, protocol, unlearn
from jax_unlearn.errors import UserError


@pytest.mark.parametrize("name", unlearn.tunable_methods())
def test_every_method_draws_its_budget_from_its_own_space(name):
  method = unlearn.get_method(name)
  space = method.search_space
  for key, values in space.items():
    assert method.defaults[key] in values, (key, values)  # the defaults are a candidate
  grid = list(itertools.product(*space.values()))
  drawn = method.candidates(8, seed=0)
  assert len(drawn) == min(8, len(grid))
  assert drawn[0] == {k: method.defaults[k] for k in space}
  assert len({tuple(sorted(c.items())) for c in drawn}) == len(drawn)  # distinct
  for candidate in drawn:
    assert set(candidate) == set(space)
    assert all(candidate[k] in space[k] for k in space)
    method.settings(candidate)  # each passes the method's own checks
  assert method.candidates(8, seed=0) == drawn  # seeded
  assert len(method.candidates(10**6)) == len(grid)  # a small space: the whole grid


def test_only_the_reference_has_no_search_space():
  assert set(unlearn.method_names()) - set(unlearn.tunable_methods()) == {"retrained"}
  with pytest.raises(UserError, match="no search space"):
    unlearn.get_method("retrained").candidates(8)
  with pytest.raises(UserError, match="budget"):
    unlearn.get_method("finetune").candidates(0)


def test_search_entries_give_every_method_the_same_budget():
  entries = configs.search_entries(["finetune", "neggrad"], 3, seed=1)
  assert list(entries) == ["finetune_c0", "finetune_c1", "finetune_c2", "neggrad_c0",
                           "neggrad_c1", "neggrad_c2"]
  assert entries["neggrad_c2"][0] == "neggrad"


def _tune_file(tmp_path, seeds, forget_high=-30.0, name="tune.json"):
  """A tune.json as `jax-unlearn tune` writes it (`protocol.record`), finetune's lr chosen."""
  c = config_io.load_config("diabetes_mlp")
  c.forget.kind, c.forget.high = "label_range", forget_high
  chosen = {"finetune": {"label": "finetune_c3", "settings": {"lr": 3e-3, "epochs": 1}}}
  path = tmp_path / name
  path.write_text(json.dumps(protocol.record(c, seeds, chosen)))
  return str(path)


def _config(tuned, seeds):
  c = config_io.load_config("diabetes_mlp")
  c.forget.kind, c.forget.high = "label_range", 100.0
  c.tuned = tuned
  with c.ignore_type():
    c.seeds = seeds
  return c


def test_tuned_choices_run_beside_the_defaults_on_fresh_seeds(tmp_path):
  tuned = _tune_file(tmp_path, [100, 101])
  c, spec = config_io.prepare(_config(tuned, [0, 1]))
  method, settings = spec.methods["finetune_tuned"]
  assert method == "finetune" and (settings["lr"], settings["epochs"]) == (3e-3, 1)
  assert spec.methods["finetune"][1]["lr"] == 1e-3  # the default row stays
  assert "finetune_tuned" in c.methods and not any(
      label.endswith("_tuned") for label in c.methods if not label.startswith("finetune"))


def test_grading_on_a_tuning_seed_is_refused(tmp_path):
  tuned = _tune_file(tmp_path, [100, 1])
  with pytest.raises(UserError, match=r"tuned on seeds \[1, 100\].*share \[1\]"):
    config_io.prepare(_config(tuned, [0, 1]))


def test_grading_on_the_forget_request_tuned_on_is_refused(tmp_path):
  tuned = _tune_file(tmp_path, [100], forget_high=100.0)
  with pytest.raises(UserError, match="this very forget request"):
    config_io.prepare(_config(tuned, [0]))


def test_a_file_that_is_no_tune_report_is_a_user_error(tmp_path):
  bad = tmp_path / "bad.json"
  bad.write_text(json.dumps({"chosen": "finetune"}))
  for path in (str(bad), str(tmp_path / "missing.json")):
    with pytest.raises(UserError, match="not a tune.json"):
      config_io.prepare(_config(path, [0]))


def test_the_command_refuses_before_any_work(tmp_path, capsys):
  tuned = _tune_file(tmp_path, [0])
  workdir = tmp_path / "run"
  argv = ["run", "--config", "diabetes_mlp", "--workdir", str(workdir), "--quiet",
          "--config.smoke=True", f"--config.tuned={tuned}", "--config.forget.high=100.0"]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err
  assert "tuned on seeds [0]" in err and "--config.seeds=[1]" in err
  assert not os.path.exists(workdir / "results.json")
  assert not os.path.exists(workdir / "checkpoints")
