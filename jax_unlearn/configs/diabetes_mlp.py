"""Offline tabular default: scikit-learn's diabetes progression data with an MLP, forgetting a
random 10% of patients.

  jax-unlearn run --config diabetes_mlp --workdir runs/diabetes
"""
from jax_unlearn.configs import base_config


def get_config():
  c = base_config()
  c.experiment = "diabetes_mlp"
  c.data.name = "diabetes"
  c.forget.kind = "random"
  c.forget.fraction = 0.1
  c.forget.seed = 0
  c.model.name = "mlp"
  c.model.kwargs.hidden = (64, 64)
  c.train.epochs = 40
  c.train.batch_size = 32
  c.train.lr = 1e-3
  c.metrics.mia_samples = 200
  return c
