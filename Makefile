# Two commands on a fresh machine:
#   make run    venv + everything installed (incl. the Cython build) + the default sweep
#   make test   venv + everything installed + the whole test suite
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SOURCES := $(wildcard core/*.pyx core/*.pxd core/*.pxi) setup.py pyproject.toml

.PHONY: run test build bench system-deps clean

run: $(STAMP)
	$(VPY) -m sweep configs/grid.yaml

test: $(STAMP) system-deps
	$(VPY) -m pytest -q

build: $(STAMP)

$(VENV)/bin/python:
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip setuptools wheel

# editable install: builds core/_mm*.so in place; rebuilt whenever a .pyx/.pxd/.pxi changes
$(STAMP): $(VENV)/bin/python $(SOURCES)
	$(VPY) -m pip install -q --no-compile -e '.[test]'
	touch $(STAMP)

# headless Chromium for the MLflow UI check (Debian package); needs root, as in CI
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "install Debian's chromium (sudo apt-get install chromium) for the UI test"; exit 1; fi; }

bench: $(STAMP)
	$(VPY) benchmarks/run.py

clean:
	rm -rf build core/_mm.c core/*.so $(VENV)
