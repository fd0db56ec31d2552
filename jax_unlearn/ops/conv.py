"""A 2-D convolution with faster CPU kernels, the same values as `lax.conv_general_dilated`.

On CPU, float32 convolutions run through oneDNN (`jax_unlearn.ops.onednn`: forward, input
gradient and kernel gradient as XLA FFI calls) when its packages and a C++ compiler are present.
Otherwise the forward pass and input gradient are XLA's and only the kernel gradient changes:
XLA's CPU backend differentiates a convolution's kernel as one more convolution whose window is
the whole image, which ran at a fraction of the machine's matmul rate. Here it is an im2col
product instead,

    dW[kh, kw, ci, co] = sum over rows (b, h, w) of patch[row, (kh, kw, ci)] * dy[row, co],

accumulated over chunks of the batch with `lax.scan`, so each chunk's patch matrix stays in
cache and each product is one plain GEMM.

Used through `conv_general_dilated` (a drop-in for `lax.conv_general_dilated`) or, in a Flax
module, `Conv` (= `nn.Conv(..., conv_general_dilated_cls=FastConv)`). Other layouts and dilated or grouped
convolutions fall back to XLA, and on other platforms (GPU, TPU) the whole op is XLA's: cuDNN
and the TPU compiler handle all three parts well. A process with several devices also uses
XLA's convolutions outside per-device programs (see `convolutions`), so data-parallel programs
stay partitionable.
"""
import contextlib
import threading
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from jax_unlearn.ops import onednn

_STATE = threading.local()
BACKENDS = ("auto", "xla", "onednn", "chunked")


@contextlib.contextmanager
def convolutions(backend: str):
  """While active, convolutions traced in this thread use `backend`.

  "auto" (the default): on a CPU process that sees a single device, oneDNN if available, else
  XLA's forward with the chunked kernel gradient; with several devices (simulated CPU devices,
  multi-host) XLA's, because library calls are opaque to the SPMD partitioner, which would gather
  a sharded batch onto every device and repeat the work there; inside a per-device program
  (`shard_map`, e.g. a train step with fixed batch shards) the single-device choice again.
  "xla": XLA's everywhere (for counting FLOPs: cost analysis cannot see inside library calls).
  "onednn", "chunked": that CPU path regardless of the device count (tests).
  """
  if backend not in BACKENDS:
    raise ValueError(f"unknown convolution backend {backend!r}; one of {BACKENDS}")
  before = getattr(_STATE, "backend", "auto")
  _STATE.backend = backend
  try:
    yield
  finally:
    _STATE.backend = before


def _cpu_path(dtype) -> str:
  """The CPU implementation for this trace, "onednn", "chunked" or "xla" (see `convolutions`)."""
  backend = getattr(_STATE, "backend", "auto")
  if backend == "auto":
    if jax.device_count() > 1 and not _per_device_trace():
      return "xla"
    backend = "onednn"
  if backend == "onednn" and not (dtype == jnp.float32 and onednn.available()):
    return "chunked"
  return backend


def _per_device_trace() -> bool:
  """Whether this trace is a per-device program (inside `shard_map` over every mesh axis), which
  the SPMD partitioner never sees, so a library call is as safe there as on a single device."""
  mesh = jax.sharding.get_abstract_mesh()
  return not mesh.empty and all(t == jax.sharding.AxisType.Manual for t in mesh.axis_types)


# Target size of one chunk's patch matrix: small enough for the last-level cache of a core.
_CHUNK_BYTES = 8 * 2**20
_NHWC = (0, 3, 1, 2)
_HWIO = (3, 2, 0, 1)


def _chunk_rows(batch: int, bytes_per_sample: int) -> int:
  """The largest divisor of `batch` whose patch matrix fits in _CHUNK_BYTES (at least 1)."""
  best = 1
  for d in range(1, batch + 1):
    if batch % d == 0 and d * bytes_per_sample <= _CHUNK_BYTES:
      best = d
  return best


def _patches(x: jax.Array, kernel: tuple[int, int], strides: tuple[int, int],
             out_hw: tuple[int, int]) -> jax.Array:
  """im2col of padded NHWC `x`: [B * Ho * Wo, kh * kw * C], columns ordered (kh, kw, c)."""
  b, _, _, c = x.shape
  (kh, kw), (sh, sw), (ho, wo) = kernel, strides, out_hw
  cols = [lax.slice(x, (0, i, j, 0), (b, i + sh * (ho - 1) + 1, j + sw * (wo - 1) + 1, c),
                    (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]  # each [B, Ho, Wo, C]
  return jnp.concatenate(cols, axis=-1).reshape(b * ho * wo, kh * kw * c)


def weight_grad(x: jax.Array, dy: jax.Array, kernel_hw: tuple[int, int],
                strides: tuple[int, int], padding: Sequence[tuple[int, int]]) -> jax.Array:
  """Kernel gradient [kh, kw, Ci, Co] (float32) of an NHWC convolution, by chunked im2col GEMMs.

  Args:
    x: the convolution's input [B, H, W, Ci].
    dy: the gradient of its output [B, Ho, Wo, Co].
    kernel_hw, strides, padding: the convolution's window, strides and (low, high) padding.
  """
  (kh, kw), (b, ho, wo, co), ci = kernel_hw, dy.shape, x.shape[-1]
  xp = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
  # Rows of the padded input that the windows read (strides may leave the last ones unread).
  xp = xp[:, :strides[0] * (ho - 1) + kh, :strides[1] * (wo - 1) + kw]
  rows = _chunk_rows(b, ho * wo * kh * kw * ci * x.dtype.itemsize)
  n = b // rows

  def body(acc, chunk):
    xc, dc = chunk  # [rows, Hp, Wp, Ci], [rows, Ho, Wo, Co]
    p = _patches(xc, (kh, kw), strides, (ho, wo))  # [rows * Ho * Wo, kh * kw * Ci]
    return acc + jnp.dot(p.T, dc.reshape(-1, co), preferred_element_type=jnp.float32), None

  acc, _ = lax.scan(body, jnp.zeros((kh * kw * ci, co), jnp.float32),
                    (xp.reshape(n, rows, *xp.shape[1:]), dy.reshape(n, rows, ho, wo, co)))
  return acc.reshape(kh, kw, ci, co)


def _xla_conv(x, w, strides, padding, precision):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  precision=precision)


def _make_conv(strides: tuple[int, int], padding: tuple[tuple[int, int], ...], precision):
  """custom_vjp NHWC/HWIO convolution for one static configuration."""

  @jax.custom_vjp
  def conv(x, w):
    return _xla_conv(x, w, strides, padding, precision)

  def fwd(x, w):
    return conv(x, w), (x, w)

  def bwd(res, dy):
    x, w = res
    _, input_vjp = jax.vjp(lambda x_: _xla_conv(x_, w, strides, padding, precision), x)
    dw = weight_grad(x, dy, w.shape[:2], strides, padding)
    return input_vjp(dy)[0], dw.astype(w.dtype)

  conv.defvjp(fwd, bwd)
  return conv


def _is_nhwc_hwio(dimension_numbers, ndim: int) -> bool:
  if ndim != 4:
    return False
  if dimension_numbers is None:
    return False  # lax's default is NCHW / OIHW
  if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
    return (tuple(dimension_numbers.lhs_spec) == _NHWC and tuple(dimension_numbers.rhs_spec) == _HWIO
            and tuple(dimension_numbers.out_spec) == _NHWC)
  return tuple(dimension_numbers) == ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None):
  """`lax.conv_general_dilated` with faster CPU kernels for plain NHWC convolutions.

  Same signature and values as lax's; only undilated, ungrouped NHWC/HWIO convolutions on CPU
  change algorithm (oneDNN, or the chunked-GEMM kernel gradient), as `convolutions` selects.
  """
  plain = (_is_nhwc_hwio(dimension_numbers, lhs.ndim) and feature_group_count == 1
           and batch_group_count == 1 and preferred_element_type is None
           and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and all(d == 1 for d in (rhs_dilation or (1, 1))))
  reference = lambda l, r: lax.conv_general_dilated(  # noqa: E731
      l, r, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count, precision, preferred_element_type)
  path = _cpu_path(lhs.dtype) if plain and lhs.dtype == rhs.dtype else "xla"
  if path == "xla":
    return reference(lhs, rhs)
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  fast = (onednn.make_conv(strides, pads) if path == "onednn"
          else _make_conv(strides, pads, precision))
  return lax.platform_dependent(lhs, rhs, cpu=fast, default=reference)


class FastConv:
  """For `flax.linen.Conv(conv_general_dilated_cls=FastConv)`: the conv function above."""

  def __call__(self, *args, **kwargs):
    return conv_general_dilated(*args, **kwargs)


class Conv(nn.Conv):
  """`flax.linen.Conv` with `FastConv`: same variables and values, a drop-in in models."""
  conv_general_dilated_cls: Any = FastConv
