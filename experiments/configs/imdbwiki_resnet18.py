"""IMDB-WIKI age regression with ResNet18, forgetting ages <= 30.

IMDB-WIKI must be downloaded by hand (see README, "Real datasets"); then:

  jax-unlearn run --config experiments/configs/imdbwiki_resnet18.py \
      --config.data.kwargs.path=/data/imdbwiki --workdir runs/imdbwiki
"""
from jax_unlearn.config_io import load_config


def get_config():
  c = load_config("agedb_allcnn", "resnet18")
  c.experiment = "imdbwiki_resnet18"
  c.data.name = "imdbwiki"
  return c
