#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# make bench: runs every benchmark of tests/bench in one run, prints one table and writes
# $BUILD/bench.json. Benchmarks report; they never fail on a timing. Knobs (environment):
# BENCH_REQUESTS (5000), BENCH_ROUNDS (3), BENCH_MINT_N (2000), BENCH_CONNECT_MS (2000),
# BENCH_SESSIONS (100).
set -eu
BUILD=${BUILD:-$(pwd)/build}
PYTHON=${PYTHON:-/usr/bin/python3}
cd "$(dirname "$0")/../.."
export BUILD PYTHON DEPUTY_SRC=$(pwd)
exec "$PYTHON" tests/bench/bench.py "$@"
