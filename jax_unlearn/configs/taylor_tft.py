"""Offline forecasting default: real half-hourly electricity demand (England and Wales, 2000,
shipped with pmdarima) with a Temporal Fusion Transformer, forgetting a time window.

  jax-unlearn run --config taylor_tft --workdir runs/taylor
"""
from jax_unlearn.configs import base_config


def get_config():
  c = base_config()
  c.experiment = "taylor_tft"
  c.data.name = "taylor"
  c.forget.kind = "time_window"
  c.forget.start = 1000
  c.forget.end = 1500
  c.model.name = "tft"
  c.model.kwargs.hidden = 16
  c.train.epochs = 10
  c.train.batch_size = 64
  c.train.lr = 1e-3
  c.train.clip_norm = 1.0
  c.methods.blindspot.blindspot_lr = 1e-3
  return c
