"""Tests run on 4 simulated CPU devices so every data-parallel path is exercised."""
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=4").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import tempfile  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

# Identical programs (the same train step in several stages and tests) compile once per machine.
jax.config.update("jax_compilation_cache_dir",
                  os.path.join(tempfile.gettempdir(), "jax_unlearn_test_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_collection_modifyitems(items):
  """The tests marked slow run first: the last minutes then hold only short tests, not one long
  run with the other worker idle (`make test` runs `--dist worksteal`: each worker takes one
  contiguous half, so a module's tests and their module fixture mostly stay on one worker, and
  an idle worker takes tests from the end of the other's)."""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def rng():
  return jax.random.key(0)


@pytest.fixture
def linear_data():
  """A tiny regression problem: y = x @ w + 0.5 (3 features, 96 train rows)."""
  r = np.random.default_rng(0)
  x = r.normal(size=(96, 3)).astype(np.float32)
  w = np.array([1.0, -2.0, 0.5], np.float32)
  y = (x @ w + 0.5)[:, None].astype(np.float32)
  return x, y
