"""AgeDB age regression with resnet18, forgetting ages <= 30.

  jax-unlearn run --config experiments/configs/agedb_resnet18.py \
      --config.data.kwargs.path=/data/agedb --workdir runs/agedb_resnet18
"""
from experiments.configs import agedb_allcnn


def get_config():
  return agedb_allcnn.get_config("resnet18")
