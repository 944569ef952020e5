# zcloop: `make bench` (setup + quick side-by-side benchmark), `make test`
# (setup + test suite + the peer suites of uvloop and anyio).  Both install what they need on Debian/Ubuntu.
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup build test test-fast test-versions test-peers test-liburing wheels bench bench-full stress asan clean

setup:
	@if [ ! -f /usr/include/liburing.h ]; then \
		echo "installing liburing-dev (apt)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq liburing-dev; \
	fi
	@if [ ! -f /usr/include/openssl/ssl.h ]; then \
		echo "installing libssl-dev (apt, for the TLS benchmark client)"; \
		$(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq libssl-dev || true; \
	fi
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk || true; }
	@# strace and perf: the no-epoll and SEND_ZC-opcode acceptance tests skip without them
	@command -v strace >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq strace || true; }
	@command -v perf >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq linux-perf || true; }
	$(PYTHON) -m pip install -q -e '.[test,bench]'

build:  # in place, for the editable install that `make setup` made
	@# Cython >= 3.1: the first series made for CPython 3.14 (3.0.10 still builds on 3.13.0).
	@# setuptools: venvs of Python >= 3.12 come without it.
	@$(PYTHON) -c 'import sys, setuptools, Cython; sys.exit(tuple(map(int, Cython.__version__.split(".")[:2])) < (3, 1))' \
		2>/dev/null || $(PYTHON) -m pip install -q -U 'Cython>=3.1' 'setuptools>=64'
	$(PYTHON) setup.py -q build_ext --inplace

test: setup  # zcloop's own suite, then the peer suites (uvloop's and anyio's, ~3-9 min)
	$(PYTHON) -m pytest -q -ra --timeout=300 tests
	$(PYTHON) scripts/peers/run.py

test-fast:
	$(PYTHON) -m pytest -q -x tests

test-versions:  # build + full suite on each Python 3.11-3.14 found (pyenv or PATH), one venv each
	bash scripts/test-versions.sh

test-peers: build  # uvloop's and anyio's own test suites on asyncio, uvloop and zcloop (docs/peers.md)
	$(PYTHON) scripts/peers/run.py

test-liburing:  # build + tests against liburing 2.3, 2.4, 2.5, 2.7 and the newest tag, from git
	bash scripts/test-liburing.sh

wheels:  # sdist, then one manylinux wheel per Python 3.11-3.13 found, each tested installed
	bash scripts/build-wheels.sh

bench: setup
	$(PYTHON) bench/run.py --quick

bench-full: setup
	$(PYTHON) bench/run.py

stress: setup
	ZCLOOP_STRESS=long $(PYTHON) -m pytest -q -ra -s tests/test_stress.py tests/test_memory.py \
		tests/test_faults.py tests/test_badinput.py tests/test_degraded.py tests/test_model.py

asan:
	ZCLOOP_ASAN=1 $(PYTHON) setup.py -q build_ext --inplace --force
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \
		$(PYTHON) -m pytest -q -x tests

clean:
	rm -rf build dist wheelhouse zcloop/_ring.c zcloop/*.so *.egg-info
