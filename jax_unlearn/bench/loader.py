"""The input rows: face images streamed from array_record files, against the in-memory loader
and against what the train step consumes.

For each image size, `images` generated faces (random pixels saved as real JPEGs of 250 x 250)
are prepared once by the AgeDB builder (JPEG decode, resize, array_record; timed), then one
epoch of the train split in batches of 64 with the published augmentation (16 px black padding,
crop, flip) is read (samples/s after the first batch, and the seconds to it) by
  memory      the in-memory loader over the decoded split (the baseline, same run)
  threads     the streaming path: grain, 4 prefetch threads in the training process
  workers=W   the streaming path with W grain worker processes
Then the AllCNN train step (the paper's face model, at that size) is timed on random batches:
"step needs" is its samples/s, and headroom = streamed samples/s / step samples/s (> 1: the
step, not the input, bounds training on this machine).
"""
import csv
import os
import shutil
import tempfile
import time
from typing import Mapping, Sequence

import numpy as np

from jax_unlearn.bench import measure
from jax_unlearn.bench.cases import ModelSpec, jax_case, setup_model

SIZES = (64, 112, 224)
IMAGES = 512
BATCH = 64
STEP_BATCH = 16  # the AllCNN step at 224 px takes seconds per batch on a CPU
SOURCE_SIZE = (250, 250)


def write_jpeg_faces(root: str, n: int, size: tuple[int, int] = SOURCE_SIZE,
                     seed: int = 0) -> list[tuple[str, int, str]]:
  """An AgeDB manual directory of `n` JPEGs of random pixels: (path, age, split) rows, ages
  1-100, split 70/10/20, people P0..P6 in AgeDB's file names; writes agedb.csv."""
  r = np.random.default_rng(seed)
  ages = r.integers(1, 101, n)
  splits = r.choice(["train", "val", "test"], n, p=[0.7, 0.1, 0.2])
  splits[:3] = ["train", "val", "test"]  # every split has a row
  rows = [(f"AgeDB/{i}_P{i % 7}_{a}_f.jpg", int(a), str(s))
          for i, (a, s) in enumerate(zip(ages, splits))]
  os.makedirs(os.path.join(root, "AgeDB"), exist_ok=True)
  from PIL import Image

  for path, _, _ in rows:
    pixels = r.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(root, path), format="JPEG", quality=90)
  with open(os.path.join(root, "agedb.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["age", "path", "split"])
    w.writerows([(age, path, split) for path, age, split in rows])
  return rows


def _epoch_rate(loader) -> tuple[float, float]:
  """(seconds to the first batch, samples/s after it) of one epoch of `loader`: worker
  processes start once per epoch, which a short epoch would otherwise fold into the rate."""
  t0 = time.perf_counter()
  it = iter(loader(0))
  first_rows = len(next(it)["x"])
  first = time.perf_counter() - t0
  t1, rows = time.perf_counter(), 0
  for batch in it:
    rows += len(batch["x"])
  return first, (rows / (time.perf_counter() - t1) if rows else first_rows / first)


def bench_size(size: int, *, images: int = IMAGES, workers: Sequence[int] = (1, 2),
               steps: int = 2, seed: int = 0) -> dict:
  """One row: preparation, loader samples/s (memory, threads, worker processes) after the first
  batch and the seconds to it, the step's samples/s."""
  from jax_unlearn.data import ArrayLoader, augment_for, load_dataset

  tmp = tempfile.mkdtemp(prefix=f"bench_loader_{size}_")
  try:
    write_jpeg_faces(os.path.join(tmp, "faces"), images, seed=seed)
    kw = {"image_size": size, "data_dir": os.path.join(tmp, "tfds")}
    t0 = time.perf_counter()
    memory = load_dataset("agedb", path=os.path.join(tmp, "faces"), stream=False, **kw)
    prepare_s = time.perf_counter() - t0
    streamed = load_dataset("agedb", stream=True, **kw)
    augment = augment_for(memory.task, "published")
    arrays = {"y": memory.train.y}
    ways = {"memory": memory.train.x, "threads": streamed.train.x}
    for w in workers:
      ways[f"workers={w}"] = streamed.train.x[:]
      ways[f"workers={w}"].workers = w
    starts, rates = {}, {}
    for way, x in ways.items():
      starts[way], rates[way] = _epoch_rate(ArrayLoader({"x": x, **arrays}, BATCH,
                                                        augment=augment))
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  setup = setup_model("allcnn", ModelSpec({}, (size, size, 3), (1,)), STEP_BATCH, "float32",
                      seed)
  step = jax_case(setup, "train")
  times = measure.time_interleaved({"step": step}, steps=steps, warmup=1)["step"]
  step_rate = STEP_BATCH / float(np.median(times))
  best_stream = max(v for k, v in rates.items() if k != "memory")
  return {"bench": "loader", "image_size": size, "images": images, "train_rows": len(memory.train),
          "batch_size": BATCH, "prepare_s": prepare_s, "prepare_per_s": images / prepare_s,
          "samples_per_s": rates, "first_batch_s": starts, "step_batch": STEP_BATCH, "step_samples_per_s": step_rate,
          "headroom": best_stream / step_rate, "cpus": os.cpu_count()}


def bench_loader(sizes: Sequence[int] = SIZES, **kw) -> list[dict]:
  rows = []
  for size in sizes:
    rows.append(bench_size(size, **kw))
    r = rows[-1]
    print(f"loader {size}px: " + ", ".join(f"{k} {v:.0f}/s" for k, v in r["samples_per_s"].items())
          + f"; step needs {r['step_samples_per_s']:.1f}/s")
  return rows


def _starts(rows: Sequence[Mapping]) -> str:
  values = [v for r in rows for k, v in r["first_batch_s"].items() if k.startswith("workers")]
  return f"{min(values):.1f}-{max(values):.1f}" if values else "-"


def markdown(rows: Sequence[Mapping]) -> str:
  if not rows:
    return ""
  ways = list(rows[0]["samples_per_s"])
  r0 = rows[0]
  lines = ["", "## Input: streamed faces against the in-memory loader and the train step", "",
           f"{r0['images']} generated JPEGs (250 x 250) prepared by the AgeDB builder, then one "
           f"epoch of the {r0['train_rows']} train rows in batches of {r0['batch_size']} with the "
           f"published augmentation, samples/s on {r0['cpus']} CPU cores after the first batch "
           f"(worker processes start in {_starts(rows)} s per epoch); the AllCNN train step at "
           f"batch {r0['step_batch']}; headroom = the best streamed rate / the step's.", "",
           "| px | prepare img/s | " + " | ".join(f"{w} /s" for w in ways)
           + " | step needs /s | headroom |",
           "|--:|--:|" + "--:|" * len(ways) + "--:|--:|"]
  for r in rows:
    lines.append(f"| {r['image_size']} | {r['prepare_per_s']:.0f} | "
                 + " | ".join(f"{r['samples_per_s'][w]:.0f}" for w in ways)
                 + f" | {r['step_samples_per_s']:.1f} | {r['headroom']:.1f} |")
  return "\n".join(lines) + "\n"
