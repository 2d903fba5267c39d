#!/usr/bin/env bash
# Builds the pinned promtool (hack/promtool/go.mod) into a version-keyed cache
# outside the clone, and links it as bin/promtool/<key>. Skips the build when
# the cache holds it. test/alerts runs it to check and unit-test the alerting
# rules in config/monitoring.
#
#   hack/build-promtool.sh          build if missing, print the binary's folder
#   hack/build-promtool.sh --dir    print the folder without building
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

version=$(awk '$1=="require" && $2=="github.com/prometheus/prometheus" {print $3}' "$here/promtool/go.mod")
# The key also covers the lock file and the pinning file, so a change of a
# dependency or of what is built rebuilds.
sum=$(cat "$here/promtool/go.sum" "$here/promtool/tools.go" | sha256sum | cut -c1-10)
key="promtool-${version}_${sum}"

cache=${HOLDFAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/holdfast}
dest="$cache/bin/$key"
link="$root/bin/promtool/$key"

if [[ "${1:-}" == "--dir" ]]; then
	echo "$link"
	exit 0
fi

if [[ ! -x "$dest/promtool" ]]; then
	echo "building promtool ${version} into $dest (first time on this machine: a few minutes)" >&2
	tmp="$dest.tmp.$$"
	mkdir -p "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	# Prometheus' release builds stamp the version through common/version, so
	# promtool --version names the release. Module v0.MMm.p is release
	# M.Mm.p (v0.316.0 is Prometheus 3.16.0).
	minor=${version#v0.}
	patch=${minor#*.}
	minor=${minor%%.*}
	ldflags="-s -w -X github.com/prometheus/common/version.Version=$((minor / 100)).$((minor % 100)).${patch}"
	(cd "$here/promtool" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/promtool" github.com/prometheus/prometheus/cmd/promtool)
	mkdir -p "$dest"
	mv "$tmp/promtool" "$dest/promtool"
fi

mkdir -p "$root/bin/promtool"
ln -sfn "$dest" "$link"
echo "$link"
