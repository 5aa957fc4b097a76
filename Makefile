# FusionInfer: two commands matter.
#   make demo   run the main job on the embedded default (no cluster needed)
#   make test   run every check and test CI runs
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

VENV := .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint fmt-check clippy doc unit python-test bench update-golden

demo:
	$(CARGO) build --quiet -p fusioninfer
	./scripts/demo.sh

test: fmt-check clippy doc unit python-test

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

unit:
	$(CARGO) test --workspace

# A project-local virtualenv with the Python tools the tests need (maturin, pytest, PyYAML).
$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "maturin>=1.16,<2" "pytest>=7" pyyaml

# Build the Python wheel (abi3, CPython >= 3.9), install it into the venv, run its suite.
python-test: $(PY)
	rm -rf target/wheels
	$(VENV)/bin/maturin build --quiet --profile dev -m fusioninfer-py/Cargo.toml -o target/wheels
	$(VENV)/bin/pip install --quiet --force-reinstall --no-deps target/wheels/fusioninfer-*.whl
	$(VENV)/bin/pytest -q fusioninfer-py/tests

# Criterion benchmarks (numbers are reported in crate READMEs, never asserted in tests).
bench:
	$(CARGO) bench -p fusioninfer-sched

# Rewrite the checked-in CRD and the golden renders after an intended change.
update-golden:
	UPDATE_GOLDEN=1 $(CARGO) test -p fusioninfer-tests --test crd
	UPDATE_GOLDEN=1 $(CARGO) test -p fusioninfer --test cli
