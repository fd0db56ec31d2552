"""Every unlearning method on the offline image default at the demo's size, over 5 seeds.

One table (mean ± std over seeds, the noise-floor row), the paired comparisons, the trade-off
plot (plots/tradeoff.png: forget distance to the retrained model against retain error, one point
per seed) and each method's cost against retraining (results.md, "Cost"). Methods run at their
published defaults; the variants chosen on validation rows (see tune_rotdigits.py) run beside them
under their own names.

  jax-unlearn run --config compare_all --workdir runs/compare_all
"""
from jax_unlearn import unlearn
from jax_unlearn.configs import demo, set_methods

# The Blindspot settings chosen on validation rows by `jax-unlearn tune --config tune_rotdigits`
# (tune.md): no attention term, a blindspot model of 8 epochs, 3 unlearning epochs.
TUNED = {"blindspot_tuned": ("blindspot", {"beta": 0.0, "blindspot_epochs": 8, "epochs": 3})}


def get_config():
  c = demo.get_config()
  c.experiment = "compare_all"
  c.seeds = 5
  # Every method but the retrained one (it always runs, as the reference); the tuned variants
  # beside the defaults.
  set_methods(c, {**{name: (name, {}) for name in unlearn.method_names() if name != "retrained"},
                  **TUNED})
  return c
