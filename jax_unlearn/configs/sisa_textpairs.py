"""Exact unlearning by shards (sisa) on the offline text default: the LSTM pair regressor over
GloVe vectors forgetting the pairs scored < 2, with 4 and 8 random shards.

  jax-unlearn run --config sisa_textpairs --workdir runs/sisa_textpairs
"""
from jax_unlearn.configs import base, textpairs_lstm


def get_config():
  c = textpairs_lstm.get_config()
  c.experiment = "sisa_textpairs"
  c.seeds = 3
  base.set_methods(c, {f"sisa_s{s}": ("sisa", {"shards": s}) for s in (4, 8)})
  return c
