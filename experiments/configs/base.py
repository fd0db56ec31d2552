"""Defaults shared by every experiment config: the paper's training recipe and method settings.

Each experiment file's get_config() starts from `base_config()` and changes what differs. Config
files are Python that the user runs: load only configs you trust.
"""
import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "base"
  c.seed = 0
  # Shrinks data, model and epochs to a seconds-long run of the same code paths (tests, CI).
  c.smoke = False
  c.devices = 0  # 0 = all local devices of all hosts
  # 0: each device's rows form one block, XLA sums the gradients (fastest; results differ between
  # device counts by float rounding, which training amplifies). N: every batch is cut into N fixed
  # blocks summed in a fixed order, so any device count dividing N gives the same numbers
  # (BatchNorm statistics per block). See train.make_train_step.
  c.batch_shards = 0

  c.data = ml_collections.ConfigDict()
  c.data.name = "rotdigits"
  c.data.kwargs = ml_collections.ConfigDict()
  c.data.augment = False

  c.forget = ml_collections.ConfigDict({"kind": "label_range", "low": None, "high": None,
                                        "include_high": True})

  c.model = ml_collections.ConfigDict()
  c.model.name = "allcnn"
  c.model.kwargs = ml_collections.ConfigDict()

  # The paper's recipe for the original and the retrained model.
  c.train = ml_collections.ConfigDict()
  c.train.epochs = 100
  c.train.batch_size = 256
  c.train.lr = 0.01
  c.train.optimizer = "adam"
  c.train.plateau_factor = 0.1
  c.train.plateau_patience = 10
  c.train.clip_norm = 0.0  # 0 = no clipping

  # Unlearning methods to run, each with its own settings (retrained always runs).
  c.methods = ml_collections.ConfigDict()
  c.methods.finetune = ml_collections.ConfigDict({"epochs": 5, "lr": 1e-3})
  c.methods.gaussian = ml_collections.ConfigDict({"epochs": 1, "lr": 1e-3})
  c.methods.blindspot = ml_collections.ConfigDict({
      "epochs": 1, "lr": 1e-3, "blindspot_epochs": 2, "blindspot_lr": 0.01, "beta": 50.0,
      "attention": "features"})

  # Settings of metrics.evaluate_models (see jax_unlearn/metrics/report.py DEFAULTS).
  c.metrics = ml_collections.ConfigDict()
  c.metrics.mia_samples = 2000
  c.metrics.ain_alpha = 0.05
  c.metrics.ain_lr = 1e-3
  c.metrics.ain_batch_size = 64
  c.metrics.ain_max_epochs = 10
  c.metrics.predict_batch_size = 1024
  c.metrics.ain_steps_per_call = 4
  c.plots = True
  return c


def shrink_for_smoke(c: ml_collections.ConfigDict) -> None:
  """In place: tiny data, model and epochs, so a whole pipeline runs in seconds on a CPU."""
  c.data.kwargs.max_samples = 240
  c.train.epochs = 2
  c.train.batch_size = 32
  for name in c.methods:
    m = c.methods[name]
    m.epochs = 1
    if "blindspot_epochs" in m:
      m.blindspot_epochs = 1
  if c.model.name in ("allcnn", "resnet18", "mobilenet"):
    c.model.kwargs.width = 0.05 if c.model.name == "allcnn" else 0.125
  if c.model.name == "tft":  # compile time grows with the window and the width
    c.model.kwargs.hidden = 8
    c.data.kwargs.encoder_length = 24
    c.data.kwargs.horizon = 6
  c.metrics.mia_samples = 60
  c.metrics.ain_max_epochs = 1
  c.metrics.ain_batch_size = 32
  c.metrics.ain_steps_per_call = 1
  c.metrics.predict_batch_size = 64
