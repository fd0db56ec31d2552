"""Exact unlearning by shards (sisa) when one group asks to be forgotten: the rotated digits'
digit 3, on shards that keep each digit whole (shard_by=group), 2, 5 and 10 shards; only the
shard holding the digit retrains.

  jax-unlearn run --config sisa_group --workdir runs/sisa_group
"""
from jax_unlearn.configs import sisa_random


def get_config():
  c = sisa_random.get_config("group", shards=(2, 5, 10))
  c.forget.kind = "groups"
  c.forget.ids = [3]
  c.forget.fraction = None
  c.forget.seed = None
  return c
