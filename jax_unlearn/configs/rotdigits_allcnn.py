"""Offline image default: RotDigits (real digit images, rotated; label = angle), AllCNN.

Forgets every image rotated by <= -30 degrees, as the paper forgets ages <= 30.

  jax-unlearn run --config rotdigits_allcnn --workdir runs/rotdigits
"""
from jax_unlearn.configs import base_config


def get_config():
  c = base_config()
  c.experiment = "rotdigits_allcnn"
  c.data.name = "rotdigits"
  c.data.kwargs.image_size = 32
  c.forget.kind = "label_range"
  c.forget.high = -30.0
  c.model.name = "allcnn"
  c.model.kwargs.width = 0.25
  c.train.epochs = 30
  c.train.batch_size = 64
  c.train.plateau_patience = 4
  return c
