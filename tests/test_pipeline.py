"""Every experiment config end to end at smoke size, offline, on the real code paths; the demo
run back to back (a soak: no memory growth, no compilation after the first run), rerun, and run
on 1 and 4 devices."""
import ctypes
import dataclasses
import gc
import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

import fakes
from jax_unlearn import config_io, experiment, pipeline
from jax_unlearn.metrics import REQUIRED_KEYS

MODELS = ("original", "retrained", "finetune", "gaussian", "blindspot")


load = fakes.smoke_config


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


# Runs of the demo pipeline (smoke) back to back in one process, as a notebook user would: the
# first (`demo_first`) is read by every demo test, the soak adds the others.
SOAK_RUNS = 3


def _rss_mb() -> float:
  """Resident memory now, after freed heap is returned to the system (malloc_trim)."""
  ctypes.CDLL("libc.so.6").malloc_trim(0)
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclasses.dataclass
class Run:
  workdir: str
  results: dict
  rss_mb: float
  live_arrays: int


def _demo(workdir) -> Run:
  results = pipeline.run_experiment(load("demo"), str(workdir), quiet=True)
  gc.collect()
  return Run(str(workdir), results, _rss_mb(), len(jax.live_arrays()))


@pytest.fixture(scope="module")
def demo_first(tmp_path_factory) -> Run:
  return _demo(tmp_path_factory.mktemp("demo"))


@pytest.fixture
def demo_run(demo_first):
  """(workdir, results) of the first demo run."""
  return demo_first.workdir, demo_first.results


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


def test_another_seed_gives_other_numbers(tmp_path):
  """(The same seed gives the same numbers, bit for bit: the soak below.)"""
  a = pipeline.run_experiment(load("diabetes_mlp"), str(tmp_path / "a"), quiet=True)
  b = pipeline.run_experiment(load("diabetes_mlp", seed="1"), str(tmp_path / "b"), quiet=True)
  assert a["models"]["blindspot"] != b["models"]["blindspot"]


# Growth allowed from the second run to the last. The first run also loads what is imported
# lazily (plots, TensorBoard's writer, SciPy's statistics), so it is no baseline; freed heap is
# returned to the system before each reading, so the reading is what stays used.
RSS_MARGIN_MB = 64


def _outputs(workdir):
  """Bytes of every output file (results, report, config, plots)."""
  paths = glob.glob(os.path.join(workdir, "*.*")) + glob.glob(os.path.join(workdir, "plots", "*"))
  return {p: open(p, "rb").read() for p in paths if not p.endswith("log.txt")}


def test_soak_no_memory_growth_and_no_compilation_after_the_first_run(demo_first, tmp_path):
  """The demo again in fresh workdirs: the same numbers, bit for bit (MIA's SVM and AIN too),
  nothing compiled, no device buffer kept, no memory growth."""
  later = [_demo(tmp_path / f"again{i}") for i in range(SOAK_RUNS - 1)]
  first, demo_runs = demo_first, [demo_first, *later]
  print("\nsoak: " + "; ".join(
      f"run {i + 1}: rss {r.rss_mb:.0f} MB, {r.results['compiles']} compiles, "
      f"{r.results['compile_cache_hits']} persistent-cache hits, {r.live_arrays} live arrays, "
      f"{r.results['seconds']['total']:.1f}s" for i, r in enumerate(demo_runs)))
  for run in later:
    assert run.results["models"] == first.results["models"]
    assert run.results["compiles"] == 0  # every program is served from a cache
  # Other tests may run between the first run and these: growth is read among these.
  assert later[-1].live_arrays <= later[0].live_arrays  # no device buffer outlives its run
  assert later[-1].rss_mb <= later[0].rss_mb + RSS_MARGIN_MB


def test_the_demo_gives_the_same_numbers_on_1_and_4_devices(demo_first, tmp_path):
  """The demo cuts every batch into fixed blocks (`batch_shards`), so each stage trains bitwise
  the same on 1 and 4 devices; evaluation sums in another order per device count, so metrics
  are compared to 1e-4 relative (the membership attack's decisions exactly)."""
  four = demo_first
  assert four.results["config"]["batch_shards"] == 4 and len(four.results["devices"]) == 4
  one = pipeline.run_experiment(load("demo", devices="1"), str(tmp_path), quiet=True)
  assert len(one["devices"]) == 1
  assert one["models"].keys() == four.results["models"].keys()
  for name, metrics in four.results["models"].items():
    for key, value in metrics.items():
      other = one["models"][name][key]
      if key.startswith("mia_") or not isinstance(value, float):
        assert other == value, (name, key)
      else:
        assert other == pytest.approx(value, rel=1e-4, abs=1e-9), (name, key)


def test_a_failing_rerun_leaves_the_earlier_outputs_intact(demo_first, tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  shutil.copytree(demo_first.workdir, workdir)
  before = _outputs(workdir)
  assert {"results.json", "results.md", "config.json"} <= {os.path.basename(p) for p in before}

  def crash(*args, **kwargs):
    raise RuntimeError("evaluation crashed")

  monkeypatch.setattr(pipeline.metrics, "evaluate_models", crash)
  with pytest.raises(RuntimeError, match="evaluation crashed"):  # after every stage, another config
    pipeline.run_experiment(load("demo", **{"metrics.mia_samples": "50"}), workdir, quiet=True)
  assert _outputs(workdir) == before
  assert not glob.glob(os.path.join(workdir, "**", "*.tmp"), recursive=True)
  assert json.loads(before[os.path.join(workdir, "results.json")])["models"] == \
      demo_first.results["models"]


# The offline defaults' other configs (rotdigits_allcnn is the demo's; textpairs_lstm and
# taylor_tft run every method in test_compare.py, whose LSTM and TFT the STS-B and electricity
# tests below run with every metric).
def test_offline_tabular_config(tmp_path):
  results = pipeline.run_experiment(load("diabetes_mlp"), str(tmp_path), quiet=True)
  check_outputs(str(tmp_path), results)


def _faces(tmp_path, name):
  """`name` at smoke size on a generated manual directory of faces (16x16 images)."""
  root = tmp_path / "faces"
  csv_name = "imdb_wiki.csv" if name.startswith("imdbwiki") else "agedb.csv"
  fakes.write_faces(root, fakes.agedb_rows(120), csv_name)
  return load(name, **{"data.kwargs.path": str(root),
                       "data.kwargs.data_dir": str(tmp_path / "tfds"),
                       "data.kwargs.image_size": "16"})


@pytest.mark.slow
@pytest.mark.parametrize("name", ["agedb_allcnn", "imdbwiki_resnet18"])
def test_face_configs_on_a_generated_manual_directory(name, tmp_path):
  results = pipeline.run_experiment(_faces(tmp_path, name), str(tmp_path / "run"), quiet=True)
  check_outputs(str(tmp_path / "run"), results)
  table = open(tmp_path / "run" / "results.md").read()
  # The paper's numbers stand beside a run of the experiment it published them for.
  assert ("## Published" in table) == (name == "agedb_allcnn")
  if name == "agedb_allcnn":
    assert "| blindspot | 9.98 | 21.63 | 1.15 |" in table


@pytest.mark.parametrize("name", ["agedb_resnet18", "agedb_mobilenet"])
def test_other_face_models_take_the_faces(name, tmp_path):
  """The AgeDB profile with another model (the pipeline is the one above): the model is built
  and checked against the data (`experiment.load`), and one step of each trains."""
  from jax_unlearn import losses, train
  c = config_io.prepare_config(_faces(tmp_path, name))
  e = experiment.load(c, str(tmp_path / "run"), quiet=True)
  tx = train.make_optimizer(1e-3)
  step = train.make_train_step(e.apply_fn, train.supervised_loss(losses.l1), tx, e.dp)
  batch = e.dp.put_batch({"x": np.asarray(e.ds.train.x[:8]), "y": e.ds.train.y[:8],
                          "mask": np.ones(8, np.float32)})
  _, out = step(train.create_state(train.ensemble.member(e.fresh(0), 0), tx, e.dp), batch,
                jax.random.key(0))
  assert np.isfinite(float(out["loss"]))


@pytest.mark.slow
def test_electricity_configs_on_a_generated_file(tmp_path):
  """The forecasting window config end to end; the label-range config shares its data and
  model, and is checked up to its forget masks."""
  path = fakes.write_electricity(tmp_path / "LD2011_2014.txt", "2014-02-20 00:15", 45 * 96, 3)
  dates = {"data.kwargs.path": path, "data.kwargs.start": "2014-02-21",
           "data.kwargs.val_start": "2014-03-25", "data.kwargs.test_start": "2014-03-30",
           "data.kwargs.end": "2014-04-05"}
  by_label = experiment.load(config_io.prepare_config(load("electricity_tft", **dates)),
                             str(tmp_path / "label"), quiet=True)
  assert 0 < by_label.masks.counts()["forget"] < by_label.masks.counts()["train"]
  # Hours from the file's first hour: 2014-03-01 to 2014-03-11.
  c = load("electricity_tft_window", **dates, **{"forget.start": "216", "forget.end": "456"})
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
  from jax_unlearn import models
  c = config_io.prepare_config(load("diabetes_mlp"), [("model.init", "torch")])
  e = experiment.load(c, str(tmp_path), quiet=True)
  kernel = e.init_fn(jax.random.key(0))["params"]["Dense_0"]["kernel"]  # [F, 64]
  bound = 1 / np.sqrt(kernel.shape[0])
  assert float(np.abs(kernel).max()) <= bound and e.identity["model"]["init"] == "torch"
  module = models.get_model("mlp", out_dim=e.ds.train.y.shape[1], **c.model.kwargs.to_dict())
  flax = models.initialize(module, jax.random.key(0), e.ds.train.x[:2], init="flax")
  assert not np.allclose(kernel, flax["params"]["Dense_0"]["kernel"])
