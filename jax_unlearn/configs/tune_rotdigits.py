"""Method settings chosen on validation rows, on the data and model of the demo.

Blindspot candidates: the attention weight beta (the paper's 50, or 0), the blindspot model's
epochs (the paper's 2, or longer: a retain-only model closer to the retrained one), the
unlearning epochs. Neighbour relabelling: the neighbour count and the epochs. Gaussian
fine-tuning joins as a reference. The test cohorts are never read.

  jax-unlearn tune --config tune_rotdigits --workdir runs/tune_rotdigits
"""
from jax_unlearn.configs import demo, set_methods


def get_config():
  c = demo.get_config()
  c.experiment = "tune_rotdigits"
  entries = {"blindspot": ("blindspot", {}), "gaussian": ("gaussian", {})}
  for beta in (0.0, 50.0):
    for epochs in (2, 4, 8):
      for unlearn_epochs in (1, 3):
        if (beta, epochs, unlearn_epochs) == (50.0, 2, 1):
          continue  # the paper's defaults: "blindspot" above
        entries[f"blindspot_b{beta:g}_e{epochs}_u{unlearn_epochs}"] = (
            "blindspot", {"beta": beta, "blindspot_epochs": epochs, "epochs": unlearn_epochs})
  for k in (5, 20, 50):
    for epochs in (1, 3):
      entries[f"neighbours_k{k}_u{epochs}"] = ("neighbours", {"neighbours": k, "epochs": epochs})
  set_methods(c, entries)
  return c
