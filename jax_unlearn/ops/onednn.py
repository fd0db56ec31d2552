"""oneDNN convolutions inside XLA:CPU programs, through `jax.ffi`.

On CPU, XLA's convolutions (its YNNPACK and Eigen kernels) ran at about half the rate of
oneDNN's on the machines we measured, and its kernel gradient at a quarter; PyTorch uses oneDNN,
so a JAX training step of a convnet lost to PyTorch eager although XLA fuses everything else.
This module compiles `onednn_conv.cc` (forward, input gradient and kernel gradient of an NHWC
convolution, each an XLA FFI handler) against the oneDNN of the PyPI packages
`onednn-cpu-gomp` and `onednn-devel-cpu-gomp`, caches the shared library and registers the
handlers. `available()` is False, and nothing is compiled or loaded, when the default backend
is not CPU (GPUs and TPUs use XLA's convolutions), when JAX_UNLEARN_ONEDNN=0 is set (to run
without it: kernels "auto" then mean XLA's with an im2col kernel gradient, and "onednn" is an
error; see `jax_unlearn.ops.conv`), or without a C++ compiler or those packages;
`unavailable_reason()` says which.

The library is built once per source and JAX version into $JAX_UNLEARN_CACHE (default
~/.cache/jax_unlearn), written to a temporary name and renamed, so concurrent first uses are
safe.
"""
import ctypes
import functools
import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import jax
import jax.numpy as jnp
import numpy as np

_SOURCE = os.path.join(os.path.dirname(__file__), "onednn_conv.cc")
_HANDLERS = {"forward": "ConvForward", "backward_data": "ConvBackwardData",
             "backward_weights": "ConvBackwardWeights"}


def _target(kind: str) -> str:
  return f"jax_unlearn_onednn_conv_{kind}"


def _onednn_root() -> str | None:
  """The prefix holding include/oneapi/dnnl/dnnl.hpp and lib/libdnnl.so (pip installs here)."""
  for root in (os.environ.get("ONEDNN_ROOT"), sys.prefix):
    if (root and os.path.exists(os.path.join(root, "include", "oneapi", "dnnl", "dnnl.hpp"))
        and glob.glob(os.path.join(root, "lib", "libdnnl.so*"))):
      return root
  return None


def _build(root: str, compiler: str) -> str:
  """Path of the compiled handlers' library, compiling it if this version is not cached."""
  with open(_SOURCE, "rb") as f:
    source = f.read()
  digest = hashlib.sha256(source + root.encode() + jax.__version__.encode()).hexdigest()[:16]
  cache = os.environ.get("JAX_UNLEARN_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "jax_unlearn")
  path = os.path.join(cache, f"onednn_conv-{digest}.so")
  if os.path.exists(path):
    return path
  os.makedirs(cache, exist_ok=True)
  fd, tmp = tempfile.mkstemp(suffix=".so", dir=cache)
  os.close(fd)
  lib = os.path.join(root, "lib")
  cmd = [compiler, "-O2", "-std=c++17", "-shared", "-fPIC", "-w", _SOURCE, "-o", tmp,
         "-I", jax.ffi.include_dir(), "-I", os.path.join(root, "include"), "-L", lib, "-ldnnl",
         f"-Wl,-rpath,{lib}"]
  try:
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return path


def unavailable_reason() -> str | None:
  """Why the oneDNN handlers cannot be used in this process, or None when they are registered.

  Checks the default backend and JAX_UNLEARN_ONEDNN before anything is built, so a GPU or TPU
  process never runs the compiler.
  """
  backend = jax.default_backend()
  if backend != "cpu":
    return f"the default backend is {backend!r}, not CPU"
  if os.environ.get("JAX_UNLEARN_ONEDNN", "1") == "0":
    return "JAX_UNLEARN_ONEDNN=0 is set"
  return _load()


def available() -> bool:
  """Whether the oneDNN handlers are registered with XLA:CPU (built on the first call)."""
  return unavailable_reason() is None


@functools.cache
def _load() -> str | None:
  """Builds (if not cached), loads and registers the handlers once; why not, or None."""
  root = _onednn_root()
  if root is None:
    return "the onednn-cpu-gomp and onednn-devel-cpu-gomp packages are not installed"
  compiler = shutil.which(os.environ.get("CXX", "g++"))
  if compiler is None:
    return f"no C++ compiler ({os.environ.get('CXX', 'g++')}) on PATH"
  try:
    lib = ctypes.cdll.LoadLibrary(_build(root, compiler))
  except (OSError, subprocess.CalledProcessError) as e:
    detail = e.stderr[-2000:] if isinstance(e, subprocess.CalledProcessError) else str(e)
    warnings.warn(f"oneDNN convolutions unavailable, using XLA's: {detail}")
    return "building or loading the handlers failed (see the warning)"
  for kind, symbol in _HANDLERS.items():
    jax.ffi.register_ffi_target(_target(kind), jax.ffi.pycapsule(getattr(lib, symbol)),
                                platform="cpu")
  return None


def _call(kind: str, out_shape: tuple[int, ...], a, b, strides, padding):
  (pt, pb), (pl, pr) = padding
  attrs = dict(zip(("sh", "sw", "pt", "pb", "pl", "pr"),
                   (np.int64(v) for v in (*strides, pt, pb, pl, pr))))
  out = jax.ffi.ffi_call(_target(kind), jax.ShapeDtypeStruct(out_shape, jnp.float32),
                         vmap_method="sequential")(a, b, **attrs)
  # Inside shard_map the result varies over the mesh axes its operands vary over; the call
  # itself does not say so, and shard_map's type check would reject it in a `lax.cond`.
  varying = tuple(sorted(jax.typeof(a).manual_axis_type.varying
                         | jax.typeof(b).manual_axis_type.varying))
  return jax.lax.pcast(out, varying, to="varying") if varying else out


def make_conv(strides: tuple[int, int], padding: tuple[tuple[int, int], ...]):
  """A differentiable float32 NHWC/HWIO convolution `conv(x, w)` whose three parts are oneDNN's.

  Call only after `available()` returned True, and only in CPU programs (`ops.conv` wraps it in
  `lax.platform_dependent`).
  """

  def out_shape(x, w):
    n, h, wd, _ = x.shape
    kh, kw, _, o = w.shape
    ho = (h + padding[0][0] + padding[0][1] - kh) // strides[0] + 1
    wo = (wd + padding[1][0] + padding[1][1] - kw) // strides[1] + 1
    return (n, ho, wo, o)

  @jax.custom_vjp
  def conv(x, w):
    return _call("forward", out_shape(x, w), x, w, strides, padding)

  def fwd(x, w):
    return conv(x, w), (x, w)

  def bwd(res, dy):
    x, w = res
    dx = _call("backward_data", x.shape, dy, w, strides, padding)
    dw = _call("backward_weights", w.shape, x, dy, strides, padding)
    return dx, dw

  conv.defvjp(fwd, bwd)
  return conv
