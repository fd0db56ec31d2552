"""The audit of every unlearning method on the demo's data, 8 models per stage.

The demo's rotated digits and forget cohort (angles <= -30), with an MLP instead of the
All-CNN: on 2 CPU cores, 8 members of every stage of 15 methods plus the shadows then finish in
minutes (vmapped convolutions on XLA's CPU backend are many times slower; on an accelerator set
--config.model.name=allcnn). Every stage trains its 8 members at once (seeds 0..7); LiRA's 8
shadow models train on random
halves of the training rows in one more compiled program, and 8 more retrained models on other
seeds are the null every audit number is read against. The audit (results.md, "Audit";
results.json, "audit"; per-sample values in audit.npz; plots/audit_*.png) then asks, for each
method, whether an attacker can tell its models from retrained ones (U-LiRA, the competition's
epsilon score, KS) and how much LiRA finds of the forget rows, beside the paper's SVM attack.
AIN is left out: it measures relearning, not membership, and costs a relearning per model.

  jax-unlearn run --config audit_rotdigits --workdir runs/audit

On an accelerator, raise the model counts (README, "Auditing"): --config.seeds=128
--config.audit.shadows=128 (per-sample Gaussians from 64 models a side on).
"""
import ml_collections

from jax_unlearn import unlearn
from jax_unlearn.configs import demo, set_methods


def get_config():
  c = demo.get_config()
  c.experiment = "audit_rotdigits"
  c.seeds = 8
  c.model.name = "mlp"
  c.model.kwargs = ml_collections.ConfigDict({"hidden": (256, 256)})
  c.train.epochs = 30
  c.train.plateau_patience = 5
  set_methods(c, {name: (name, {}) for name in unlearn.method_names() if name != "retrained"})
  c.metrics.which = ("errors", "wasserstein", "mia")
  c.audit.enabled = True
  c.audit.shadows = 8
  return c
