"""AgeDB age regression with resnet18, forgetting ages <= 30.

  jax-unlearn run --config experiments/configs/agedb_resnet18.py \
      --config.data.kwargs.path=/data/agedb --workdir runs/agedb_resnet18
"""
from jax_unlearn.config_io import load_config


def get_config():
  return load_config("agedb_allcnn", "resnet18")
