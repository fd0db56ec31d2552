"""Method settings chosen on validation rows, on the data and model of the demo, under the tuning
protocol: on seeds and a forget set the demo never uses, so that a run of the demo with
`--config.tuned=runs/tune_rotdigits/tune.json` grades the choices on models tuning never saw.

Each tuned method gets the same budget: its defaults and 7 more points of its search space (its
module's SEARCH_SPACE), drawn at random with seed 0 (`configs.search_entries`). The forget set is
the other tail of the rotations (angles >= 30, as many images as the demo's <= -30); the seeds
are 100-102 (the demo's are 0-2). The test cohorts are never read.

  jax-unlearn tune --config tune_rotdigits --workdir runs/tune_rotdigits
  jax-unlearn run --config demo --workdir runs/demo_tuned \
      --config.tuned=runs/tune_rotdigits/tune.json
"""
from jax_unlearn.configs import demo, search_entries, set_methods

TUNED = ("blindspot", "neighbours", "finetune", "gaussian")
BUDGET = 8


def get_config():
  c = demo.get_config()
  c.experiment = "tune_rotdigits"
  with c.ignore_type():
    c.seeds = [100, 101, 102]
  c.forget.low, c.forget.high = 30.0, None
  set_methods(c, search_entries(TUNED, BUDGET, seed=0))
  return c
