"""UCI Electricity (370 customers, hourly) with a Temporal Fusion Transformer, forgetting one
customer. Quantile loss (0.1, 0.5, 0.9); errors on the median forecast.

Download LD2011_2014.txt by hand (see README, "Real datasets"); then:

  jax-unlearn run --config electricity_tft \
      --config.data.kwargs.path=/data/LD2011_2014.txt --workdir runs/electricity
"""
from jax_unlearn.configs import base_config


def get_config():
  c = base_config()
  c.experiment = "electricity_tft"
  c.data.name = "electricity"
  c.data.kwargs.path = ""
  c.data.kwargs.encoder_length = 168
  c.data.kwargs.horizon = 24
  c.forget.kind = "groups"
  c.forget.ids = [0]
  c.model.name = "tft"
  c.model.kwargs.hidden = 64
  c.train.epochs = 20
  c.train.batch_size = 256
  c.train.lr = 1e-3
  c.train.clip_norm = 1.0
  c.methods.blindspot.blindspot_lr = 1e-3
  return c
