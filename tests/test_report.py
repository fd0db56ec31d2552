import json
import os

import chex
import jax
import ml_collections
import numpy as np
import pytest
import scipy.stats

from jax_unlearn import losses, parallel, train
from jax_unlearn.errors import UserError
from jax_unlearn.metrics import (REQUIRED_KEYS, EvalData, Evaluation, evaluate_models,
                                 format_value, plot_all, write_markdown)
from jax_unlearn.models import MLP, from_linen, init_linen


def _data(forget_test=True):
  r = np.random.default_rng(0)

  def split(n):
    x = r.normal(size=(n, 3)).astype(np.float32)
    y = (np.sin(x[:, :1]) + x[:, 1:2]).astype(np.float32)
    return x, y, y[:, 0] < -0.5

  (tx, ty, tf), (sx, sy, sf), (vx, vy, vf) = split(90), split(45), split(30)
  if not forget_test:
    sf = np.zeros_like(sf)
  return EvalData(tx, ty, tf, sx, sy, sf, vx, vy, vf)


def _models(x):
  model = MLP(hidden=(8,))
  init = lambda s: init_linen(model, jax.random.key(s), x[:2])
  original = init(1)
  return from_linen(model), {
      "original": original,
      "retrained": init(2),
      "shrunk": jax.tree_util.tree_map(lambda a: 0.5 * a, original),
  }


FAST = {"mia_samples": 40, "ain_max_epochs": 2, "ain_batch_size": 32, "ain_lr": 0.01}


@pytest.fixture(scope="module")
def evaluation():
  data = _data()
  apply_fn, models = _models(data.train_x)
  before = jax.device_get(models)
  ev = evaluate_models(apply_fn, models, data, task_loss=losses.l1, error="mae", config=FAST,
                       seed=3)
  chex.assert_trees_all_equal(jax.device_get(models), before)  # metrics never modify models
  return data, apply_fn, models, ev


def test_results_have_every_key_and_match_direct_computation(evaluation):
  data, apply_fn, models, ev = evaluation
  assert list(ev.results) == list(models) == list(ev.seconds) == list(ev.predictions)
  json.dumps({"models": ev.results, "info": ev.info}, allow_nan=False)  # results.json-ready
  f = data.forget_train
  for name, res in ev.results.items():
    assert set(REQUIRED_KEYS) <= set(res), name
    pred = train.predict(apply_fn, models[name], data.train_x)
    test_pred = train.predict(apply_fn, models[name], data.test_x)
    np.testing.assert_allclose(res["forget_train_error"], np.abs(pred - data.train_y)[f].mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(res["retain_train_error"], np.abs(pred - data.train_y)[~f].mean(),
                               rtol=1e-5)
    ft = data.forget_test
    np.testing.assert_allclose(res["forget_test_error"],
                               np.abs(test_pred - data.test_y)[ft].mean(), rtol=1e-5)
    retrained_pred = train.predict(apply_fn, models["retrained"], data.train_x)
    np.testing.assert_allclose(res["wasserstein_to_retrained"],
                               scipy.stats.wasserstein_distance(pred[f, 0], retrained_pred[f, 0]),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ev.predictions[name], pred[f], rtol=1e-6)
    for key in ("mia_forget", "mia_attack_accuracy", "mia_attack_auc"):
      assert 0.0 <= res[key] <= 1.0
    assert res["ain_steps"] >= 1 and isinstance(res["ain_hit_cap"], bool)
    assert ev.seconds[name] > 0
  retrained = ev.results["retrained"]
  assert retrained["ain"] == 1.0
  assert retrained["wasserstein_to_retrained"] == 0.0
  assert retrained["activation_distance_to_retrained"] == 0.0
  shrunk = ev.results["shrunk"]
  assert shrunk["ain"] == shrunk["ain_steps"] / retrained["ain_steps"]
  assert ev.info["activation_layer"] == "layer1"
  assert ev.info["ain_target_error"] == pytest.approx(1.05 * ev.info["ain_original_error"])


def test_evaluation_is_deterministic_and_the_same_on_four_devices(evaluation):
  data, apply_fn, models, ev = evaluation
  again = evaluate_models(apply_fn, models, data, task_loss=losses.l1, error="mae", config=FAST,
                          seed=3, mesh=parallel.make_mesh(4))
  for name, res in ev.results.items():
    for key, value in res.items():
      if key.startswith("mia") or isinstance(value, (bool, int)):
        assert again.results[name][key] == value, (name, key)
      else:
        np.testing.assert_allclose(again.results[name][key], value, rtol=2e-5, atol=1e-6)


def test_empty_forget_test_cohort_and_metric_subset_give_none():
  data = _data(forget_test=False)
  apply_fn, models = _models(data.train_x)
  config = ml_collections.ConfigDict({"which": ["errors"], "mia_samples": 40})
  ev = evaluate_models(apply_fn, models, data, task_loss=losses.l1, error="rmse", config=config)
  for res in ev.results.values():
    assert res["forget_test_error"] is None and res["forget_test_r2"] is None
    assert res["retain_test_error"] is not None
    assert res["mia_forget"] is None and res["ain"] is None
    assert "ain_steps" not in res


def test_quantile_models_report_the_pinball_loss_and_the_median_mae():
  data = _data()
  model = MLP(hidden=(8,), out_dim=3)
  base = from_linen(model)

  def apply_fn(variables, x, *, train, rngs=None):
    pred, acts = base(variables, x, train=train, rngs=rngs)
    return pred[:, None, :], acts  # [B, D=1, Q=3]

  variables = init_linen(model, jax.random.key(0), data.train_x[:2])
  q = (0.1, 0.5, 0.9)
  ev = evaluate_models(apply_fn, {"original": variables, "retrained": variables}, data,
                       task_loss=lambda p, y: losses.quantile(p, y, q), error="quantile",
                       quantiles=q, config={"which": ("errors", "wasserstein")})
  pred = train.predict(apply_fn, variables, data.train_x)  # [N, 1, 3]
  f = data.forget_train
  res = ev.results["original"]
  np.testing.assert_allclose(res["forget_train_median_mae"],
                             np.abs(pred[f, :, 1] - data.train_y[f]).mean(), rtol=1e-5)
  np.testing.assert_allclose(res["forget_train_error"],
                             np.asarray(losses.quantile(pred[f], data.train_y[f], q)).mean(),
                             rtol=1e-5)
  assert ev.predictions["original"].shape == (f.sum(), 1)


def test_bad_inputs_name_the_problem():
  data = _data()
  apply_fn, models = _models(data.train_x)
  kw = {"task_loss": losses.l1, "error": "mae"}
  with pytest.raises(UserError, match="'retrained'"):
    evaluate_models(apply_fn, {"original": models["original"]}, data, **kw)
  with pytest.raises(UserError, match="did you mean 'mia'"):
    evaluate_models(apply_fn, models, data, config={"which": ["mai"]}, **kw)
  with pytest.raises(UserError, match="did you mean 'ain_alpha'"):
    evaluate_models(apply_fn, models, data, config={"ain_alpa": 0.1}, **kw)
  with pytest.raises(UserError, match="forget set is empty"):
    EvalData(data.train_x, data.train_y, np.zeros(90, bool), data.test_x, data.test_y,
             data.forget_test, data.val_x, data.val_y, data.forget_val)
  with pytest.raises(UserError, match="boolean"):
    EvalData(data.train_x, data.train_y, data.forget_train.astype(int), data.test_x, data.test_y,
             data.forget_test, data.val_x, data.val_y, data.forget_val)


RESULTS = {
    "original": {"retain_train_error": 1.23456, "forget_train_error": 0.5, "retain_test_error": 2,
                 "forget_test_error": None, "wasserstein_to_retrained": 0.000123456,
                 "mia_forget": 1.0, "ain": 0.25, "ain_hit_cap": False, "mia_attack_auc": 0.61},
    "retrained": {"retain_train_error": 1.2, "forget_train_error": 3.14159,
                  "retain_test_error": 2.5,
                  "forget_test_error": float("nan"), "wasserstein_to_retrained": 0.0,
                  "mia_forget": 0.125, "ain": 1.0, "ain_hit_cap": True, "mia_attack_auc": 0.55},
}
GOLDEN = """\
| model | retain train error ↓ | forget train error ≈ retrained | retain test error ↓ \
| forget test error ≈ retrained | Wasserstein to retrained ↓ | MIA forget ≈ retrained \
| AIN ≈ retrained | MIA attack AUC ≈ retrained |
|:--|--:|--:|--:|--:|--:|--:|--:|--:|
| original | 1.235 | 0.5 | 2 | n/a | 0.0001235 | 1 | 0.25 | 0.61 |
| retrained | 1.2 | 3.142 | 2.5 | nan | 0 | 0.125 | 1 (cap) | 0.55 |

↓ lower is better, ↑ higher is better, ≈ retrained: closer to the retrained model is better. \
AIN marked (cap) hit the relearning epoch cap (a lower bound).
"""


def test_markdown_matches_golden_and_is_written_atomically(tmp_path):
  path = tmp_path / "out" / "results.md"
  assert write_markdown(RESULTS) == GOLDEN
  assert write_markdown(RESULTS, str(path)) == GOLDEN
  assert path.read_text(encoding="utf-8") == GOLDEN
  assert os.listdir(path.parent) == ["results.md"]  # no temporary file left behind
  custom = write_markdown(RESULTS, columns=("retain_train_r2", "ain_hit_cap", "my_metric"))
  assert custom.splitlines()[0] == "| model | retain train R² ↑ | ain_hit_cap | my_metric |"
  assert custom.splitlines()[2] == "| original | n/a | no | n/a |"
  assert [format_value(v) for v in (None, True, 7, np.float32(2.0), 123456.0, -0.00012345)] == [
      "n/a", "yes", "7", "2", "1.235e+05", "-0.0001234"]


def test_plots_are_written_as_png_files(evaluation, tmp_path):
  data, _, _, ev = evaluation
  assert isinstance(ev, Evaluation)
  out = tmp_path / "plots"
  paths = plot_all(ev, data.train_y[data.forget_train], str(out))
  assert sorted(os.path.basename(p) for p in paths) == [
      "errors.png", "predictions.png", "relative_difference.png"]
  for p in paths:
    with open(p, "rb") as f:
      assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.getsize(p) > 1000
  assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in paths)
