#!/usr/bin/env bash
# Installs the Debian packages the failover benchmark needs, when they are
# missing: what the tests need (hack/install-deps.sh: postgresql-15,
# iptables, ...) plus patroni 3.0.2 (bookworm's, which brings python3-etcd
# and python3-psycopg2) to compare Holdfast against, and nsenter.
# etcd is not installed here: the benchmark runs the project's own etcd from
# `hack/build-k8s.sh --dir`, and falls back to an `etcd` on PATH.
set -euo pipefail
exec "$(dirname "$0")/install-deps.sh" patroni=patroni nsenter=util-linux
