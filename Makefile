# FusionInfer: two commands matter.
#   make demo   run the main job on the embedded default (no cluster needed)
#   make test   run every check and test CI runs
SHELL := /bin/bash
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: demo test lint fmt-check clippy doc unit bench update-golden

demo:
	$(CARGO) build --quiet -p fusioninfer
	./scripts/demo.sh

test: fmt-check clippy doc unit

fmt-check:
	$(CARGO) fmt --all --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

doc:
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet

unit:
	$(CARGO) test --workspace

# Criterion benchmarks (numbers are reported in crate READMEs, never asserted in tests).
bench:
	$(CARGO) bench -p fusioninfer-sched

# Rewrite the checked-in CRD and the golden renders after an intended change.
update-golden:
	UPDATE_GOLDEN=1 $(CARGO) test -p fusioninfer-tests --test crd
	UPDATE_GOLDEN=1 $(CARGO) test -p fusioninfer --test cli
