"""The model zoo. Every model's __call__(x, *, train) returns (pred, acts); see `adapters`."""
import jax
import numpy as np

from jax_unlearn.errors import UserError, unknown_name
from jax_unlearn.models.adapters import (from_function, from_linen, from_nnx, init_linen,
                                         split_outputs)
from jax_unlearn.models.allcnn import AllCNN
from jax_unlearn.models.init import CONV_INITS, DEFAULT_INIT, INITS, initialize, torch_init
from jax_unlearn.models.lstm import LSTMPairRegressor
from jax_unlearn.models.mlp import MLP
from jax_unlearn.models.mobilenet import MobileNetV3
from jax_unlearn.models.resnet import ResNet18
from jax_unlearn.models.tft import TemporalFusionTransformer

_REGISTRY = {
    "allcnn": AllCNN,
    "mlp": MLP,
    "resnet18": ResNet18,
    "mobilenet": MobileNetV3,
    "lstm": LSTMPairRegressor,
    "tft": TemporalFusionTransformer,
}


def model_names() -> list[str]:
  return sorted(_REGISTRY)


def get_model(name: str, *, data_facts: dict | None = None, **kwargs):
  """A linen module of the zoo by name, e.g. get_model("allcnn", width=0.5).

  `data_facts` (a dataset's task facts such as out_dim, horizon, num_ids, quantiles) fill the
  module's fields of the same name that `kwargs` leave unset; other facts are ignored.
  """
  if name not in _REGISTRY:
    raise unknown_name("model", name, _REGISTRY)
  cls = _REGISTRY[name]
  fields = getattr(cls, "__dataclass_fields__", {})
  unknown = sorted(set(kwargs) - set(fields))
  if unknown:
    raise UserError(f"model {name!r} has no setting {', '.join(map(repr, unknown))}.",
                    f"its settings: {', '.join(f for f in fields if f not in ('parent', 'name'))}.")
  defaults = {k: v for k, v in (data_facts or {}).items() if k in fields and k not in kwargs}
  return cls(**defaults, **kwargs)


def check_model_input(name: str, apply_fn, init_fn, x: np.ndarray, out_dim: int) -> None:
  """Fails before any training, naming the model and the input shape, when they do not fit.

  Shapes only (`eval_shape`): nothing is computed or compiled.
  """
  hint = ("give inputs in a layout the model takes (images [N, H, W, C], with a channel axis "
          "for grayscale; tabular [N, F] for mlp; text pairs [N, 2, T, E]; windows "
          "[N, L + H, F]), or choose another model.name.")
  try:
    pred = jax.eval_shape(lambda key: apply_fn(init_fn(key), x, train=False)[0],
                          jax.random.key(0))
  except UserError:
    raise
  except Exception as e:  # shape errors of flax, lax and user models share no type
    cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise UserError(f"model {name!r} cannot take inputs of shape {tuple(x.shape[1:])} per "
                    f"sample: {cause}", hint) from e
  if tuple(pred.shape[:2]) != (len(x), out_dim):
    raise UserError(
        f"model {name!r} maps a batch of inputs of shape {tuple(x.shape)} to predictions of "
        f"shape {tuple(pred.shape)}, not [{len(x)}, {out_dim}, ...]: the input layout does "
        "not fit the model.", hint)


__all__ = ["get_model", "model_names", "from_linen", "from_nnx", "from_function",
           "init_linen", "initialize", "torch_init", "INITS", "DEFAULT_INIT", "CONV_INITS",
           "split_outputs", "check_model_input", "AllCNN", "MLP", "ResNet18", "MobileNetV3",
           "LSTMPairRegressor", "TemporalFusionTransformer"]
