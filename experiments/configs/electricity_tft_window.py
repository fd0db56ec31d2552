"""UCI Electricity with a TFT, forgetting a time window (every customer's data in a period).

  jax-unlearn run --config experiments/configs/electricity_tft_window.py \
      --config.data.kwargs.path=/data/LD2011_2014.txt --workdir runs/electricity_window
"""
from experiments.configs import electricity_tft


def get_config():
  c = electricity_tft.get_config()
  c.experiment = "electricity_tft_window"
  # Hours since the series start, [start, end): a month in the 2013 winter.
  c.forget = {"kind": "time_window", "start": 17520, "end": 18264}
  return c
