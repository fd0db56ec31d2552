"""Faster layers give XLA's and Flax's values: convolution (every kernel setting) and BatchNorm."""
import json
import platform
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

from jax_unlearn.errors import UserError
from jax_unlearn.models.adapters import row_mask
from jax_unlearn.ops import (KERNELS, BatchNorm, Conv, FastConv, check_kernels, conv,
                             conv_general_dilated, kernels_info, onednn, weight_grad,
                             xla_convolutions)

DN = ("NHWC", "HWIO", "NHWC")
# (input H = W, in channels, out channels, kernel, stride): the layer kinds of AllCNN and ResNet.
LAYERS = [(8, 3, 5, 3, 1), (8, 4, 6, 3, 2), (7, 4, 6, 3, 2), (6, 5, 4, 1, 1), (6, 5, 4, 1, 2)]
ONEDNN_TARGET = "jax_unlearn_onednn_conv_forward"


def _usable(kernels: str) -> str:
  if kernels == "onednn" and not onednn.available():
    pytest.skip(f"oneDNN unavailable: {onednn.unavailable_reason()}")
  return kernels


def _case(hw, ci, co, k, seed=0):
  r = np.random.default_rng(seed)
  x = jnp.asarray(r.normal(size=(4, hw, hw, ci)), jnp.float32)
  w = jnp.asarray(r.normal(size=(k, k, ci, co)) / k, jnp.float32)
  return x, w


def _value_and_grads(fn, x, w, stride, k):
  pad = [((k - 1) // 2, (k - 1) // 2)] * 2
  loss = lambda w, x: jnp.sum(jnp.sin(fn(x, w, (stride, stride), pad, dimension_numbers=DN)))
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(w, x)


def _conv(kernels):
  return lambda *a, **kw: conv_general_dilated(*a, kernels=kernels, **kw)  # noqa: E731


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("hw,ci,co,k,stride", LAYERS)
def test_conv_values_and_gradients_match_xla(hw, ci, co, k, stride, kernels):
  x, w = _case(hw, ci, co, k)
  v0, (gw0, gx0) = _value_and_grads(lax.conv_general_dilated, x, w, stride, k)
  v1, (gw1, gx1) = _value_and_grads(_conv(_usable(kernels)), x, w, stride, k)
  np.testing.assert_allclose(v1, v0, rtol=1e-5)
  np.testing.assert_allclose(gw1, gw0, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(gx1, gx0, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hw,ci,co,k,stride", LAYERS)
def test_chunked_weight_gradient_matches_autodiff(hw, ci, co, k, stride):
  # The pure-JAX path (no oneDNN): im2col GEMMs over batch chunks.
  x, w = _case(hw, ci, co, k, seed=1)
  pad = [((k - 1) // 2, (k - 1) // 2)] * 2
  y, vjp = jax.vjp(lambda w: lax.conv_general_dilated(x, w, (stride, stride), pad,
                                                      dimension_numbers=DN), w)
  dy = jnp.cos(y)
  np.testing.assert_allclose(weight_grad(x, dy, (k, k), (stride, stride), pad), vjp(dy)[0],
                             rtol=1e-4, atol=1e-5)


def test_chunks_divide_the_batch():
  assert conv._chunk_rows(64, conv._CHUNK_BYTES // 4) == 4
  assert conv._chunk_rows(6, conv._CHUNK_BYTES // 4) == 3  # largest divisor that fits
  assert conv._chunk_rows(7, conv._CHUNK_BYTES * 2) == 1


@pytest.mark.parametrize("kernels", ["onednn", "chunked"])
def test_other_convolutions_fall_back_to_xla(kernels):
  x, w = _case(6, 4, 4, 3)
  fn = _conv(_usable(kernels))
  # Dilated kernel and NCHW input are not the fast path's; values must still be lax's.
  np.testing.assert_allclose(
      fn(x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=DN),
      lax.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2), dimension_numbers=DN),
      rtol=1e-6)
  xn = jnp.transpose(x, (0, 3, 1, 2))
  wn = jnp.transpose(w, (3, 2, 0, 1))
  np.testing.assert_allclose(fn(xn, wn, (1, 1), "SAME"),
                             lax.conv_general_dilated(xn, wn, (1, 1), "SAME"), rtol=1e-6)


def _conv_fn(kernels: str):
  return lambda x, w: conv_general_dilated(x, w, (1, 1), [(1, 1), (1, 1)], dimension_numbers=DN,
                                           kernels=kernels)


def _lowered_text(kernels: str) -> str:
  x, w = _case(8, 4, 6, 3)
  return jax.jit(_conv_fn(kernels)).lower(x, w).as_text()


def test_onednn_is_installed_where_the_requirements_install_it():
  # requirements.txt installs the oneDNN packages on Linux x86-64; g++ builds the handlers.
  expected = sys.platform == "linux" and platform.machine() == "x86_64"
  assert onednn.available() == expected, onednn.unavailable_reason()
  if expected:
    assert ONEDNN_TARGET in _lowered_text("onednn")


def test_xla_kernels_lower_to_no_library_call():
  from jax.sharding import PartitionSpec as P
  from jax_unlearn import parallel
  x, w = _case(8, 4, 6, 3)
  per_device = jax.jit(jax.shard_map(_conv_fn("xla"), mesh=parallel.make_mesh(4),
                                     in_specs=(P("data"), P()), out_specs=P("data")))
  for text in (_lowered_text("xla"), per_device.lower(x, w).as_text()):
    assert "custom_call" not in text and "stablehlo.case" not in text
    assert "convolution" in text


def test_several_devices_keep_xla_convolutions():
  # The suite runs with 4 simulated devices: library calls would defeat the SPMD partitioner.
  assert jax.device_count() > 1
  text = _lowered_text("auto")
  assert "jax_unlearn_onednn" not in text and "custom_call" not in text
  assert "convolution" in text


def test_a_per_device_program_uses_the_single_device_kernels():
  # Inside shard_map the partitioner never sees the call: "auto" may use oneDNN again.
  from jax.sharding import PartitionSpec as P
  from jax_unlearn import parallel
  x, w = _case(8, 4, 6, 3)
  conv_fn = _conv_fn("auto")
  f = jax.jit(jax.shard_map(conv_fn, mesh=parallel.make_mesh(4), in_specs=(P("data"), P()),
                            out_specs=P("data")))
  text = f.lower(x, w).as_text()
  assert (ONEDNN_TARGET in text) == onednn.available()
  np.testing.assert_allclose(f(x, w), jax.jit(conv_fn)(x, w), rtol=1e-5, atol=1e-5)


def test_xla_convolutions_override_the_setting_and_key_the_cache():
  # "chunked" lowers through lax.platform_dependent (a stablehlo.case); XLA's kernels do not.
  x, w = _case(8, 4, 6, 3)
  f = jax.jit(_conv_fn("chunked"))
  assert "stablehlo.case" in f.lower(x, w).as_text()
  with xla_convolutions():
    assert "stablehlo.case" not in f.lower(x, w).as_text()
  assert "stablehlo.case" in f.lower(x, w).as_text()  # the program traced inside is not reused


@pytest.mark.parametrize("batched", ["both", "inputs", "weights", "nested"])
@pytest.mark.parametrize("hw,ci,co,k,stride", LAYERS[:2])
def test_vmapped_onednn_convolution_is_each_members_own(hw, ci, co, k, stride, batched):
  """Member m of a vmapped oneDNN convolution (its calls run member by member) has the value and
  both gradients of the single convolution on member m's operands; an operand
  vmap leaves unbatched is shared (its gradient summed over members, as vmap defines it)."""
  _usable("onednn")
  members = [_case(hw, ci, co, k, seed=m) for m in range(3)]
  xs, ws = jnp.stack([m[0] for m in members]), jnp.stack([m[1] for m in members])
  pad = [((k - 1) // 2, (k - 1) // 2)] * 2

  def loss(fn):
    def one(w, x):
      return jnp.sum(jnp.sin(fn(x, w, (stride, stride), pad, dimension_numbers=DN)))
    return jax.value_and_grad(one, argnums=(0, 1))

  def run(fn):
    f = loss(fn)
    if batched == "both":
      return jax.jit(jax.vmap(f))(ws, xs)
    if batched == "inputs":
      return jax.jit(jax.vmap(f, in_axes=(None, 0)))(ws[0], xs)
    if batched == "weights":
      return jax.jit(jax.vmap(f, in_axes=(0, None)))(ws, xs[0])
    pairs = lambda a: jnp.stack([a, a[::-1]])  # noqa: E731  [2, 3, ...]: vmap inside vmap
    return jax.jit(jax.vmap(jax.vmap(f)))(pairs(ws), pairs(xs))

  ours, ref = run(_conv("onednn")), run(lax.conv_general_dilated)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernels", KERNELS)
def test_conv_module_is_a_drop_in_for_flax_conv(kernels):
  x, _ = _case(8, 3, 5, 3)
  plain = nn.Conv(5, (3, 3))
  fast = Conv(5, (3, 3), kernels=_usable(kernels))
  variables = plain.init(jax.random.key(0), x)
  chex.assert_trees_all_equal_shapes_and_dtypes(fast.init(jax.random.key(0), x), variables)
  np.testing.assert_allclose(fast.apply(variables, x), plain.apply(variables, x), rtol=1e-5,
                             atol=1e-6)
  with_cls = nn.Conv(5, (3, 3), conv_general_dilated_cls=FastConv)  # "auto"
  np.testing.assert_allclose(with_cls.apply(variables, x), plain.apply(variables, x), rtol=1e-5,
                             atol=1e-6)


def test_an_unknown_kernel_name_is_a_user_error():
  x, w = _case(6, 3, 4, 3)
  for call in (lambda: check_kernels("onedn"), lambda: kernels_info("onedn"),
               lambda: Conv(4, (3, 3), kernels="onedn"),
               lambda: conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=DN,
                                            kernels="onedn")):
    with pytest.raises(UserError) as err:
      call()
    assert "'onednn'" in err.value.hint
  assert check_kernels("xla") == "xla"


def test_explicit_onednn_where_unavailable_is_a_user_error(monkeypatch):
  monkeypatch.setenv("JAX_UNLEARN_ONEDNN", "0")
  assert not onednn.available()
  x, w = _case(6, 3, 4, 3)
  with pytest.raises(UserError, match="JAX_UNLEARN_ONEDNN=0") as err:
    jax.jit(_conv_fn("onednn")).lower(x, w)
  assert "kernels='auto'" in err.value.hint
  with pytest.raises(UserError, match="oneDNN is unavailable"):
    kernels_info("onednn")
  info = kernels_info("auto")  # without oneDNN, "auto" falls back instead
  assert not info["onednn"] and info["conv"] == "chunked"
  np.testing.assert_allclose(jax.jit(_conv_fn("auto"))(x, w),
                             jax.jit(_conv_fn("xla"))(x, w), rtol=1e-5, atol=1e-6)


def test_kernels_info_describes_each_setting():
  keys = {"setting", "backend", "onednn", "conv", "conv_partitioned", "conv_other_dtypes"}
  for kernels in KERNELS:
    if kernels == "onednn" and not onednn.available():
      continue
    info = kernels_info(kernels)
    assert set(info) == keys and json.loads(json.dumps(info)) == info
    assert info["setting"] == kernels and info["backend"] == "cpu"
    assert info["onednn"] == onednn.available()
  best = "onednn" if onednn.available() else "chunked"
  assert kernels_info() == kernels_info("auto")
  assert kernels_info("auto")["conv"] == best
  assert kernels_info("auto")["conv_partitioned"] == "xla"  # the suite's 4 devices
  assert kernels_info("auto")["conv_other_dtypes"] == "chunked"
  assert {kernels_info("xla")[k] for k in keys - {"setting", "backend", "onednn"}} == {"xla"}
  assert kernels_info("chunked")["conv_partitioned"] == "chunked"


def test_other_backends_never_build_onednn(monkeypatch):
  def fail():
    raise AssertionError("built or loaded the oneDNN library off CPU")

  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  monkeypatch.setattr(onednn, "_load", fail)
  assert not onednn.available()
  assert "'gpu'" in onednn.unavailable_reason()
  info = kernels_info("auto")
  assert info["backend"] == "gpu" and not info["onednn"]
  assert info["conv"] == info["conv_partitioned"] == info["conv_other_dtypes"] == "xla"
  with pytest.raises(UserError, match="not CPU"):
    kernels_info("onednn")


@pytest.mark.parametrize("use_mask", [False, True])
def test_batchnorm_matches_flax(use_mask):
  r = np.random.default_rng(0)
  x = jnp.asarray(r.normal(size=(6, 4, 4, 5)) * 3 + 1, jnp.float32)
  mask = jnp.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0]) if use_mask else None
  rm = row_mask(mask, x)
  outs = []
  for module in (nn.BatchNorm(use_running_average=False, momentum=0.9),
                 BatchNorm(use_running_average=False, momentum=0.9)):
    variables = module.init(jax.random.key(0), x, mask=rm)
    variables = jax.tree_util.tree_map(lambda a: a + 0.3, variables)  # non-default stats

    def f(params, x):
      return module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                          mask=rm, mutable=["batch_stats"])

    y, stats = f(variables["params"], x)
    keep = 1.0 if mask is None else mask[:, None, None, None]
    grads = jax.grad(lambda p, x: jnp.sum(jnp.sin(f(p, x)[0]) * keep), argnums=(0, 1))(
        variables["params"], x)
    outs.append((y * keep, stats, grads))
  chex.assert_trees_all_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


def test_batchnorm_evaluation_uses_running_statistics():
  x = jnp.arange(24.0).reshape(2, 3, 4)
  bn = BatchNorm(use_running_average=True)
  variables = {"params": {"scale": jnp.full(4, 2.0), "bias": jnp.ones(4)},
               "batch_stats": {"mean": jnp.full(4, 3.0), "var": jnp.full(4, 4.0)}}
  np.testing.assert_allclose(bn.apply(variables, x), (x - 3.0) / np.sqrt(4.0 + 1e-5) * 2 + 1,
                             rtol=1e-6, atol=1e-6)
