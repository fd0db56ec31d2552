"""Offline text default: generated sentence pairs over real GloVe vectors, LSTM pair regressor,
forgetting pairs scored < 2.

  jax-unlearn run --config experiments/configs/textpairs_lstm.py --workdir runs/textpairs
"""
from jax_unlearn.config_io import load_config


def get_config():
  c = load_config("stsb_lstm", "textpairs")
  c.train.epochs = 15
  c.metrics.mia_samples = 1000
  return c
