import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from jax_unlearn import losses, models, train
from jax_unlearn.data import ArrayLoader
from jax_unlearn.errors import UserError
from jax_unlearn.models import from_linen, get_model, init_linen, model_names

B = 3
# name -> (kwargs, input shape, pred shape, acts shapes), all shapes without the batch axis.
CASES = {
    "allcnn": ({"width": 0.05, "out_dim": 2}, (8, 8, 3), (2,), {
        **{f"block{i}": (8, 8, 4) for i in (1, 2)},
        **{f"block{i}": (4, 4, 9) for i in (3, 4, 5)},
        **{f"block{i}": (2, 2, 9) for i in (6, 7, 8)}, "features": (9,)}),
    "mlp": ({"hidden": (8, 4)}, (5,), (1,), {"layer1": (8,), "layer2": (4,)}),
    "resnet18": ({"width": 1 / 16, "out_dim": 2}, (8, 8, 3), (2,), {
        "stem": (8, 8, 4), "block1": (8, 8, 4), "block2": (8, 8, 4), "block3": (4, 4, 8),
        "block4": (4, 4, 8), "block5": (2, 2, 16), "block6": (2, 2, 16), "block7": (1, 1, 32),
        "block8": (1, 1, 32), "features": (32,)}),
    # width 0.25 rounds 16/24/40/112/160 channels to 8/8/16/32/40 (multiples of 8, >= 90%).
    "mobilenet": ({"width": 0.25, "out_dim": 2}, (32, 32, 3), (2,), {
        "stem": (16, 16, 8), "stage1": (16, 16, 8), "stage2": (8, 8, 8), "stage3": (4, 4, 16),
        "stage4": (2, 2, 32), "stage5": (1, 1, 40), "last_conv": (1, 1, 240),
        "features": (240,)}),
    "lstm": ({"hidden": 16, "dense": (16, 8, 8)}, (2, 4, 3), (1,), {
        "sentence_a": (16,), "sentence_b": (16,), "dense1": (16,), "dense2": (8,),
        "dense3": (8,)}),
    "tft": ({"horizon": 3, "hidden": 8, "heads": 2, "num_ids": 2}, (11, 3), (3, 3), {
        "encoder": (8, 8), "decoder": (3, 8), "attention": (3, 8), "features": (8,)}),
}


@functools.lru_cache
def _model_and_variables(name):
  """The test model of CASES and its variables, initialised once.

  Jitted (eager init is slower still) from an RBG key: threefry's random-bit kernels for every
  parameter make the init program compile 2-3x slower on CPU.
  """
  kwargs, shape, _, _ = CASES[name]
  model = get_model(name, **kwargs)
  x = jnp.zeros((2,) + shape)
  return model, jax.jit(lambda x: init_linen(model, jax.random.key(0, impl="unsafe_rbg"), x))(x)


def _abstract(model, shape, dtype=jnp.float32):
  """Variables and outputs in train and eval mode, as shapes only (no compilation)."""
  x = jax.ShapeDtypeStruct((B,) + shape, dtype)
  # `model.init` itself, as `init_linen` runs it: `init_linen` keeps one traced program per model,
  # which a method interceptor (`_dropouts`) would then not see.
  rngs = dict(zip(("params", "dropout"), jax.random.split(jax.random.key(0))))
  variables = jax.eval_shape(lambda x: model.init(rngs, x, train=False), x)
  apply_fn = from_linen(model)
  outs = {train: jax.eval_shape(
      lambda v, x: apply_fn(v, x, train=train, rngs={"dropout": jax.random.key(1)}), variables, x)
          for train in (True, False)}
  return variables, outs


def _count(params) -> int:
  return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))


def test_every_registered_model_is_covered():
  assert sorted(CASES) == model_names()


@pytest.mark.parametrize("name", sorted(CASES))
def test_output_and_activation_shapes(name):
  kwargs, shape, pred_shape, act_shapes = CASES[name]
  variables, outs = _abstract(get_model(name, **kwargs), shape)
  for train_mode, out in outs.items():
    pred, acts = out[:2]
    assert pred.shape == (B,) + pred_shape and pred.dtype == jnp.float32, (train_mode, pred)
    assert {k: v.shape for k, v in acts.items()} == {k: (B,) + v for k, v in act_shapes.items()}
    # BatchNorm models (and only they) return their updated statistics in train mode.
    assert len(out) == (3 if train_mode and "batch_stats" in variables else 2)
    if len(out) == 3:
      chex.assert_trees_all_equal_shapes_and_dtypes(out[2],
                                                    {"batch_stats": variables["batch_stats"]})


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_compute_keeps_float32_params_and_predictions(name):
  kwargs, shape, _, _ = CASES[name]
  variables, outs = _abstract(get_model(name, **kwargs, dtype=jnp.bfloat16), shape)
  assert {p.dtype for p in jax.tree_util.tree_leaves(variables)} == {jnp.dtype(jnp.float32)}
  pred, acts = outs[False]
  assert pred.dtype == jnp.float32
  assert {k: v.dtype for k, v in acts.items()} == {k: jnp.dtype(jnp.bfloat16) for k in acts}


def test_parameter_counts_match_the_reference_networks():
  # torchvision/kuangliu CIFAR ResNet18: 11,173,962 with a 10-way head of 512 * 10 + 10.
  _, resnet_shape, _, _ = CASES["resnet18"]
  variables, _ = _abstract(get_model("resnet18", out_dim=1), resnet_shape)
  assert _count(variables["params"]) == 11_173_962 - 512 * 9 - 9
  # torchvision mobilenet_v3_large with its 1000-way head: 5,483,032.
  variables, _ = _abstract(get_model("mobilenet", out_dim=1000), (32, 32, 3))
  assert _count(variables["params"]) == 5_483_032


def test_batch_stats_follow_the_batch_and_ignore_padded_rows():
  model, variables = _model_and_variables("resnet18")
  shape = CASES["resnet18"][1]
  r = np.random.default_rng(0)
  real = (r.normal(size=(4,) + shape) + 1.0).astype(np.float32)
  padded = np.concatenate([real, 100.0 * np.ones((2,) + shape, np.float32)])
  mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
  apply_fn = jax.jit(from_linen(model), static_argnames="train")
  pred_real, _, state_real = apply_fn(variables, real, train=True)
  # The stem's running mean moves from its zero start towards the (nonzero) batch mean.
  assert float(jnp.abs(state_real["batch_stats"]["BatchNorm_0"]["mean"]).max()) > 1e-3
  pred_pad, _, state_pad = apply_fn(variables, padded, train=True, mask=mask)
  chex.assert_trees_all_close(state_pad, state_real, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(pred_pad[:4], pred_real, rtol=1e-4, atol=1e-5)
  # Without the mask the padding rows do move the statistics (the check above can fail).
  _, _, state_unmasked = apply_fn(variables, padded, train=True)
  diff = jax.tree_util.tree_map(lambda a, b: float(jnp.abs(a - b).max()), state_unmasked,
                                state_real)
  assert max(jax.tree_util.tree_leaves(diff)) > 1e-2


def test_lstm_shares_one_encoder_between_sentences():
  model, variables = _model_and_variables("lstm")
  x = jax.random.normal(jax.random.key(2), (B,) + CASES["lstm"][1])
  assert sorted(variables["params"]) == ["Dense_0", "Dense_1", "Dense_2", "Dense_3",
                                         "OptimizedLSTMCell_0"]
  apply = jax.jit(functools.partial(model.apply, train=False))
  _, acts = apply(variables, x)
  _, swapped = apply(variables, x[:, ::-1])
  np.testing.assert_allclose(swapped["sentence_a"], acts["sentence_b"], rtol=1e-6)
  np.testing.assert_allclose(swapped["sentence_b"], acts["sentence_a"], rtol=1e-6)


def test_tft_forecast_is_causal_over_the_horizon():
  """A known input at horizon step 2 can change the forecast for step 2 but not steps 0 and 1."""
  model, variables = _model_and_variables("tft")
  x = np.random.default_rng(0).normal(size=(B,) + CASES["tft"][1]).astype(np.float32)
  x[:, -3:, 0] = 0.0
  x[:, :, -1] = 1.0
  apply = jax.jit(functools.partial(model.apply, train=False))
  pred, _ = apply(variables, x)
  x2 = x.copy()
  x2[:, -1, 1] += 5.0  # the last horizon step is index 2
  pred2, _ = apply(variables, x2)
  np.testing.assert_allclose(pred2[:, :2], pred[:, :2], rtol=1e-5, atol=1e-6)
  assert float(jnp.abs(pred2[:, 2] - pred[:, 2]).max()) > 1e-4


def _fit(name, x, y, loss, epochs, lr, batch_size=16, **overrides):
  """Per-epoch training losses of the CASES model `name` (with `overrides`) on (x, y)."""
  _, variables = _model_and_variables(name)
  apply_fn = from_linen(get_model(name, **{**CASES[name][0], **overrides}))
  tx = train.make_optimizer(lr)

  @chex.assert_max_traces(n=1)
  def loss_fn(pred, acts, batch, rng, frozen):
    return train.supervised_loss(loss)(pred, acts, batch, rng, frozen)

  step = train.make_train_step(apply_fn, loss_fn, tx)
  loader = ArrayLoader({"x": x, "y": y}, batch_size, seed=0)
  result = train.fit(train.create_state(variables, tx), step, loader, epochs=epochs,
                     rng=jax.random.key(1))
  return [h["train_loss"] for h in result.history]


def test_lstm_learns_a_sentence_pair_task():
  r = np.random.default_rng(0)
  x = r.normal(size=(48, 2, 4, 3)).astype(np.float32)
  y = (x[:, 0, -1, :1] - x[:, 1, -1, :1]).astype(np.float32)  # [N, 1]
  history = _fit("lstm", x, y, losses.mse, epochs=12, lr=1e-2)
  assert history[-1] < 0.5 * history[0], history


def test_tft_learns_a_quantile_forecast():
  past, horizon, n = 8, 3, 64
  r = np.random.default_rng(0)
  ids = r.integers(0, 2, n)
  start = r.integers(0, 12, n)
  t = start[:, None] + np.arange(past + horizon)  # [N, L + H]
  target = np.sin(2 * np.pi * t / 6 + ids[:, None] * np.pi / 2)
  x = np.stack([target, np.cos(2 * np.pi * t / 6), np.broadcast_to(ids[:, None], t.shape)],
               axis=-1).astype(np.float32)
  y = x[:, past:, 0].copy()  # [N, H]
  x[:, past:, 0] = 0.0
  # Dropout off: its random-bit kernels would double the compile time of this test.
  history = _fit("tft", x, y, losses.quantile, epochs=15, lr=1e-2, dropout=0.0)
  assert history[-1] < 0.5 * history[0], history


def test_unknown_model_name_suggests_the_closest():
  with pytest.raises(UserError) as err:
    get_model("resnet")
  assert "resnet18" in err.value.hint


def test_tft_rejects_a_window_shorter_than_the_horizon():
  with pytest.raises(UserError, match="horizon 5"):
    get_model("tft", horizon=5).init(jax.random.key(0), jnp.zeros((1, 5, 3)), train=False)


@pytest.mark.parametrize("name", ["allcnn", "resnet18", "mobilenet"])
def test_convolution_kernels_are_a_model_setting(name):
  """`kernels` reaches every convolution and leaves the variables as they are."""
  kwargs, shape, _, _ = CASES[name]
  models = {k: get_model(name, **kwargs, kernels=k) for k in ("auto", "xla", "chunked")}
  x = jax.ShapeDtypeStruct((B,) + shape, jnp.float32)
  init = lambda m: jax.eval_shape(lambda x: init_linen(m, jax.random.key(0), x), x)  # noqa: E731
  variables = init(models["auto"])
  chex.assert_trees_all_equal_shapes_and_dtypes(init(models["xla"]), variables)
  assert models["xla"] != models["auto"]  # so jit traces each setting as its own function
  text = {k: jax.jit(functools.partial(models[k].apply, train=False)).lower(variables, x).as_text()
          for k in ("xla", "chunked")}
  # "chunked" lowers each plain convolution through lax.platform_dependent; XLA's does not.
  assert "stablehlo.case" in text["chunked"] and "stablehlo.case" not in text["xla"]
  assert "custom_call" not in text["xla"]
  with pytest.raises(UserError, match="unknown convolution kernels"):
    init(get_model(name, **kwargs, kernels="fast"))


# The published model variants as switches, and torch's initialisation.


def _dropouts(model, shape):
  """(rate, deterministic) of every Dropout call in `_abstract`: init, train mode, eval mode.

  Read by intercepting the calls during abstract traces: nothing is compiled.
  """
  seen = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dropout) and context.method_name == "__call__":
      seen.append((context.module.rate, context.module.deterministic))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    _abstract(model, shape)
  return seen


def _lstm_baseline():
  model = get_model("lstm", **CASES["lstm"][0])
  x = jax.random.normal(jax.random.key(5), (B,) + CASES["lstm"][1])
  return model, x, jax.jit(lambda x: init_linen(model, jax.random.key(0), x))(x[:2])


def test_lstm_defaults_keep_their_values():
  """The default model's parameters and outputs as they were before the switches existed."""
  model, x, variables = _lstm_baseline()
  np.testing.assert_allclose(
      variables["params"]["Dense_3"]["kernel"].ravel(),
      [-0.23911785, 0.5107134, -0.00945447, 0.35074517, 0.23770136, -0.2472397, 0.28196406,
       0.2698821], rtol=1e-6)
  pred, acts = jax.jit(functools.partial(model.apply, train=False))(variables, x)
  np.testing.assert_allclose(pred.ravel(), [0.031775653, 0.02388514, 0.084160365], rtol=1e-5)
  np.testing.assert_allclose(acts["sentence_a"][0, :4],
                             [-0.11409858, -0.056504555, -0.03478285, -0.4401089], rtol=1e-5)


def test_lstm_sequence_activations_and_dropout():
  base, x, variables = _lstm_baseline()
  hidden, t = CASES["lstm"][0]["hidden"], CASES["lstm"][1][1]
  run = lambda m, train, seed=1: jax.jit(functools.partial(  # noqa: E731
      m.apply, train=train))(variables, x, rngs={"dropout": jax.random.key(seed)})
  pred, acts = run(base, False)
  # "sequence": the whole output sequences, whose last step is the final state; same pred.
  seq_pred, seq_acts = run(get_model("lstm", **CASES["lstm"][0], activations="sequence"), False)
  assert seq_acts["sentence_a"].shape == seq_acts["sentence_b"].shape == (B, t, hidden)
  np.testing.assert_array_equal(seq_pred, pred)
  np.testing.assert_array_equal(seq_acts["sentence_b"][:, -1], acts["sentence_b"])
  # "published": the sequences and the first two dense layers before their ReLU.
  _, pub = run(get_model("lstm", **CASES["lstm"][0], activations="published"), False)
  assert sorted(pub) == ["dense1", "dense2", "sentence_a", "sentence_b"]
  np.testing.assert_allclose(jnp.maximum(pub["dense1"], 0), acts["dense1"], rtol=1e-6)
  # Dropout: no new parameters, off in eval mode, drawn from the "dropout" rng in train mode.
  dropped = get_model("lstm", **CASES["lstm"][0], dropout=0.3, activations="sequence")
  np.testing.assert_array_equal(run(dropped, False)[0], pred)
  train_pred, train_acts = run(dropped, True)
  assert not np.allclose(train_pred, pred)
  assert not np.allclose(run(dropped, True, seed=2)[0], train_pred)
  zeros = float(jnp.mean(train_acts["sentence_a"] == 0))
  assert 0.15 < zeros < 0.45, zeros
  with pytest.raises(UserError, match="unknown LSTM activations"):
    get_model("lstm", activations="last")


@pytest.mark.parametrize("px", [32, 64])
def test_torchvision_resnet_stem_pools_to_a_quarter(px):
  model = get_model("resnet18", width=1 / 16, variant="torchvision")
  _, outs = _abstract(model, (px, px, 3))
  acts = outs[False][1]
  assert sorted(acts) == sorted(["stem"] + [f"block{i}" for i in range(1, 9)])  # as published
  assert acts["stem"].shape == (B, px // 2, px // 2, 4)  # 7x7 stride 2, before the max-pool
  assert acts["block1"].shape == (B, px // 4, px // 4, 4)
  assert acts["block8"].shape == (B, px // 32, px // 32, 32)


@pytest.mark.parametrize("px", [32, 64])
def test_torchvision_mobilenet_exposes_every_block(px):
  model = get_model("mobilenet", width=0.25, variant="torchvision")
  _, outs = _abstract(model, (px, px, 3))
  acts = outs[False][1]
  assert sorted(acts) == sorted(["stem", "last_conv"] + [f"block{i}" for i in range(1, 16)])
  assert len(acts) == 17
  assert acts["stem"].shape == (B, px // 2, px // 2, 8)
  assert acts["last_conv"].shape == (B, px // 32, px // 32, 240)


def test_torchvision_variants_have_torchvisions_parameters():
  # torchvision resnet18 with its 1000-way fc: 11,689,512.
  variables, _ = _abstract(get_model("resnet18", out_dim=1000, variant="torchvision"), (32, 32, 3))
  assert _count(variables["params"]) == 11_689_512
  # mobilenet_v3_large's features (5,483,032 less its 2,511,080 classifier) + Linear(960, 1000).
  variables, _ = _abstract(get_model("mobilenet", out_dim=1000, variant="torchvision"),
                           (32, 32, 3))
  assert _count(variables["params"]) == 5_483_032 - 2_511_080 + 961_000
  for name in ("resnet18", "mobilenet"):
    with pytest.raises(UserError, match="variant"):
      get_model(name, variant="imagenet")


def test_head_dropout_runs_in_train_mode_only():
  cases = {("mobilenet", "torchvision", None): 0.5, ("mobilenet", "cifar", None): 0.2,
           ("resnet18", "torchvision", 0.5): 0.5}
  for (name, variant, rate), expected in cases.items():
    kwargs = {**CASES[name][0], "variant": variant}
    if rate is not None:
      kwargs["dropout"] = rate
    seen = _dropouts(get_model(name, **kwargs), CASES[name][1])
    assert seen == [(expected, True), (expected, False), (expected, True)], (name, variant)
  # The published ResNet18 defines a Dropout but never applies it: none by default.
  seen = _dropouts(get_model("resnet18", **CASES["resnet18"][0], variant="torchvision"),
                   CASES["resnet18"][1])
  assert seen == []


def test_torch_init_draws_torchs_defaults():
  fan_in, out = 512, 1024
  variables = {"params": {"Dense_0": {"kernel": jnp.zeros((fan_in, out)),
                                      "bias": jnp.zeros((out,))},
                          "Conv_0": {"kernel": jnp.zeros((3, 3, 64, 128))},
                          "BatchNorm_0": {"scale": jnp.ones(8), "bias": jnp.zeros(8)}},
               "batch_stats": {"BatchNorm_0": {"mean": jnp.arange(8.0), "var": jnp.ones(8)}}}
  new = models.torch_init(variables, jax.random.key(0))
  kernel, bias = new["params"]["Dense_0"]["kernel"], new["params"]["Dense_0"]["bias"]
  np.testing.assert_allclose(float(jnp.std(kernel)), 1 / np.sqrt(3 * fan_in), rtol=0.1)
  assert float(jnp.abs(kernel).max()) <= 1 / np.sqrt(fan_in)
  assert float(jnp.abs(bias).max()) <= 1 / np.sqrt(fan_in) and float(jnp.std(bias)) > 0
  assert float(jnp.abs(new["params"]["Conv_0"]["kernel"]).max()) <= 1 / np.sqrt(9 * 64)
  chex.assert_trees_all_equal(new["params"]["BatchNorm_0"], variables["params"]["BatchNorm_0"])
  chex.assert_trees_all_equal(new["batch_stats"], variables["batch_stats"])
  chex.assert_trees_all_equal(models.torch_init(variables, jax.random.key(0)), new)
  assert not np.allclose(models.torch_init(variables, jax.random.key(1))["params"]["Dense_0"]
                         ["kernel"], kernel)
  # torchvision's convolutions: N(0, 2 / fan_out), fan_out = H * W * O.
  conv = models.torch_init(variables, jax.random.key(0), conv="fan_out")["params"]["Conv_0"]
  np.testing.assert_allclose(float(jnp.std(conv["kernel"])), np.sqrt(2 / (9 * 128)), rtol=0.05)
  with pytest.raises(UserError, match="convolution initialisation"):
    models.torch_init(variables, jax.random.key(0), conv="normal")


def test_initialize_flax_is_init_linen_and_torch_redraws_the_lstm():
  model, x, _ = _lstm_baseline()
  key = jax.random.key(3, impl="unsafe_rbg")
  flax_vars = init_linen(model, key, x)
  chex.assert_trees_all_equal(models.initialize(model, key, x), flax_vars)
  torch_vars = models.initialize(model, key, x, init="torch")
  chex.assert_trees_all_equal_shapes_and_dtypes(torch_vars, flax_vars)
  cell = torch_vars["params"]["OptimizedLSTMCell_0"]
  bound = 1 / np.sqrt(CASES["lstm"][0]["hidden"])
  for gate, params in cell.items():
    assert float(jnp.abs(params["kernel"]).max()) <= bound, gate
    if "bias" in params:  # torch's b_ih + b_hh in one
      assert 0 < float(jnp.abs(params["bias"]).max()) <= 2 * bound, gate
  assert models.INITS == ("flax", "torch")
  with pytest.raises(UserError, match="unknown initialisation"):
    models.initialize(model, key, x, init="kaiming")
