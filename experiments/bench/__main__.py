"""`python -m experiments.bench`: the benchmark's command line (see `experiments.bench`)."""
import sys

from experiments.bench import main

sys.exit(main())
