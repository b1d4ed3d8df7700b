# cfgaudit: see README.md. `make demo` shows the main job, `make test` runs everything.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv deps demo test test-fast bench e2e clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,bench]'
	touch $(STAMP)

# System packages for the live tier and the pciutils oracle (root only; a no-op where present).
deps:
	sh scripts/deps.sh

# The main job on the bundled DOE scenario: exit 1 means "findings", which is the point here.
demo: venv
	$(VENV)/bin/cfgaudit analyze sample-traces/cxl-doe-6.2/trace.jsonl; test $$? -le 1

test: venv
	$(PY) -m pytest -q tests

test-fast: venv
	$(PY) -m pytest -q -m "not live and not e2e" tests

bench: venv
	$(PY) bench/run.py

# cfgaudit (both live backends) against the kernel's own verdict in a QEMU CXL guest (root, Debian;
# installs qemu-system-x86, busybox-static and the guest kernel's headers itself). tests/e2e/run.sh.
e2e: venv
	bash tests/e2e/run.sh

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
