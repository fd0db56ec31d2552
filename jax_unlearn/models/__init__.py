"""The model zoo. Every model's __call__(x, *, train) returns (pred, acts); see `adapters`."""
from jax_unlearn.errors import unknown_name
from jax_unlearn.models.adapters import from_function, from_linen, from_nnx, init_linen, split_outputs
from jax_unlearn.models.allcnn import AllCNN
from jax_unlearn.models.mlp import MLP

_REGISTRY = {
    "allcnn": AllCNN,
    "mlp": MLP,
}


def register(name: str, cls) -> None:
  """Adds a model class to the registry (used by the model modules of the zoo)."""
  _REGISTRY[name] = cls


def model_names() -> list[str]:
  return sorted(_REGISTRY)


def get_model(name: str, **kwargs):
  """A linen module of the zoo by name, e.g. get_model("allcnn", width=0.5)."""
  if name not in _REGISTRY:
    raise unknown_name("model", name, _REGISTRY)
  return _REGISTRY[name](**kwargs)


__all__ = ["get_model", "model_names", "register", "from_linen", "from_nnx", "from_function",
           "init_linen", "split_outputs", "AllCNN", "MLP"]
