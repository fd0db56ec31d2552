"""RotDigits: real handwritten digits (scikit-learn's bundled 8x8 images), each rotated by a
seeded random angle; the task is to regress the angle. The offline stand-in for age regression:
the label is continuous, and the digit is a group id for "forget one identity" requests.
"""
import numpy as np

from jax_unlearn.data.base import Dataset, Split, make_dataset, split_indices, standardise
from jax_unlearn.errors import UserError

MAX_ANGLE = 60.0


def normalise_images(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
  """Per-channel standardisation with the train split's statistics; NHWC float32 out."""
  return standardise(train, *others, axis=(0, 1, 2))


def black_pixel(channels: int) -> np.ndarray:
  """A raw black image [1, 1, 1, C]: normalised along with the splits, it gives the value the
  published augmentation pads with (torchvision pads raw pixels with 0, before Normalize)."""
  return np.zeros((1, 1, 1, channels), np.float32)


def black_value(normalised: np.ndarray) -> tuple[float, ...]:
  """The normalised `black_pixel` as task.extra["black"]: one float per channel."""
  return tuple(float(v) for v in np.asarray(normalised).reshape(-1))


def rotdigits(*, seed: int = 0, image_size: int = 32,
              fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> Dataset:
  """The 1,797 digits upsampled to `image_size`, rotated by U[-60, 60] degrees (the label;
  positive = counter-clockwise as displayed).

  Args:
    seed: draws the angles and the train/val/test partition.
    image_size: output height and width (the digits are 8x8 at the source).
    fractions: train/val/test shares.

  Returns:
    images [N, S, S, 3] (the grey image repeated, for RGB models), y = angle in degrees [N, 1],
    group = the digit (0-9).
  """
  from scipy import ndimage
  from sklearn.datasets import load_digits

  if not 8 <= image_size <= 256:
    raise UserError(f"image_size must be in [8, 256], got {image_size}.", "use e.g. 32.")
  digits = load_digits()
  # A 2-pixel black border (8 * sqrt(2) < 12) keeps every rotated digit inside the frame, and
  # no rotated frame edge betrays the angle.
  images = np.pad(digits.images.astype(np.float32) / 16.0, ((0, 0), (2, 2), (2, 2)))  # [N, 12, 12]
  rng = np.random.default_rng(seed)
  angles = rng.uniform(-MAX_ANGLE, MAX_ANGLE, len(images)).astype(np.float32)
  # Cubic upsampling first, so the rotation interpolates a smooth image, not pixel blocks. The
  # spline zoom is linear and separable: zooming the identity gives its matrix [12, S].
  side = images.shape[1]
  m = ndimage.zoom(np.eye(side, dtype=np.float32), (1, image_size / side), order=3,
                   grid_mode=True, mode="grid-constant")
  big = m.T @ images @ m  # [N, S, S]
  big = np.stack([ndimage.rotate(im, a, reshape=False, order=1, mode="constant")
                  for im, a in zip(big, angles)])
  x = np.clip(big, 0.0, 1.0)[..., None]  # [N, S, S, 1]
  parts = split_indices(len(x), fractions, rng)
  # Normalised before the channel repeat (three identical channels share the statistics).
  *xs, black = normalise_images(*(x[p] for p in parts), black_pixel(1))
  splits = [Split(np.repeat(xi, 3, axis=-1), angles[p, None], digits.target[p].astype(np.int64))
            for xi, p in zip(xs, parts)]
  # A horizontal flip turns angle a into -a, so flip augmentation must stay off here.
  return make_dataset("rotdigits", *splits, loss="l1", error="mae", kind="image",
                      label="rotation angle (degrees)", num_ids=10, flip_preserves_label=False,
                      black=black_value(np.repeat(black, 3, axis=-1)))
