"""IMDB-WIKI age regression with ResNet18, forgetting ages <= 30.

IMDB-WIKI must be downloaded by hand (see README, "Real datasets"); then:

  jax-unlearn run --config imdbwiki_resnet18 \
      --config.data.kwargs.path=/data/imdbwiki --workdir runs/imdbwiki
"""
from jax_unlearn.configs import agedb_allcnn


def get_config():
  c = agedb_allcnn.get_config("resnet18")
  c.experiment = "imdbwiki_resnet18"
  c.data.name = "imdbwiki"
  return c
