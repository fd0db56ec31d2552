"""Membership inference: can an attacker tell from a sample's loss whether the model trained on it?

The paper's attack: an RBF support vector machine (C=3, gamma="auto") learns to separate the
per-sample losses of training data (members, label 1) from those of test data (non-members,
label 0); the score of a model is the fraction of forget samples it calls "member". A model that
truly forgot should score like the retrained model. The attack's accuracy and AUC on a held-out
part of its own data say whether it is informative at all (0.5 means it is guessing). The "mia"
metric runs the attack on every model with the same seed, so models differ only in their losses.

Where ours differs from the published code, a setting restores the published behaviour:

  mia_members         "retain" (ours): members are retain-train rows. "train" (published): any
                      training rows, forget rows included, and, when the evaluator is given the
                      training augmentation, their augmented inputs (the published attack reads
                      its member and forget samples through the train transform).
  mia_target_samples  None (ours): every forget row is judged. An int (published: 2000): a seeded
                      sample of that many.
  mia_holdout         0.3 (ours): a held-out part scores the attack. 0 (published): none.
  mia_samples         2000 members and as many non-members, as published.
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
MEMBERS = ("retain", "train")
# Keeps the attack's augmentation draws apart from every other stream seeded by the run's seed.
_AUGMENT_STREAM = 0x4D4941


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


def target_rows(n: int, target_samples: int | None, rng: np.random.Generator) -> np.ndarray:
  """Indices of the targets to judge: all n in order (None), or a seeded sample of at most
  `target_samples` (the published code samples 2000 forget rows)."""
  if target_samples is None:
    return np.arange(n)
  return rng.permutation(n)[:min(target_samples, n)]


def membership_attack(member_losses: np.ndarray, nonmember_losses: np.ndarray,
                      target_losses: np.ndarray, *, samples: int = 2000, holdout: float = 0.3,
                      seed: int = 0, target_samples: int | None = None
                      ) -> dict[str, float | None]:
  """The paper's loss-based attack, deterministic for a given seed.

  Args:
    member_losses: [N] per-sample losses of training data (retain-train rows by default).
    nonmember_losses: [M] per-sample losses of data it never saw (test).
    target_losses: [F] per-sample losses of the samples to judge (forget-train).
    samples: at most this many members and as many non-members are drawn (seeded).
    holdout: the fraction of each drawn class held out to score the attack itself.
    target_samples: None judges every target; an int judges a seeded sample of that many, drawn
      after the members and non-members from the same generator.
  Returns:
    {"mia_forget": fraction of targets predicted member, "mia_attack_accuracy",
    "mia_attack_auc": on the held-out members and non-members (None when holdout is 0)}.
    All None when a loss is not finite (a diverged model has no meaningful attack).
  """
  _check_holdout(holdout)
  _check_target_samples(target_samples)
  member = np.asarray(member_losses, np.float64)
  nonmember = np.asarray(nonmember_losses, np.float64)
  target = np.asarray(target_losses, np.float64)
  if not all(np.all(np.isfinite(a)) for a in (member, nonmember, target)):
    return dict.fromkeys(MIA_KEYS)
  rng = np.random.default_rng(seed)
  m_fit, m_hold = _sample(len(member), samples, holdout, rng, "member (training)")
  n_fit, n_hold = _sample(len(nonmember), samples, holdout, rng, "non-member (test)")
  target = target[target_rows(len(target), target_samples, rng)]
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


def _check_target_samples(target_samples) -> None:
  if target_samples is not None and (isinstance(target_samples, bool) or not isinstance(
      target_samples, (int, np.integer)) or target_samples < 1):
    raise UserError(f"metrics.mia_target_samples must be None or an integer >= 1, got "
                    f"{target_samples!r}.",
                    "leave it unset to judge every forget row, or set e.g. 2000 (published).")


def augmented_inputs(x: np.ndarray, augment: Callable, *, seed: int = 0,
                     batch_size: int = 1024) -> np.ndarray:
  """`augment` applied to every row of x [N, ...] once, in seeded chunks: the same augmented
  inputs for every model, so models differ only in their losses."""
  chunks = [augment(x[start:start + batch_size],
                    np.random.default_rng([seed, _AUGMENT_STREAM, i]))
            for i, start in enumerate(range(0, len(x), batch_size))]
  return np.concatenate(chunks) if chunks else x[:0]


class MembershipAttack(base.Metric):
  """The attack with test rows as non-members and forget-train rows as targets.

  Members are retain-train rows by default (mia_members="retain", ours): members that include
  the forget rows teach the attack that forget rows are members, which biases MIA forget upward
  for every model. mia_members="train" reproduces the published attack: members drawn from every
  training row; when the evaluator has the training augmentation (`EvalData.train_augment`),
  members and targets are scored on augmented inputs, predicted once per model
  (one extra prediction pass over the training split, and its augmented copy held in memory).
  """
  name = "mia"
  defaults = {"mia_samples": 2000, "mia_holdout": 0.3, "mia_members": "retain",
              "mia_target_samples": None}
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
    if settings["mia_members"] not in MEMBERS:
      raise UserError(f"metrics.mia_members must be one of {', '.join(MEMBERS)}, got "
                      f"{settings['mia_members']!r}.",
                      "use 'retain' (ours) or 'train' (published).")
    _check_target_samples(settings["mia_target_samples"])

  def prepare(self, run: base.Run) -> np.ndarray | None:
    """The augmented training inputs when the attack reads them, else None."""
    if run.settings["mia_members"] != "train" or run.data.train_augment is None:
      return None
    return augmented_inputs(run.data.train_x, run.data.train_augment, seed=run.seed,
                            batch_size=run.batch_size)

  def evaluate(self, state, model: base.ModelContext) -> dict[str, Any]:
    forget, s = model.data.forget_train, model.settings
    if s["mia_members"] == "retain":
      members, targets = model.train_losses[~forget], model.train_losses[forget]
    else:
      losses = model.train_losses
      if state is not None:
        pred = train.predict(model.run.predict_fn, model.variables, state,
                             batch_size=model.run.batch_size)
        losses = loss_values(pred, model.data.train_y, model.task_loss)
      members, targets = losses, losses[forget]
    return membership_attack(members, model.test_losses, targets,
                             samples=int(s["mia_samples"]), holdout=float(s["mia_holdout"]),
                             seed=model.seed, target_samples=s["mia_target_samples"])
