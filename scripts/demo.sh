#!/usr/bin/env bash
# The demo until local mode lands: show what a disaggregated InferenceService becomes, then show
# validation catching a broken one. Exits non-zero if either step does not behave.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=./target/debug/fusioninfer

echo "== 1. validate examples/pd-volcano.yaml (2 prefill x 4 nodes, 1 decode x 2 nodes, Volcano, router)"
$bin validate -f examples/pd-volcano.yaml

echo
echo "== 2. render it: the Kubernetes objects it becomes (full YAML: $bin render -f examples/pd-volcano.yaml)"
rendered=$($bin render -f examples/pd-volcano.yaml)
# One line per object: kind and name (the first `name:` under each document's metadata).
awk '/^kind:/ {kind=$2} /^metadata:/ {meta=1} meta && /^  name:/ {printf "   %-16s %s\n", kind, $2; meta=0}' <<<"$rendered"
grep -q '^kind: PodGroup' <<<"$rendered"
[ "$(grep -c '^kind: LeaderWorkerSet' <<<"$rendered")" = 2 ]
grep -q '^kind: InferencePool' <<<"$rendered"

echo
echo "== 3. validate examples/invalid/mixed-worker-decoder.yaml (expected to fail, listing every error)"
if $bin validate -f examples/invalid/mixed-worker-decoder.yaml; then
  echo "demo: the broken spec was accepted" >&2
  exit 1
fi
echo
echo "demo: OK"
