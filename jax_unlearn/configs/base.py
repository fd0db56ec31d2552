"""The base experiment config, built from the defaults of the modules that own them, and the
smoke shrink.

Every method, metric and the forget specification owns its settings and their defaults
(`unlearn.get_method(name).defaults`, `metrics.defaults()`, `data.forget_defaults()`); the config
is assembled from them, so a setting has one default and every setting a module accepts can be
overridden from the command line. The shipped configs (`jax_unlearn.configs.*`) start from
`base_config()` and change what differs.
"""
from typing import Any, Mapping, Sequence

import ml_collections

from jax_unlearn import data, metrics, models, published, settings, unlearn
from jax_unlearn.errors import UserError

# The paper's original-training batch; methods inherit it (their batch_size None).
TRAIN_BATCH_SIZE = published.TRAIN_RECIPE["batch_size"]
# Methods run by default (retrained always runs first, the rest in the config's key order).
METHODS = ("finetune", "gaussian", "blindspot")
# Method settings that default to the original training's (None in a method's config).
INHERITED = ("batch_size", "clip_norm")


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.experiment = "base"
  c.seed = 0  # the data split and forget cohort; with one model, its init and data order too
  # Models per stage: a count n (members seed, seed + 1, ..., seed + n - 1) or a list of seeds.
  # Every stage then trains all members at once (train.ensemble) and every metric is reported
  # with its mean, spread and 95% interval over them (see member_seeds). A list on the command
  # line: --config.seeds=[0,4,7]; in a config file: `with c.ignore_type(): c.seeds = [0, 4, 7]`.
  c.seeds = 1
  # Shrinks data, model and epochs to a seconds-long run of the same code paths (tests, CI).
  c.smoke = False
  c.devices = 0  # 0 = all local devices of all hosts
  # 0: each device's rows form one block, XLA sums the gradients (fastest; results differ between
  # device counts by float rounding, which training amplifies). N: every batch is cut into N fixed
  # blocks summed in a fixed order, so any device count dividing N gives the same numbers
  # (BatchNorm statistics per block). See train.make_train_step.
  c.batch_shards = 0
  # Convolution kernels, one of ops.KERNELS ("auto": the fastest this process can run; see
  # jax_unlearn.ops); recorded in results.json under "kernels".
  c.kernels = "auto"

  c.data = ml_collections.ConfigDict()
  c.data.name = "rotdigits"
  c.data.kwargs = ml_collections.ConfigDict()
  # "none", "ours" (4-pixel crop of the mean + flip) or "published" (16 black pixels + flip);
  # see data.augment_for.
  c.data.augment = "none"

  c.forget = ml_collections.ConfigDict(data.forget_defaults())

  c.model = ml_collections.ConfigDict()
  c.model.name = "allcnn"
  c.model.kwargs = ml_collections.ConfigDict()
  c.model.init = models.DEFAULT_INIT  # "flax" or "torch" (the published code's defaults)

  # The original and the retrained model: the retrained method's settings (the paper's recipe).
  c.train = ml_collections.ConfigDict(
      {**unlearn.get_method("retrained").defaults, "batch_size": TRAIN_BATCH_SIZE})

  # Unlearning methods to run, each with all its settings (retrained always runs).
  c.methods = ml_collections.ConfigDict()
  for name in METHODS:
    c.methods[name] = method_entry(name)

  # A tune.json of `jax-unlearn tune`: each tuned method also runs as "<label>_tuned" with the
  # chosen settings; refused on the seeds or forget request it was tuned on (see protocol).
  c.tuned = ""
  c.metrics = ml_collections.ConfigDict(metrics.defaults())
  # Strong membership audits over every member of every stage (metrics.audit); off by default,
  # as LiRA trains audit.shadows more models.
  c.audit = ml_collections.ConfigDict(metrics.audit.DEFAULTS)
  c.plots = True
  # TensorBoard event files of every stage's curves and the final metrics (workdir/tensorboard).
  c.tensorboard = True
  return c


def member_seeds(c: ml_collections.ConfigDict) -> list[int]:
  """The seeds of a stage's models: `c.seeds` models from `c.seed` on, or the listed seeds."""
  given = c.seeds
  if isinstance(given, (list, tuple)):
    seeds = list(given)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                            for s in seeds) or len(set(seeds)) != len(seeds):
      raise UserError(f"config seeds {given!r} must be distinct non-negative integers.",
                      "pass e.g. --config.seeds=[0,1,2] or a count, --config.seeds=3.")
    return seeds
  if isinstance(given, bool) or not isinstance(given, int) or given < 1:
    raise UserError(f"config seeds must be a positive count or a list of seeds, got {given!r}.",
                    "pass e.g. --config.seeds=3 or --config.seeds=[0,1,2].")
  return [int(c.seed) + i for i in range(given)]


def train_settings(c: ml_collections.ConfigDict) -> dict:
  """The original (and retrained) model's settings, checked as `train.*`."""
  return settings.merge(unlearn.get_method("retrained").defaults, c.train, "train")


def _inherited(m: unlearn.Method) -> list[str]:
  """The settings of method `m` a config fills from `train` when they are None: the common
  ones it does not fix itself, and those it declares it inherits."""
  return [k for k in INHERITED if k not in m.own_defaults] + list(m.inherits)


def method_entry(method: str) -> ml_collections.ConfigDict:
  """A method's config entry: its defaults, the inherited settings None (filled from `train`,
  see `method_settings`)."""
  m = unlearn.get_method(method)
  return ml_collections.ConfigDict({**m.defaults, **dict.fromkeys(_inherited(m))})


def method_variant(method: str, **changes) -> ml_collections.ConfigDict:
  """A config entry that runs registered `method` under another label (`c.methods[label] =
  method_variant(...)`), with `changes` over its defaults: ablations and tuned settings next to
  the defaults."""
  entry = method_entry(method)
  entry.method = method
  for key, value in changes.items():
    if key not in entry:
      unlearn.get_method(method).settings({key: value})  # the error names the closest setting
    entry[key] = value
  return entry


def set_methods(c: ml_collections.ConfigDict,
                entries: Mapping[str, tuple[str, Mapping[str, Any]]]) -> None:
  """In place: `c.methods` becomes exactly `entries`, label -> (registered method, changes over
  its defaults), each a `method_variant`."""
  c.methods = ml_collections.ConfigDict()
  for label, (method, changes) in entries.items():
    c.methods[label] = method_variant(method, **changes)


def search_entries(methods: Sequence[str], budget: int,
                   seed: int = 0) -> dict[str, tuple[str, dict]]:
  """Tuning candidates for `set_methods`: label "<method>_c<i>" -> (method, settings) for the
  `budget` candidates of each method's search space (`unlearn.Method.candidates`; c0 is its
  defaults), so every method is tuned with the same budget."""
  return {f"{m}_c{i}": (m, s) for m in methods
          for i, s in enumerate(unlearn.get_method(m).candidates(budget, seed))}


def method_of(c: ml_collections.ConfigDict, label: str) -> str:
  """The registered method a `c.methods` entry runs: its `method` field, else its label."""
  return c.methods[label].get("method") or label


def method_settings(c: ml_collections.ConfigDict, label: str) -> dict:
  """A `c.methods` entry's settings, inherited ones filled from `train`, checked."""
  given = c.methods[label].to_dict()
  given.pop("method", None)
  m = unlearn.get_method(method_of(c, label))
  for key in _inherited(m):
    if given.get(key) is None:
      given[key] = c.train[key]
  return m.settings(given)


def shrink_for_smoke(c: ml_collections.ConfigDict, keep: Sequence[str] = ()) -> None:
  """In place: tiny data, model and epochs, so a whole pipeline runs in seconds on a CPU. Fields
  named in `keep` (dotted, e.g. the command line's overrides) keep their values."""
  sizes = {"data.kwargs.max_samples": 240, "train.epochs": 2, "train.batch_size": 32,
           "metrics.mia_samples": 60, "metrics.ain_max_epochs": 1, "metrics.ain_batch_size": 32,
           "metrics.ain_steps_per_call": 1, "metrics.predict_batch_size": 64}
  for name in c.methods:
    sizes[f"methods.{name}.epochs"] = 1
    if "blindspot_epochs" in c.methods[name]:
      sizes[f"methods.{name}.blindspot_epochs"] = 1
  if c.model.name in ("allcnn", "resnet18", "mobilenet"):
    sizes["model.kwargs.width"] = 0.05 if c.model.name == "allcnn" else 0.125
  if c.data.name == "rotdigits":  # the digits are 8x8 scans: 16 loses no detail
    sizes["data.kwargs.image_size"] = 16
  if c.model.name == "tft":  # compile time grows with the window and the width
    sizes.update({"model.kwargs.hidden": 8, "data.kwargs.encoder_length": 24,
                  "data.kwargs.horizon": 6})
  for dotted, value in sizes.items():
    if dotted not in keep:
      *parents, key = dotted.split(".")
      node = c
      for part in parents:
        node = node[part]
      node[key] = value
