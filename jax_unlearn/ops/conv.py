"""A 2-D convolution with faster CPU kernels, the same values as `lax.conv_general_dilated`.

Which kernels run is a setting of the model (`Conv(..., kernels=...)`, the models' `kernels`
field) or of the call (`conv_general_dilated(..., kernels=...)`), so it is part of the function
jit traces: two models that differ in it are two programs. The settings (`KERNELS`):

  "auto" (the default): on CPU, oneDNN (`jax_unlearn.ops.onednn`: forward, input gradient and
    kernel gradient as XLA FFI calls) for float32 convolutions when it is available, else
    "chunked". In a process with several devices (simulated CPU devices, multi-host), programs
    the SPMD partitioner splits use XLA's kernels, because library calls are opaque to it: it
    would gather a sharded batch onto every device and repeat the work there; per-device
    programs (`shard_map` over every mesh axis, e.g. a train step with fixed batch shards) use
    the single-device choice again.
  "xla": XLA's kernels everywhere.
  "onednn": oneDNN on CPU for float32 convolutions whatever the device count (other dtypes as
    "chunked"); a `UserError` where oneDNN is unavailable (see `onednn.unavailable_reason`).
  "chunked": XLA's forward pass and input gradient with an im2col kernel gradient, whatever the
    device count. XLA's CPU backend differentiates a convolution's kernel as one more
    convolution whose window is the whole image, which runs at a fraction of the machine's
    matmul rate: with it, a 3x3 96->96 layer's forward and backward pass (batch 64, 32x32) took
    1.4x as long as with this, an AllCNN training step (width 0.25) 1.1-1.4x. Here it is

      dW[kh, kw, ci, co] = sum over rows (b, h, w) of patch[row, (kh, kw, ci)] * dy[row, co],

    accumulated over chunks of the batch with `lax.scan`, so each chunk's patch matrix stays in
    cache and each product is one plain GEMM.

Only undilated, ungrouped NHWC/HWIO convolutions change kernels; other layouts and dilated or
grouped convolutions are XLA's under every setting. So is every convolution on GPU and TPU
(cuDNN and the TPU compiler handle all three parts well), where "onednn" is an error.
`kernels_info` says what a setting resolves to in this process (for result files), and
`xla_convolutions` makes a trace use XLA's kernels whatever the setting (cost analysis cannot
see inside library calls).
"""
import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from jax_unlearn.errors import UserError, unknown_name
from jax_unlearn.ops import onednn

KERNELS = ("auto", "xla", "onednn", "chunked")
# True while `xla_convolutions` is active; a user context is part of jit's cache key, so a
# program traced inside is never reused outside it, nor the other way round.
_XLA_ONLY = jax.make_user_context(default_value=False)


def check_kernels(kernels: str) -> str:
  """`kernels` if it is one of KERNELS, else a UserError that names the closest one."""
  if not isinstance(kernels, str) or kernels not in KERNELS:
    raise unknown_name("convolution kernels", kernels, KERNELS)
  return kernels


def xla_convolutions():
  """A context in which traced convolutions use XLA's kernels whatever their `kernels` setting.

  For counting FLOPs: XLA's cost analysis sees no work inside library calls. Part of jit's
  cache key (`jax.make_user_context`), so it never returns programs traced outside it.
  """
  return _XLA_ONLY(True)


def _require_onednn() -> None:
  reason = onednn.unavailable_reason()
  if reason is not None:
    raise UserError(f"convolution kernels 'onednn' were asked for, but oneDNN is unavailable: "
                    f"{reason}.",
                    "use kernels='auto' or 'xla'; for oneDNN, run on CPU with the "
                    "onednn-cpu-gomp and onednn-devel-cpu-gomp packages (requirements.txt), a "
                    "C++ compiler (g++ or $CXX) and JAX_UNLEARN_ONEDNN unset.")


def _resolve(kernels: str, dtype, partitioned: bool) -> str:
  """The CPU kernels of a plain convolution: "onednn", "chunked" or "xla".

  `partitioned`: in a program the SPMD partitioner splits over several devices.
  """
  if kernels == "xla" or (kernels == "auto" and partitioned):
    return "xla"
  if kernels in ("auto", "onednn") and dtype == jnp.float32 and onednn.available():
    return "onednn"
  return "chunked"


def _per_device_trace() -> bool:
  """Whether this trace is a per-device program (inside `shard_map` over every mesh axis), which
  the SPMD partitioner never sees, so a library call is as safe there as on a single device."""
  mesh = jax.sharding.get_abstract_mesh()
  return not mesh.empty and all(t == jax.sharding.AxisType.Manual for t in mesh.axis_types)


def kernels_info(kernels: str = "auto") -> dict[str, Any]:
  """What the setting `kernels` resolves to in this process, JSON-able, for result files.

  Keys: "setting" (`kernels`); "backend" (`jax.default_backend()`); "onednn" (whether the
  oneDNN kernels are available); "conv", "conv_partitioned", "conv_other_dtypes": the kernels
  ("onednn", "chunked" or "xla") of a plain float32 convolution in a single-device or
  per-device program, of one in a program partitioned over this process's devices (the same as
  "conv" with one device), and of a plain bfloat16 or float16 one in a single-device program.
  Off CPU all three are "xla". Raises UserError as the convolutions would.
  """
  check_kernels(kernels)
  if kernels == "onednn":
    _require_onednn()
  backend = jax.default_backend()

  def path(dtype, partitioned):
    return _resolve(kernels, dtype, partitioned) if backend == "cpu" else "xla"

  partitioned = jax.device_count() > 1
  return {"setting": kernels, "backend": backend, "onednn": onednn.available(),
          "conv": path(jnp.float32, False), "conv_partitioned": path(jnp.float32, partitioned),
          "conv_other_dtypes": path(jnp.bfloat16, False)}


# Target size of one chunk's patch matrix: small enough for the last-level cache of a core.
_CHUNK_BYTES = 8 * 2**20
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
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
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_DIMENSIONS,
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
    return (tuple(dimension_numbers.lhs_spec) == _NHWC
            and tuple(dimension_numbers.rhs_spec) == _HWIO
            and tuple(dimension_numbers.out_spec) == _NHWC)
  return tuple(dimension_numbers) == _DIMENSIONS


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count: int = 1,
                         batch_group_count: int = 1, precision=None,
                         preferred_element_type=None, *, kernels: str = "auto"):
  """`lax.conv_general_dilated` with faster CPU kernels for plain NHWC convolutions.

  Same signature and values as lax's; only undilated, ungrouped NHWC/HWIO convolutions on CPU
  change algorithm, as `kernels` (one of KERNELS, see the module docstring) selects.
  """
  check_kernels(kernels)
  reference = lambda l, r: lax.conv_general_dilated(  # noqa: E731
      l, r, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
      feature_group_count, batch_group_count, precision, preferred_element_type)
  if _XLA_ONLY.value:
    return reference(lhs, rhs)
  if kernels == "onednn":
    _require_onednn()
  plain = (_is_nhwc_hwio(dimension_numbers, lhs.ndim) and feature_group_count == 1
           and batch_group_count == 1 and preferred_element_type is None
           and all(d == 1 for d in (lhs_dilation or (1, 1)))
           and all(d == 1 for d in (rhs_dilation or (1, 1))))
  path = "xla"
  if plain and lhs.dtype == rhs.dtype:
    path = _resolve(kernels, lhs.dtype, jax.device_count() > 1 and not _per_device_trace())
  if path == "xla":
    return reference(lhs, rhs)
  strides = tuple(int(s) for s in window_strides)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], strides, padding)
  pads = tuple((int(lo), int(hi)) for lo, hi in padding)
  fast = (onednn.make_conv(strides, pads) if path == "onednn"
          else _make_conv(strides, pads, precision))
  # The CPU kernels only in CPU programs: a program lowered for another platform runs XLA's.
  return lax.platform_dependent(lhs, rhs, cpu=fast, default=reference)


class FastConv:
  """For `flax.linen.Conv(conv_general_dilated_cls=...)`: `conv_general_dilated` with `kernels`.

  Flax calls the class without arguments, so `FastConv` gives "auto"; `Conv` passes its own.
  """

  def __init__(self, kernels: str = "auto"):
    self.kernels = check_kernels(kernels)

  def __call__(self, *args, **kwargs):
    return conv_general_dilated(*args, kernels=self.kernels, **kwargs)


@functools.cache
def _fast_conv_cls(kernels: str):
  """`FastConv` with `kernels` as Flax calls it; one object per setting, so equal modules stay
  equal."""
  return functools.partial(FastConv, kernels)


class Conv(nn.Conv):
  """`flax.linen.Conv` with this module's kernels: same variables and values, a drop-in in models.

  Attributes:
    kernels: one of KERNELS (see the module docstring); it sets `conv_general_dilated_cls`.
  """
  kernels: str = "auto"

  def __post_init__(self):
    self.conv_general_dilated_cls = _fast_conv_cls(check_kernels(self.kernels))
    super().__post_init__()
