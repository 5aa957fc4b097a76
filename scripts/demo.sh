#!/usr/bin/env bash
# `make demo`: run examples/local-demo.yaml on this machine with `fusioninfer up` (4 simulated
# vLLM replicas, the endpoint picker with the prefix-cache strategy, Envoy in front), send a
# scripted shared-prefix workload through Envoy, show which server answered each prefix group and
# how much of the prompts came from the prefix cache, then stop everything with Ctrl-C's signal.
# Exits non-zero if the stack does not start, a request fails, or routing did not keep prefix
# groups together. Ports: DEMO_PORT (default 8080) for Envoy; the others are `fusioninfer up`'s
# defaults (model servers 8001-8004, picker 9002/9003/9090, Envoy admin 9901).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/debug"
spec=examples/local-demo.yaml
port="${DEMO_PORT:-8080}"
log="$(mktemp -t fusioninfer-demo.XXXXXX)"

echo "== 1. fusioninfer up -f $spec --port $port"
"$bin/fusioninfer" up -f "$spec" --port "$port" > >(tee "$log") 2>&1 &
up=$!
stop() {
  if kill -0 "$up" 2>/dev/null; then
    kill -INT "$up"
    wait "$up" || true
  fi
  rm -f "$log"
}
trap stop EXIT

for _ in $(seq 1 600); do
  grep -q "OpenAI base URL" "$log" && break
  if ! kill -0 "$up" 2>/dev/null; then
    wait "$up" && status=0 || status=$?
    echo "demo: fusioninfer up exited (status $status) before it was ready" >&2
    exit 1
  fi
  sleep 0.1
done
grep -q "OpenAI base URL" "$log" || { echo "demo: not ready after 60s" >&2; exit 1; }

echo
echo "== 2. the workload: fusioninfer-load demo --url http://127.0.0.1:$port/v1"
if "$bin/fusioninfer-load" demo --url "http://127.0.0.1:$port/v1"; then
  passed=1
else
  passed=0
fi

echo
echo "== 3. stop: SIGINT to fusioninfer up (what Ctrl-C sends)"
kill -INT "$up"
wait "$up"
sleep 0.2 # let tee print the last lines
trap - EXIT
rm -f "$log"
echo
if [ "$passed" = 1 ]; then
  echo "demo: OK"
else
  echo "demo: FAILED (see the checks above)" >&2
  exit 1
fi
