#!/usr/bin/env bash
# End-to-end check of the operator on a local kind cluster. NOT run by CI (CI has no
# Kubernetes); for users who have docker, kind and kubectl. Uses the pause image as a stand-in
# model server, so no GPU is needed.
#
#   scripts/e2e-kind.sh            # creates the kind cluster "fusioninfer-e2e" if missing
#   KEEP=1 scripts/e2e-kind.sh     # keep the cluster afterwards
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=${CLUSTER:-fusioninfer-e2e}
IMAGE=ghcr.io/fusioninfer/fusioninfer-operator:v0.1.0
NS=fusioninfer-e2e

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done

kind get clusters | grep -qx "$CLUSTER" || kind create cluster --name "$CLUSTER"
kubectl config use-context "kind-$CLUSTER" >/dev/null
cleanup() { [[ "${KEEP:-0}" == 1 ]] || kind delete cluster --name "$CLUSTER"; }
trap cleanup EXIT

docker build -f bins/fusioninfer-operator/Dockerfile -t "$IMAGE" .
kind load docker-image --name "$CLUSTER" "$IMAGE"
kubectl apply -k deploy/
kubectl -n fusioninfer-system rollout status deploy/fusioninfer-operator --timeout=120s

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -f - <<YAML
apiVersion: fusioninfer.io/v1alpha1
kind: InferenceService
metadata: {name: e2e, namespace: $NS}
spec:
  roles:
  - name: worker
    componentType: worker
    replicas: 1
    template: {spec: {containers: [{name: server, image: registry.k8s.io/pause:3.10}]}}
YAML

echo "== waiting for Ready=True"
kubectl -n "$NS" wait fisvc/e2e --for=condition=Ready --timeout=180s
kubectl -n "$NS" get fisvc e2e

echo "== a hand edit is restored"
kubectl -n "$NS" scale statefulset e2e-worker --replicas=3
for _ in $(seq 60); do
  [[ "$(kubectl -n "$NS" get statefulset e2e-worker -o jsonpath='{.spec.replicas}')" == 1 ]] && break
  sleep 2
done
[[ "$(kubectl -n "$NS" get statefulset e2e-worker -o jsonpath='{.spec.replicas}')" == 1 ]]

echo "== deleting the service removes its children"
kubectl -n "$NS" delete fisvc e2e --wait=true
kubectl -n "$NS" wait statefulset/e2e-worker --for=delete --timeout=120s || true
[[ -z "$(kubectl -n "$NS" get statefulset,service -l fusioninfer.io/service=e2e -o name)" ]]

echo "e2e passed"
