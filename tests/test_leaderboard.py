"""The leaderboard's cells and rule, read off results dicts as the pipeline writes them."""
import numpy as np
import pytest

from experiments import leaderboard
from jax_unlearn.metrics.spread import FLOOR


def _run(seed_values: dict, told: dict, cost: dict) -> dict:
  """A results dict of one forget set: model -> (W values, retain values) over its seeds."""
  models = {name: {leaderboard.DISTANCE: {"values": list(w)},
                   leaderboard.RETAIN: {"values": list(r)}}
            for name, (w, r) in seed_values.items()}
  versus = {name: {a: {"distinguishable": a in caught} for a in leaderboard.AUDITS}
            for name, caught in told.items()}
  n = len(next(iter(seed_values.values()))[0])
  return {"seeds": list(range(n)), "models": models,
          "audit": {"versus_null": versus, "models": {}},
          "cost": {name: {"vs_retrained": v, "seconds": 10 * v} for name, v in cost.items()}}


def _runs(close_w=(2.0, 2.2, 1.8, 2.0), far_w=(9.0, 11.0, 10.0, 10.0), far_retain=1.0):
  floor_w, retain = (2.0, 2.0, 2.0, 2.0), (1.0, 1.0, 1.0, 1.0)
  first = _run({"original": ((20.0,) * 4, retain), "retrained": ((0.0,) * 4, retain),
                FLOOR: (floor_w, retain), "close": (close_w, (1.1,) * 4),
                "far": (far_w, (far_retain,) * 4), "broken": ((1.0,) * 4, (3.0,) * 4)},
               {"close": [], "far": ["ulira", "ks"], "broken": ["epsilon"], "original": ["ks"]},
               {"retrained": 1.0, "close": 0.2, "far": 0.5, "broken": 0.1})
  second = _run({"original": ((10.0,) * 4, retain), "retrained": ((0.0,) * 4, retain),
                 FLOOR: ((4.0,) * 4, retain), "close": ((4.0,) * 4, (1.1,) * 4),
                 "far": (tuple(2 * v for v in far_w), (far_retain,) * 4), "broken": ((2.0,) * 4, (3.0,) * 4)},
                {"close": [], "far": ["ulira"], "broken": [], "original": ["ks"]},
                {"retrained": 1.0, "close": 0.4, "far": 0.5, "broken": 0.1})
  return [first, second]


def test_cells_pool_forget_sets_and_seeds_as_ratios_of_means():
  runs = _runs()
  table = leaderboard.cells(runs)
  assert set(table) == {"original", "close", "far", "broken"}  # the references are not rows
  # Pooled over 2 forget sets x 4 seeds: mean W over mean floor W, retain over the original's.
  w = np.r_[(2.0, 2.2, 1.8, 2.0), (4.0,) * 4].mean() / np.r_[(2.0,) * 4, (4.0,) * 4].mean()
  assert table["close"]["distance"]["mean"] == pytest.approx(w)
  assert table["close"]["retain"]["mean"] == pytest.approx(1.1)
  assert table["original"]["distance"]["mean"] == pytest.approx(30 / 6)
  lo, hi = table["far"]["distance"]["ci95"]
  assert lo <= table["far"]["distance"]["mean"] <= hi and lo < hi
  assert table["broken"]["retain"]["ci95"] == pytest.approx([3.0, 3.0])  # no spread, no width
  assert table["far"]["told_apart"] == [["ulira", "ks"], ["ulira"]]
  assert table["close"]["vs_retrained"] == pytest.approx(0.3)


def test_the_rule_keeps_the_retain_limit_and_names_a_winner_only_when_intervals_separate():
  table = leaderboard.cells(_runs())
  rows = ["close", "far", "broken"]
  # "broken" is closest to retrained but triples the retain error: not eligible.
  assert leaderboard.best(table, rows) == {"best": "close", "tied": [], "eligible":
                                           ["close", "far"]}
  # A second row as close as the first (within the seeds' spread) is not distinguishable.
  tied = leaderboard.cells(_runs(far_w=(2.1, 1.9, 2.4, 1.7)))
  b = leaderboard.best(tied, rows)
  assert {b["best"], *b["tied"]} == {"close", "far"}
  # Nothing keeps the retain error: no best.
  none = leaderboard.cells(_runs(far_retain=2.0))
  assert leaderboard.best(none, ["far", "broken"])["best"] is None


def test_the_reports_say_what_the_cells_hold(tmp_path):
  runs = _runs()
  for r in runs:  # as tuned rows
    r["models"]["close_tuned"] = r["models"]["close"]
    r["audit"]["versus_null"]["close_tuned"] = r["audit"]["versus_null"]["close"]
    r["cost"]["close_tuned"] = r["cost"]["close"]
  table = leaderboard.cells(runs)
  entry = {"scenario": {"title": "toy", "tune_forget": {"kind": "random"},
                        "eval_forgets": [{"kind": "random"}] * 2},
           "methods": ["close", "far"], "budget": 2, "tune_seeds": [100], "eval_seeds": [0, 1, 2, 3],
           "chosen": {"close": {"label": "close_c1", "settings": {"lr": 0.001}}},
           "tune_seconds": 3.0, "eval_seconds": 4.0, "cells": table,
           "best": leaderboard.best(table, ["close", "close_tuned", "far"])}
  text = leaderboard.scenario_markdown("toy", entry)
  assert "| close | tuned | lr=0.001 |" in text
  assert "| far | tuned | no candidate kept the retain error |" in text
  assert "told apart in 2/2 (ks, ulira)" in text and "null in 2/2" in text
  overview = leaderboard.overview_markdown({"toy": entry})
  assert "| close | " in overview and "null in 2/2" in overview
  written = leaderboard.write({"toy": entry}, str(tmp_path))
  assert [p.rsplit("/", 1)[1] for p in written] == ["leaderboard.json", "leaderboard.md",
                                                   "leaderboard_toy.png"]


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "2"], "at least 3 models"),
    (["--methods", "nonesuch"], "nonesuch"),
    (["--budget", "0"], "budget"),
    (["--override", "model.name"], "FIELD=VALUE")])
def test_bad_usage_is_refused_before_any_work(tmp_path, capsys, argv, message):
  assert leaderboard.main(["--workdir", str(tmp_path / "w"), *argv]) == 2
  err = capsys.readouterr().err
  assert message in err and "fix:" in err
  assert not (tmp_path / "w").exists()


def test_tables_are_rebuilt_from_a_finished_scenarios_files(tmp_path, capsys):
  import json
  renamed = {"close": "finetune", "far": "gaussian", "broken": "neggrad"}
  runs = json.loads(json.dumps(_runs()))
  for r in runs:
    for part in (r["models"], r["cost"], r["audit"]["versus_null"]):
      for old, new in renamed.items():
        part[new] = part.pop(old)
  where = tmp_path / "random"
  for i, r in enumerate(runs):
    (where / f"eval_{i}").mkdir(parents=True)
    (where / f"eval_{i}" / "results.json").write_text(json.dumps(r))
  tune = {"seeds": [100, 101], "chosen_per_method": {},
          "settings": {f"{m}_c{i}": {"method": m} for m in renamed.values() for i in range(3)},
          "seconds": {"retrained": 2.0, "finetune_c0": 1.0}}
  (where / "tune").mkdir()
  (where / "tune" / "tune.json").write_text(json.dumps(tune))
  assert leaderboard.main(["--workdir", str(tmp_path), "--scenarios", "random",
                           "--tables-only"]) == 0
  text = (tmp_path / "leaderboard.md").read_text()
  assert "Tuned (3 candidates per method) on seeds [100, 101]" in text and "(3 s of training)" in text
  assert "| finetune | default |" in text and "| neggrad | tuned | no candidate" in text
  assert (tmp_path / "leaderboard_random.png").exists()
  capsys.readouterr()
  assert leaderboard.main(["--workdir", str(tmp_path), "--scenarios", "text",
                           "--tables-only"]) == 2
  assert "has not finished" in capsys.readouterr().err
