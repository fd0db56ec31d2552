"""The augmentation recipes `data.augment_for` chooses: ours (4 pixels of mean padding) and the
published one (torchvision RandomCrop(size, padding=16) + RandomHorizontalFlip on raw pixels,
i.e. black padding), and the black value each image dataset states."""
import numpy as np
from PIL import Image
import pytest

from jax_unlearn import data
from jax_unlearn.data import Task, augment_for, make_augment
from jax_unlearn.errors import UserError
from fakes import face_pixels, write_faces


def _task(kind="image", **extra):
  return Task("l1", "mae", None, kind, "age", extra)


def _images(b=3, h=4, w=5, c=2, seed=0):
  return np.random.default_rng(seed).normal(size=(b, h, w, c)).astype(np.float32)


def _torchvision_crop_by_hand(x, rng, *, padding, fill, flip):
  """RandomCrop(padding) then RandomHorizontalFlip, pixel by pixel: output (r, c) of image i is
  the padded image's (r + dy, c + dx), i.e. source (r + dy - p, c + dx - p) or the fill outside
  it; a mirrored image reads column w - 1 - c. Offsets are uniform in [0, 2p] per axis."""
  b, h, w, ch = x.shape
  dy, dx = rng.integers(0, 2 * padding + 1, size=(2, b))
  mirror = rng.random(b) < 0.5 if flip else np.zeros(b, bool)
  fill = np.broadcast_to(np.asarray(fill, np.float32), (ch,))
  out = np.empty_like(x)
  for i in range(b):
    for r in range(h):
      for c in range(w):
        cc = w - 1 - c if mirror[i] else c
        sr, sc = r + dy[i] - padding, cc + dx[i] - padding
        out[i, r, c] = x[i, sr, sc] if 0 <= sr < h and 0 <= sc < w else fill
  return out, dy, dx, mirror


def _todays_augment(x, rng, *, flip):
  """The augmentation before the recipes existed: np.pad with zeros, 4 pixels, the same draws."""
  b, h, w, _ = x.shape
  padded = np.pad(x, ((0, 0), (4, 4), (4, 4), (0, 0)))
  dy, dx = rng.integers(0, 9, size=(2, b))
  mirror = rng.random(b) < 0.5 if flip else np.zeros(b, bool)
  out = np.empty_like(x)
  for i in range(b):
    crop = padded[i, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
    out[i] = crop[:, ::-1] if mirror[i] else crop
  return out


@pytest.mark.parametrize("flip", [True, False])
def test_published_crop_by_hand_black_fill_and_flip(flip):
  x = _images(b=40)
  black = (-1.5, -0.25)
  augment = augment_for(_task(black=black, flip_preserves_label=flip), "published")
  out = augment(x, np.random.default_rng(3))
  expected, dy, dx, mirror = _torchvision_crop_by_hand(
      x, np.random.default_rng(3), padding=16, fill=black, flip=flip)
  np.testing.assert_array_equal(out, expected)
  assert dy.max() > 8 and dx.min() < 24  # offsets span the 16-pixel padding, not 4 pixels
  assert mirror.any() == flip
  # A crop entirely in the padding is black in each channel, exactly.
  outside = [i for i in range(len(x)) if dy[i] + 4 <= 16 or dx[i] + 5 <= 16]
  assert outside
  for i in outside:
    np.testing.assert_array_equal(out[i], np.broadcast_to(np.float32(black), out[i].shape))


def test_published_crop_at_known_offsets():
  """One 2x3 image of 1 channel, padded by 16 with black -1; offsets picked by a fixed rng."""
  x = np.arange(6, dtype=np.float32).reshape(1, 2, 3, 1)

  class Fixed:  # offsets (dy, dx) = (15, 17), then "mirror"
    def integers(self, low, high, size):
      assert (low, high, size) == (0, 33, (2, 1))
      return np.array([[15], [17]])

    def random(self, n):
      return np.zeros(n)  # < 0.5: mirrored

  augment = make_augment(padding=16, fill=-1.0)
  out = augment(x, Fixed())[0, :, :, 0]
  # Padded rows 15..16 and columns 17..19 hold: row 15 black; row 16 = source row 0 at columns
  # 1, 2 and black at column 3; then mirrored left-right.
  np.testing.assert_array_equal(out, [[-1, -1, -1], [-1, 2, 1]])


def test_ours_is_todays_augment_bitwise():
  x = _images(b=16, h=6, w=5, c=3)
  for flip in (True, False):
    task = _task(flip_preserves_label=flip, black=(-1.0, -1.0, -1.0))
    for setting in (True, "ours"):
      got = augment_for(task, setting)(x, np.random.default_rng(7))
      want = _todays_augment(x, np.random.default_rng(7), flip=flip)
      assert got.tobytes() == want.tobytes()
      assert got.tobytes() == make_augment(flip=flip)(x, np.random.default_rng(7)).tobytes()


def test_settings_without_augmentation_and_unknown_values():
  task = _task(black=(0.0,))
  for off in (False, None, "none", np.bool_(False)):
    assert augment_for(task, off) is None
  assert augment_for(_task("text"), "published") is None  # only images are augmented
  assert augment_for(_task("tabular"), True) is None
  for bad in ("Published", "random", 1, 0.5, "true"):
    with pytest.raises(UserError, match="unknown data.augment"):
      augment_for(task, bad)
  with pytest.raises(UserError, match="black"):
    augment_for(_task(), "published")  # the dataset states no black value
  with pytest.raises(UserError, match="padding"):
    make_augment(padding=-1)
  with pytest.raises(UserError, match="fill"):
    make_augment(fill=float("nan"))
  with pytest.raises(UserError, match="channels"):
    make_augment(fill=(0.0, 1.0))(_images(c=3), np.random.default_rng(0))


def test_rotdigits_states_its_black_value():
  ds = data.load_dataset("rotdigits", seed=0, image_size=12)
  black = ds.task.extra["black"]
  assert len(black) == 3 and all(isinstance(v, float) for v in black)
  # The digits sit on black: the darkest normalised pixel of every split is exactly black.
  for s in ds.splits().values():
    np.testing.assert_array_equal(s.x.min(axis=(0, 1, 2)), np.float32(black))
  assert not ds.task.extra["flip_preserves_label"]
  out = augment_for(ds.task, "published")(ds.train.x[:8], np.random.default_rng(0))
  assert out.shape == (8, 12, 12, 3)


def test_faces_state_the_normalised_black_pixel(tmp_path):
  rows = [("AgeDB/0_Ann_25_f.jpg", 25, "train"), ("AgeDB/1_Bob_31_m.jpg", 31, "train"),
          ("AgeDB/2_Cy_8_m.jpg", 8, "val"), ("AgeDB/3_Ann_40_f.jpg", 40, "test")]
  write_faces(tmp_path / "src", rows, "agedb.csv")
  ds = data.load_dataset("agedb", path=str(tmp_path / "src"), image_size=8,
                         data_dir=str(tmp_path / "tfds"))
  raw = {a: np.asarray(Image.fromarray(face_pixels(i)).resize((8, 8), Image.BILINEAR), np.float32)
         for i, (_, a, _) in enumerate(rows)}
  train = np.stack([raw[a] for a in ds.train.y[:, 0]])
  mean, std = train.mean((0, 1, 2)), train.std((0, 1, 2))
  np.testing.assert_allclose(ds.task.extra["black"], -mean / std, rtol=1e-5)
  assert ds.task.extra["flip_preserves_label"]
