#!/usr/bin/env bash
# Installs the Debian packages the tests need, when they are missing:
# postgresql-15 (the instance-manager tests run real servers from
# /usr/lib/postgresql/15/bin) and pgbackrest (physical backups); iptables and conntrack for the sandbox's
# kube-proxy; btrfs-progs for the sandbox's volumes; mmdebstrap for the postgres image (make images, internal/images). Arguments name more commands to have, as command=package
# (hack/install-bench-deps.sh passes the benchmark's).
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
[[ -x /usr/lib/postgresql/15/bin/postgres ]] || need+=(postgresql-15)
command -v pgbackrest >/dev/null || need+=(pgbackrest)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
# root's PATH has /usr/sbin, a user's may not: look there too.
PATH=$PATH:/usr/sbin:/sbin
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
# The sandbox's volumes are btrfs filesystems in image files.
command -v mkfs.btrfs >/dev/null || need+=(btrfs-progs)
for want in "$@"; do
	command -v "${want%%=*}" >/dev/null || need+=("${want#*=}")
done
((${#need[@]})) || exit 0

sudo=""
[[ $(id -u) == 0 ]] || sudo=sudo
# The tests make their own data directories; Debian's default cluster would
# only take a port and memory.
$sudo mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/holdfast.conf >/dev/null
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
