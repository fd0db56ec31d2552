# Two commands bootstrap everything: `make test` and `make demo` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests see 4 simulated CPU devices, so the data-parallel paths always run.
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu
PYTEST_ARGS ?= -q -n 2 --dist worksteal --durations=20

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check pip==26.3 setuptools==84.2.1
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

$(VENV)/.bench-installed: $(STAMP) requirements-bench.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-bench.txt
	touch $@

test: $(STAMP) $(VENV)/.bench-installed
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m jax_unlearn demo --workdir runs/demo

bench: $(VENV)/.bench-installed
	$(PY) -m jax_unlearn bench

clean:
	rm -rf $(VENV) runs .pytest_cache
