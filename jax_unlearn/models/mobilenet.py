"""MobileNetV3-Large, following torchvision's mobilenet_v3_large (the paper's image backbone).

BatchNorm uses torchvision's eps 1e-3 and momentum 0.01 (flax momentum 0.99). Strides follow
the block table, so a 32x32 input ends as a 1x1 map before pooling. The body is torchvision's in
both variants; they differ in the head and the exposed activations (see MobileNetV3).
"""
import functools
from typing import Callable

import jax.numpy as jnp
from flax import linen as nn

from jax_unlearn import ops
from jax_unlearn.errors import unknown_name
from jax_unlearn.models.adapters import row_mask

# (kernel, expanded channels, output channels, squeeze-excitation, activation, stride)
LARGE_BLOCKS = (
    (3, 16, 16, False, "relu", 1),
    (3, 64, 24, False, "relu", 2),
    (3, 72, 24, False, "relu", 1),
    (5, 72, 40, True, "relu", 2),
    (5, 120, 40, True, "relu", 1),
    (5, 120, 40, True, "relu", 1),
    (3, 240, 80, False, "hardswish", 2),
    (3, 200, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 184, 80, False, "hardswish", 1),
    (3, 480, 112, True, "hardswish", 1),
    (3, 672, 112, True, "hardswish", 1),
    (5, 672, 160, True, "hardswish", 2),
    (5, 960, 160, True, "hardswish", 1),
    (5, 960, 160, True, "hardswish", 1),
)
_ACTIVATIONS = {"relu": nn.relu, "hardswish": nn.hard_swish}
# The heads and activation sets of MobileNetV3 (see MobileNetV3).
VARIANTS = ("cifar", "torchvision")
# The default dropout rate of each variant's head.
_DROPOUT = {"cifar": 0.2, "torchvision": 0.5}


def make_divisible(value: float, divisor: int = 8) -> int:
  """`value` rounded to a multiple of `divisor`, never 10% below it (as torchvision does)."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBN(nn.Module):
  """Conv (no bias) -> BatchNorm -> optional activation; `groups` = channels for depthwise."""
  features: int
  kernel: int = 1
  stride: int = 1
  groups: int = 1
  activation: Callable | None = None
  momentum: float = 0.99
  dtype: jnp.dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    x = ops.Conv(self.features, (self.kernel, self.kernel), strides=self.stride,
                padding=(self.kernel - 1) // 2, feature_group_count=self.groups, use_bias=False,
                dtype=self.dtype, kernels=self.kernels)(x)
    x = ops.BatchNorm(use_running_average=not train, momentum=self.momentum, epsilon=1e-3,
                     dtype=self.dtype)(x, mask=row_mask(mask, x))
    return x if self.activation is None else self.activation(x)


class SqueezeExcitation(nn.Module):
  """Channel gates from the pooled map: 1x1 conv -> ReLU -> 1x1 conv -> hard sigmoid."""
  squeeze: int
  dtype: jnp.dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x):
    s = jnp.mean(x, axis=(1, 2), keepdims=True)  # [B, 1, 1, C]
    s = nn.relu(ops.Conv(self.squeeze, (1, 1), dtype=self.dtype, kernels=self.kernels)(s))
    s = nn.hard_sigmoid(ops.Conv(x.shape[-1], (1, 1), dtype=self.dtype,
                                 kernels=self.kernels)(s))
    return x * s


class InvertedResidual(nn.Module):
  """Expand (1x1), depthwise (kxk), squeeze-excitation, project (1x1); residual if shapes match."""
  kernel: int
  expanded: int
  features: int
  use_se: bool
  activation: str
  stride: int
  momentum: float = 0.99
  dtype: jnp.dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    act = _ACTIVATIONS[self.activation]
    conv = functools.partial(ConvBN, momentum=self.momentum, dtype=self.dtype,
                             kernels=self.kernels)
    y = x
    if self.expanded != x.shape[-1]:
      y = conv(self.expanded, activation=act)(y, train=train, mask=mask)
    y = conv(self.expanded, self.kernel, self.stride, groups=self.expanded, activation=act)(
        y, train=train, mask=mask)
    if self.use_se:
      y = SqueezeExcitation(make_divisible(self.expanded // 4), self.dtype, self.kernels)(y)
    y = conv(self.features)(y, train=train, mask=mask)
    if self.stride == 1 and x.shape[-1] == self.features:
      y = y + x
    return y


class MobileNetV3(nn.Module):
  """MobileNetV3-Large with channels times `width`.

  Returns (pred [B, out_dim], acts). `mask` [B] keeps padded rows out of the BatchNorm
  statistics. `kernels`: the convolution kernels, one of `ops.KERNELS` (part of the model, so
  each setting is its own jitted function).

  `variant`: default "cifar" (ours): torchvision's classifier head, Linear(1280)-hardswish-
  dropout-Linear(out_dim); acts "stem", "stage1".."stage5" (the last block at each resolution,
  NHWC), "last_conv" (the final 1x1 conv map) and "features" (its global average pool, [B, F]).
  "torchvision": the published model, torchvision's features with the published head,
  average pool-dropout-Linear(out_dim); its 17 activations, "stem", "block1".."block15" (every
  inverted residual) and "last_conv".
  `dropout`: the head's dropout rate (train mode only); None (the default) takes the variant's,
  0.2 for "cifar" (torchvision's classifier) and 0.5 for "torchvision" (the published head).
  """
  out_dim: int = 1
  width: float = 1.0
  dropout: float | None = None
  bn_momentum: float = 0.99
  dtype: jnp.dtype = jnp.float32
  kernels: str = "auto"
  variant: str = "cifar"
  # `models.initialize(init="torch")` draws convolutions as torchvision's mobilenet_v3 does.
  TORCH_CONV_INIT = "fan_out"

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise unknown_name("MobileNetV3 variant", self.variant, VARIANTS)
    super().__post_init__()

  def _channels(self, c: int) -> int:
    return make_divisible(c * self.width)

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    channels = self._channels
    conv = functools.partial(ConvBN, momentum=self.bn_momentum, dtype=self.dtype,
                             kernels=self.kernels)
    every_block = self.variant == "torchvision"
    acts = {}
    x = x.astype(self.dtype)
    x = acts["stem"] = conv(channels(16), 3, 2, activation=nn.hard_swish)(x, train=train,
                                                                          mask=mask)
    stage = 0
    for i, (kernel, expanded, out, use_se, act, stride) in enumerate(LARGE_BLOCKS):
      x = InvertedResidual(kernel, channels(expanded), channels(out), use_se, act, stride,
                           self.bn_momentum, self.dtype, self.kernels)(x, train=train, mask=mask)
      if every_block:
        acts[f"block{i + 1}"] = x
      elif i + 1 == len(LARGE_BLOCKS) or LARGE_BLOCKS[i + 1][5] != 1:
        stage += 1
        acts[f"stage{stage}"] = x
    x = acts["last_conv"] = conv(6 * x.shape[-1], activation=nn.hard_swish)(x, train=train,
                                                                            mask=mask)
    x = jnp.mean(x, axis=(1, 2))  # [B, F]
    rate = _DROPOUT[self.variant] if self.dropout is None else self.dropout
    if not every_block:
      acts["features"] = x
      x = nn.hard_swish(nn.Dense(channels(1280), dtype=self.dtype)(x))
    x = nn.Dropout(rate, deterministic=not train)(x)
    pred = nn.Dense(self.out_dim, dtype=self.dtype)(x)
    return pred.astype(jnp.float32), acts
