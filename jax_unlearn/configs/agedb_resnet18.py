"""AgeDB age regression with resnet18, forgetting ages <= 30.

  jax-unlearn run --config agedb_resnet18 \
      --config.data.kwargs.path=/data/agedb --workdir runs/agedb_resnet18
"""
from jax_unlearn.configs import agedb_allcnn


def get_config():
  return agedb_allcnn.get_config("resnet18")
