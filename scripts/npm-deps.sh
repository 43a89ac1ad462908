#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the npm packages the tests use into build/npm (ignored by git), once: Bun, whose
# npm package ships the binary (build/npm/node_modules/@oven/bun-linux-x64/bin/bun).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=build/npm
bun=$dir/node_modules/@oven/bun-linux-x64/bin/bun
want=1.4.5
if [ -x "$bun" ] && [ "$("$bun" --version 2>/dev/null)" = "$want" ]; then
	exit 0
fi
mkdir -p "$dir"
echo "deputy: installing @oven/bun-linux-x64@$want into $dir" >&2
npm install --prefix "$dir" --no-audit --no-fund --no-save --silent "@oven/bun-linux-x64@$want"
