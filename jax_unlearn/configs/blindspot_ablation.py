"""What each part of Blindspot does: the paper's settings beside one change at a time.

The attention-transfer term off (beta 0), the published code's attention maps ("reference"), and
a blindspot model trained longer (5 and 10 epochs instead of 2), on the demo's data and model,
over 3 seeds.

  jax-unlearn run --config blindspot_ablation --workdir runs/blindspot_ablation
"""
from jax_unlearn.configs import demo, set_methods


def get_config():
  c = demo.get_config()
  c.experiment = "blindspot_ablation"
  set_methods(c, {
      "blindspot": ("blindspot", {}),
      "blindspot_beta0": ("blindspot", {"beta": 0.0}),
      "blindspot_reference": ("blindspot", {"attention": "reference"}),
      **{f"blindspot_model_e{e}": ("blindspot", {"blindspot_epochs": e}) for e in (5, 10)}})
  return c
