#!/usr/bin/env bash
# `make bench` (sandbox part): how long the sandbox takes to come up warm, and
# how long the 3-instance sample takes from `kubectl apply` to 3/3 ready,
# over RUNS fresh sandboxes (default 3). The pods run the images `make
# images` builds, pulled from the sandbox's registry; the node keeps the
# unpacked images between sandboxes, so only a first run on a new image
# pays for unpacking it. Uses its own state folder, so it
# must not run beside another sandbox (they share the pod bridge).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-3}
bins=$(hack/build-k8s.sh --dir)
images=$(go run ./hack/images -q)
dir=$(mktemp -d /tmp/holdfast-bench-XXXXXX)
chmod 755 "$dir"
export KUBECONFIG=$dir/kubeconfig
kubectl() { "$bins/kubectl" "$@"; }
# The folder is removed only once down has unmounted what the pods had
# mounted in it: rm -rf through a mount would reach the host's files.
trap 'if bin/holdfast sandbox down --dir "$dir" --bin-dir "$bins" >/dev/null 2>&1; then rm -rf "$dir"; else echo "sandbox down failed; $dir is kept" >&2; fi' EXIT
now() { date +%s.%N; }
ups=() readies=()
for i in $(seq 1 "$runs"); do
	t0=$(now)
	bin/holdfast sandbox up --dir "$dir" --bin-dir "$bins" --images "$images" >/dev/null
	t1=$(now)
	for _ in $(seq 1 120); do kubectl get serviceaccount default >/dev/null 2>&1 && break; sleep 0.5; done
	kubectl apply --server-side -k config/default >/dev/null
	kubectl wait --for condition=Established crd/postgresclusters.holdfast.dev --timeout=60s >/dev/null
	kubectl -n holdfast-system rollout status deployment/holdfast-operator --timeout=5m >/dev/null
	t2=$(now)
	kubectl apply --server-side -k config/samples >/dev/null
	kubectl wait --for=jsonpath='{.status.readyInstances}'=3 postgrescluster/demo --timeout=10m >/dev/null
	t3=$(now)
	bin/holdfast sandbox down --dir "$dir" --bin-dir "$bins" >/dev/null
	ups+=("$(awk "BEGIN {print $t1 - $t0}")")
	readies+=("$(awk "BEGIN {print $t3 - $t2}")")
	printf 'run %d: sandbox up %.1f s, sample applied -> 3/3 ready %.1f s\n' "$i" "${ups[-1]}" "${readies[-1]}" >&2
done
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "%.1f s  %.1f s  %.1f s", a[1], a[int((NR+1)/2)], a[NR]}'; }
echo
echo "sandbox on $(nproc) cores, $(date -u +%F), $runs runs          min     median  max"
echo "holdfast sandbox up (warm binaries)           $(stats "${ups[@]}")"
echo "3-instance sample: apply -> 3/3 ready         $(stats "${readies[@]}")"
