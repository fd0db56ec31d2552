"""Datasets, forget specifications and batching."""
from jax_unlearn.data.loader import ArrayLoader

__all__ = ["ArrayLoader"]
