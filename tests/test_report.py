import json
import os

import chex
import jax
import ml_collections
import numpy as np
import pytest
import scipy.stats

from jax_unlearn import losses, metrics, parallel, train
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


def _predict(apply_fn, variables, x):
  return np.asarray(apply_fn(variables, x, train=False)[0])


FAST = {"mia_samples": 40, "ain_max_epochs": 2, "ain_batch_size": 32, "ain_lr": 0.01}


@pytest.fixture(scope="module")
def evaluation():
  """Every built-in metric on three models, recording which model train.predict saw on which
  split."""
  data = _data()
  apply_fn, models = _models(data.train_x)
  before = jax.device_get(models)
  predicted, real = [], train.predict

  def recording(predict_fn, variables, x, **kw):
    predicted.extend((name, split) for name, v in models.items() if v is variables
                     for split, rows in (("train", data.train_x), ("test", data.test_x))
                     if x is rows)
    return real(predict_fn, variables, x, **kw)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(train, "predict", recording)
    ev = evaluate_models(apply_fn, models, data, task_loss=losses.l1, error="mae", config=FAST,
                         seed=3)
  chex.assert_trees_all_equal(jax.device_get(models), before)  # metrics never modify models
  return data, apply_fn, models, ev, predicted


def test_results_have_every_key_and_match_direct_computation(evaluation):
  data, apply_fn, models, ev, _ = evaluation
  assert list(ev.results) == list(models) == list(ev.seconds) == list(ev.predictions)
  json.dumps({"models": ev.results, "info": ev.info}, allow_nan=False)  # results.json-ready
  f, ft = data.forget_train, data.forget_test
  retrained_pred = _predict(apply_fn, models["retrained"], data.train_x)
  for name, res in ev.results.items():
    assert list(res)[:len(REQUIRED_KEYS)] == list(REQUIRED_KEYS), name
    pred = _predict(apply_fn, models[name], data.train_x)
    test_pred = _predict(apply_fn, models[name], data.test_x)
    np.testing.assert_allclose(res["forget_train_error"], np.abs(pred - data.train_y)[f].mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(res["retain_train_error"], np.abs(pred - data.train_y)[~f].mean(),
                               rtol=1e-5)
    np.testing.assert_allclose(res["forget_test_error"],
                               np.abs(test_pred - data.test_y)[ft].mean(), rtol=1e-5)
    np.testing.assert_allclose(res["wasserstein_to_retrained"],
                               scipy.stats.wasserstein_distance(pred[f, 0], retrained_pred[f, 0]),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ev.predictions[name], pred[f], rtol=1e-6)
    for key in ("mia_forget", "mia_attack_accuracy", "mia_attack_auc"):
      assert 0.0 <= res[key] <= 1.0
    assert res["ain_steps"] >= 1 and isinstance(res["ain_hit_cap"], bool)
    assert ev.seconds[name] > 0
  retrained = ev.results["retrained"]
  assert retrained["wasserstein_to_retrained"] == 0.0
  assert retrained["activation_distance_to_retrained"] == 0.0
  assert ev.results["shrunk"]["activation_distance_to_retrained"] > 0.0
  assert ev.info["activation_layer"] == "layer1"
  assert ev.info["ain_target_error"] == pytest.approx(1.05 * ev.info["ain_original_error"])


def test_every_model_is_predicted_once_per_split(evaluation):
  *_, models, _, predicted = evaluation
  assert sorted(predicted) == sorted((n, s) for n in models for s in ("train", "test"))


def test_ain_is_finished_over_all_models_relative_to_the_retrained(evaluation):
  ev = evaluation[3]
  steps = {name: res["ain_steps"] for name, res in ev.results.items()}
  assert ev.results["retrained"]["ain"] == 1.0
  for name, res in ev.results.items():
    assert res["ain"] == steps[name] / steps["retrained"], name


def test_evaluation_is_deterministic_and_the_same_on_four_devices(evaluation):
  data, apply_fn, models, ev, _ = evaluation
  again = evaluate_models(apply_fn, models, data, task_loss=losses.l1, error="mae", config=FAST,
                          seed=3, dp=parallel.DataParallel.create(4))
  for name, res in ev.results.items():
    assert list(again.results[name]) == list(res)
    for key, value in res.items():
      if key.startswith("mia") or isinstance(value, (bool, int)):
        assert again.results[name][key] == value, (name, key)
      else:
        np.testing.assert_allclose(again.results[name][key], value, rtol=2e-5, atol=1e-6)


def test_one_prediction_program_serves_every_model_and_split():
  data = _data()
  apply_fn, models = _models(data.train_x)
  # 90 train and 45 test rows in batches of 32: one padded shape, so one trace in all.
  traced = chex.assert_max_traces(apply_fn, n=1)
  ev = evaluate_models(traced, models, data, task_loss=losses.l1, error="mse",
                       config={"which": "errors", "predict_batch_size": 32})
  assert ev.results["shrunk"]["retain_test_error"] > 0


def test_empty_forget_test_cohort_and_metric_subset_give_none():
  data = _data(forget_test=False)
  apply_fn, models = _models(data.train_x)
  config = ml_collections.ConfigDict({"which": ["errors"], "mia_samples": 40})
  ev = evaluate_models(apply_fn, models, data, task_loss=losses.l1, error="rmse", config=config)
  assert ev.info["which"] == ["errors"]
  for res in ev.results.values():
    assert res["forget_test_error"] is None and res["forget_test_r2"] is None
    assert res["retain_test_error"] is not None
    assert res["mia_forget"] is None and res["ain"] is None
    assert "ain_steps" not in res and "activation_distance_to_retrained" not in res


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
  pred = _predict(apply_fn, variables, data.train_x)  # [N, 1, 3]
  f = data.forget_train
  res = ev.results["original"]
  np.testing.assert_allclose(res["forget_train_median_mae"],
                             np.abs(pred[f, :, 1] - data.train_y[f]).mean(), rtol=1e-5)
  np.testing.assert_allclose(res["forget_train_error"],
                             np.asarray(losses.quantile(pred[f], data.train_y[f], q)).mean(),
                             rtol=1e-5)
  assert ev.predictions["original"].shape == (f.sum(), 1)


def test_defaults_list_every_setting_of_the_evaluator_and_the_builtin_metrics():
  assert metrics.defaults() == {
      "which": ("errors", "wasserstein", "activation_distance", "mia", "ain"),
      "predict_batch_size": 1024, "activation_layer": None, "mia_samples": 2000,
      "mia_holdout": 0.3, "mia_members": "retain", "mia_target_samples": None,
      "ain_alpha": 0.05, "ain_lr": 1e-3, "ain_batch_size": 64, "ain_max_epochs": 10,
      "ain_check_every": 1, "ain_steps_per_call": 4}


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
  for bad, named in [({"mia_samples": 1}, "mia_samples"), ({"mia_holdout": 1.0}, "held-out"),
                     ({"ain_batch_size": 0}, "ain_batch_size"), ({"ain_lr": 0.0}, "ain_lr"),
                     ({"ain_alpha": -0.1}, "ain_alpha"), ({"ain_check_every": 0}, "check_every"),
                     ({"predict_batch_size": 2.5}, "predict_batch_size")]:
    with pytest.raises(UserError, match=named):  # checked even where the metric is not run
      evaluate_models(apply_fn, models, data, config={"which": ["errors"], **bad}, **kw)
  with pytest.raises(UserError, match="did you mean 'layer1'"):
    evaluate_models(apply_fn, models, data,
                    config={"which": ["activation_distance"], "activation_layer": "layer"}, **kw)
  with pytest.raises(UserError, match="forget set is empty"):
    EvalData(data.train_x, data.train_y, np.zeros(90, bool), data.test_x, data.test_y,
             data.forget_test, data.val_x, data.val_y, data.forget_val)
  with pytest.raises(UserError, match="boolean"):
    EvalData(data.train_x, data.train_y, data.forget_train.astype(int), data.test_x, data.test_y,
             data.forget_test, data.val_x, data.val_y, data.forget_val)


# A metric of one's own


class ForgetMean(metrics.Metric):
  """Scaled mean prediction on the forget rows; `finish` ranks every model by it."""
  name = "forget_mean"
  defaults = {"forget_mean_scale": 1.0}
  keys = ("forget_mean", "forget_mean_rank")
  required = ("forget_mean",)
  columns = (metrics.Column("forget_mean", "forget mean", metrics.RETRAINED, metrics.DETAIL),)

  def check(self, settings):
    if settings["forget_mean_scale"] <= 0:
      raise UserError("forget_mean_scale must be positive.")

  def prepare(self, run):
    return run.settings["forget_mean_scale"]

  def evaluate(self, scale, model):
    return {"forget_mean": scale * float(np.mean(model.forget_pred))}

  def finish(self, scale, models, results):
    # From the per-sample predictions every model keeps until the end.
    means = {n: m.pred_train[m.data.forget_train].mean() for n, m in models.items()}
    order = sorted(means, key=means.get)
    return {n: {"forget_mean_rank": order.index(n)} for n in results}


@pytest.fixture
def forget_mean():
  metric = metrics.register(ForgetMean())
  yield metric
  metrics.unregister(metric.name)


def test_a_registered_metric_joins_settings_results_and_tables(forget_mean):
  defaults = metrics.defaults()
  assert defaults["forget_mean_scale"] == 1.0 and defaults["which"][-1] == "forget_mean"
  data = _data()
  apply_fn, models = _models(data.train_x)
  ev = evaluate_models(apply_fn, models, data, task_loss=losses.l1, error="mae",
                       config={"which": ["errors", "forget_mean"], "forget_mean_scale": 2.0})
  f = data.forget_train
  means = {n: _predict(apply_fn, v, data.train_x)[f].mean() for n, v in models.items()}
  for name, res in ev.results.items():
    np.testing.assert_allclose(res["forget_mean"], 2.0 * means[name], rtol=1e-5)
    assert res["forget_mean_rank"] == sorted(means, key=means.get).index(name)
    assert res["mia_forget"] is None  # not selected
  table = write_markdown(ev.results, columns=("forget_train_error", "forget_mean"))
  lines = table.splitlines()
  assert lines[0] == "| model | forget train error ≈ retrained | forget mean ≈ retrained |"
  assert lines[2] == (f"| original | {format_value(ev.results['original']['forget_train_error'])}"
                      f" | {format_value(2.0 * means['original'])} |")
  assert write_markdown(ev.results).splitlines()[0].endswith(
      "| MIA attack AUC ≈ retrained | forget mean ≈ retrained |")  # a DETAIL column, last
  unselected = evaluate_models(apply_fn, models, data, task_loss=losses.l1, error="mae",
                               config={"which": "errors"})
  assert all(res["forget_mean"] is None for res in unselected.results.values())
  with pytest.raises(UserError, match="forget_mean_scale"):
    evaluate_models(apply_fn, models, data, task_loss=losses.l1, error="mae",
                    config={"forget_mean_scale": -1.0})


def test_registering_checks_names_and_declared_keys(forget_mean):
  with pytest.raises(UserError, match="already registered"):
    metrics.register(ForgetMean())
  clash = type("Clash", (metrics.Metric,), {"name": "clash", "defaults": {"mia_samples": 3}})
  with pytest.raises(UserError, match="mia_samples"):
    metrics.register(clash())
  unlisted = type("Unlisted", (metrics.Metric,), {"name": "unlisted", "required": ("x",)})
  with pytest.raises(UserError, match="does not report"):
    metrics.register(unlisted())
  assert "clash" not in metrics.names() and "unlisted" not in metrics.names()

  class Sloppy(ForgetMean):
    name, defaults, keys, required, columns = "sloppy", {}, (), (), ()

    def prepare(self, run):
      return 1.0

  metrics.register(Sloppy())
  try:
    data = _data()
    apply_fn, models = _models(data.train_x)
    with pytest.raises(ValueError, match="undeclared keys"):
      evaluate_models(apply_fn, models, data, task_loss=losses.l1, error="mae",
                      config={"which": ["sloppy"]})
  finally:
    metrics.unregister("sloppy")


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
  data, _, _, ev, _ = evaluation
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
