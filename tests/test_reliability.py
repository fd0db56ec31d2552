"""Reliability promises: one step alike on 1, 3 and 4 devices, the NaN guard keeping the last
good checkpoint, no partial outputs, no pickle/eval/exec, and metric invariants on random inputs.

The soak of the demo, the demo alike on 1 and 4 devices, determinism and a failing rerun are in
test_pipeline.py; resume after a kill and every bad-input message in test_cli.py.
"""
import ast
import glob
import os

import chex
import jax
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from jax_unlearn import files, losses, parallel, train
from jax_unlearn.checkpoint import Checkpointer
from jax_unlearn.data import ArrayLoader
from jax_unlearn.metrics import membership_attack, wasserstein, wasserstein_1d
from jax_unlearn.models import AllCNN, MLP, from_linen, init_linen

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Multi-device consistency


def test_one_step_agrees_on_1_3_and_4_devices_with_a_batch_they_do_not_all_divide(rng):
  """30 rows: no padding on 1 and 3 devices, 2 masked padding rows on 4 (BatchNorm included)."""
  r = np.random.default_rng(0)
  x = r.normal(size=(30, 8, 8, 3)).astype(np.float32)
  y = r.normal(size=(30, 1)).astype(np.float32)
  model = AllCNN(width=0.05)
  apply_fn, variables = from_linen(model), init_linen(model, jax.random.key(1), x[:2])
  tx = train.make_optimizer(0.01)
  out = {}
  for n in (1, 3, 4):
    dp = parallel.DataParallel.create(n)
    batch = next(iter(ArrayLoader({"x": x, "y": y}, 30, seed=0, dp=dp)(0)))
    assert len(batch["x"]) == parallel.round_up(30, n)
    step = train.make_train_step(apply_fn, train.supervised_loss(losses.l1), tx, dp)
    state, metrics = step(train.create_state(variables, tx, dp), dp.put_batch(batch), rng)
    out[n] = jax.device_get((metrics["loss"], state.params, state.batch_stats))
  chex.assert_trees_all_close(out[1], out[3], rtol=1e-5, atol=1e-6)
  chex.assert_trees_all_close(out[1], out[4], rtol=1e-5, atol=1e-6)


# Numerical guard


def test_a_nan_mid_training_stops_and_keeps_the_last_good_checkpoint(tmp_path, linear_data):
  x, y = linear_data  # 96 rows: 3 batches an epoch
  model = MLP(hidden=(8,))
  apply_fn, variables = from_linen(model), init_linen(model, jax.random.key(0), x[:2])
  calls = []

  def poison_from_epoch_2(xb, _):
    calls.append(1)
    return xb * np.nan if len(calls) > 3 else xb

  def fit(directory, augment=None):
    return train.train_model(apply_fn, train.ensemble.one(variables),
                             train.supervised_loss(losses.mse), {"x": x, "y": y},
                             train.Recipe(epochs=3, batch_size=32, lr=0.01),
                             rng=jax.random.key(1)[None], seeds=[0], augment=augment,
                             stage=train.Stage("original", str(directory)))

  with pytest.raises(train.NonFiniteLossError, match=r"original: loss became nan at epoch 2, "
                     r"batch 1\. Lower the learning rate"):
    fit(tmp_path / "cut", poison_from_epoch_2)
  with Checkpointer(str(tmp_path / "cut")) as ck:
    assert ck.all_steps() == [3] and ck.read_meta()["epoch"] == 1  # epoch 1, nothing later
  resumed = fit(tmp_path / "cut", lambda xb, _: xb)  # the data fixed, the same command again
  full = fit(tmp_path / "full")
  assert resumed.resumed_from_epoch == 1
  chex.assert_trees_all_close(jax.device_get(resumed.variables), jax.device_get(full.variables),
                              rtol=1e-6)


# No partial outputs


def test_a_crash_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "results.json"
  path.write_text("good")

  def crash_midway(tmp):
    with open(tmp, "w") as f:
      f.write('{"trunc')
    raise OSError("disk full")

  with pytest.raises(OSError, match="disk full"):
    files.atomic_write(str(path), crash_midway)
  assert path.read_text() == "good"
  assert os.listdir(tmp_path) == ["results.json"]


# Security

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal",
                  "joblib"}
# The one exec: config_io._module runs the user's own config file (documented in README).
ALLOWED_EXEC_MODULE = {("jax_unlearn/config_io.py", "_module")}


def _violations(source: str, path: str) -> list[str]:
  """pickle, eval/exec, np.load without allow_pickle=False, checkpoint readers besides Orbax."""
  found = []
  tree = ast.parse(source)
  functions = {}
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
      for child in ast.walk(node):
        functions.setdefault(id(child), node.name)
  for node in ast.walk(tree):
    where = f"{path}:{getattr(node, 'lineno', '?')}"
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom)
                                              and node.module else [])
      for name in names:
        if name.split(".")[0] in PICKLE_MODULES or name.startswith("flax.training.checkpoints"):
          found.append(f"{where}: imports {name}")
    if not isinstance(node, ast.Call):
      continue
    func = node.func
    if isinstance(func, ast.Name) and func.id in ("eval", "exec", "compile", "__import__"):
      found.append(f"{where}: calls {func.id}")
    if isinstance(func, ast.Attribute):
      if func.attr in ("exec_module", "read_pickle", "msgpack_restore", "from_bytes") and (
          path, functions.get(id(node))) not in ALLOWED_EXEC_MODULE:
        found.append(f"{where}: calls {func.attr}")
      if func.attr == "load" and isinstance(func.value, ast.Name) and func.value.id in (
          "np", "numpy", "jnp", "torch"):
        safe = any(k.arg == "allow_pickle" and isinstance(k.value, ast.Constant)
                   and k.value.value is False for k in node.keywords)
        if not safe:
          found.append(f"{where}: {func.value.id}.load without allow_pickle=False")
  return found


def test_the_scanner_finds_each_kind_of_violation():
  bad = ("import pickle\nfrom dill import loads\nimport numpy as np\n"
         "def f(p, spec):\n  eval(p)\n  exec(p)\n  np.load(p)\n  np.load(p, allow_pickle=True)\n"
         "  spec.loader.exec_module(p)\n")
  assert len(_violations(bad, "x.py")) == 7
  good = "import numpy as np\ndef f(p):\n  return np.load(p, allow_pickle=False)\n"
  assert _violations(good, "x.py") == []


def test_no_pickle_eval_or_exec_and_npz_without_pickle():
  sources = sorted(glob.glob(os.path.join(ROOT, "jax_unlearn", "**", "*.py"), recursive=True)
                   + glob.glob(os.path.join(ROOT, "experiments", "**", "*.py"), recursive=True))
  assert len(sources) > 30
  found = []
  for path in sources:
    with open(path, encoding="utf-8") as f:
      found += _violations(f.read(), os.path.relpath(path, ROOT))
  assert found == []
  readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
  assert "Config files are Python that `jax-unlearn` executes" in readme
  assert "allow_pickle=False" in readme


# Properties of the metrics on random inputs (forget-mask properties: test_forget.py)

_SAMPLE = st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None)
@given(u=_SAMPLE, v=_SAMPLE, w=_SAMPLE, shift=st.floats(-1e3, 1e3), scale=st.floats(-10, 10))
def test_wasserstein_is_a_shift_equivariant_metric(u, v, w, shift, scale):
  u, v, w = map(np.asarray, (u, v, w))
  d = wasserstein_1d(u, v)
  tol = 1e-9 * (1.0 + abs(shift) + np.abs(np.concatenate([u, v, w])).max()) * (1 + abs(scale))
  assert d >= 0.0 and wasserstein_1d(u, u) == 0.0
  assert wasserstein_1d(v, u) == pytest.approx(d, abs=tol)  # symmetric
  assert wasserstein_1d(u + shift, v + shift) == pytest.approx(d, abs=tol)  # shift-invariant
  assert wasserstein_1d(u + shift, u) == pytest.approx(abs(shift), abs=tol)  # moves by |shift|
  assert wasserstein_1d(scale * u, scale * v) == pytest.approx(abs(scale) * d, abs=tol)
  assert d <= wasserstein_1d(u, w) + wasserstein_1d(w, v) + tol  # triangle inequality
  two = np.stack([u, u + shift], axis=1), np.stack([v, v + shift], axis=1)
  assert wasserstein(*two) == pytest.approx(d, abs=tol)  # the mean over outputs


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 40), m=st.integers(2, 40),
       k=st.integers(1, 30), spread=st.floats(0.01, 100.0))
def test_membership_attack_scores_are_fractions(seed, n, m, k, spread):
  r = np.random.default_rng(seed)
  member, nonmember = r.exponential(spread, n), r.exponential(spread, m) * r.uniform(0.5, 2.0)
  target = r.exponential(spread, k)
  scores = membership_attack(member, nonmember, target, samples=30, seed=seed)
  assert all(0.0 <= v <= 1.0 for v in scores.values())
  assert scores["mia_forget"] * k == pytest.approx(round(scores["mia_forget"] * k))  # i / k
