"""AgeDB age regression with mobilenet, forgetting ages <= 30.

  jax-unlearn run --config agedb_mobilenet \
      --config.data.kwargs.path=/data/agedb --workdir runs/agedb_mobilenet
"""
from jax_unlearn.configs import agedb_allcnn


def get_config():
  return agedb_allcnn.get_config("mobilenet")
