#!/usr/bin/env bash
# Builds the pinned control-plane binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kube-proxy, kubectl, etcd, and CoreDNS for the sandbox's cluster DNS)
# from Go modules into a version-keyed cache outside the clone, and links it as
# bin/k8s/<key>. Skips the build when the cache holds them. The sandbox's S3 server,
# versitygw, has a cache folder of its own (its key does not touch the control plane's,
# so adding or bumping it rebuilds nothing else), linked into the same folder.
#
#   hack/build-k8s.sh          build if missing, print the binaries' folder
#   hack/build-k8s.sh --dir    print the folder without building
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)

k8s_version=$(awk '$1=="require" && $2=="k8s.io/kubernetes" {print $3}' "$here/k8s/go.mod")
etcd_version=$(awk '$1=="require" && $2=="go.etcd.io/etcd/server/v3" {print $3}' "$here/etcd/go.mod")
coredns_version=$(awk '$1=="require" && $2=="github.com/coredns/coredns" {print $3}' "$here/coredns/go.mod")
# The key also covers the lock files, the command list and the mains, so any
# change of a dependency or of what is built rebuilds.
sum=$(cat "$here/k8s/go.sum" "$here/k8s/tools.go" "$here/etcd/go.sum" "$here/etcd/main.go" \
	"$here/coredns/go.sum" "$here/coredns/main.go" | sha256sum | cut -c1-10)
key="k8s-${k8s_version}_etcd-${etcd_version}_coredns-${coredns_version}_${sum}"

cache=${HOLDFAST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/holdfast}
dest="$cache/bin/$key"
link="$root/bin/k8s/$key"

if [[ "${1:-}" == "--dir" ]]; then
	echo "$link"
	exit 0
fi

bins=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl etcd coredns)
missing=()
for b in "${bins[@]}"; do
	[[ -x "$dest/$b" ]] || missing+=("$b")
done

if ((${#missing[@]})); then
	echo "building ${missing[*]} into $dest (first time on this machine: several minutes)" >&2
	tmp="$dest.tmp.$$"
	mkdir -p "$tmp"
	trap 'rm -rf "$tmp"' EXIT
	minor=${k8s_version#v1.}
	minor=${minor%%.*}
	ldflags="-s -w -X k8s.io/component-base/version.gitVersion=${k8s_version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor} -X k8s.io/component-base/version.gitTreeState=clean"
	k8s_pkgs=()
	for b in "${missing[@]}"; do
		[[ "$b" == etcd || "$b" == coredns ]] || k8s_pkgs+=("k8s.io/kubernetes/cmd/$b")
	done
	if ((${#k8s_pkgs[@]})); then
		(cd "$here/k8s" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$tmp/" "${k8s_pkgs[@]}")
	fi
	if [[ " ${missing[*]} " == *" etcd "* ]]; then
		(cd "$here/etcd" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/etcd" .)
	fi
	if [[ " ${missing[*]} " == *" coredns "* ]]; then
		(cd "$here/coredns" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" .)
	fi
	mkdir -p "$dest"
	for b in "${missing[@]}"; do
		mv "$tmp/$b" "$dest/$b"
	done
fi

# versitygw: its own key, so that it and the control plane rebuild apart.
vgw_version=$(awk '$1=="require" && $2=="github.com/versity/versitygw" {print $3}' "$here/versitygw/go.mod")
vgw_sum=$(cat "$here/versitygw/go.sum" "$here/versitygw/tools.go" | sha256sum | cut -c1-10)
vgw_dest="$cache/bin/versitygw-${vgw_version}_${vgw_sum}"
if [[ ! -x "$vgw_dest/versitygw" ]]; then
	echo "building versitygw into $vgw_dest (first time on this machine: a few minutes)" >&2
	vgw_tmp="$vgw_dest.tmp.$$"
	mkdir -p "$vgw_tmp"
	trap 'rm -rf "${tmp:-}" "$vgw_tmp"' EXIT
	(cd "$here/versitygw" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=${vgw_version}" -o "$vgw_tmp/versitygw" github.com/versity/versitygw/cmd/versitygw)
	mkdir -p "$vgw_dest"
	mv "$vgw_tmp/versitygw" "$vgw_dest/versitygw"
fi
mkdir -p "$dest"
ln -sfn "$vgw_dest/versitygw" "$dest/versitygw"

mkdir -p "$root/bin/k8s"
ln -sfn "$dest" "$link"
echo "$link"
