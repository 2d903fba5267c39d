#!/usr/bin/env bash
# Installs the Debian packages the tests need, when they are missing.
# Nothing is needed yet beyond Go and git; the instance-manager tests will add postgresql-15.
set -euo pipefail
need=()
command -v git >/dev/null || need+=(git)
if ((${#need[@]})); then
	sudo=""
	[[ $(id -u) == 0 ]] || sudo=sudo
	$sudo apt-get update -q
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
fi
