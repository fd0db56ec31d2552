"""Parameter initialisation: flax's own, or PyTorch's defaults as the published models get them.

flax draws kernels lecun-normal and biases zero; torch draws a Linear/Conv2d weight
kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(fan_in), 1/sqrt(fan_in)), its bias from the same
range, and every LSTM weight and bias U(-1/sqrt(hidden), 1/sqrt(hidden)). torchvision's resnet18
and mobilenet_v3_large (the published image backbones) then redraw their convolutions
kaiming-normal over fan_out; the published heads are plain nn.Linear layers with torch's default.
A different start is a different trained model, so reproducing the published runs needs torch's
rules; flax's stay the default, so that existing results keep their numbers.
"""
import functools
import math
import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
from flax import linen as nn

from jax_unlearn.errors import unknown_name
from jax_unlearn.models.adapters import init_linen

# Initialisations `initialize` knows; the default is flax's, which existing results used.
INITS = ("flax", "torch")
DEFAULT_INIT = "flax"
# Convolution rules of `torch_init`: "uniform" is nn.Conv2d's default; "fan_out" is what
# torchvision's resnet and mobilenet_v3 constructors redraw their convolutions with.
CONV_INITS = ("uniform", "fan_out")
_LSTM_CELLS = ("OptimizedLSTMCell", "LSTMCell")


def _kind(name: str) -> str:
  """The module class of a flax auto-name such as "Conv_3" (the name itself if it has no index)."""
  return re.sub(r"_\d+$", "", name)


# A redraw rule: (distribution, scale) with distribution "uniform" (U(-scale, scale)), "uniform2"
# (the sum of two such draws), "normal" (N(0, scale^2)) or "zeros".
_Rule = tuple[str, float]


def _layer_rules(kind: str, layer: Mapping, conv: str) -> dict[str, _Rule]:
  """torch's rule for each parameter of one Dense/Conv/embedding layer (none for other layers)."""
  kernel = layer.get("kernel")
  if kind == "Conv" and kernel is not None:  # HWIO, grouped: I = inputs per group, as torch's
    fan_in = math.prod(kernel.shape[:-1])
    if conv == "fan_out":  # kaiming_normal_(mode="fan_out", nonlinearity="relu"), zero bias
      fan_out = math.prod(kernel.shape[:-2]) * kernel.shape[-1]
      return {"kernel": ("normal", math.sqrt(2.0 / fan_out)), "bias": ("zeros", 0.0)}
  elif kind == "Dense" and kernel is not None:  # [..., in, out]; leading axes stack (nn.vmap)
    fan_in = kernel.shape[-2]
  elif kind == "DenseGeneral" and kernel is not None:  # [in, *features], one contracted axis
    fan_in = kernel.shape[0]
  elif kind == "ScalarEmbedding":  # one Linear(1, features) per variable
    fan_in = 1
  elif kind == "Embed":  # nn.Embedding
    return {"embedding": ("normal", 1.0)}
  else:
    return {}
  bound = 1.0 / math.sqrt(fan_in)
  return {"kernel": ("uniform", bound), "bias": ("uniform", bound)}


def _lstm_rules(cell: Mapping) -> dict[tuple[str, str], _Rule]:
  """An LSTM cell's gates (flax: ii..io input kernels, hi..ho hidden kernels with the bias).

  torch has two biases per gate, b_ih + b_hh, each U(-1/sqrt(H), 1/sqrt(H)); flax's one bias per
  gate is their sum, so it is drawn as the sum of two such draws (the same start in function).
  """
  bound = 1.0 / math.sqrt(cell["hi"]["kernel"].shape[-1])
  return {(gate, name): ("uniform2" if name == "bias" else "uniform", bound)
          for gate, params in cell.items() for name in params}


def _collect(tree: Mapping, path: tuple, conv: str, rules: dict) -> None:
  """Fills `rules` path -> rule for every parameter of `tree` that torch draws differently."""
  for name, sub in tree.items():
    if not isinstance(sub, Mapping):
      continue
    kind = _kind(name)
    if kind in _LSTM_CELLS and "hi" in sub:
      rules.update({path + (name,) + k: r for k, r in _lstm_rules(sub).items()})
    elif any(not isinstance(v, Mapping) for v in sub.values()):
      rules.update({path + (name, k): r for k, r in _layer_rules(kind, sub, conv).items()
                    if k in sub})
    else:
      _collect(sub, path + (name,), conv, rules)


def _redraw(params: Mapping, key, conv: str) -> dict:
  """`params` with the parameters `_collect` finds redrawn.

  All uniform numbers come from one draw and all normal ones from another, sliced in path order:
  one random kernel each keeps the compiled program small (one kernel per parameter compiled
  as slowly as the whole model's init for MobileNetV3 on CPU).
  """
  rules = {}
  _collect(params, (), conv, rules)
  leaves = {}
  for p, leaf in jax.tree_util.tree_leaves_with_path(params):
    leaves[tuple(k.key for k in p)] = leaf
  sizes = {"uniform": 0, "normal": 0}
  for p in sorted(rules):
    dist = rules[p][0]
    if dist != "zeros":
      n = leaves[p].size
      sizes["normal" if dist == "normal" else "uniform"] += 2 * n if dist == "uniform2" else n
  k_uniform, k_normal = jax.random.split(key)
  pools = {"uniform": jax.random.uniform(k_uniform, (sizes["uniform"],), jnp.float32, -1.0, 1.0),
           "normal": jax.random.normal(k_normal, (sizes["normal"],), jnp.float32)}
  offsets = {"uniform": 0, "normal": 0}

  def take(pool: str, shape) -> jnp.ndarray:
    n = math.prod(shape)
    start = offsets[pool]
    offsets[pool] += n
    return pools[pool][start:start + n].reshape(shape)

  new = {}
  for p in sorted(rules):
    dist, scale = rules[p]
    leaf = leaves[p]
    if dist == "zeros":
      value = jnp.zeros(leaf.shape, jnp.float32)
    elif dist == "normal":
      value = scale * take("normal", leaf.shape)
    elif dist == "uniform":
      value = scale * take("uniform", leaf.shape)
    else:
      value = scale * take("uniform", leaf.shape) + scale * take("uniform", leaf.shape)
    new[p] = value.astype(leaf.dtype)

  def rebuild(tree: Mapping, path: tuple) -> dict:
    return {k: rebuild(v, path + (k,)) if isinstance(v, Mapping) else new.get(path + (k,), v)
            for k, v in tree.items()}

  return rebuild(params, ())


def _check_conv(conv: str) -> str:
  if conv not in CONV_INITS:
    raise unknown_name("convolution initialisation", conv, CONV_INITS)
  return conv


def torch_init(variables: Mapping, key: jax.Array, *, conv: str = "uniform") -> dict:
  """`variables` with every Dense/Conv kernel and bias and every LSTM cell redrawn as torch does.

  Layers are recognised by flax's module names (Dense_0, Conv_3, OptimizedLSTMCell_0, ...), the
  shapes give the fans: an HWIO conv kernel's fan_in is H * W * I, a Dense kernel [in, out]'s
  is `in`. An LSTM cell's single bias per gate is drawn as the sum of torch's two (b_ih + b_hh).
  Embed tables become N(0, 1) as nn.Embedding's. BatchNorm and LayerNorm parameters (torch's 1
  and 0 already), "batch_stats" and other collections are returned as they are. `conv`: one of
  CONV_INITS, "uniform" (nn.Conv2d's default) or "fan_out" (torchvision's: N(0, 2 / fan_out),
  fan_out = H * W * O, zero bias). The same key gives the same values.
  """
  conv = _check_conv(conv)
  variables = dict(variables)
  if "params" in variables:
    variables["params"] = _redraw_params(variables["params"], key, conv=conv)
  return variables


# One compiled program for the whole tree instead of small eager ones per parameter.
@functools.partial(jax.jit, static_argnames="conv")
def _redraw_params(params, key, conv: str):
  return _redraw(params, key, conv)


def initialize(module: nn.Module, key: jax.Array, sample_x, init: str = DEFAULT_INIT) -> dict:
  """Variables of a linen module for inputs shaped like `sample_x`, initialised by `init`.

  "flax" (the default) is `init_linen`; "torch" redraws them with `torch_init`, convolutions by
  the module's TORCH_CONV_INIT where it has one (torchvision's rule for ResNet18, MobileNetV3).
  """
  if init not in INITS:
    raise unknown_name("initialisation", init, INITS)
  if init == "flax":
    return init_linen(module, key, sample_x)
  init_key, draw_key = jax.random.split(key)
  variables = init_linen(module, init_key, sample_x)
  return torch_init(variables, draw_key, conv=getattr(module, "TORCH_CONV_INIT", "uniform"))
