import sys

from jax_unlearn.cli import main

sys.exit(main())
