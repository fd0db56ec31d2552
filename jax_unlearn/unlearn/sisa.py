"""SISA: exact unlearning by shards (Bourtoule et al., "Machine Unlearning", IEEE S&P 2021).

The training rows are split into `shards` disjoint shards (at random, or by group with
`shard_by="group"`: all rows of a person, customer or digit in one shard, so that forgetting a
group touches one shard), and each shard's rows into `slices` slices. Shard model s trains on its
slice 1 from fresh weights, then on slices 1..2 from there, and so on (`epochs` epochs per
slice, a fresh optimizer each time), keeping the variables after each slice. The S shard models
train as one ensemble on the member axis (with K seeds: K x S members, member k * S + s).
The model predicts the mean of its shards' predictions ("aggregate", or their median, less moved
by one bad shard).

Unlearning retrains only the shards that hold forget rows, each from its variables after the
last slice before its first forget row, on its retain rows. Every key and data order is a
function of (seed, shard, slice) and the assignment of rows to shards and slices is fixed
before any request, so the result is exactly what SISA trained on the retain rows alone (with
that assignment) computes: the same models, up to float rounding of the ensemble's width. That
is the guarantee. It is not the monolithic model retrained on the retain rows: a sharded model
is another, usually less accurate, model, and the record's "sisa_original" auxiliary model says
by how much.

The sharded model's variables are `{"params": {KEY: [S, ...]}, ...}` for the apply function
`serving(apply_fn)` (the pipeline serves every model through it), which maps the shards and
aggregates their predictions; its activations are the shards' means. The record's "seconds"
count the unlearning only; "original_seconds" the sharded model's training.
"""
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jax_unlearn import train
from jax_unlearn.errors import UserError
from jax_unlearn.models.adapters import accepts_mask, split_outputs
from jax_unlearn.unlearn import base, retrained

# The shard models train by the original's recipe (the retrained model's, with the best epoch
# on the retain-cohort validation rows kept); a config fills these from its `train` (INHERITS).
INHERITS = ("epochs", "lr", "plateau_factor", "plateau_patience")
DEFAULTS = {**retrained.DEFAULTS, "keep_best": True, "shards": 4, "slices": 1,
            "shard_by": "random", "aggregate": "mean", "assignment_seed": 0}
# The tuning search space: setting -> candidate values, the defaults among them.
SEARCH_SPACE = {"lr": [3e-3, 1e-2, 3e-2], "shards": [4, 8, 16], "slices": [1, 2, 4]}
SHARD_BY = ("random", "group")
# The parameters' one top-level key of a sharded model, by aggregation rule.
KEYS = {"mean": "sisa_shards_mean", "median": "sisa_shards_median"}
PURPOSE_ASSIGN = 11


def assign(n: int, shards: int, slices: int, seed: int,
           group: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Each row's shard and slice ([n] ints each), drawn from `seed` alone.

  Random: shards of near-equal size. By `group`: whole groups to shards, largest groups first,
  each to the shard with the fewest rows so far (ties by a random order of the groups).
  Slices: a random near-equal split of each shard's rows.
  """
  rng = np.random.default_rng([PURPOSE_ASSIGN, seed])
  if group is None:
    shard = rng.permutation(n) % shards
  else:
    ids, inverse, counts = np.unique(np.asarray(group), return_inverse=True, return_counts=True)
    if len(ids) < shards:
      raise UserError(f"{len(ids)} groups cannot fill {shards} shards by group.",
                      f"use at most {len(ids)} shards, or shard_by=random.")
    tie = rng.permutation(len(ids))
    load, of_group = np.zeros(shards, np.int64), np.zeros(len(ids), np.int64)
    for g in sorted(range(len(ids)), key=lambda g: (-counts[g], tie[g])):
      of_group[g] = int(np.argmin(load))
      load[of_group[g]] += counts[g]
    shard = of_group[inverse.reshape(-1)]
  slice_ = np.zeros(n, np.int64)
  for s in range(shards):
    rows = np.flatnonzero(shard == s)
    slice_[rows] = rng.permutation(len(rows)) % slices
  return shard.astype(np.int64), slice_


def sisa(ctx: base.Context, original_variables: Mapping, data: base.UnlearnData,
         config: Mapping | None = None) -> base.MethodResult:
  """The sharded model trained on every row, then its shards that hold forget rows retrained
  from their last slice before them (the `original_variables` serve as the architecture check)."""
  s = settings(config)
  shard, slice_ = assign(len(data.x), s["shards"], s["slices"], s["assignment_seed"],
                         data.group if s["shard_by"] == "group" else None)
  plan = Plan(ctx, data, s, shard, slice_)
  t0 = time.perf_counter()
  after_slice, original = plan.fit_slices(np.ones(len(data.x), bool), "shards")
  touched = sorted(set(shard[data.forget].tolist()))
  first_forget = {t: int(slice_[data.forget & (shard == t)].min()) for t in touched}
  unlearned, cost = plan.fit_slices(~data.forget, "unlearn", after_slice, first_forget)
  one = train.ensemble.member(original_variables, 0)
  base.check_same_architecture(one, train.ensemble.member(unlearned[-1], 0), "sisa shard model")
  record = {**cost, "reused": original["reused"] and cost["reused"],
            "original_seconds": original["seconds"], "shards": s["shards"], "slices": s["slices"],
            "touched_shards": touched, "first_forget_slices": list(first_forget.values()),
            # The retain rows the retrained shards train on (each slice stage adds its rows to
            # the earlier slices').
            "retrained_rows": int(np.sum(np.isin(shard, touched) & ~data.forget)),
            "wall_seconds": time.perf_counter() - t0}
  return base.MethodResult(plan.served(unlearned[-1]), record,
                           {"sisa_original": plan.served(after_slice[-1])})


def settings(config: Mapping | None) -> dict:
  """SISA's checked settings."""
  s = base.settings("sisa", config, DEFAULTS)
  for key in ("shards", "slices"):
    if isinstance(s[key], bool) or not isinstance(s[key], int) or s[key] < 1:
      raise UserError(f"config methods.sisa.{key} must be a positive integer, got {s[key]!r}.",
                      f"set e.g. --config.methods.sisa.{key}=4.")
  if s["shard_by"] not in SHARD_BY:
    raise UserError(f"config methods.sisa.shard_by must be one of {SHARD_BY}, got "
                    f"{s['shard_by']!r}.", "use random, or group for data with group ids.")
  if s["aggregate"] not in KEYS:
    raise UserError(f"config methods.sisa.aggregate must be one of {tuple(KEYS)}, got "
                    f"{s['aggregate']!r}.", "use mean or median.")
  return s


class Plan:
  """The shard models of one run: K seeds x S shards as members k * S + s, their keys and data
  orders a function of (seed, shard, slice) alone."""

  def __init__(self, ctx: base.Context, data: base.UnlearnData, s: Mapping,
               shard: np.ndarray, slice_: np.ndarray):
    if s["shard_by"] == "group" and data.group is None:
      raise UserError("sisa with shard_by=group needs the training rows' group ids.",
                      "use a dataset with groups, or shard_by=random.")
    self.ctx, self.data, self.s, self.shard, self.slice = ctx, data, s, shard, slice_
    self.seeds = ctx.members
    self.count = self.seeds * s["shards"]

    def per_shard(keys):  # [K] keys -> [K * S]: member k * S + s
      return jnp.stack([jax.random.fold_in(keys[k], t) for k in range(self.seeds)
                        for t in range(s["shards"])])

    self.init_keys = per_shard(ctx.key(base.PURPOSE_INIT))
    self.train_keys = per_shard(ctx.key(base.PURPOSE_TRAIN))
    self.order_seeds = ctx.seed(base.PURPOSE_ORDER)
    # A shard with fewer rows than a batch trains on all of them at each step.
    self.batch_size = int(s["batch_size"])

  def members(self, shards: Sequence[int]) -> list[int]:
    return [k * self.s["shards"] + t for k in range(self.seeds) for t in shards]

  def fit_slices(self, keep: np.ndarray, stage: str, start: list | None = None,
                 first: Mapping[int, int] | None = None) -> tuple[list, dict]:
    """Every slice stage of the shards in `first` (shard -> its first slice to train; all
    shards from slice 0 when None) on their rows in `keep`, each from its variables after the
    slice before (`start[r - 1]` for one not trained yet) or fresh weights at slice 1.

    A shard without rows at a slice keeps its variables (fresh ones, if it had none before); one
    without rows at the last slice is removed: its weights become NaN, which the aggregate skips.
    Returns (the stacked [K * S] variables after each slice, {"steps", "seconds", "reused":
    whether every stage was}); the members of shards not in `first` keep `start`'s variables.
    """
    first = first if first is not None else {t: 0 for t in range(self.s["shards"])}
    after, cost = [], {"steps": 0, "seconds": 0.0, "reused": True}
    last = self.s["slices"] - 1
    for r in range(last + 1):
      current = None if start is None else start[r]
      active = self.members([t for t in sorted(first) if first[t] <= r])
      if active:
        begin = self._fresh() if r == 0 else after[r - 1]  # untrained members hold `start`'s
        current = _place(begin if current is None else current,
                         train.ensemble.take(begin, active), active)
        rows = {m: self._rows(m, r, keep) for m in active}
        live = [m for m in active if len(rows[m])]
        if live:
          outcome = self._fit(stage, r, live, train.ensemble.take(begin, live), rows)
          cost = {"steps": cost["steps"] + int(outcome.steps),
                  "seconds": cost["seconds"] + float(outcome.seconds),
                  "reused": cost["reused"] and bool(outcome.reused)}
          current = _place(current, outcome.variables, live)
      after.append(current)
    removed = [m for m in self.members(sorted(first)) if not len(self._rows(m, last, keep))]
    if removed:
      after[-1] = _place(after[-1], jax.tree_util.tree_map(
          lambda a: jnp.full_like(a, jnp.nan) if jnp.issubdtype(a.dtype, jnp.floating) else a,
          train.ensemble.take(after[-1], removed)), removed)
    return after, cost

  def _rows(self, m: int, r: int, keep: np.ndarray) -> np.ndarray:
    """Member m's training rows at slice r: its shard's rows of slices <= r in `keep`."""
    return np.flatnonzero((self.shard == m % self.s["shards"]) & (self.slice <= r) & keep)

  def _fresh(self):
    return train.ensemble.init_members(lambda key: dict(self.ctx.init_fn(key)), self.init_keys)

  def _fit(self, stage: str, r: int, chosen: list[int], variables,
           rows: Mapping[int, np.ndarray]) -> train.TrainOutcome:
    """Slice stage r of the members `chosen`, member m on its `rows[m]`."""
    arrays = [{"x": self.data.x[rows[m]], "y": self.data.y[rows[m]]} for m in chosen]
    seeds = [int(np.random.default_rng([self.order_seeds[m // self.s["shards"]],
                                        m % self.s["shards"], r]).integers(2**31 - 1))
             for m in chosen]
    rng = jnp.stack([jax.random.fold_in(self.train_keys[m], r) for m in chosen])
    name = f"{stage}_slice{r + 1}"
    identity = {**dict(self.ctx.identity or {}), "stage": name,
                "members": [[m // self.s["shards"], m % self.s["shards"]] for m in chosen]}
    return train.train_model(
        self.ctx.apply_fn, variables, train.supervised_loss(self.ctx.loss), arrays,
        train.Recipe.from_settings(self.s, batch_size=self.batch_size), rng=rng, seeds=seeds,
        dp=self.ctx.dp, augment=self.data.augment,
        validate=base.validation_loss(self.ctx, self.data, self.s["keep_best"]),
        stage=train.Stage(name, self.ctx.stage_dir(name), identity, self.ctx.progress))

  def served(self, stacked) -> dict:
    """[K * S] members as K sharded models, for `serving`."""
    key, shards = KEYS[self.s["aggregate"]], self.s["shards"]

    def regroup(a):
      return jnp.reshape(a, (self.seeds, shards) + a.shape[1:])

    return {c: {key: jax.tree_util.tree_map(regroup, tree)} for c, tree in stacked.items()}


def _place(stacked, part, chosen: list[int]):
  """`stacked` with members `chosen` replaced by `part`'s (in order). On the host: the two
  ensembles may be spread over different devices (12 members over 4, 9 of them over 3)."""
  index = np.asarray(chosen)

  def put(a, b):
    out = np.array(a)
    out[index] = np.asarray(b)
    return jnp.asarray(out)

  return jax.tree_util.tree_map(put, stacked, part)


def sharded_key(variables: Mapping) -> str | None:
  """The aggregation key of a sharded model's variables, or None for one model."""
  params = variables.get("params", {})
  if isinstance(params, Mapping) and len(params) == 1:
    key = next(iter(params))
    if key in KEYS.values():
      return key
  return None


def serving(apply_fn: Callable) -> Callable:
  """`apply_fn` that also runs sharded models: each shard's prediction, aggregated; any other
  variables go to `apply_fn` as they are."""
  takes_mask = accepts_mask(apply_fn)

  def apply(variables, x, *, train: bool, rngs=None, mask=None):
    kwargs = {"mask": mask} if takes_mask and mask is not None else {}
    key = sharded_key(variables)
    if key is None:
      return apply_fn(variables, x, train=train, rngs=rngs, **kwargs)
    shards = {c: tree[key] for c, tree in variables.items()}

    def one(shard_variables):
      out = apply_fn(shard_variables, x, train=train, rngs=rngs, **kwargs)
      return split_outputs(out, {c: v for c, v in shard_variables.items() if c != "params"})

    pred, acts, state = jax.vmap(one)(shards)
    combine = jnp.nanmedian if key == KEYS["median"] else jnp.nanmean  # removed shards: NaN
    acts = jax.tree_util.tree_map(lambda a: jnp.nanmean(a, axis=0), acts)
    if train and state:
      return combine(pred, axis=0), acts, {c: {key: v} for c, v in state.items()}
    return combine(pred, axis=0), acts

  return apply
