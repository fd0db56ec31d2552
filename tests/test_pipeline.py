"""Every experiment config end to end at smoke size, offline, on the real code paths."""
import glob
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow_datasets as tfds

import fakes
from jax_unlearn import config_io, pipeline
from jax_unlearn.metrics import REQUIRED_KEYS

MODELS = ("original", "retrained", "finetune", "gaussian", "blindspot")


def load(name, **overrides):
  c = config_io.load_config(name)
  c.smoke = True
  c.seeds = 1  # one model per stage (tests/test_seeds.py runs ensembles)
  for key, value in overrides.items():
    config_io.apply_override(c, key, value)
  return c


def check_outputs(workdir, results):
  on_disk = json.load(open(os.path.join(workdir, "results.json")))
  assert on_disk["models"] == results["models"]
  assert set(results["models"]) == set(MODELS)
  for name, m in results["models"].items():
    for key in REQUIRED_KEYS:
      assert key in m, (name, key)
    for key in ("retain_train_error", "forget_train_error", "retain_test_error",
                "wasserstein_to_retrained", "mia_forget", "ain"):
      assert isinstance(m[key], float) and np.isfinite(m[key]), (name, key, m[key])
  aux = results["auxiliary"]["blindspot_model"]  # the partially trained model, evaluated too
  assert set(results["auxiliary"]) == {"blindspot_model"}
  assert all(np.isfinite(aux[k]) for k in ("retain_test_error", "wasserstein_to_retrained"))
  assert "ain" not in aux and "mia_forget" not in aux
  assert results["models"]["retrained"]["ain"] == 1.0
  assert results["models"]["retrained"]["wasserstein_to_retrained"] == 0.0
  n = results["n"]
  assert n["retain"] + n["forget"] == n["train"] and n["forget"] > 0 and n["retain"] > 0
  assert set(results["seconds"]) >= set(MODELS) | {"metrics", "data", "total"}
  table = open(os.path.join(workdir, "results.md")).read()
  assert all(f"| {m} |" in table for m in MODELS + ("blindspot_model",))
  assert len(glob.glob(os.path.join(workdir, "plots", "*.png"))) >= 3
  for stage in MODELS:
    assert os.path.isdir(os.path.join(workdir, "checkpoints", results["config"]["model"]["name"],
                                      stage))


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("demo"))
  return workdir, pipeline.run_experiment(load("demo"), workdir, quiet=True)


def test_demo_writes_every_output(demo_run):
  check_outputs(*demo_run)


def test_rerun_reuses_finished_stages_with_identical_results(demo_run):
  workdir, first = demo_run
  again = pipeline.run_experiment(load("demo"), workdir, quiet=True)
  assert again["models"] == first["models"]
  assert first["reused"] == [] and sorted(again["reused"]) == sorted(MODELS)
  log = open(os.path.join(workdir, "log.txt")).read()
  assert log.count("reused checkpoint") >= 1


def test_a_rerun_recomputes_exactly_the_stages_whose_settings_changed(demo_run, tmp_path):
  workdir, first = demo_run
  shutil.copytree(workdir, tmp_path / "w")
  cheap = {"metrics.which": "['errors']", "plots": "False"}  # metrics do not enter fingerprints
  beta = pipeline.run_experiment(load("demo", **{"methods.blindspot.beta": "0.0", **cheap}),
                                 str(tmp_path / "w"), quiet=True)
  assert sorted(beta["reused"]) == ["finetune", "gaussian", "original", "retrained"]
  assert beta["models"]["blindspot"]["retain_test_error"] != \
      first["models"]["blindspot"]["retain_test_error"]
  assert beta["models"]["finetune"]["retain_test_error"] == \
      first["models"]["finetune"]["retain_test_error"]
  log = open(tmp_path / "w" / "log.txt").read()
  assert "blindspot: recomputing, its settings changed (settings.beta: 50.0 -> 0.0)" in log
  lr = pipeline.run_experiment(load("demo", **{"train.lr": "0.02", **cheap}),
                               str(tmp_path / "w"), quiet=True)
  assert lr["reused"] == []
  assert "original: recomputing, its settings changed (recipe.lr: 0.01 -> 0.02)" in \
      open(tmp_path / "w" / "log.txt").read()


def test_same_seed_same_numbers_other_seed_other_numbers(demo_run, tmp_path):
  _, first = demo_run
  same = pipeline.run_experiment(load("demo"), str(tmp_path / "same"), quiet=True)
  assert same["models"] == first["models"]  # bitwise, including MIA's SVM and AIN
  other = pipeline.run_experiment(load("demo", seed="1"), str(tmp_path / "other"), quiet=True)
  assert other["models"]["blindspot"] != first["models"]["blindspot"]


OFFLINE = ["rotdigits_allcnn", "textpairs_lstm", "taylor_tft", "diabetes_mlp"]


@pytest.mark.parametrize("name", OFFLINE)
def test_offline_configs(name, tmp_path):
  results = pipeline.run_experiment(load(name), str(tmp_path), quiet=True)
  check_outputs(str(tmp_path), results)
  if name == "textpairs_lstm":  # an offline run says which word vectors it used
    assert "GloVe 6B 50-d" in results["dataset"]["label"]
    assert "GloVe 6B 50-d" in open(tmp_path / "results.md").read()


@pytest.mark.parametrize("name", ["agedb_allcnn", "agedb_resnet18", "agedb_mobilenet",
                                  "imdbwiki_resnet18"])
def test_face_configs_on_a_generated_manual_directory(name, tmp_path):
  root = tmp_path / "faces"
  csv_name = "imdb_wiki.csv" if name.startswith("imdbwiki") else "agedb.csv"
  fakes.write_faces(root, fakes.agedb_rows(120), csv_name)
  c = load(name, **{"data.kwargs.path": str(root), "data.kwargs.data_dir": str(tmp_path / "tfds"),
                    "data.kwargs.image_size": "16"})
  results = pipeline.run_experiment(c, str(tmp_path / "run"), quiet=True)
  check_outputs(str(tmp_path / "run"), results)
  table = open(tmp_path / "run" / "results.md").read()
  # The paper's numbers stand beside a run of the experiment it published them for.
  assert ("## Published" in table) == (name == "agedb_allcnn")
  if name == "agedb_allcnn":
    assert "| blindspot | 9.98 | 21.63 | 1.15 |" in table


@pytest.mark.parametrize("name", ["electricity_tft", "electricity_tft_window"])
def test_electricity_configs_on_a_generated_file(name, tmp_path):
  path = fakes.write_electricity(tmp_path / "LD2011_2014.txt", "2014-02-20 00:15", 45 * 96, 3)
  c = load(name, **{"data.kwargs.path": path, "data.kwargs.start": "2014-02-21",
                    "data.kwargs.val_start": "2014-03-25", "data.kwargs.test_start": "2014-03-30",
                    "data.kwargs.end": "2014-04-05"})
  if name.endswith("window"):  # hours from the file's first hour: 2014-03-01 to 2014-03-11
    config_io.apply_override(c, "forget.start", "216")
    config_io.apply_override(c, "forget.end", "456")
  results = pipeline.run_experiment(c, str(tmp_path / "run"), quiet=True)
  check_outputs(str(tmp_path / "run"), results)


def test_stsb_config_on_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=120, data_dir=str(tmp_path / "tfds")):
    # Mock scores are uniform in [0, 1): forget the lower half instead of scores < 2.
    c = load("stsb_lstm", **{"forget.high": "0.5"})
    results = pipeline.run_experiment(c, str(tmp_path / "run"), quiet=True)
  check_outputs(str(tmp_path / "run"), results)


def test_user_npz(tmp_path):
  r = np.random.default_rng(0)
  x = r.normal(size=(300, 5)).astype(np.float32)
  y = x @ r.normal(size=(5, 1)).astype(np.float32)
  split = r.choice(["train", "val", "test"], 300, p=[0.6, 0.2, 0.2])
  np.savez(tmp_path / "mine.npz", x=x, y=y, split=split)
  c = load("npz_mlp", **{"data.kwargs.path": str(tmp_path / "mine.npz")})
  results = pipeline.run_experiment(c, str(tmp_path / "run"), quiet=True)
  check_outputs(str(tmp_path / "run"), results)


def test_model_init_switch_reaches_the_models(tmp_path):
  """`model.init=torch` draws every stage's fresh variables by PyTorch's rules."""
  import jax
  from jax_unlearn import models
  c = pipeline.prepare_config(load("diabetes_mlp"), [("model.init", "torch")])
  e = pipeline.load_experiment(c, str(tmp_path), quiet=True)
  kernel = e.init_fn(jax.random.key(0))["params"]["Dense_0"]["kernel"]  # [F, 64]
  bound = 1 / np.sqrt(kernel.shape[0])
  assert float(np.abs(kernel).max()) <= bound and e.identity["model"]["init"] == "torch"
  module = models.get_model("mlp", out_dim=e.ds.train.y.shape[1], **c.model.kwargs.to_dict())
  flax = models.initialize(module, jax.random.key(0), e.ds.train.x[:2], init="flax")
  assert not np.allclose(kernel, flax["params"]["Dense_0"]["kernel"])
