"""Generated stand-ins for the manually downloaded datasets, in their real file formats, and the
smoke-sized configs the pipeline tests run."""
import csv

import numpy as np
import pandas as pd
from PIL import Image


def face_pixels(i, size=(20, 14)):
  """A distinct image per row: a colour ramp scaled by the row number."""
  w, h = size
  ramp = np.linspace(0, 1, w)[None, :, None] * np.array([1.0, 0.5, 0.25])
  return (np.broadcast_to(ramp, (h, w, 3)) * 40 * (i + 1) % 256).astype(np.uint8)


class CountingSource:
  """In-memory uint8 "image" records that remember the rows read (a stand-in for array_record,
  for `data.records.RecordArray`)."""

  def __init__(self, images):
    self.images, self.read = images, []

  def __len__(self):
    return len(self.images)

  def __getitems__(self, rows):
    self.read += [int(r) for r in rows]
    return [{"image": self.images[r]} for r in rows]


def write_faces(root, rows, csv_name, mode="RGB"):
  """An AgeDB / IMDB-WIKI manual directory: images plus a CSV of (age, path, split)."""
  for i, (path, _, _) in enumerate(rows):
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(face_pixels(i))
    im.convert(mode).save(root / path, format="PNG")  # a .jpg name holding PNG bytes is fine
  with open(root / csv_name, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["age", "path", "split"])
    w.writerows([(age, path, split) for path, age, split in rows])


def agedb_rows(n, seed=0):
  """`n` AgeDB-style rows with ages 1-100 and a 70/10/20 split."""
  r = np.random.default_rng(seed)
  ages = r.integers(1, 101, n)
  splits = r.choice(["train", "val", "test"], n, p=[0.7, 0.1, 0.2])
  return [(f"AgeDB/{i}_P{i % 7}_{a}_f.jpg", int(a), s) for i, (a, s) in
          enumerate(zip(ages, splits))]


def quarter_loads(quarters, customers, seed=0):
  """[quarters, customers] loads with a daily cycle, a customer level and noise."""
  r = np.random.default_rng(seed)
  q = np.arange(quarters)
  base = 10 * (1 + np.arange(customers))
  return base + 5 * np.sin(2 * np.pi * q / 96)[:, None] + r.uniform(0, 1, (quarters, customers))


def write_electricity(path, start, quarters, customers, seed=0):
  """The UCI LD2011_2014.txt layout: quoted header and timestamps, semicolons, decimal commas."""
  loads = quarter_loads(quarters, customers, seed)
  stamps = pd.date_range(start, periods=quarters, freq="15min")
  lines = ['"";' + ";".join(f'"MT_{i + 1:03d}"' for i in range(customers))]
  for t, row in zip(stamps, loads):
    lines.append(f'"{t:%Y-%m-%d %H:%M:%S}";' + ";".join(
        f"{v:.6f}".replace(".", ",") for v in row))
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def smoke_config(name, **overrides):
  """Shipped config `name` at smoke size with one model per stage (tests/test_seeds.py runs
  whole pipelines of ensembles), with `overrides` (field -> command-line text) applied."""
  from jax_unlearn import config_io
  c = config_io.load_config(name)
  c.smoke = True
  c.seeds = 1
  for key, value in overrides.items():
    config_io.apply_override(c, key, value)
  return c
