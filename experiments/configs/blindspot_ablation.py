"""What each part of Blindspot does: the paper's settings beside one change at a time.

The attention-transfer term off (beta 0), the published code's attention maps ("reference"), and
a blindspot model trained longer (5 and 10 epochs instead of 2), on the demo's data and model,
over 3 seeds.

  jax-unlearn run --config blindspot_ablation --workdir runs/blindspot_ablation
"""
import ml_collections

from jax_unlearn.config_io import load_config
from jax_unlearn.configs import method_variant


def get_config():
  c = load_config("demo")
  c.experiment = "blindspot_ablation"
  c.methods = ml_collections.ConfigDict()
  c.methods.blindspot = method_variant("blindspot")
  c.methods.blindspot_beta0 = method_variant("blindspot", beta=0.0)
  c.methods.blindspot_reference = method_variant("blindspot", attention="reference")
  for epochs in (5, 10):
    c.methods[f"blindspot_model_e{epochs}"] = method_variant("blindspot",
                                                             blindspot_epochs=epochs)
  return c
