"""AgeDB and IMDB-WIKI builders on a tiny generated manual directory (PNG images + CSV)."""
import numpy as np
from PIL import Image
import pytest

from jax_unlearn import data
from jax_unlearn.data.faces import Agedb, ImdbWiki
from jax_unlearn.errors import UserError
from fakes import face_pixels as _pixels, write_faces as _write

# (path, age, split): people "Ann" (3 images) and "Bob" (2) and "Cy" (1), as AgeDB names them.
AGEDB_ROWS = [("AgeDB/0_Ann_25_f.jpg", 25, "train"), ("AgeDB/1_Ann_31_f.jpg", 31, "train"),
              ("AgeDB/2_Bob_60_m.jpg", 60, "train"), ("AgeDB/3_Cy_8_m.jpg", 8, "val"),
              ("AgeDB/4_Bob_62_m.jpg", 62, "test"), ("AgeDB/5_Ann_40_f.jpg", 40, "test")]


@pytest.fixture(scope="module")
def agedb_dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("agedb")
  _write(root, AGEDB_ROWS, "agedb.csv")
  return root, tmp_path_factory.mktemp("tfds")


def test_agedb_builder(agedb_dirs):
  root, data_dir = agedb_dirs
  ds = data.load_dataset("agedb", path=str(root), image_size=8, data_dir=str(data_dir))
  assert [len(s) for s in ds.splits().values()] == [3, 1, 2]
  assert ds.train.x.shape == (3, 8, 8, 3) and ds.train.x.dtype == np.float32
  assert sorted(ds.train.y[:, 0]) == [25, 31, 60] and sorted(ds.test.y[:, 0]) == [40, 62]
  assert (ds.task.loss, ds.task.error, ds.task.kind) == ("l1", "mae", "image")
  assert ds.task.extra["num_ids"] == 3 and ds.task.extra["flip_preserves_label"]
  # Groups are people: Ann, Bob, Cy -> 0, 1, 2 (sorted names), matched through the ages.
  person = {25: 0, 31: 0, 40: 0, 60: 1, 62: 1, 8: 2}
  for s in ds.splits().values():
    assert [person[a] for a in s.y[:, 0]] == list(s.group)
  # Pixels: PIL's bilinear resize of the source image, normalised with train statistics.
  raw = {a: np.asarray(Image.fromarray(_pixels(i)).resize((8, 8), Image.BILINEAR), np.float32)
         for i, (_, a, _) in enumerate(AGEDB_ROWS)}
  train = np.stack([raw[a] for a in ds.train.y[:, 0]])
  mean, std = train.mean((0, 1, 2)), train.std((0, 1, 2))
  for s in ds.splits().values():
    np.testing.assert_allclose(s.x, (np.stack([raw[a] for a in s.y[:, 0]]) - mean) / std,
                               rtol=1e-4, atol=1e-4)
  # A person can be forgotten, with a test cohort.
  m = data.make_forget_masks(ds, {"kind": "groups", "ids": [1]})
  assert (m.train.sum(), m.test.sum()) == (1, 1)
  m = data.make_forget_masks(ds, {"kind": "label_range", "high": 30})
  assert (m.train.sum(), m.val.sum(), m.test.sum()) == (1, 1, 0)


def test_agedb_prepared_once_then_read_without_manual_dir(agedb_dirs):
  root, data_dir = agedb_dirs
  first = data.load_dataset("agedb", path=str(root), image_size=8, data_dir=str(data_dir))
  again = data.load_dataset("agedb", image_size=8, data_dir=str(data_dir))  # no path needed
  np.testing.assert_array_equal(first.test.x, again.test.x)
  assert Agedb(data_dir=str(data_dir), config="32px").is_prepared() is False


def test_missing_manual_dir_tells_where_to_get_the_data(tmp_path):
  with pytest.raises(UserError,
                     match="(?s)not prepared yet.*agedb.csv.*AgeDB.*imbalanced-regression"):
    data.load_dataset("agedb", path=str(tmp_path / "nowhere"), data_dir=str(tmp_path))
  with pytest.raises(UserError,
                     match="(?s)no manual directory was given.*wiki_crop.*imdb_wiki.csv"):
    data.load_dataset("imdbwiki", path="", data_dir=str(tmp_path))


@pytest.mark.parametrize("rows, match", [
    (AGEDB_ROWS[:3] + [("AgeDB/0_A_1_f.jpg", 1, "training")] + AGEDB_ROWS[3:],
     "row 5: unknown split 'training'"),
    (AGEDB_ROWS + [("AgeDB/0_A_1_f.jpg", "old", "train")], "row 8: age 'old' is not a number"),
    (AGEDB_ROWS[:3] + AGEDB_ROWS[4:], "no 'val' rows"),
])
def test_bad_csv(tmp_path, rows, match):
  _write(tmp_path, rows, "agedb.csv")
  with pytest.raises(UserError, match=match):
    data.load_dataset("agedb", path=str(tmp_path), data_dir=str(tmp_path / "tfds"))


def test_missing_image(tmp_path):
  _write(tmp_path, AGEDB_ROWS, "agedb.csv")
  (tmp_path / AGEDB_ROWS[2][0]).unlink()
  with pytest.raises(UserError, match="(?s)2_Bob_60_m.jpg.*every path in agedb.csv"):
    data.load_dataset("agedb", path=str(tmp_path), data_dir=str(tmp_path / "tfds"))


def test_imdbwiki_builder_greyscale_images_and_people(tmp_path):
  rows = [("imdb_crop/01/nm0000001_rm1_1899-5-10_1968.jpg", 69, "train"),
          ("imdb_crop/01/nm0000001_rm2_1899-5-10_1970.jpg", 71, "train"),
          ("wiki_crop/17/nm0000001_1981-05-05_2009.jpg", 28, "train"),
          ("wiki_crop/17/10000217_1981-05-05_2009.jpg", 28, "val"),
          ("imdb_crop/02/nm0000002_rm3_1950-1-1_1990.jpg", 40, "test")]
  _write(tmp_path, rows, "imdb_wiki.csv", mode="L")
  ds = data.load_dataset("imdbwiki", path=str(tmp_path), image_size=6,
                         data_dir=str(tmp_path / "tfds"), max_samples=2)
  assert [len(s) for s in ds.splits().values()] == [2, 1, 1]
  assert ds.train.x.shape[1:] == (6, 6, 3)
  assert ImdbWiki.person(rows[0][0]) == ImdbWiki.person(rows[1][0]) == "imdb_crop:nm0000001"
  assert ImdbWiki.person(rows[2][0]) == "wiki_crop:nm0000001"  # another site, another person
  assert ds.task.extra["num_ids"] == 4
