"""UCI Electricity with a TFT, forgetting a time window (every customer's data in a period).

  jax-unlearn run --config experiments/configs/electricity_tft_window.py \
      --config.data.kwargs.path=/data/LD2011_2014.txt --workdir runs/electricity_window
"""
from jax_unlearn.config_io import load_config


def get_config():
  c = load_config("electricity_tft")
  c.experiment = "electricity_tft_window"
  # Hours since 2011-01-01, [start, end): March 2014, inside the training period.
  c.forget.kind = "time_window"
  c.forget.start = 27720
  c.forget.end = 28464
  c.forget.ids = None  # by time only, not electricity_tft's customer
  return c
