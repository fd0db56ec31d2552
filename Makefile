# Two commands bootstrap everything: `make test` and `make demo` (see README).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests see 4 simulated CPU devices, so the data-parallel paths always run.
TEST_ENV := XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu
PYTEST_ARGS ?= -q -n 2 --dist worksteal --durations=20
# pip byte-compiles what it installs one file at a time; compileall uses every core. Files it
# cannot compile (a package's tests for newer Pythons) stay as pip would leave them: source.
PIP := $(PY) -m pip install -q --disable-pip-version-check --no-compile
COMPILE := $(PY) -m compileall -q -j 0 $(VENV)/lib > /dev/null || true

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): requirements.txt setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) pip==26.3 setuptools==84.2.1
	$(PIP) -r requirements.txt
	$(PIP) --no-deps --no-build-isolation -e .
	$(COMPILE)
	touch $(STAMP)

$(VENV)/.bench-installed: $(STAMP) requirements-bench.txt
	$(PIP) -r requirements-bench.txt
	$(COMPILE)
	touch $@

test: $(STAMP) $(VENV)/.bench-installed
	$(TEST_ENV) $(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m jax_unlearn demo --workdir runs/demo

bench: $(VENV)/.bench-installed
	$(PY) -m jax_unlearn bench

clean:
	rm -rf $(VENV) runs .pytest_cache
