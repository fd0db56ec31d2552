"""Evaluation of unlearning for regression: errors, distances, privacy attack, AIN, reports.

Functions take arrays, or an apply function with variables, never the library's model classes
or unlearning methods, so research code can call any of them on its own. Everything that
evaluates models is registered in one registry (`register`): a `Metric` (name, settings, result
keys, columns, hooks) joins `evaluate_models` and the table with `register(MyMetric())`, an
`audit.Audit` joins the audit the same way.

  base       the Metric protocol, its contexts (Run, ModelContext, EvalData), the registry
  builtin    the paper's metrics and the audits, registered in their fixed order
  evaluate   evaluate_models and the settings it resolves
  report     the markdown tables: results, paired comparisons, the noise floor
  spread     the spread over seeds: summaries, paired differences, the noise floor
  errors, distances, mia, ain   the metrics' functions, each module with its Metric
  plots      the paper's figures, and every seed's results side by side
  audit      strong membership audits over every member of every ensemble (LiRA, U-LiRA, the
             competition's epsilon score, KS), each a pluggable `audit.Audit`
  lira, epsilon   the audits' statistics on score arrays
"""
from jax_unlearn.metrics import audit, epsilon, lira
from jax_unlearn.metrics.ain import AnamnesisIndex, Relearner, anamnesis_index, relearn_target
from jax_unlearn.metrics.base import (DETAIL, HEADLINE, HIDDEN, HIGHER, LOWER, RETRAINED, TO_NULL,
                                      Column, EvalData, Metric, ModelContext, Run, columns,
                                      default_columns, defaults, get, names, register,
                                      registered, required_keys, unregister)
# Registers the built-in metrics and audits; any import of a metrics module runs this file first.
from jax_unlearn.metrics.builtin import DEFAULT_COLUMNS, REQUIRED_KEYS
from jax_unlearn.metrics.distances import (ActivationDistance, Wasserstein, activation_distance,
                                           layer_names, make_activation_distance_fn,
                                           model_activation_distance, relative_difference,
                                           wasserstein, wasserstein_1d)
from jax_unlearn.metrics.errors import (ERRORS, CohortErrors, cohort_error, cohort_errors,
                                        per_example_error, r2_score, reduce_error)
from jax_unlearn.metrics.evaluate import Evaluation, evaluate_models, resolve_settings
from jax_unlearn.metrics.mia import (MembershipAttack, loss_values, membership_attack,
                                     per_example_losses)
from jax_unlearn.metrics.plots import (plot_all, plot_errors, plot_predictions,
                                       plot_audit, plot_relative_difference, plot_seeds,
                                       plot_tradeoff)
from jax_unlearn.metrics.report import (format_value, legend, write_audit, write_comparisons,
                                        write_floor, write_markdown)
from jax_unlearn.metrics.spread import (aggregate, compare, noise_floor, paired_difference,
                                        summarize)

__all__ = [
    "AnamnesisIndex", "Relearner", "anamnesis_index", "relearn_target",
    "DETAIL", "HEADLINE", "HIDDEN", "HIGHER", "LOWER", "RETRAINED", "TO_NULL", "Column",
    "EvalData", "Metric", "ModelContext", "Run", "columns", "default_columns", "defaults", "get",
    "names", "register", "registered", "required_keys", "unregister",
    "DEFAULT_COLUMNS", "REQUIRED_KEYS",
    "ActivationDistance", "Wasserstein", "activation_distance", "layer_names",
    "make_activation_distance_fn", "model_activation_distance", "relative_difference",
    "wasserstein", "wasserstein_1d",
    "ERRORS", "CohortErrors", "cohort_error", "cohort_errors", "per_example_error", "r2_score",
    "reduce_error",
    "Evaluation", "evaluate_models", "resolve_settings",
    "MembershipAttack", "loss_values", "membership_attack", "per_example_losses",
    "audit", "epsilon", "lira",
    "plot_all", "plot_audit", "plot_errors", "plot_predictions", "plot_relative_difference",
    "plot_seeds",
    "plot_tradeoff",
    "format_value", "legend", "write_audit", "write_comparisons", "write_floor",
    "write_markdown",
    "aggregate", "compare", "noise_floor", "paired_difference", "summarize",
]
