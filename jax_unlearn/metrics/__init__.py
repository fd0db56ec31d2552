"""Evaluation of unlearning for regression: errors, distances, privacy attack, AIN, reports.

Functions take arrays, or an apply function with variables, never the library's model classes
or unlearning methods, so research code can call any of them on its own.
"""
from jax_unlearn.metrics.ain import Relearner, anamnesis_index, relearn_steps, relearn_target
from jax_unlearn.metrics.distances import (activation_distance, layer_names,
                                           make_activation_distance_fn, model_activation_distance,
                                           relative_difference, wasserstein, wasserstein_1d)
from jax_unlearn.metrics.errors import (ERRORS, cohort_error, cohort_errors, per_example_error,
                                        r2_score, reduce_error)
from jax_unlearn.metrics.mia import loss_values, membership_attack, per_example_losses
from jax_unlearn.metrics.plots import (plot_all, plot_errors, plot_predictions,
                                       plot_relative_difference)
from jax_unlearn.metrics.report import (COLUMNS, DEFAULT_COLUMNS, DEFAULTS, METRICS,
                                        REQUIRED_KEYS, EvalData, Evaluation, evaluate_models,
                                        format_value, write_markdown)

__all__ = [
    "Relearner", "anamnesis_index", "relearn_steps", "relearn_target",
    "activation_distance", "layer_names", "make_activation_distance_fn",
    "model_activation_distance", "relative_difference", "wasserstein", "wasserstein_1d",
    "ERRORS", "cohort_error", "cohort_errors", "per_example_error", "r2_score", "reduce_error",
    "loss_values", "membership_attack", "per_example_losses",
    "plot_all", "plot_errors", "plot_predictions", "plot_relative_difference",
    "COLUMNS", "DEFAULT_COLUMNS", "DEFAULTS", "METRICS", "REQUIRED_KEYS", "EvalData",
    "Evaluation", "evaluate_models", "format_value", "write_markdown",
]
