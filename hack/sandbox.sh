#!/usr/bin/env bash
# `make sandbox`: brings the sandbox up, installs Holdfast with the manifests
# a user applies to any cluster, applies the 3-instance sample, waits for it,
# proves a row written through the -rw Service reads back through -ro, and
# prints how to connect.
set -euo pipefail
cd "$(dirname "$0")/.."
bins=$(hack/build-k8s.sh --dir)
export KUBECONFIG=$PWD/.sandbox/kubeconfig
kubectl() { "$bins/kubectl" "$@"; }
step() { echo "==> $*"; }

start=$(date +%s)
step "building the images (make images; the first build on a machine takes minutes)"
images=$(go run ./hack/images -q)
bin/holdfast sandbox up --bin-dir "$bins" --images "$images"

step "installing Holdfast (config/default)"
for _ in $(seq 1 60); do kubectl get serviceaccount default >/dev/null 2>&1 && break; sleep 1; done
kubectl apply --server-side -k config/default >/dev/null
kubectl wait --for condition=Established crd/postgresclusters.holdfast.dev --timeout=60s >/dev/null
kubectl -n holdfast-system rollout status deployment/holdfast-operator --timeout=5m

step "applying config/samples (a 3-instance PostgresCluster)"
applied=$(date +%s)
kubectl apply --server-side -k config/samples >/dev/null
if ! kubectl wait --for=jsonpath='{.status.readyInstances}'=3 postgrescluster/demo --timeout=10m >/dev/null; then
	kubectl get pgc,pods -o wide >&2
	echo "the sample did not become ready; see 'kubectl describe pgc demo' and .sandbox/pods/*/logs" >&2
	exit 1
fi
ready=$(date +%s)
kubectl get pgc demo

rw=$(kubectl get service demo-rw -o jsonpath='{.spec.clusterIP}')
ro=$(kubectl get service demo-ro -o jsonpath='{.spec.clusterIP}')
password=$(kubectl get secret demo-app -o jsonpath='{.data.password}' | base64 -d)
step "writing a row through demo-rw ($rw) and reading it back through demo-ro ($ro)"
stamp="written by make sandbox at $(date -u +%FT%TZ)"
PGPASSWORD=$password psql -X -q -h "$rw" -U app app -v ON_ERROR_STOP=1 \
	-c "CREATE TABLE IF NOT EXISTS sandbox_check (at timestamptz DEFAULT now(), note text)" \
	-c "INSERT INTO sandbox_check (note) VALUES ('$stamp')"
for _ in $(seq 1 30); do
	got=$(PGPASSWORD=$password psql -X -At -h "$ro" -U app app -c "SELECT note FROM sandbox_check WHERE note = '$stamp'" 2>/dev/null || true)
	[[ "$got" == "$stamp" ]] && break
	sleep 1
done
if [[ "$got" != "$stamp" ]]; then
	echo "the row written through demo-rw did not come back through demo-ro" >&2
	exit 1
fi
echo "read back through demo-ro: $got"

cat <<MSG

The sandbox is up: sandbox started and sample ready in $((ready - start)) s ($((ready - applied)) s from applying the sample to 3/3 ready).
  export KUBECONFIG=$KUBECONFIG
  export PATH=$bins:\$PATH        # kubectl built from the pinned Kubernetes modules
  kubectl get pgc,pods -o wide
  # the database, through the primary's Service (demo-rw) and the replicas' (demo-ro):
  PGPASSWORD=\$(kubectl get secret demo-app -o jsonpath='{.data.password}' | base64 -d) psql -h $rw -U app app
  PGPASSWORD=\$(kubectl get secret demo-app -o jsonpath='{.data.password}' | base64 -d) psql -h $ro -U app app
  # the same names through the cluster DNS: psql -h demo-rw.default.svc.cluster.local (resolver 10.96.0.10)
Logs: .sandbox/logs (control plane), .sandbox/pods/<namespace>_<pod>_<uid>/logs (containers).
'make sandbox-down' stops it all.
MSG
