"""jax-unlearn: machine unlearning of deep regression models in JAX.

The functional core lives in `train` (state, generic step, fit), `parallel` (mesh, sharding),
`checkpoint` (Orbax), `losses`; models in `models`, unlearning methods in `unlearn`, metrics in
`metrics`, datasets and forget specifications in `data`.
"""
__version__ = "0.1.0"
