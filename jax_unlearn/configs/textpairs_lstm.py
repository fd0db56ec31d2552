"""Offline text default: generated sentence pairs over real GloVe vectors, LSTM pair regressor,
forgetting pairs scored < 2.

Built on the paper's STS-B profile (stsb_lstm.py: the published recipe, model and text
settings), with the sizes of a run of under two minutes on 2 CPU cores: 15 epochs of
batches of 64 for the original and retrained models (published: 100 of 256 on STS-B's 5.7k
pairs), a blindspot model of 2 epochs (published: 10) and 1,000 MIA samples.

  jax-unlearn run --config textpairs_lstm --workdir runs/textpairs
"""
from jax_unlearn.configs import stsb_lstm


def get_config():
  c = stsb_lstm.get_config("textpairs")
  c.train.epochs = 15
  c.train.batch_size = 64
  c.methods.blindspot.blindspot_epochs = 2
  c.metrics.mia_samples = 1000
  return c
