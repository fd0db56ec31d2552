"""STS-B sentence similarity (scores 0-5) with the LSTM pair regressor over GloVe vectors,
forgetting pairs scored < 2. MSE loss.

Needs network access once for tfds "glue/stsb"; then:

  jax-unlearn run --config experiments/configs/stsb_lstm.py --workdir runs/stsb
"""
from jax_unlearn.configs import base_config


def get_config(dataset: str = "stsb"):
  c = base_config()
  c.experiment = f"{dataset}_lstm"
  c.data.name = dataset
  c.data.kwargs.seq_len = 10
  c.forget.kind = "label_range"
  c.forget.high = 2.0
  c.forget.include_high = False
  c.model.name = "lstm"
  c.train.epochs = 30
  c.train.batch_size = 64
  c.train.lr = 1e-3
  c.methods.blindspot.blindspot_lr = 1e-3
  return c
