"""Bring your own data: an .npz with arrays x, y, split ("train"/"val"/"test") and optional group,
with an MLP. For images use a CNN: --config.model.name=allcnn --config.model.kwargs.hidden=None
(a setting set to None is left out). Forget a label range by default.

  jax-unlearn run --config npz_mlp --config.data.kwargs.path=my.npz \
      --config.forget.high=0.0 --workdir runs/mine
"""
from jax_unlearn.configs import base_config


def get_config():
  c = base_config()
  c.experiment = "npz_mlp"
  c.data.name = "npz"
  c.data.kwargs.path = ""
  c.forget.kind = "label_range"
  c.forget.high = 0.0
  c.model.name = "mlp"
  c.model.kwargs.hidden = (64, 64)
  c.train.epochs = 20
  c.train.batch_size = 32
  c.train.lr = 1e-3
  return c
