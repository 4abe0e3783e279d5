# bcc_exporter developer entry points. Everything runs from .venv, which scripts/bootstrap.sh
# builds on Debian's /usr/bin/python3 (the only interpreter that imports bcc).
#
#   make setup                       bootstrap this machine (root: packages, headers, mounts, .venv)
#   make run ARGS='--help'           run the exporter (default port 9474)
#   make test PYTEST_ARGS='-k hist'  lint, type-check, then pytest
#   make lint                        ruff + mypy only
#   make test-soak N=20 [BUSY=1]     kernel, fault and e2e suites N times: every test that failed
#   make wheelhouse                  Python wheels for an offline image build (wheelhouse/)
#   make test-image                  build the image, run it, scrape it (opt-in; docs/testing.md)
#   make test-min-deps               unit + HTTP abuse tests on the floor of every dependency
#   make bench BENCH_ARGS='--quick'  benchmarks (issue 7): writes docs/BENCHMARKS.md (~15 min);
#                                    PEER_SRC=/ebpf_exporter-v1.2.5 [PEER_BIN=...] adds the
#                                    side-by-side with ebpf_exporter (bench/peer.py)
#   make clean                       remove .venv and caches (mounts and headers stay)

SHELL := /bin/bash
VENV := .venv
STAMP := $(VENV)/.bootstrap-make-stamp
# Only the directories that exist (bench/ may not yet).
LINT_PATHS := $(wildcard exporter tests bench scripts)
ARGS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
N ?= 20
BUSY ?= 0
export PEER_SRC PEER_BIN

# The stamp skips the bootstrap while scripts/bootstrap.sh and pyproject.toml are unchanged.
# Mounts vanish on reboot and headers links can be removed, which no file date shows: when
# they are missing, force the bootstrap even with a fresh stamp.
BOOTSTRAP_STATE := $(shell mountpoint -q /sys/kernel/tracing \
	&& test -d /lib/modules/$$(uname -r)/build/include \
	&& test -x $(VENV)/bin/bcc_exporter && echo ready)
ifneq ($(BOOTSTRAP_STATE),ready)
.PHONY: $(STAMP)
endif

.PHONY: setup run test test-soak test-min-deps lint bench wheelhouse test-image clean

setup: $(STAMP)

$(STAMP): scripts/bootstrap.sh pyproject.toml
	bash scripts/bootstrap.sh
	touch $@

run: $(STAMP)
	$(VENV)/bin/bcc_exporter $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# REQUIRE_BPF=1: a run that skips a kernel test fails it, as in CI.
test-soak: $(STAMP)
	REQUIRE_BPF=1 $(VENV)/bin/python scripts/soak.py --runs $(N) $(if $(filter 1,$(BUSY)),--busy) \
		$(if $(PYTEST_ARGS),-- $(PYTEST_ARGS))
test-min-deps: $(STAMP)
	bash scripts/test-min-deps.sh

bench: $(STAMP)
	$(VENV)/bin/python -m bench $(BENCH_ARGS)

# The wheels of pyproject.toml's dependencies and build requirements for bookworm's Python
# 3.11, which `docker build` installs from the build context with no index (.dockerignore lets
# wheelhouse/ in; .gitignore keeps it out of the repository).
wheelhouse: $(STAMP)
	rm -rf wheelhouse && mkdir wheelhouse
	$(VENV)/bin/python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); \
		print(*p["project"]["dependencies"], *p["build-system"]["requires"], sep="\n")' \
		> wheelhouse/requirements.txt
	$(VENV)/bin/pip download -q -d wheelhouse --python-version 3.11 --only-binary=:all: \
		-r wheelhouse/requirements.txt

# Docker (Debian's docker.io) and a debootstrapped base are set up by scripts/image_host.sh.
test-image: wheelhouse
	BCC_EXPORTER_IMAGE_TEST=1 $(VENV)/bin/python -m pytest tests/image $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info wheelhouse .pytest_cache .mypy_cache .ruff_cache
	rm -rf $(VENV) .venv-min-deps build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./.git -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
