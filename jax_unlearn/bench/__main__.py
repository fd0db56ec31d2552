"""`python -m jax_unlearn.bench`: the benchmark's command line (see `jax_unlearn.bench`)."""
import sys

from jax_unlearn.bench import main

sys.exit(main())
