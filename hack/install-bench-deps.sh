#!/usr/bin/env bash
# Installs the Debian packages the failover benchmark needs, when they are
# missing: patroni 3.0.2 (bookworm's, which brings python3-etcd and
# python3-psycopg2) to compare Holdfast against, and postgresql-15 for both.
# etcd is not installed here: the benchmark runs the project's own etcd from
# `hack/build-k8s.sh --dir`, and falls back to an `etcd` on PATH.
set -euo pipefail
need=()
[[ -x /usr/lib/postgresql/15/bin/postgres ]] || need+=(postgresql-15)
command -v patroni >/dev/null || need+=(patroni)
PATH=$PATH:/usr/sbin:/sbin
command -v iptables >/dev/null || need+=(iptables)
command -v nsenter >/dev/null || need+=(util-linux)
((${#need[@]})) || exit 0

sudo=""
[[ $(id -u) == 0 ]] || sudo=sudo
# The benchmark makes its own data directories; Debian's default cluster
# would only take a port and memory.
$sudo mkdir -p /etc/postgresql-common/createcluster.d
echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/holdfast.conf >/dev/null
$sudo apt-get update -q
# The package enables a patroni.service; the benchmark starts its own members.
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
