#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages deputy builds, tests and demos with, when any is missing.
set -euo pipefail
pkgs=(build-essential clang llvm bpftool pkg-config libbpf-dev libelf-dev zlib1g-dev
      libssl-dev openssl libjansson-dev libcurl4-openssl-dev liburing-dev
      curl python3 python3-jwt python3-cryptography busybox-static iproute2 procps
      chromium rsyslog mandoc bash-completion)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "deputy: deps: missing packages (${missing[*]}); run 'make deps' as root" >&2
	exit 1
fi
echo "deputy: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
