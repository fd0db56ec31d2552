"""The audit: strong membership attacks over many models, each a pluggable `Audit`.

The evaluator's metrics read one model at a time; an audit reads every member of every
ensemble at once, from per-sample scores (`member_scores`: the signed residual of the point
prediction by default, or the negative task loss) on every training row:

  lira     LiRA (online and offline) against shadow models trained on random halves of the
           training data: its power on them (leave-one-out ROC, AUC, TPR at low FPR), and for
           each model how well it separates retain from forget rows and how many forget rows it
           calls "member" at the shadows' low-FPR threshold; retraining sets the target.
  ulira    U-LiRA: can an attacker tell the K unlearned models from the K retrained ones on the
           forget rows (accuracy, with its spread over the 2K target models; AUC; 0.5 =
           indistinguishable)?
  epsilon  the 2023 competition's per-sample epsilon, forget quality F and final score.
  ks       the two-sample KS p-value between a model's and the retrained model's forget losses
           (per seed; higher = closer).
  svm      the paper's SVM attack, with its own held-out accuracy and AUC (from the evaluator).

Every number has its null: `NULL`, a second retrained ensemble on other seeds, is audited as
any model is (what a perfect unlearner scores), and each model's headline statistic per audit
(`Audit.null_key`) is tested against it (`versus_null`): a two-sided permutation test over
models, the model's K members and the null's K exchanged at random.

`metrics.register` adds an audit of your own: audits and metrics share one registry. Per-sample
values (LiRA scores, U-LiRA scores, epsilons) are kept apart from the summaries
(`AuditOutput.samples`), for plots and for the reader.
"""
import dataclasses
import math
import time
import zlib
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import scipy.stats
from sklearn.metrics import roc_auc_score

from jax_unlearn import losses, settings as settings_lib, train
from jax_unlearn.errors import UserError
from jax_unlearn.metrics import base, epsilon as eps_lib, lira, spread
from jax_unlearn.metrics.base import RETRAINED, TO_NULL, Column, loss_values
from jax_unlearn.train import ensemble

SCORES = ("residual", "loss")
REFERENCE = "retrained"
NULL = spread.FLOOR  # a retrained ensemble of other seeds, against the reference
NULL_STAGE = "retrained_null"  # the pipeline stage that trains it
ALPHA = 0.05  # the level at which a model is distinguishable from the null
DEFAULTS = {
    "enabled": False,
    "which": ("lira", "ulira", "epsilon", "ks", "svm"),
    # LiRA's shadow models, each trained by the original recipe on a random half of the training
    # rows (pairs of complementary halves, so every row is in half of them); even, >= 8.
    "shadows": 8,
    "score": "residual",
    "variance": "per_sample",  # see lira.VARIANCES
    "fpr": 0.01,  # the low false-positive rate LiRA's thresholds are read at
    "delta": eps_lib.DELTA,
    "unit": "retrained_sd",  # what one unit of score is to the epsilon score (epsilon.UNITS)
    "permutations": 100,  # of the tests against the null
}
MIN_SHADOWS = 8  # LiRA leaves one out and fits >= 2 models a side, odd row counts too
MIN_MODELS = 3  # members per ensemble for U-LiRA and the epsilon score
# Forget rows the epsilon score's test against the null recomputes F on: each permutation scores
# them twice (about 1 ms a row at 8 models a side), so the test stays seconds, not minutes.
TEST_ROWS = 32


@dataclasses.dataclass
class AuditData:
  """What every audit reads.

  scores / losses: model name -> [K, N] per-sample score and task loss of each member on every
    training row ("original", "retrained" and each method; K the same for all).
    The null (`NULL`) is among them, when the audit has one.
  forget: [N] bool, the forget rows.
  per_seed: the evaluator's results, one dict model -> key -> value per seed (the SVM attack,
    the errors of the utility ratios).
  shadow_scores / shadow_keep: [S, N] scores of the shadow models and whether each trained on
    each row; None without shadows.
  """
  scores: dict[str, np.ndarray]
  losses: dict[str, np.ndarray]
  forget: np.ndarray
  per_seed: Sequence[Mapping[str, Mapping[str, Any]]]
  settings: Mapping[str, Any]
  shadow_scores: np.ndarray | None = None
  shadow_keep: np.ndarray | None = None

  @property
  def audited(self) -> list[str]:
    """The models an audit compares with the retrained ones: the null, the original and each
    method."""
    return [n for n in self.scores if n != REFERENCE]

  @property
  def members(self) -> int:
    return len(self.scores[REFERENCE])

  def forget_scores(self, name: str) -> np.ndarray:
    return self.scores[name][:, self.forget]


@dataclasses.dataclass
class AuditOutput:
  """models: name -> key -> value; info: results about the audit itself (e.g. LiRA's power);
  samples: name -> per-sample array, kept in audit.npz."""
  models: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  samples: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


class Audit:
  """An audit: its name, the result keys it reports, its table columns, and `run`.

  `null_key`: the result read against the null. It is tested by `statistic` when the audit
  defines one (the value recomputed from a group of models' scores), else by the per-model
  values of its summary. Its settings live in the config's `audit` section (`DEFAULTS`).
  """
  kind = "audit"
  name: str = ""
  defaults: Mapping[str, Any] = {}
  keys: tuple[str, ...] = ()
  required: tuple[str, ...] = ()
  columns: tuple[Column, ...] = ()
  null_key: str | None = None
  # (data, scores [K, N]) -> `null_key` of a model whose members score `scores`; None when the
  # key is read from per-model values.
  statistic: Callable[["AuditData", np.ndarray], float] | None = None

  def check(self, s: Mapping[str, Any], members: int) -> None:
    """Raises a UserError, before any training, when the audit cannot run."""

  def run(self, data: AuditData) -> AuditOutput:
    raise NotImplementedError


def get(name: str) -> Audit:
  """The registered audit `name`."""
  return base.get(name, Audit)


def names() -> tuple[str, ...]:
  """Every registered audit, in registration order."""
  return base.names(Audit)


def resolve_settings(config, members: int) -> dict[str, Any]:
  """DEFAULTS updated by `config` (the `audit` section), every value checked; when the audit is
  enabled, also against the member count (U-LiRA and epsilon need 3) and the shadows."""
  s = settings_lib.merge(DEFAULTS, config, "audit")
  s["which"] = (s["which"],) if isinstance(s["which"], str) else tuple(s["which"])
  for name in s["which"]:
    get(name)
  if s["score"] not in SCORES:
    raise UserError(f"config audit.score must be one of {', '.join(SCORES)}, got "
                    f"{s['score']!r}.", "set --config.audit.score=residual.")
  lira.check_variance(s["variance"])
  settings_lib.check_number(s, "audit", "fpr", 0.0, 0.5, low_open=True)
  settings_lib.check_number(s, "audit", "delta", 0.0, 0.1, low_open=True)
  eps_lib.check_unit(s["unit"])
  p = s["permutations"]
  if isinstance(p, bool) or not isinstance(p, int) or p < 19:
    raise UserError(f"config audit.permutations must be an integer >= 19 (p can reach 0.05), "
                    f"got {p!r}.", "set --config.audit.permutations=200.")
  if s["enabled"]:  # what the model counts allow, only when the audit runs
    for name in s["which"]:
      get(name).check(s, members)
  return s


def _need_members(members: int, what: str) -> None:
  if members < MIN_MODELS:
    raise UserError(f"{what} needs at least {MIN_MODELS} models per stage, got {members}.",
                    f"set --config.seeds={MIN_MODELS} or more (8 or more for a useful audit).")


# Folded into the run's seed for every random draw of the shadow models (their halves, their
# keys): streams apart from every stage's.
SHADOW_PURPOSE = 0x5AD0


def shadow_halves(n: int, shadows: int, seed: int) -> np.ndarray:
  """[S, N] bool: shadow 2j trains on a random half of the N rows, shadow 2j + 1 on the other
  half, so each shadow has N // 2 rows. With N odd, each pair leaves out a different row (out
  of both), so no row is in fewer than S / 2 - 1 shadows."""
  if shadows < 2 or shadows % 2:
    raise UserError(f"shadow models come in complementary pairs; got {shadows}.",
                    "use an even number of shadows.")
  if n < max(2, shadows // 2):
    raise UserError(f"{shadows} shadow models need at least {max(2, shadows // 2)} rows, got {n}.",
                    "use fewer shadows or more data.")
  rng = np.random.default_rng([seed, SHADOW_PURPOSE])
  spare = rng.permutation(n)[:shadows // 2]
  keep = np.zeros((shadows, n), bool)
  half = n // 2
  for j in range(0, shadows, 2):
    rows = np.arange(n) if n % 2 == 0 else np.delete(np.arange(n), spare[j // 2])
    order = rng.permutation(rows)
    keep[j, order[:half]] = True
    keep[j + 1, order[half:]] = True
  return keep


def member_scores(predict_fn: train.PredictFn, stacked, x: np.ndarray, y: np.ndarray, *,
                  score: str, task_loss: Callable, quantiles=None, batch_size: int = 1024,
                  ) -> tuple[np.ndarray, np.ndarray]:
  """(scores, losses), each [K, N]: every member of a stacked ensemble on every row.

  The score is the signed residual (point prediction - label, averaged over output dims) or the
  negative task loss (`score`).
  """
  out_scores, out_losses = [], []
  for k in range(ensemble.size(stacked)):
    pred = train.predict(predict_fn, ensemble.member(stacked, k), x, batch_size=batch_size)
    loss = loss_values(pred, y, task_loss)
    point = np.asarray(losses.point_prediction(pred, quantiles), np.float64)
    residual = (point.reshape(len(y), -1) - np.asarray(y, np.float64).reshape(len(y), -1))
    out_scores.append(residual.mean(1) if score == "residual" else -loss)
    out_losses.append(loss)
  return np.stack(out_scores), np.stack(out_losses)


def permutation_test(statistic: Callable[[np.ndarray], float], a: np.ndarray, b: np.ndarray, *,
                     permutations: int, seed: int = 0) -> dict[str, Any]:
  """Two-sided permutation test of statistic(a) - statistic(b), a and b [K, ...] over models.

  Under the null the 2K models are exchangeable: each permutation deals them at random into two
  groups of K. Returns {"difference", "p", "permutations"}; p = (1 + #|permuted| >= |observed|)
  / (1 + permutations), None (and the difference None) when the statistic is undefined.
  """
  observed = statistic(a) - statistic(b)
  if not math.isfinite(observed):
    return {"difference": None, "p": None, "permutations": permutations}
  pooled, k = np.concatenate([a, b]), len(a)
  rng = np.random.default_rng(seed)
  extreme = 0
  for _ in range(permutations):
    order = rng.permutation(len(pooled))
    permuted = statistic(pooled[order[:k]]) - statistic(pooled[order[k:]])
    # A hair of slack: a relabelling that reproduces the observed split must count.
    extreme += bool(abs(permuted) >= abs(observed) * (1 - 1e-12))
  return {"difference": float(observed), "p": (1 + extreme) / (1 + permutations),
          "permutations": permutations}


def versus_null(data: AuditData, models: Mapping[str, Mapping[str, Any]],
                which: Sequence[str]) -> dict[str, dict[str, Any]]:
  """name -> audit -> {"key", "null", "difference", "p", "distinguishable"}: each model's
  `null_key` of each audit against the null's (the difference of the two values), tested by
  `permutation_test` over models (p < ALPHA: distinguishable). The null itself and the reference
  are not tested."""
  out = {}
  for name in data.audited:
    if name == NULL:
      continue
    out[name] = row = {}
    for audit_name in which:
      audit = get(audit_name)
      key = audit.null_key
      if key is None:
        continue
      seed = zlib.crc32(f"{name}/{audit_name}".encode())
      difference = None
      if None not in (spread.point(models[name].get(key)), spread.point(models[NULL].get(key))):
        difference = spread.point(models[name][key]) - spread.point(models[NULL][key])
      if audit.statistic is not None:
        test = permutation_test(lambda scores: audit.statistic(data, scores), data.scores[name],
                                data.scores[NULL], permutations=data.settings["permutations"],
                                seed=seed)
      else:
        values = [np.array([np.nan if v is None else v for v in models[n][key]["values"]],
                           np.float64) for n in (name, NULL)]
        test = permutation_test(np.mean, *values, permutations=data.settings["permutations"],
                                seed=seed)
      test.update(key=key, null=spread.point(models[NULL].get(key)), difference=difference,
                  distinguishable=None if test["p"] is None else test["p"] < ALPHA)
      row[audit_name] = test
  return out


def _seed_mean(data: AuditData, name: str, key: str) -> float | None:
  values = [r.get(name, {}).get(key) for r in data.per_seed]
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


class LiRA(Audit):
  name = "lira"
  keys = ("lira_forget_auc", "lira_forget_member")
  columns = (Column("lira_forget_auc", "LiRA retain/forget AUC", RETRAINED),
             Column("lira_forget_member", "LiRA forget called member", RETRAINED))
  null_key = "lira_forget_auc"

  def check(self, s, members):
    shadows = s["shadows"]
    if isinstance(shadows, bool) or not isinstance(shadows, int) or shadows < MIN_SHADOWS or (
        shadows % 2):
      raise UserError(f"LiRA needs an even number of at least {MIN_SHADOWS} shadow models, got "
                      f"audit.shadows={shadows!r}.",
                      "set --config.audit.shadows=8 (or more), or leave lira out of "
                      "audit.which.")

  def run(self, data):
    s, keep, shadows = data.settings, data.shadow_keep, data.shadow_scores
    online, offline = lira.likelihood_ratios(shadows, shadows, keep, variance=s["variance"],
                                             leave_one_out=True)
    fprs = (s["fpr"], s["fpr"] / 10)
    out = AuditOutput(info={"shadows": len(shadows),
                            "online": lira.attack_summary(online, keep, fprs),
                            "offline": lira.attack_summary(offline, keep, fprs)},
                      samples={"shadows/online": online, "shadows/keep": keep})
    threshold = lira.threshold_at_fpr(online[~keep], s["fpr"])
    out.info["threshold"] = threshold
    retain = ~data.forget
    for name, scores in data.scores.items():
      ratios, _ = lira.likelihood_ratios(scores, shadows, keep, variance=s["variance"])
      out.samples[f"{name}/lira_online"] = ratios
      out.models[name] = {
          "lira_forget_auc": spread.summarize(
              [float(roc_auc_score(retain, r)) for r in ratios]),
          "lira_forget_member": spread.summarize(
              [float(np.mean(r[data.forget] > threshold)) for r in ratios])}
    return out


class ULiRA(Audit):
  name = "ulira"
  keys = ("ulira_accuracy", "ulira_auc", "ulira_model_accuracy")
  columns = (Column("ulira_accuracy", "U-LiRA accuracy", TO_NULL),
             Column("ulira_auc", "U-LiRA AUC", TO_NULL),
             Column("ulira_model_accuracy", "U-LiRA per-model accuracy", TO_NULL))
  null_key = "ulira_accuracy"

  def check(self, s, members):
    _need_members(members, "U-LiRA")

  @staticmethod
  def _ratios(data, scores):
    return lira.unlearning_ratios(scores[:, data.forget], data.forget_scores(REFERENCE),
                                  variance=data.settings["variance"])

  def statistic(self, data, scores):
    ratios = self._ratios(data, scores)
    return float(np.mean((ratios > 0) == lira.unlearned_rows(ratios.shape)))

  def run(self, data):
    out = AuditOutput(info={"roc": {}})
    for name in data.audited:
      ratios = self._ratios(data, data.scores[name])
      kind = lira.unlearned_rows(ratios.shape)
      summary = lira.attack_summary(ratios, kind, ())
      out.samples[f"{name}/ulira"] = ratios
      out.info["roc"][name] = summary["roc"]
      per_model = ratios.sum(1) > 0
      # Accuracy per target model (its mean is the pooled accuracy), so it has a spread.
      per_target = np.mean((ratios > 0) == kind, axis=1)
      out.models[name] = {"ulira_accuracy": spread.summarize(per_target.tolist()),
                          "ulira_auc": summary["auc"],
                          "ulira_model_accuracy": float(np.mean(per_model == kind[:, 0]))}
    return out


class Epsilon(Audit):
  name = "epsilon"
  keys = ("epsilon_median", "epsilon_forget_quality", "epsilon_undefined", "epsilon_retain_ratio",
          "epsilon_test_ratio", "epsilon_score")
  columns = (Column("epsilon_median", "median per-sample ε", TO_NULL),
             Column("epsilon_forget_quality", "forget quality F", TO_NULL),
             Column("epsilon_score", "F × utility ratios", TO_NULL))
  null_key = "epsilon_forget_quality"

  def check(self, s, members):
    _need_members(members, "the epsilon score")

  @staticmethod
  def _epsilons(data, scores, rows=None):
    """Per-sample epsilons on the forget rows (or on `rows` of them), in the setting's unit."""
    rows = np.flatnonzero(data.forget) if rows is None else rows
    unit = eps_lib.score_unit(data.forget_scores(REFERENCE), data.settings["unit"])
    return eps_lib.sample_epsilons(scores[:, rows] / unit, data.scores[REFERENCE][:, rows] / unit,
                                   delta=data.settings["delta"], unit="raw")

  def statistic(self, data, scores):
    """F on at most TEST_ROWS forget rows (the same ones for every permutation)."""
    rows = np.flatnonzero(data.forget)
    if len(rows) > TEST_ROWS:
      rows = np.sort(np.random.default_rng(0).choice(rows, TEST_ROWS, replace=False))
    return eps_lib.forget_quality(self._epsilons(data, scores, rows), data.members)

  def run(self, data):
    out = AuditOutput()
    for name in data.audited:
      eps = self._epsilons(data, data.scores[name])
      quality = eps_lib.forget_quality(eps, data.members)
      ratios = [eps_lib.utility_ratio(_seed_mean(data, name, key), _seed_mean(data, REFERENCE, key))
                for key in ("retain_train_error", "retain_test_error")]
      out.samples[f"{name}/epsilon"] = eps
      out.models[name] = {"epsilon_median": float(np.median(eps)),
                          "epsilon_forget_quality": quality,
                          # Samples on which every attack was discarded: F is then undefined.
                          "epsilon_undefined": int(np.isnan(eps).sum()),
                          "epsilon_retain_ratio": ratios[0], "epsilon_test_ratio": ratios[1],
                          "epsilon_score": eps_lib.final_score(quality, *ratios)}
    out.info["upper"] = math.ceil(math.log(data.members - 1))
    out.info["unit"] = eps_lib.score_unit(data.forget_scores(REFERENCE), data.settings["unit"])
    return out


class KS(Audit):
  name = "ks"
  keys = ("ks_forget_p",)
  columns = (Column("ks_forget_p", "KS p-value vs retrained", TO_NULL),)
  null_key = "ks_forget_p"

  def check(self, s, members):
    del s, members  # one seed is enough

  def run(self, data):
    out = AuditOutput()
    reference = data.losses[REFERENCE][:, data.forget]
    for name in data.audited:
      mine = data.losses[name][:, data.forget]
      p = [float(scipy.stats.ks_2samp(a, b).pvalue) for a, b in zip(mine, reference)]
      out.models[name] = {"ks_forget_p": spread.summarize(p)}
    return out


class SVM(Audit):
  """The paper's attack, as the evaluator ran it on each seed (the "mia" metric)."""
  name = "svm"
  keys = ("svm_forget", "svm_accuracy", "svm_auc")
  columns = (Column("svm_forget", "SVM forget called member", RETRAINED),
             Column("svm_accuracy", "SVM own accuracy"),
             Column("svm_auc", "SVM own AUC"))
  null_key = "svm_forget"
  _FROM = {"svm_forget": "mia_forget", "svm_accuracy": "mia_attack_accuracy",
           "svm_auc": "mia_attack_auc"}

  def run(self, data):
    out = AuditOutput()
    for name in data.scores:
      out.models[name] = {key: spread.summarize([r.get(name, {}).get(src) for r in data.per_seed])
                          for key, src in self._FROM.items()}
    return out


def run_audit(data: AuditData, progress: Callable | None = None) -> tuple[dict, dict]:
  """Every selected audit over `data`: (results for results.json, per-sample arrays).

  The results hold "settings", "members", "models" (name -> key -> value, the models in
  `data.scores` order), "info" (audit name -> its own results), "seconds" per audit and, with
  the null among the models, "versus_null" (`versus_null`).
  """
  selected = list(data.settings["which"])
  results = {"settings": {k: v for k, v in data.settings.items() if k != "enabled"},
             "members": data.members, "models": {n: {} for n in data.scores}, "info": {},
             "seconds": {}}
  samples: dict[str, np.ndarray] = {}
  for name in (progress(selected, "audit") if progress is not None else selected):
    t = time.perf_counter()
    audit = get(name)
    out = audit.run(data)
    for model, values in out.models.items():
      results["models"][model].update(base.checked(audit, values))
    results["info"][name] = out.info
    samples.update(out.samples)
    results["seconds"][name] = time.perf_counter() - t
  if NULL in data.scores:
    t = time.perf_counter()
    results["versus_null"] = versus_null(data, results["models"], selected)
    results["seconds"]["versus_null"] = time.perf_counter() - t
  return results, samples


def columns(which: Sequence[str]) -> list[Column]:
  """The table columns of the audits `which`, in that order."""
  return [c for name in which for c in get(name).columns]
