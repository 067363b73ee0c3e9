# Two commands on a fresh machine:
#   make run    venv + everything installed (incl. the Cython build) + the default sweep
#   make test   venv + everything installed + the whole test suite
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SOURCES := $(wildcard core/*.pyx core/*.pxd core/*.pxi) setup.py pyproject.toml

.PHONY: run test build bench system-deps realkernel clean

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

# Debian packages the tests drive: headless Chromium (the MLflow UI checks), PostgreSQL (the
# manifest's MLflow server on its real backend; the tests run their own cluster, so Debian's
# default one is not needed), and qemu, a static busybox and kmod for the real-kernel bench
# (docs/realkernel.md; the kernel itself is downloaded into ~/.cache, never installed).
# Installs whichever is missing; needs root, as in CI.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing=" chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v qemu-system-x86_64 >/dev/null 2>&1 || missing="$$missing qemu-system-x86"; \
	dpkg -s busybox-static >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	command -v modinfo >/dev/null 2>&1 || missing="$$missing kmod"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "the tests need Debian's$$missing: sudo apt-get install$$missing"; exit 1; fi; \
	fi

# the benchmarks behind benchmarks/RESULTS.md, in quick forms (the full runs and their
# options: each script's docstring); a shared machine slows them, see RESULTS.md
bench: $(STAMP)
	PYTHONPATH=. $(VPY) benchmarks/core_bench.py
	PYTHONPATH=. $(VPY) benchmarks/modern_cost.py --every 8 --replications 1
	PYTHONPATH=. $(VPY) benchmarks/sweep_bench.py --every 12 --replications 2 --rounds 1
	PYTHONPATH=. $(VPY) benchmarks/tracking_bench.py --reps 2 --targets sqlite

# the fuller real-kernel run of docs/realkernel.md: all of test_kmem and test_memcontrol
# beside the model's mirrors, then every stream of realkernel/streams/ in one boot (~10-20
# min under TCG on 2 cores; with hardware KVM a fraction of that)
realkernel: $(STAMP) system-deps
	$(VPY) -m realkernel selftests
	$(VPY) -m realkernel replay realkernel/streams/*.yaml

clean:
	rm -rf build core/_mm.c core/*.so $(VENV)
