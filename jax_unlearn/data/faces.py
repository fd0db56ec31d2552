"""Age regression from faces: AgeDB and IMDB-WIKI as tensorflow-datasets builders.

Neither set can be downloaded automatically, so each builder reads a manual directory laid out
as in the imbalanced-regression benchmark (github.com/YyzHarry/imbalanced-regression): the
images, and a CSV with columns `path` (relative to the directory), `age` and `split`
(train/val/test). Preparation resizes every image once to `image_size` and writes array_record
files; loading reads them back through `as_data_source` (no TensorFlow), normalised per channel
with the train split's statistics: into memory, or, for sets beyond it, as lazy arrays streamed
batch by batch (`data.records`). The group id is the person, parsed from the file
name, for "forget everything of one person" requests.
"""
import csv
import dataclasses
import logging
import os

import numpy as np
import tensorflow_datasets as tfds

from jax_unlearn.data import records
from jax_unlearn.data.base import SPLITS, Dataset, Split, as_str, make_dataset
from jax_unlearn.data.images import black_value
from jax_unlearn.errors import UserError

log = logging.getLogger("jax_unlearn")

_GET_CSV = ("The CSV comes with the imbalanced-regression benchmark "
            "(github.com/YyzHarry/imbalanced-regression, data/{csv}); put it in the same "
            "directory as the image folders it names.")


@dataclasses.dataclass
class FaceConfig(tfds.core.BuilderConfig):
  image_size: int = 32


class _FaceAges(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Shared builder: manual directory with images and CSV -> resized uint8 images, ages."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [FaceConfig(name=f"{s}px", image_size=s) for s in (32, 64, 112, 224)]
  CSV = ""

  def _info(self) -> tfds.core.DatasetInfo:
    size = self.builder_config.image_size
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Tensor(shape=(size, size, 3), dtype=np.uint8),
            "age": tfds.features.Scalar(dtype=np.float32),
            "path": tfds.features.Text(),
        }))

  def _split_generators(self, dl_manager):
    root = os.fspath(dl_manager.manual_dir)
    rows = read_label_csv(os.path.join(root, self.CSV))
    return {split: self._generate_examples(root, [r for r in rows if r["split"] == split])
            for split in SPLITS}

  def _generate_examples(self, root: str, rows: list[dict]):
    from PIL import Image

    size = self.builder_config.image_size
    for row in rows:
      with Image.open(os.path.join(root, row["path"])) as im:
        pixels = np.asarray(im.convert("RGB").resize((size, size), Image.BILINEAR), np.uint8)
      yield row["path"], {"image": pixels, "age": float(row["age"]), "path": row["path"]}

  @staticmethod
  def person(path: str) -> str:
    raise NotImplementedError


class Agedb(_FaceAges):
  """AgeDB: 16,488 in-the-wild face images of 568 people, ages 1-101."""

  CSV = "agedb.csv"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Request AgeDB from its authors (ibug.doc.ic.ac.uk/resources/agedb) and unpack it so "
      f"that the images sit in <dir>/AgeDB/. {_GET_CSV.format(csv=CSV)}")

  @staticmethod
  def person(path: str) -> str:
    """AgeDB names files <n>_<Name>_<age>_<sex>.jpg."""
    parts = os.path.splitext(os.path.basename(path))[0].split("_")
    return parts[1] if len(parts) == 4 else path


class ImdbWiki(_FaceAges):
  """IMDB-WIKI (faces cropped from IMDb and Wikipedia): the benchmark's 213,553-image subset."""

  CSV = "imdb_wiki.csv"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Download the faces-only imdb_crop.tar and wiki_crop.tar from "
      "data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki and unpack both into <dir>/ (giving "
      f"<dir>/imdb_crop/ and <dir>/wiki_crop/). {_GET_CSV.format(csv=CSV)}")

  @staticmethod
  def person(path: str) -> str:
    """imdb_crop/01/nm0000001_rm..._1899-5-10_1968.jpg -> imdb_crop:nm0000001 (the person)."""
    top = path.replace("\\", "/").split("/")[0]
    return f"{top}:{os.path.basename(path).split('_')[0]}"


def read_label_csv(csv_path: str) -> list[dict]:
  """Rows of a label CSV, checked: path, age and split columns; known splits; numeric ages."""
  with open(csv_path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    missing = {"path", "age", "split"} - set(reader.fieldnames or ())
    if missing:
      raise UserError(f"{csv_path!r} lacks the columns {sorted(missing)}.",
                      "use the CSV of the imbalanced-regression benchmark (path, age, split).")
    rows = list(reader)
  for split in SPLITS:
    if not any(r["split"] == split for r in rows):
      raise UserError(f"{csv_path!r} has no {split!r} rows.",
                      f"mark some images for each of {', '.join(SPLITS)}.")
  for i, row in enumerate(rows):
    if row["split"] not in SPLITS:
      raise UserError(f"{csv_path!r} row {i + 2}: unknown split {row['split']!r}.",
                      f"use one of {', '.join(SPLITS)}.")
    try:
      float(row["age"])
    except ValueError:
      raise UserError(f"{csv_path!r} row {i + 2}: age {row['age']!r} is not a number.",
                      "fix or drop that row.") from None
  return rows


def _load(cls, name: str, *, path: str | None, image_size: int, data_dir: str | None,
          stream: bool | None, workers: int, prefetch: int) -> Dataset:
  if not 4 <= image_size <= 1024:
    raise UserError(f"image_size must be in [4, 1024], got {image_size}.", "use e.g. 32.")
  if workers < 0 or prefetch < 1:
    raise UserError(f"workers must be >= 0 and prefetch >= 1, got {workers} and {prefetch}.",
                    "use e.g. workers=0 (threads) or the number of spare CPU cores.")
  config = f"{image_size}px"
  if config not in cls.builder_configs:
    config = FaceConfig(name=config, image_size=image_size)
  builder = cls(config=config, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    if not path or not os.path.isfile(os.path.join(path, cls.CSV)):
      where = (f"the manual directory {path!r} has no {cls.CSV}" if path
               else "no manual directory was given")
      raise UserError(f"{name} is not prepared yet and {where}.",
                      f"{cls.MANUAL_DOWNLOAD_INSTRUCTIONS} Then set data.kwargs.path to <dir>.")
    try:
      builder.download_and_prepare(
          file_format="array_record",
          download_config=tfds.download.DownloadConfig(manual_dir=path))
    except (FileNotFoundError, OSError) as e:
      raise UserError(f"could not prepare {name} from {path!r}: {e}",
                      f"check that every path in {cls.CSV} exists under {path!r}.") from None
  sources = {split: builder.as_data_source(split=split) for split in SPLITS}
  ages, people, sums, squares = {}, {}, np.zeros(3, np.int64), np.zeros(3, np.int64)
  # One pass over the records: the labels, the people, and the train split's channel sums.
  for split, source in sources.items():
    ages[split], people[split] = [], []
    for _, rs in records.scan(source, chunk=256):
      ages[split] += [float(r["age"]) for r in rs]
      people[split] += [cls.person(as_str(r["path"])) for r in rs]
      if split == "train":
        pixels = np.stack([r["image"] for r in rs])
        sums += pixels.sum(axis=(0, 1, 2), dtype=np.int64)
        squares += np.square(pixels.astype(np.uint16)).sum(axis=(0, 1, 2), dtype=np.int64)
  count = len(sources["train"]) * image_size * image_size
  mean, std = records.uint8_moments(sums, squares, count)
  names, ids = np.unique(sum(people.values(), []), return_inverse=True)
  groups = np.split(ids.astype(np.int64), np.cumsum([len(people[s]) for s in SPLITS])[:-1])
  lazy = {split: records.RecordArray(
      source, "image", np.arange(len(source)), (image_size, image_size, 3), mean=mean, std=std,
      source_id=f"{builder.name}/{config if isinstance(config, str) else config.name}/"
                f"{builder.version}/{split}", workers=workers, prefetch=prefetch)
      for split, source in sources.items()}
  if stream is None:
    stream = lazy["train"].nbytes > records.STREAM_ABOVE_BYTES
  if stream:
    log.info("%s: streaming %d train images of %d px from %s (%.1f GiB as float32)", name,
             len(lazy["train"]), image_size, builder.data_dir, lazy["train"].nbytes / 2**30)
  splits = [Split(lazy[split] if stream else np.asarray(lazy[split]),
                  np.asarray(ages[split], np.float32)[:, None], g)
            for split, g in zip(SPLITS, groups)]
  black = (np.zeros(3, np.float32) - mean) / std  # the normalised black pixel (padding)
  return make_dataset(name, *splits, loss="l1", error="mae", kind="image", label="age (years)",
                      num_ids=len(names), flip_preserves_label=True, black=black_value(black))


_STREAM_ARGS = """
    stream: read the images from the prepared files batch by batch (True), or decode them all
      into memory (False); None streams when the train split exceeds
      `records.STREAM_ABOVE_BYTES` as float32. Both give the same batches.
    workers: worker processes that read streamed training batches (0: threads of the training
      process; predictions always read with threads).
    prefetch: streamed batches read ahead."""


def agedb(*, path: str | None = None, seed: int = 0, image_size: int = 32,
          data_dir: str | None = None, stream: bool | None = None, workers: int = 0,
          prefetch: int = 4) -> Dataset:
  """AgeDB with the benchmark's train/val/test split; the paper's main vision data.

  Args:
    path: the manual directory (agedb.csv and AgeDB/); needed only until it is prepared.
    seed: unused (the CSV fixes the split); accepted like every dataset's.
    image_size: images are resized once to image_size x image_size at preparation.
    data_dir: where tfds keeps the prepared array_record files (tfds' default when None).{stream}
  """
  del seed
  return _load(Agedb, "agedb", path=path, image_size=image_size, data_dir=data_dir,
               stream=stream, workers=workers, prefetch=prefetch)


def imdbwiki(*, path: str | None = None, seed: int = 0, image_size: int = 32,
             data_dir: str | None = None, stream: bool | None = None, workers: int = 0,
             prefetch: int = 4) -> Dataset:
  """IMDB-WIKI with the benchmark's split; same arguments as `agedb` (imdb_wiki.csv)."""
  del seed
  return _load(ImdbWiki, "imdbwiki", path=path, image_size=image_size, data_dir=data_dir,
               stream=stream, workers=workers, prefetch=prefetch)


agedb.__doc__ = agedb.__doc__.format(stream=_STREAM_ARGS)
