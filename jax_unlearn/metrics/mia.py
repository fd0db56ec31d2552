"""Membership inference: can an attacker tell from a sample's loss whether the model trained on it?

The paper's attack: an RBF support vector machine (C=3, gamma="auto") learns to separate the
per-sample losses of training data (members, label 1) from those of test data (non-members,
label 0); the score of a model is the fraction of forget samples it calls "member". A model that
truly forgot should score like the retrained model. The attack's accuracy and AUC on a held-out
part of its own data say whether it is informative at all (0.5 means it is guessing).
"""
from typing import Callable

import jax.numpy as jnp
import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.svm import SVC

from jax_unlearn import train
from jax_unlearn.errors import UserError

MIA_KEYS = ("mia_forget", "mia_attack_accuracy", "mia_attack_auc")


def loss_values(pred: np.ndarray, y: np.ndarray, loss: Callable) -> np.ndarray:
  """Per-example `loss` of predictions [N, ...] against labels [N, ...] as float64 [N]."""
  if len(pred) == 0:
    return np.zeros(0)
  return np.asarray(loss(jnp.asarray(pred), jnp.asarray(y)), np.float64)


def per_example_losses(apply_fn: Callable, variables, x: np.ndarray, y: np.ndarray,
                       loss: Callable, *, batch_size: int = 1024, mesh=None,
                       shards: int | None = None, predict_fn=None) -> np.ndarray:
  """[N] losses of a model on every row, predicted in large fixed-size jitted batches."""
  pred = train.predict(apply_fn, variables, x, batch_size=batch_size, mesh=mesh, shards=shards,
                       predict_fn=predict_fn)
  return loss_values(pred, y, loss)


def _sample(n: int, samples: int, holdout: float, rng: np.random.Generator, what: str):
  """(train indices, held-out indices) of a seeded sample of at most `samples` of n rows."""
  idx = rng.permutation(n)[:min(samples, n)]
  need = 2 if holdout > 0 else 1
  if len(idx) < need:
    raise UserError(f"the membership attack needs at least {need} {what} samples, got {len(idx)}.",
                    "use a larger data split or set metrics.mia_samples higher.")
  n_hold = min(max(int(round(holdout * len(idx))), 1), len(idx) - 1) if holdout > 0 else 0
  return idx[n_hold:], idx[:n_hold]


def membership_attack(member_losses: np.ndarray, nonmember_losses: np.ndarray,
                      target_losses: np.ndarray, *, samples: int = 2000, holdout: float = 0.3,
                      seed: int = 0) -> dict[str, float | None]:
  """The paper's loss-based attack, deterministic for a given seed.

  Args:
    member_losses: [N] per-sample losses of training data the model keeps (retain-train).
    nonmember_losses: [M] per-sample losses of data it never saw (test).
    target_losses: [F] per-sample losses of the samples to judge (forget-train).
    samples: at most this many members and as many non-members are drawn (seeded).
    holdout: the fraction of each drawn class held out to score the attack itself.
  Returns:
    {"mia_forget": fraction of targets predicted member, "mia_attack_accuracy",
    "mia_attack_auc": on the held-out members and non-members (None when holdout is 0)}.
    All None when a loss is not finite (a diverged model has no meaningful attack).
  """
  if not 0.0 <= holdout < 1.0:
    raise UserError(f"the attack's held-out fraction must be in [0, 1), got {holdout}.",
                    "set metrics.mia_holdout to e.g. 0.3.")
  member = np.asarray(member_losses, np.float64)
  nonmember = np.asarray(nonmember_losses, np.float64)
  target = np.asarray(target_losses, np.float64)
  if not all(np.all(np.isfinite(a)) for a in (member, nonmember, target)):
    return dict.fromkeys(MIA_KEYS)
  rng = np.random.default_rng(seed)
  m_fit, m_hold = _sample(len(member), samples, holdout, rng, "member (retain-train)")
  n_fit, n_hold = _sample(len(nonmember), samples, holdout, rng, "non-member (test)")
  features = np.concatenate([member[m_fit], nonmember[n_fit]])[:, None]  # [S, 1]
  labels = np.concatenate([np.ones(len(m_fit)), np.zeros(len(n_fit))])
  attack = SVC(C=3, gamma="auto", kernel="rbf").fit(features, labels)
  result = {"mia_forget": float(np.mean(attack.predict(target[:, None]))) if len(target) else None,
            "mia_attack_accuracy": None, "mia_attack_auc": None}
  if holdout > 0:
    held = np.concatenate([member[m_hold], nonmember[n_hold]])[:, None]
    held_labels = np.concatenate([np.ones(len(m_hold)), np.zeros(len(n_hold))])
    result["mia_attack_accuracy"] = float(np.mean(attack.predict(held) == held_labels))
    result["mia_attack_auc"] = float(roc_auc_score(held_labels, attack.decision_function(held)))
  return result
