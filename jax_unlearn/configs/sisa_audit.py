"""The audit of exact unlearning by shards (sisa) on the demo's data, forgetting a random 10%:
the audit configuration's MLP and 8 models a side (audit_rotdigits), sisa with 4 random shards
beside fine-tuning and the field's cheap baselines EU-k and CF-k. The pipeline's audit compares
every method with the monolithic retrained model, against the null of retrained models of other
seeds; `experiments/sisa_audit.py` adds the audit against the sharded model retrained from
scratch.

  jax-unlearn run --config sisa_audit --workdir runs/sisa_audit
"""
from jax_unlearn.configs import audit_rotdigits, rotdigits_random, set_methods


def get_config():
  c = audit_rotdigits.get_config()
  c.experiment = "sisa_audit"
  rotdigits_random.forget_random_tenth(c)
  set_methods(c, {"finetune": ("finetune", {}), "eu_k": ("eu_k", {}), "cf_k": ("cf_k", {}),
                  "sisa_s4": ("sisa", {"shards": 4})})
  return c
