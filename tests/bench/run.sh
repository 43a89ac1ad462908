#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# make bench: runs every benchmark of tests/bench in one run, prints one table and writes
# $BUILD/bench.json. Benchmarks report; they never fail on a timing. Knobs (environment):
# BENCH_REQUESTS (5000), BENCH_ROUNDS (3), BENCH_MINT_N (2000), BENCH_CONNECT_MS (2000),
# BENCH_SESSIONS (100), BENCH_PROXY_CONNS (100), BENCH_ONLY (e.g. "proxy": only those sections;
# "mcp": what an MCP route adds to a tools/call).
set -eu
BUILD=${BUILD:-$(pwd)/build}
PYTHON=${PYTHON:-/usr/bin/python3}
cd "$(dirname "$0")/../.."
export BUILD PYTHON DEPUTY_SRC=$(pwd)
# The proxy's rows need route hosts that resolve (deputyd resolves them itself): a private
# mount namespace gets its own /etc/hosts; the machine's is never touched.
if [ -z "${DEPUTY_BENCH_NS:-}" ] && command -v unshare >/dev/null; then
	exec unshare --mount --propagation private -- env DEPUTY_BENCH_NS=1 \
		"$PYTHON" tests/bench/bench.py "$@"
fi
exec "$PYTHON" tests/bench/bench.py "$@"
