#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages deputy builds, tests and demos with, when any is missing,
# then the npm packages of the tests' OpenID Provider (tests/idp, versions pinned by its
# package-lock.json) into build/npm and of the MCP tests (tests/mcp) into build/npm-mcp,
# both ignored like the rest of build/, and those the
# proxy's runtime tests use (scripts/npm-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# npm packages of the tests, each from its folder's lock file into its own folder under
# build/ (npm ci empties node_modules, so two lock files never share one):
#   npm_deps SRC PACKAGE DEST   the tests' IdP (oidc-provider) and MCP SDK, again only when
#                               the pinned version is not there.
npm_deps() {
	local src=$1 pkg=$2 dest=$3 want have
	want=$(sed -n "s|.*\"$pkg\": \"\([0-9.]*\)\".*|\1|p" "$src/package.json")
	have=$(sed -n '0,/"version"/s/^ *"version": "\(.*\)",$/\1/p' \
		"$dest/node_modules/$pkg/package.json" 2>/dev/null || true)
	[ -n "$want" ] && [ "$want" = "$have" ] && return 0
	if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
		echo "deputy: deps: node and npm are needed for the IdP and MCP tests (apt-get install nodejs npm)" >&2
		exit 1
	fi
	echo "deputy: installing $pkg $want into $dest" >&2
	mkdir -p "$dest"
	cp "$src/package.json" "$src/package-lock.json" "$dest/"
	npm ci --prefix "$dest" --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
}

pkgs=(build-essential clang llvm bpftool pkg-config libbpf-dev libelf-dev zlib1g-dev
      libssl-dev openssl libjansson-dev libcurl4-openssl-dev liburing-dev
      curl python3 python3-jwt python3-cryptography busybox-static iproute2 procps
      golang-go gnutls-bin wget chromium rsyslog mandoc bash-completion)
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
npm_deps tests/idp oidc-provider build/npm
npm_deps tests/mcp @modelcontextprotocol/sdk build/npm-mcp
exec scripts/npm-deps.sh
