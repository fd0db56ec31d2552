"""What every stage of a run shares (`Experiment`) and how a run starts: the config checked once
(`session`), then the data, forget masks, model and keys loaded with every check that can fail
before training (`load`). The stages themselves are in `pipeline`.
"""
import contextlib
import dataclasses
import logging
import os
import shutil
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jax_unlearn import data as data_lib
from jax_unlearn import config_io, losses, parallel, runtime, train, unlearn
from jax_unlearn.errors import UserError
from jax_unlearn.models import check_model_input, from_linen, get_model, initialize

log = logging.getLogger("jax_unlearn")


@contextlib.contextmanager
def session(config: ml_collections.ConfigDict, workdir: str,
            overrides: Sequence[tuple[str, str]] = ()):
  """(the checked config, its `RunSpec`) (`config_io.prepare`) with `workdir` writable and its
  log.txt attached to the log for the duration: what every command over the stages starts with."""
  config, spec = config_io.prepare(config, overrides)
  with runtime.workdir_log(workdir):
    yield config, spec


@dataclasses.dataclass
class Experiment:
  """What the stages share: the config, the data and its forget masks, the model, the keys.

  Every stage is an ensemble of one model per seed (`members` = K, one for a single seed):
  `root` holds one key per seed, variables carry a leading member axis, and member k is the model
  one run of seed k trains.
  """
  config: ml_collections.ConfigDict
  spec: config_io.RunSpec  # what the config resolves to (seeds, each stage's settings)
  workdir: str
  quiet: bool
  dp: parallel.DataParallel
  ds: data_lib.Dataset
  masks: data_lib.ForgetMasks
  per_example: losses.LossFn
  apply_fn: Callable
  init_fn: Callable
  augment: Callable | None
  root: jax.Array
  # What determines every stage beyond what the training loop sees itself (see train.loop).
  identity: dict
  clock: runtime.Clock = dataclasses.field(default_factory=runtime.Clock)
  reused: list = dataclasses.field(default_factory=list)  # stages taken from their checkpoints

  @property
  def checkpoints(self) -> str:
    return os.path.join(self.workdir, "checkpoints", self.config.model.name)

  @property
  def seeds(self) -> list[int]:
    """The seeds of each stage's models (`spec.seeds`)."""
    return list(self.spec.seeds)

  @property
  def members(self) -> int:
    """K, the models of each stage (one per seed)."""
    return len(self.seeds)

  def key(self, purpose: int) -> jax.Array:
    """The stage keys of `purpose`, one per member ([K])."""
    return train.ensemble.fold_in(self.root, purpose)

  def fresh(self, purpose: int) -> dict:
    """Fresh variables, stacked over the members, each from its own key."""
    return train.ensemble.init_members(self.init_fn, self.key(purpose))


def load(config: ml_collections.ConfigDict, workdir: str, *,
                    spec: config_io.RunSpec | None = None, quiet: bool = False,
                    fresh: bool = False) -> Experiment:
  """Stage 0: the parallel context, the data and forget masks, the model; every check that can
  fail before training. `spec`: the checked config's (`config_io.check_config` when None)."""
  if spec is None:
    spec = config_io.check_config(config)
  dp = parallel.DataParallel.create(config.devices or None, config.batch_shards or None)
  log.info("experiment %s on %d device(s): %s", config.experiment, dp.devices,
           jax.devices()[0].device_kind)
  clock = runtime.Clock()
  with clock.timing("data"):
    ds = data_lib.load_dataset(config.data.name, seed=config.seed, **config.data.kwargs.to_dict())
    masks = data_lib.make_forget_masks(ds, config.forget.to_dict())
  task = ds.task
  n = masks.counts()
  log.info("data %s (%s): %s (%.1fs)", ds.name, task.label, n, clock.seconds["data"])
  if config.train.batch_size > n["retain"]:  # checked now, not after hours of original training
    raise UserError(
        f"config train.batch_size {config.train.batch_size} is larger than the training data: "
        f"{n['train']} samples, {n['retain']} of them retained (the retrained model trains on "
        "those).", f"set --config.train.batch_size={n['retain']} or less.")
  if spec.audit["lira"] and config.train.batch_size > n["train"] // 2:
    raise UserError(
        f"config train.batch_size {config.train.batch_size} is larger than the {n['train'] // 2} "
        "rows each of LiRA's shadow models trains on (half the training data).",
        f"set --config.train.batch_size={n['train'] // 2} or less, or leave lira out of "
        "audit.which.")

  loss_kwargs = {"quantiles": tuple(task.quantiles)} if task.loss == "quantile" else {}
  per_example = losses.get_loss(task.loss, **loss_kwargs)
  facts = {**task.extra, "out_dim": ds.train.y.shape[1], "kernels": config.kernels}
  if task.quantiles:
    facts["quantiles"] = tuple(task.quantiles)
  model_kwargs = {k: v for k, v in config.model.kwargs.to_dict().items() if v is not None}
  module = get_model(config.model.name, data_facts=facts, **model_kwargs)
  apply_fn = unlearn.sisa.serving(from_linen(module))  # sharded models (sisa) too
  sample_x = np.asarray(ds.train.x[:2])  # decoded, when the inputs are streamed

  def init_fn(key):
    return initialize(module, key, sample_x, init=config.model.init)

  check_model_input(config.model.name, apply_fn, init_fn, sample_x, ds.train.y.shape[1])
  if fresh:
    shutil.rmtree(os.path.join(workdir, "checkpoints"), ignore_errors=True)
  augment = data_lib.augment_for(task, config.data.augment)  # images only; flips keep the label
  # The training loop fingerprints the arrays, keys and starting variables it sees; validation
  # rows, augmentation and the model's definition (kernels included) come from these settings.
  data_identity = config.data.to_dict()  # how inputs are read (workers, prefetch) changes no result
  data_identity["kwargs"] = {k: v for k, v in data_identity["kwargs"].items()
                             if k not in data_lib.records.READ_SETTINGS}
  identity = {"data": data_identity, "forget": config.forget.to_dict(),
              "model": {"name": config.model.name, "kwargs": model_kwargs, "facts": facts,
                        "init": config.model.init}}
  seeds = spec.seeds
  root = jnp.stack([jax.random.key(s) for s in seeds])
  if len(seeds) > 1:
    log.info("%d models per stage (seeds %s), trained at once on %d device(s)", len(seeds),
             list(seeds), dp.members(len(seeds)).devices)
  return Experiment(config, spec, workdir, quiet, dp, ds, masks, per_example, apply_fn, init_fn,
                    augment, root, identity, clock)
