"""UCI Electricity with a TFT, forgetting a time window (every customer's data in a period).

  jax-unlearn run --config experiments/configs/electricity_tft_window.py \
      --config.data.kwargs.path=/data/LD2011_2014.txt --workdir runs/electricity_window
"""
from experiments.configs import electricity_tft


def get_config():
  c = electricity_tft.get_config()
  c.experiment = "electricity_tft_window"
  # Hours since 2011-01-01, [start, end): March 2014, inside the training period.
  c.forget = {"kind": "time_window", "start": 27720, "end": 28464}
  return c
