"""Membership inference: can an attacker tell from a sample's loss whether the model trained on it?

The paper's attack: an RBF support vector machine (C=3, gamma="auto") learns to separate the
per-sample losses of training data (members, label 1) from those of test data (non-members,
label 0); the score of a model is the fraction of forget samples it calls "member". A model that
truly forgot should score like the retrained model. The attack's accuracy and AUC on a held-out
part of its own data say whether it is informative at all (0.5 means it is guessing). The "mia"
metric runs the attack on every model with the same seed, so models differ only in their losses.
"""
from typing import Any, Callable

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.svm import SVC

from jax_unlearn import parallel, train
from jax_unlearn.errors import UserError
from jax_unlearn.metrics import base
from jax_unlearn.metrics.base import loss_values

MIA_KEYS = ("mia_forget", "mia_attack_accuracy", "mia_attack_auc")


def per_example_losses(apply_fn: Callable, variables, x: np.ndarray, y: np.ndarray,
                       loss: Callable, *, batch_size: int = 1024,
                       dp: parallel.DataParallel | None = None,
                       predict_fn: train.PredictFn | None = None) -> np.ndarray:
  """[N] losses of a model on every row, predicted in large fixed-size jitted batches.

  Pass a `predict_fn` from `train.make_predict_fn` to reuse its compilation (it runs on its own
  `dp`).
  """
  predict_fn = predict_fn or train.make_predict_fn(apply_fn, dp)
  return loss_values(train.predict(predict_fn, variables, x, batch_size=batch_size), y, loss)


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
  _check_holdout(holdout)
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


def _check_holdout(holdout) -> None:
  if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not (
      0.0 <= holdout < 1.0):
    raise UserError(f"the attack's held-out fraction must be in [0, 1), got {holdout}.",
                    "set metrics.mia_holdout to e.g. 0.3.")


class MembershipAttack(base.Metric):
  """The attack with retain-train rows as members, test rows as non-members, forget-train rows as
  targets."""
  name = "mia"
  defaults = {"mia_samples": 2000, "mia_holdout": 0.3}
  keys = MIA_KEYS
  required = ("mia_forget",)
  columns = (base.Column("mia_forget", "MIA forget", base.RETRAINED, base.HEADLINE),
             base.Column("mia_attack_accuracy", "MIA attack accuracy", base.RETRAINED),
             base.Column("mia_attack_auc", "MIA attack AUC", base.RETRAINED, base.DETAIL))

  def check(self, settings) -> None:
    samples = settings["mia_samples"]
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
      raise UserError(f"metrics.mia_samples must be an integer >= 2, got {samples!r}.",
                      "raise metrics.mia_samples, e.g. to 2000.")
    _check_holdout(settings["mia_holdout"])

  def evaluate(self, state, model: base.ModelContext) -> dict[str, Any]:
    forget, s = model.data.forget_train, model.settings
    return membership_attack(model.train_losses[~forget], model.test_losses,
                             model.train_losses[forget], samples=int(s["mia_samples"]),
                             holdout=float(s["mia_holdout"]), seed=model.seed)
