"""RotDigits, diabetes, bring-your-own .npz, the registry, subsampling and image augmentation."""
import numpy as np
import pytest
from scipy import ndimage
from sklearn.datasets import load_diabetes, load_digits

from jax_unlearn import data
from jax_unlearn.data import augment_images, make_augment
from jax_unlearn.data.base import Dataset, Split, Task, split_indices, validate_dataset
from jax_unlearn.errors import UserError


@pytest.fixture(scope="module")
def digits():
  return data.load_dataset("rotdigits", seed=0, image_size=16)


def _all(ds, key):
  return np.concatenate([getattr(s, key) for s in ds.splits().values()])


def test_rotdigits_shapes_labels_and_splits(digits):
  sizes = [len(s) for s in digits.splits().values()]
  assert sum(sizes) == 1797 and sizes == [1258, 180, 359]  # 70/10/20
  for s in digits.splits().values():
    assert s.x.shape[1:] == (16, 16, 3) and s.x.dtype == np.float32
    assert s.y.shape == (len(s), 1) and s.y.dtype == np.float32
    np.testing.assert_array_equal(s.x[..., 0], s.x[..., 2])  # grey repeated
  angles = _all(digits, "y")
  assert -60 <= angles.min() < -55 and 55 < angles.max() <= 60
  train = digits.train.x.astype(np.float64)
  np.testing.assert_allclose(train.mean(axis=(0, 1, 2)), 0, atol=1e-6)
  np.testing.assert_allclose(train.std(axis=(0, 1, 2)), 1, atol=1e-6)
  assert sorted(np.unique(_all(digits, "group"))) == list(range(10))
  # A black pixel (the digits' background), normalised: what the published augmentation pads.
  black = tuple(float(v) for v in digits.train.x.min(axis=(0, 1, 2)))
  assert digits.task == Task("l1", "mae", None, "image", "rotation angle (degrees)",
                             {"input_shape": (16, 16, 3), "output_dim": 1, "num_ids": 10,
                              "flip_preserves_label": False, "black": black})


def test_rotdigits_rows_are_rotated_source_digits(digits):
  """Independent check: rotating the upsampled source digit by the label reproduces the row."""
  src = load_digits()
  row = 5
  # The row's source digit: the train split is the sorted first part of the seed-0 partition.
  rng = np.random.default_rng(0)
  angles = rng.uniform(-60, 60, 1797)
  idx = split_indices(1797, (0.7, 0.1, 0.2), rng)[0][row]
  assert digits.train.y[row, 0] == np.float32(angles[idx])
  assert digits.train.group[row] == src.target[idx]
  big = ndimage.zoom(np.pad(src.images[idx] / 16, 2), 16 / 12, order=3, grid_mode=True,
                     mode="grid-constant")
  want = np.clip(ndimage.rotate(big, angles[idx], reshape=False, order=1), 0, 1)
  got = digits.train.x[row, ..., 0]
  np.testing.assert_allclose(np.corrcoef(got.ravel(), want.ravel())[0, 1], 1, atol=1e-4)


def test_rotdigits_determinism_by_seed(digits):
  again = data.load_dataset("rotdigits", seed=0, image_size=16)
  other = data.load_dataset("rotdigits", seed=1, image_size=16)
  np.testing.assert_array_equal(again.train.x, digits.train.x)
  np.testing.assert_array_equal(again.test.y, digits.test.y)
  assert not np.array_equal(other.train.y[:20], digits.train.y[:20])
  assert not np.array_equal(other.train.group, digits.train.group)


def test_diabetes():
  ds = data.load_dataset("diabetes", seed=3)
  _, y = load_diabetes(return_X_y=True)
  assert [len(s) for s in ds.splits().values()] == [310, 44, 88]
  assert ds.train.x.shape == (310, 10) and ds.task.loss == "l1" and ds.task.kind == "tabular"
  np.testing.assert_allclose(ds.train.x.mean(0), 0, atol=1e-5)
  assert sorted(_all(ds, "y")[:, 0]) == sorted(y.astype(np.float32))
  assert ds.train.group is None
  np.testing.assert_array_equal(data.load_dataset("diabetes", seed=3).val.y, ds.val.y)
  assert not np.array_equal(data.load_dataset("diabetes", seed=4).val.y, ds.val.y)


def test_registry_errors():
  assert {"rotdigits", "agedb", "imdbwiki", "stsb", "textpairs", "electricity", "taylor",
          "elecdemand", "diabetes", "npz"} <= set(data.dataset_names())
  with pytest.raises(UserError, match="did you mean 'rotdigits'"):
    data.load_dataset("rotdigit")
  with pytest.raises(UserError, match="takes no argument 'image_sise'"):
    data.load_dataset("rotdigits", image_sise=16)
  with pytest.raises(UserError, match="image_size"):
    data.load_dataset("rotdigits", image_size=4)
  # None means "not set", so shared config keys such as path=None are harmless.
  assert len(data.load_dataset("diabetes", path=None).train) == 310


def test_max_samples_subsamples_each_split_seeded():
  full = data.load_dataset("diabetes", seed=0)
  ds = data.load_dataset("diabetes", seed=0, max_samples=50)
  assert [len(s) for s in ds.splits().values()] == [50, 44, 50]
  rows = {tuple(r) for r in full.train.x}
  assert all(tuple(r) in rows for r in ds.train.x)
  np.testing.assert_array_equal(data.load_dataset("diabetes", seed=0, max_samples=50).train.y,
                                ds.train.y)
  with pytest.raises(UserError, match="max_samples"):
    data.load_dataset("diabetes", max_samples=0)


def test_register_dataset():
  def tiny(*, seed):
    s = Split(np.ones((2, 1), np.float32), np.zeros((2, 1), np.float32))
    return Dataset("tiny", s, s, s, Task("mse", "mse", None, "tabular", "t"))
  data.register_dataset("tiny_test", tiny)
  assert data.load_dataset("tiny_test").name == "tiny"


def _split(n=4, **kw):
  return Split(np.zeros((n, 2), np.float32), np.zeros((n, 1), np.float32), **kw)


@pytest.mark.parametrize("bad, match", [
    (dict(train=_split(0)), "empty"),
    (dict(train=Split(np.zeros((3, 2)), np.zeros((4, 1)))), "3 inputs but 4 rows of y"),
    (dict(val=Split(np.zeros((3, 2)), np.zeros(3))), r"\[N, D\]"),
    (dict(test=Split(np.full((3, 2), np.inf), np.zeros((3, 1)))), "6 NaN or infinite .* inputs"),
    (dict(test=Split(np.zeros((3, 2)), np.array([[0.0], [np.nan], [1]]))), "1 NaN .* labels"),
    (dict(train=_split(group=np.zeros(3, np.int64))), "rows of group"),
])
def test_validate_dataset_errors(bad, match):
  splits = {"train": _split(), "val": _split(), "test": _split(), **bad}
  with pytest.raises(UserError, match=match):
    validate_dataset(Dataset("d", **splits, task=Task("l1", "mae", None, "tabular", "")))


def _save_npz(path, n=30, **override):
  r = np.random.default_rng(0)
  arrays = {"x": r.normal(size=(n, 3)).astype(np.float32), "y": r.normal(size=n),
            "split": np.array(["train"] * (n - 10) + ["val"] * 4 + ["test"] * 6),
            "group": np.arange(n) % 3}
  arrays.update(override)
  np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
  return arrays


def test_npz_loads(tmp_path):
  path = tmp_path / "mine.npz"
  arrays = _save_npz(path)
  ds = data.load_dataset("npz", path=str(path), loss="mse")
  assert [len(s) for s in ds.splits().values()] == [20, 4, 6]
  np.testing.assert_array_equal(ds.test.x, arrays["x"][24:])
  np.testing.assert_allclose(ds.val.y[:, 0], arrays["y"][20:24].astype(np.float32))
  np.testing.assert_array_equal(ds.train.group, np.arange(20) % 3)
  assert ds.train.time is None
  assert (ds.task.loss, ds.task.error, ds.task.kind) == ("mse", "mse", "tabular")


@pytest.mark.parametrize("override, match", [
    (dict(y=None), r"lacks the arrays \['y'\]"),
    (dict(group=np.arange(29)), "group has 29"),
    (dict(y=np.zeros(31)), "y has 31"),
    (dict(split=np.array(["train"] * 20 + ["valid"] * 4 + ["test"] * 6)), "unknown split .*valid"),
    (dict(split=np.array(["val"] * 24 + ["test"] * 6)), "no 'train' rows"),
    (dict(y=np.r_[np.zeros(29), np.nan]), "NaN or infinite"),
    (dict(x=np.full((30, 3), np.inf)), "NaN or infinite"),
    (dict(split=np.arange(30)), "string array"),
    (dict(split=np.array(["train"] * 30, dtype=object)), "without pickle"),
])
def test_npz_errors(tmp_path, override, match):
  path = tmp_path / "bad.npz"
  _save_npz(path, **override)
  with pytest.raises(UserError, match=match):
    data.load_dataset("npz", path=str(path))


def test_npz_missing_file_and_bad_loss(tmp_path):
  with pytest.raises(UserError, match="does not exist"):
    data.load_dataset("npz", path=str(tmp_path / "nope.npz"))
  _save_npz(tmp_path / "ok.npz")
  with pytest.raises(UserError, match="npz loss"):
    data.load_dataset("npz", path=str(tmp_path / "ok.npz"), loss="huber")


def test_augment_shapes_determinism_and_crop_semantics():
  x = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype(np.float32)
  out = augment_images(x, np.random.default_rng(7))
  assert out.shape == x.shape and out.dtype == x.dtype
  np.testing.assert_array_equal(out, augment_images(x, np.random.default_rng(7)))
  assert not np.array_equal(out, augment_images(x, np.random.default_rng(8)))
  # Independent check of every image: it is some crop of the padded original, maybe mirrored.
  padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
  flips = 0
  for i in range(len(x)):
    found = [(dy, dx, f) for dy in range(9) for dx in range(9) for f in (False, True)
             if np.array_equal(out[i], (lambda c: c[:, ::-1] if f else c)(
                 padded[i, dy:dy + 8, dx:dx + 8]))]
    assert found, i
    flips += found[0][2]
  assert 16 < flips < 48
  no_flip = make_augment(padding=0, flip=False)(x, np.random.default_rng(0))
  np.testing.assert_array_equal(no_flip, x)
  mirrored = make_augment(padding=0)(x, np.random.default_rng(0))
  assert all(np.array_equal(m, o) or np.array_equal(m, o[:, ::-1]) for m, o in zip(mirrored, x))


def test_loader_with_augmentation_covers_epoch(digits):
  loader = data.ArrayLoader({"x": digits.train.x, "y": digits.train.y}, 256, seed=0,
                            augment=make_augment(flip=False))
  seen = np.concatenate([b["y"][b["mask"] > 0] for b in loader(0)])
  np.testing.assert_array_equal(np.sort(seen[:, 0]), np.sort(digits.train.y[:, 0]))
  first = next(iter(loader(1)))["x"]
  np.testing.assert_array_equal(first, next(iter(loader(1)))["x"])
