"""Offline text default: generated sentence pairs over real GloVe vectors, LSTM pair regressor,
forgetting pairs scored < 2.

  jax-unlearn run --config experiments/configs/textpairs_lstm.py --workdir runs/textpairs
"""
from experiments.configs import stsb_lstm


def get_config():
  c = stsb_lstm.get_config("textpairs")
  c.train.epochs = 15
  c.metrics.mia_samples = 1000
  return c
