"""Every unlearning method on the offline image default at the demo's size, over 5 seeds.

One table (mean ± std over seeds, the noise-floor row), the paired comparisons, the trade-off
plot (plots/tradeoff.png: forget distance to the retrained model against retain error, one point
per seed) and each method's cost against retraining (results.md, "Cost"). Methods run at their
published defaults; every method tuned by one protocol, on seeds and forget sets apart from
those it is graded on, is the leaderboard's (experiments/leaderboard.py).

  jax-unlearn run --config compare_all --workdir runs/compare_all
"""
from jax_unlearn import unlearn
from jax_unlearn.configs import demo, set_methods


def get_config():
  c = demo.get_config()
  c.experiment = "compare_all"
  c.seeds = 5
  # Every method but the retrained one (it always runs, as the reference).
  set_methods(c, {name: (name, {}) for name in unlearn.method_names() if name != "retrained"})
  return c
