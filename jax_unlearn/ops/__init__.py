"""Faster equivalents of core layers: the same values as XLA's/Flax's, less time on CPU."""
from jax_unlearn.ops.conv import (KERNELS, Conv, FastConv, check_kernels, conv_general_dilated,
                                  kernels_info, weight_grad, xla_convolutions)
from jax_unlearn.ops.norm import BatchNorm

__all__ = ["BatchNorm", "Conv", "FastConv", "KERNELS", "check_kernels", "conv_general_dilated",
           "kernels_info", "weight_grad", "xla_convolutions"]
