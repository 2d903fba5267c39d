#!/usr/bin/env bash
# Builds CloudNativePG's manager (cmd/manager: its operator, and the instance
# manager its pods run) at the version hack/cnpg/go.mod pins, into a
# version-keyed cache outside the clone, with the release manifest of that
# version beside it, and links the folder as bin/cnpg/<key>. Skips the build
# when the cache holds it. The project's module does not require CloudNativePG.
#
#   hack/build-cnpg.sh          build if missing, print the folder
#   hack/build-cnpg.sh --dir    print the folder without building
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

version=$(awk '$1=="require" && $2=="github.com/cloudnative-pg/cloudnative-pg" {print $3}' "$here/cnpg/go.mod")
sum=$(cat "$here/cnpg/go.sum" "$here/cnpg/tools.go" | sha256sum | cut -c1-10)
key="cnpg-${version}_${sum}"
cache=${HOLDFAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/holdfast}
dest="$cache/bin/$key"
link="$root/bin/cnpg/$key"

if [[ "${1:-}" == "--dir" ]]; then
	echo "$link"
	exit 0
fi

manifest="cnpg-${version#v}.yaml"
if [[ ! -x "$dest/manager" || ! -s "$dest/$manifest" ]]; then
	echo "building CloudNativePG ${version}'s manager into $dest (first time on this machine: a few minutes)" >&2
	tmp="$dest.tmp.$$"
	mkdir -p "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	# The flags of its own Makefile, so that it reports its version.
	pkg=github.com/cloudnative-pg/cloudnative-pg
	(cd "$here/cnpg" && CGO_ENABLED=0 go build -trimpath \
		-ldflags "-s -w -X $pkg/pkg/versions.buildVersion=${version#v} -X $pkg/pkg/versions.buildCommit=${version}" \
		-o "$tmp/manager" "$pkg/cmd/manager")
	moddir=$(cd "$here/cnpg" && go list -m -f '{{.Dir}}' "$pkg")
	cp "$moddir/releases/$manifest" "$tmp/$manifest"
	chmod 0644 "$tmp/$manifest"
	mkdir -p "$dest"
	mv "$tmp/manager" "$tmp/$manifest" "$dest/"
fi
mkdir -p "$root/bin/cnpg"
ln -sfn "$dest" "$link"
echo "$link"
