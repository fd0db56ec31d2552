"""AgeDB age regression with AllCNN, forgetting ages <= 30 (the paper's main vision experiment).

AgeDB must be downloaded by hand (see README, "Real datasets"); then:

  jax-unlearn run --config experiments/configs/agedb_allcnn.py \
      --config.data.kwargs.path=/data/agedb --workdir runs/agedb_allcnn
"""
from jax_unlearn.configs import base_config

MODEL = "allcnn"


def get_config(model: str = MODEL):
  c = base_config()
  c.experiment = f"agedb_{model}"
  c.data.name = "agedb"
  c.data.kwargs.path = ""
  c.data.kwargs.image_size = 32
  c.data.augment = True
  c.forget.kind = "label_range"
  c.forget.high = 30.0
  c.model.name = model
  c.model.kwargs.width = 1.0
  c.train.epochs = 100
  c.train.batch_size = 256
  return c
