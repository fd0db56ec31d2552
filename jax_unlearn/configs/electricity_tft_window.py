"""UCI Electricity with a TFT, forgetting a time window (every customer's data in a period).

  jax-unlearn run --config electricity_tft_window \
      --config.data.kwargs.path=/data/LD2011_2014.txt --workdir runs/electricity_window
"""
from jax_unlearn.configs import electricity_tft


def get_config():
  c = electricity_tft.get_config()
  c.experiment = "electricity_tft_window"
  # Hours since 2011-01-01, [start, end): March 2014, inside the training period.
  c.forget.kind = "time_window"
  c.forget.start = 27720
  c.forget.end = 28464
  c.forget.ids = None  # by time only, not electricity_tft's customer
  return c
