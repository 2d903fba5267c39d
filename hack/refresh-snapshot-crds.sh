#!/usr/bin/env bash
# Copies the VolumeSnapshot CRDs that the sandbox installs from the
# external-snapshotter client module that go.mod requires. go:embed cannot
# reach another module's files, so the sandbox embeds these copies;
# TestCRDsMatchTheModule fails when they drift from the module.
#
#   hack/refresh-snapshot-crds.sh    run after bumping .../external-snapshotter/client/v8
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
module=github.com/kubernetes-csi/external-snapshotter/client/v8
# Without a version, go mod download takes the one go.mod selects.
dir=$(go mod download -json "$module" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [[ -z "$dir" || ! -d "$dir/config/crd" ]]; then
	echo "no config/crd in the module folder of $module ('$dir')" >&2
	exit 1
fi
dest="$root/internal/rig/sandbox/snapshot/crds"
mkdir -p "$dest"
rm -f "$dest"/*.yaml
for f in "$dir"/config/crd/*.yaml; do
	# kustomization.yaml only lists the CRDs; the sandbox applies each file itself.
	[[ "$(basename "$f")" == kustomization.yaml ]] && continue
	install -m 0644 "$f" "$dest/"
done
ls "$dest"
