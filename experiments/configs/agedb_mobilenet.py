"""AgeDB age regression with mobilenet, forgetting ages <= 30.

  jax-unlearn run --config experiments/configs/agedb_mobilenet.py \
      --config.data.kwargs.path=/data/agedb --workdir runs/agedb_mobilenet
"""
from jax_unlearn.config_io import load_config


def get_config():
  return load_config("agedb_allcnn", "mobilenet")
