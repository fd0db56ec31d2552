"""Exact unlearning by shards (sisa) on the demo's data and model, forgetting a random 10% of the
training rows: 4, 8 and 16 random shards beside the monolithic retrained model.

A random forget set lands in every shard, so every shard retrains: the cost of sharding without
its saving (see sisa_group for a request that touches one shard). Each sisa row's auxiliary
"sisa_original" is its sharded model before the request: its errors against the original's are
what sharding costs in accuracy.

  jax-unlearn run --config sisa_random --workdir runs/sisa_random
"""
from jax_unlearn.configs import base, rotdigits_random


def get_config(shard_by: str = "random", shards=(4, 8, 16)):
  c = rotdigits_random.get_config()
  c.experiment = f"sisa_{shard_by}"
  # AIN left out: relearning every shard of every model costs more than the rest of the run.
  c.metrics.which = tuple(m for m in c.metrics.which if m != "ain")
  # Each shard model trains by the original's recipe (sisa's INHERITS: epochs, learning rate
  # and its plateau schedule, the batch; the best epoch on the validation rows kept).
  base.set_methods(c, {f"sisa_s{s}": ("sisa", {"shards": s, "shard_by": shard_by})
                       for s in shards})
  return c
