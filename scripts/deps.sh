#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages deputy builds, tests and demos with, when any is missing,
# then the npm packages the proxy's runtime tests use (scripts/npm-deps.sh).
set -euo pipefail
pkgs=(build-essential clang llvm bpftool pkg-config libbpf-dev libelf-dev zlib1g-dev
      libssl-dev openssl libjansson-dev libcurl4-openssl-dev liburing-dev
      curl python3 python3-jwt python3-cryptography busybox-static iproute2 procps
      golang-go gnutls-bin wget)
# Runtimes the proxy is tested with: Debian's Node and npm unless the machine already has a
# node (another packaging of Node also brings npm; mixing them would break both).
command -v node >/dev/null 2>&1 || pkgs+=(nodejs)
command -v npm >/dev/null 2>&1 || pkgs+=(npm)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deputy: deps: missing packages (${missing[*]}); run 'make deps' as root" >&2
		exit 1
	fi
	echo "deputy: installing ${missing[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
exec "$(dirname "$0")/npm-deps.sh"
