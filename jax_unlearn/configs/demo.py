"""The demo: the offline image default, sized to finish in a few minutes on 2 CPU cores.

  jax-unlearn demo                      # same as:
  jax-unlearn run --config demo --workdir runs/demo
"""
from jax_unlearn.configs import rotdigits_allcnn


def get_config():
  c = rotdigits_allcnn.get_config()
  c.experiment = "demo"
  # Three models per stage, trained at once (README, "Several seeds"); 16x16 images keep the three
  # within a few minutes on 2 CPU cores (the digits are 8x8 scans, so 16 loses no detail).
  c.seeds = 3
  c.data.kwargs.image_size = 16
  c.model.kwargs.width = 0.25
  c.train.epochs = 12
  c.train.plateau_patience = 3
  c.metrics.ain_max_epochs = 5
  c.metrics.mia_samples = 1000
  # Fixed batch blocks: the same table on 1, 2 or 4 devices (see README, "The same numbers on
  # any number of devices").
  c.batch_shards = 4
  return c
