"""ResNet18 in its CIFAR form (3x3 stem, no max-pool) or torchvision's (7x7 stem, max-pool)."""
import functools

import jax.numpy as jnp
from flax import linen as nn

from jax_unlearn import ops
from jax_unlearn.errors import unknown_name
from jax_unlearn.models.adapters import row_mask

# The stems and activation sets of ResNet18 (see ResNet18).
VARIANTS = ("cifar", "torchvision")


class BasicBlock(nn.Module):
  """Two 3x3 Conv-BN layers with an identity (or 1x1 projection) shortcut, ReLU after the sum."""
  features: int
  stride: int = 1
  dtype: jnp.dtype = jnp.float32
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    norm = functools.partial(ops.BatchNorm, use_running_average=not train, momentum=0.9,
                             dtype=self.dtype)
    conv = functools.partial(ops.Conv, self.features, use_bias=False, dtype=self.dtype,
                             kernels=self.kernels)
    m = row_mask(mask, x)
    y = nn.relu(norm()(conv((3, 3), strides=self.stride, padding=1)(x), mask=m))
    y = norm()(conv((3, 3), padding=1)(y), mask=m)
    if self.stride != 1 or x.shape[-1] != self.features:
      x = norm()(conv((1, 1), strides=self.stride, padding=0)(x), mask=m)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """BasicBlocks [2, 2, 2, 2] with 64/128/256/512 filters times `width`, average pool, linear head.

  Returns (pred [B, out_dim], acts). `mask` [B] keeps padded rows out of the BatchNorm
  statistics. `kernels`: the convolution kernels, one of `ops.KERNELS` (part of the model, so
  each setting is its own jitted function).

  `variant`: default "cifar" (ours, for 32x32 images): a 3x3 stride-1 stem conv without
  max-pool; acts "stem", "block1".."block8" (NHWC) and "features" [B, F]. "torchvision": the
  published model, torchvision's resnet18 body: a 7x7 stride-2 stem conv, then a 3x3 stride-2
  max-pool (a 32x32 image reaches the blocks as 8x8); acts as published, "stem" (before the
  pool) and "block1".."block8". Both heads are the published one, average pool then Linear.
  `dropout`: rate of a dropout before the head (train mode only). Default 0.0, which is the
  published behaviour too: the published model defines a Dropout(0.5) but never applies it.
  """
  out_dim: int = 1
  width: float = 1.0
  dtype: jnp.dtype = jnp.float32
  kernels: str = "auto"
  variant: str = "cifar"
  dropout: float = 0.0
  # `models.initialize(init="torch")` draws convolutions as torchvision's resnet18 does.
  TORCH_CONV_INIT = "fan_out"

  def __post_init__(self):
    if self.variant not in VARIANTS:
      raise unknown_name("ResNet18 variant", self.variant, VARIANTS)
    super().__post_init__()

  @nn.compact
  def __call__(self, x, *, train: bool, mask=None):
    acts = {}
    x = x.astype(self.dtype)
    stem = max(1, int(64 * self.width))
    if self.variant == "cifar":
      x = ops.Conv(stem, (3, 3), padding=1, use_bias=False, dtype=self.dtype,
                   kernels=self.kernels)(x)
    else:
      x = ops.Conv(stem, (7, 7), strides=2, padding=3, use_bias=False, dtype=self.dtype,
                   kernels=self.kernels)(x)  # [B, H / 2, W / 2, C]
    x = ops.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(
        x, mask=row_mask(mask, x))
    x = acts["stem"] = nn.relu(x)
    if self.variant == "torchvision":
      x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # [B, H / 4, ...]
    for i in range(8):
      stage = i // 2
      features = max(1, int(64 * 2**stage * self.width))
      stride = 2 if stage > 0 and i % 2 == 0 else 1
      x = acts[f"block{i + 1}"] = BasicBlock(features, stride, self.dtype,
                                             kernels=self.kernels)(x, train=train, mask=mask)
    x = jnp.mean(x, axis=(1, 2))  # [B, F]
    if self.variant == "cifar":
      acts["features"] = x
    if self.dropout:
      x = nn.Dropout(self.dropout, deterministic=not train)(x)
    pred = nn.Dense(self.out_dim, dtype=self.dtype)(x)
    return pred.astype(jnp.float32), acts
