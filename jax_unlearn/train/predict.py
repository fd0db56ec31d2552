"""Batched, jitted predictions (and any row-wise function of a model) over a `DataParallel`."""
import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

from jax_unlearn import losses, parallel
from jax_unlearn.data import records


@dataclasses.dataclass(frozen=True)
class PredictFn:
  """A jitted row-wise `fn(variables, x) -> [B, ...]` and the `DataParallel` it runs on.

  `predict` feeds it fixed-size padded batches, so it compiles once for every call.
  """
  jitted: Callable
  dp: parallel.DataParallel

  def __call__(self, variables, x):
    return self.jitted(variables, x)


def make_row_fn(fn: Callable, dp: parallel.DataParallel | None = None) -> PredictFn:
  """Jitted row-wise `fn(variables, x) -> [B, ...]`, rows sharded over `dp`.

  With `dp.shards`, rows go through `fn` in that many fixed blocks (see `_rows_in_blocks`), so a
  row's value is bitwise the same on any device count dividing `shards`.
  """
  dp = parallel.resolve(dp)
  if dp.shards is not None:
    fn = _rows_in_blocks(fn, dp)
  return PredictFn(dp.jit_rows(fn), dp)


def make_predict_fn(apply_fn: Callable, dp: parallel.DataParallel | None = None) -> PredictFn:
  """Jitted `predict(variables, x) -> pred` of the model contract in evaluation mode."""
  return make_row_fn(lambda variables, x: apply_fn(variables, x, train=False)[0], dp)


def _rows_in_blocks(fn: Callable, dp: parallel.DataParallel) -> Callable:
  """A row-wise `fn(variables, x) -> [B, ...]` computed on `dp.shards` fixed row blocks of x.

  Each device runs the one per-block program on its blocks in turn, so a row's value does not
  depend on how many rows a device holds (kernels pick their algorithm by batch size).
  """
  per_device = dp.blocks_per_device

  def local(variables, x):
    out = jax.lax.map(lambda block: fn(variables, block),
                      x.reshape((per_device, -1) + x.shape[1:]))
    return jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[2:]), out)

  return jax.shard_map(local, mesh=dp.mesh, in_specs=(P(), P(parallel.DATA_AXIS)),
                       out_specs=P(parallel.DATA_AXIS), check_vma=False)


def predict(predict_fn: PredictFn, variables, x: np.ndarray, *,
            batch_size: int = 512) -> np.ndarray:
  """`predict_fn` on every row of `x` (numpy or lazy), in fixed-size padded batches (one
  compilation); each process reads only its rows of a batch, lazy rows read ahead by threads."""
  dp = predict_fn.dp
  x = records.as_rows(x)
  n = len(x)
  size = dp.padded(min(batch_size, max(n, 1)))
  read = functools.partial(_host_chunk, x, n, size, dp.host_rows(size))
  starts = range(0, n, size)
  # Threads only: worker processes start per call, which many short evaluations would pay.
  chunks = (records.stream(read, starts, prefetch=x.prefetch) if records.is_lazy(x)
            else map(read, starts))
  outs = [_host(predict_fn(variables, dp.put_batch({"x": xb})["x"]))[:min(size, n - start)]
          for start, xb in zip(starts, chunks)]
  return np.concatenate(outs) if outs else np.zeros((0,))


def _host_chunk(x, n: int, size: int, rows: slice, start: int) -> np.ndarray:
  """This process's rows of the padded chunk at `start` (padding repeats the chunk's first row,
  as `parallel.pad_batch` pads)."""
  real = min(size, n - start)
  idx = start + np.concatenate([np.arange(real), np.zeros(size - real, np.int64)])
  return records.take(x, idx[rows])


def _host(out: jax.Array) -> np.ndarray:
  """Every row of a prediction on this host: with several processes, each holds only its own
  rows' shards, so the rows are gathered from all of them first."""
  return np.asarray(jax.device_get(parallel.gather(out)))


def make_validation_loss(apply_fn: Callable, per_example: losses.LossFn, x: np.ndarray,
                         y: np.ndarray, *, batch_size: int = 512,
                         dp: parallel.DataParallel | None = None):
  """variables -> mean per-example loss on (x, y): the validation loss for `fit` and plateaus."""
  predict_fn = make_predict_fn(apply_fn, dp)

  def validate(variables) -> float:
    pred = predict(predict_fn, variables, x, batch_size=batch_size)
    return float(np.mean(np.asarray(per_example(jnp.asarray(pred), jnp.asarray(y)), np.float64)))

  return validate
