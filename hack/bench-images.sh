#!/usr/bin/env bash
# `make bench` (images part): what `make images` costs and makes. The binary
# in the operator image before the split (./cmd/holdfast, which links the
# sandbox) and after it (./cmd/holdfastd), built as the image builds it; a
# cold build (a new, empty cache: mmdebstrap and all) and a warm one (the
# same cache again), and each image's size. Must run from a committed tree:
# the image's revision label and the layout's key name the commit.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d /tmp/holdfast-bench-images-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
now() { date +%s.%N; }
mb() { awk "BEGIN {printf \"%.1f MB\", $(stat -c %s "$1") / 1e6}"; }

for main in holdfast holdfastd; do
	CGO_ENABLED=0 go build -trimpath -buildvcs=false -ldflags "-s -w -buildid=" -o "$tmp/$main" "./cmd/$main"
done

t0=$(now)
HOLDFAST_CACHE="$tmp/cache" go run ./hack/images > "$tmp/cold.txt"
t1=$(now)
HOLDFAST_CACHE="$tmp/cache" go run ./hack/images > "$tmp/warm.txt"
t2=$(now)
if ! diff -q "$tmp/cold.txt" "$tmp/warm.txt" >/dev/null; then
	echo "the warm build made other images than the cold one:" >&2
	diff "$tmp/cold.txt" "$tmp/warm.txt" >&2
	exit 1
fi

echo
echo "images at $(git describe --always --dirty) on $(nproc) cores, $(date -u +%F)"
printf 'binary in the operator image, before the split (./cmd/holdfast, with the sandbox): %s\n' "$(mb "$tmp/holdfast")"
printf 'binary in the operator image, after the split (./cmd/holdfastd):                   %s\n' "$(mb "$tmp/holdfastd")"
printf 'make images, cold (empty cache: mmdebstrap, compression):  %.0f s\n' "$(awk "BEGIN {print $t1 - $t0}")"
printf 'make images, warm (the same inputs: the layout is found):  %.0f s\n' "$(awk "BEGIN {print $t2 - $t1}")"
sed -n 's/^  /image /p' "$tmp/cold.txt"
