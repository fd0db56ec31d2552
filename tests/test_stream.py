"""Streaming input: lazy record arrays read through grain give the in-memory path's batches."""
import json
import os

import chex
import jax
import numpy as np
import pytest
from jax_unlearn.bench.loader import write_jpeg_faces
from jax_unlearn import config_io, configs, losses, parallel, pipeline, train
from jax_unlearn.checkpoint import Checkpointer
from jax_unlearn.data import ArrayLoader, augment_for, load_dataset, records
from jax_unlearn.errors import UserError
from jax_unlearn.models import MLP, from_linen, init_linen
import fakes


@pytest.fixture(scope="module")
def faces224(tmp_path_factory):
  """A few hundred 224 px faces, prepared once: (in-memory dataset, streamed dataset)."""
  root = tmp_path_factory.mktemp("jpeg")
  write_jpeg_faces(str(root), 200)
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  memory = load_dataset("agedb", path=str(root), image_size=224, data_dir=data_dir,
                        stream=False)
  streamed = load_dataset("agedb", image_size=224, data_dir=data_dir, stream=True)
  return memory, streamed


def _equal_batches(a, b):
  a, b = list(a), list(b)
  assert len(a) == len(b) > 0
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for key in x:
      np.testing.assert_array_equal(x[key], y[key], err_msg=key)


def test_streamed_224px_jpegs_give_the_in_memory_batches(faces224):
  memory, streamed = faces224
  assert isinstance(memory.train.x, np.ndarray) and records.is_lazy(streamed.train.x)
  assert streamed.train.x.shape == memory.train.x.shape == (len(memory.train), 224, 224, 3)
  np.testing.assert_array_equal(streamed.train.y, memory.train.y)
  np.testing.assert_array_equal(streamed.train.group, memory.train.group)
  assert streamed.task.extra == memory.task.extra  # the same normalisation and padding value
  augment = augment_for(memory.task, "published")
  dp = parallel.DataParallel.create(4, shards=8)
  forget = (memory.train.y[:, 0] <= 30).astype(np.float32)
  loaders = [ArrayLoader({"x": ds.train.x, "y": ds.train.y, "forget": forget}, 48, seed=3, dp=dp,
                         augment=augment) for ds in (memory, streamed)]
  for epoch in (0, 1):
    _equal_batches(loaders[0](epoch), loaders[1](epoch))
  _equal_batches(loaders[0](1, start=2), loaders[1](1, start=2))  # a resumed epoch
  # Index sets over the source: the retain rows of the validation split, in order.
  keep = memory.val.y[:, 0] > 30
  assert records.is_lazy(streamed.val.x[keep])
  np.testing.assert_array_equal(np.asarray(streamed.val.x[keep]), memory.val.x[keep])
  # Predictions read the lazy rows in the same padded chunks.
  module = MLP(hidden=(4,))
  predict_fn = train.make_predict_fn(from_linen(module), dp)
  variables = init_linen(module, jax.random.key(0), memory.test.x[:2])
  np.testing.assert_array_equal(train.predict(predict_fn, variables, memory.test.x, batch_size=16),
                                train.predict(predict_fn, variables, streamed.test.x,
                                              batch_size=16))


def test_worker_processes_read_the_same_batches(faces224):
  memory, streamed = faces224
  x = streamed.train.x[np.arange(40)]
  x.workers = 2
  arrays = {"y": memory.train.y[:40]}
  memory_loader = ArrayLoader({"x": memory.train.x[:40], **arrays}, 16, seed=1)
  _equal_batches(memory_loader(0), ArrayLoader({"x": x, **arrays}, 16, seed=1)(0))


def _lazy(images, **kw):
  return records.RecordArray(fakes.CountingSource(images), "image", np.arange(len(images)),
                             images.shape[1:], mean=np.float32(100.0), std=np.float32(50.0),
                             source_id="counting", **kw)


def test_lazy_views_index_sets_and_fingerprints():
  images = np.random.default_rng(0).integers(0, 256, (30, 4, 4, 3), dtype=np.uint8)
  x = _lazy(images)
  decoded = (images.astype(np.float32) - 100.0) / 50.0
  np.testing.assert_array_equal(np.asarray(x), decoded)
  mask = np.arange(30) % 3 == 0
  view = x[mask][2:]
  assert records.is_lazy(view) and view.shape == (8, 4, 4, 3) and len(view) == 8
  np.testing.assert_array_equal(view.read(np.array([1, 0])), decoded[mask][2:][[1, 0]])
  np.testing.assert_array_equal(x[5], decoded[5])
  assert x.fingerprint == _lazy(images).fingerprint != view.fingerprint
  assert x.fingerprint != records.RecordArray(
      x.source, "image", x.index, x.row_shape, mean=np.float32(0.0), std=np.float32(50.0),
      source_id="counting").fingerprint
  with pytest.raises(IndexError):
    x[np.ones(3, bool)]


def test_a_loader_reads_only_the_rows_it_yields():
  images = np.random.default_rng(1).integers(0, 256, (50, 2, 2, 1), dtype=np.uint8)
  x = _lazy(images)
  loader = ArrayLoader({"x": x, "y": np.zeros((50, 1), np.float32)}, 16, seed=0)
  batches = list(loader(0, start=2))
  assert len(batches) == 2  # batches 3 and 4 of 4
  order = np.random.default_rng([0, 0]).permutation(50)
  assert sorted(x.source.read) == sorted(order[32:])


def test_streamed_training_resumes_mid_epoch_exactly(tmp_path):
  import signal

  images = np.random.default_rng(2).integers(0, 256, (96, 3, 1, 1), dtype=np.uint8)
  y = images.reshape(96, 3).astype(np.float32) @ np.array([[1.0], [-1.0], [0.5]], np.float32) / 50
  module = MLP(hidden=(8,))
  variables = init_linen(module, jax.random.key(0), np.zeros((2, 3, 1, 1), np.float32))

  def run(where, progress=None):
    return train.train_model(from_linen(module), train.ensemble.one(variables),
                             train.supervised_loss(losses.mse), {"x": _lazy(images), "y": y},
                             train.Recipe(epochs=3, batch_size=32, lr=0.01),
                             rng=jax.random.key(1)[None], seeds=[0],
                             stage=train.Stage(directory=str(tmp_path / where),
                                               progress=progress))

  def interrupt(it, epoch, epochs, total):
    for i, batch in enumerate(it):
      yield batch
      if epoch == 1 and i == 0:
        os.kill(os.getpid(), signal.SIGINT)

  full = run("full")
  with pytest.raises(KeyboardInterrupt, match="checkpoint saved"):
    run("cut", interrupt)
  meta = Checkpointer(str(tmp_path / "cut")).read_meta()
  assert (meta["epoch"], meta["batch"]) == (1, 2)
  resumed = run("cut")
  assert resumed.steps == full.steps == 9 and resumed.resumed_from_epoch == 1
  chex.assert_trees_all_equal(jax.device_get(full.variables), jax.device_get(resumed.variables))
  # The stage's fingerprint names the rows by their source, not by decoding them.
  assert run("full").reused


def test_size_decides_when_stream_is_unset(tmp_path, monkeypatch):
  root = tmp_path / "faces"
  fakes.write_faces(root, fakes.agedb_rows(20), "agedb.csv")
  kw = {"path": str(root), "image_size": 8, "data_dir": str(tmp_path / "tfds")}
  assert isinstance(load_dataset("agedb", **kw).train.x, np.ndarray)
  monkeypatch.setattr(records, "STREAM_ABOVE_BYTES", 0)
  assert records.is_lazy(load_dataset("agedb", **kw).train.x)
  with pytest.raises(UserError, match="workers must be >= 0"):
    load_dataset("agedb", workers=-1, **kw)


def test_a_streamed_face_pipeline_gives_the_in_memory_results(tmp_path):
  root = tmp_path / "faces"
  fakes.write_faces(root, fakes.agedb_rows(120), "agedb.csv")
  results = {}
  for stream, workers in ((False, 0), (True, 0), (True, 1)):
    c = config_io.load_config("agedb_allcnn")
    c.smoke, c.seeds = True, 1
    for key, value in {"data.kwargs.path": str(root), "data.kwargs.image_size": "16",
                       "data.kwargs.data_dir": str(tmp_path / "tfds"),
                       "data.kwargs.stream": str(stream),
                       "data.kwargs.workers": str(workers)}.items():
      config_io.apply_override(c, key, value)
    configs.set_methods(c, {"finetune": ("finetune", {})})
    workdir = tmp_path / f"run_{stream}"
    results[stream, workers] = pipeline.run_experiment(c, str(workdir), quiet=True)
    on_disk = json.load(open(workdir / "results.json"))
    assert on_disk["config"]["data"]["kwargs"]["stream"] is stream
  assert set(results[True, 0]["models"]) == {"original", "retrained", "finetune"}
  assert results[True, 0]["models"] == results[False, 0]["models"]
  # How inputs are read is no part of a stage: other workers reuse every stage.
  assert results[True, 1]["reused"] == ["original", "retrained", "finetune"]
  assert results[True, 1]["models"] == results[False, 0]["models"]
