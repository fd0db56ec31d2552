"""The field's standard scenario on the demo's data and model: forget a random 10% of the
training rows.

Unlike the demo's label range, the forget rows here come from the same distribution as the
retain rows, so a retrained model predicts them about as well as the original: what tells the
two apart is membership (what the audits measure, `--config.audit.enabled=True`), not a shifted
forget error.

  jax-unlearn run --config rotdigits_random --workdir runs/rotdigits_random
"""
from jax_unlearn.configs import demo


def get_config():
  c = demo.get_config()
  c.experiment = "rotdigits_random"
  forget_random_tenth(c)
  return c


def forget_random_tenth(c) -> None:
  """In place: the forget request becomes a random 10% of the training rows (seed 0)."""
  c.forget.kind = "random"
  c.forget.fraction = 0.1
  c.forget.seed = 0
  c.forget.high = None
