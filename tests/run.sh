#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The test runner. Every test program prints one line per case:
#   PASS: <name>     FAIL: <name>: <why>     SKIP: <name>: <why>
# A program that exits non-zero without printing a FAIL line counts as one failure.
# Ends with "N passed, N failed, N skipped"; exits non-zero on any failure.
# T=<substring> runs only the test programs whose path contains it.
set -u
BUILD=${BUILD:-$(pwd)/build}
PYTHON=${PYTHON:-/usr/bin/python3}
TEST_TIMEOUT=${TEST_TIMEOUT:-600}
export BUILD PYTHON
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export DEPUTY_SRC=$ROOT

passed=0 failed=0 skipped=0
failures=()
logdir=$(mktemp -d /tmp/deputy-tests.XXXXXX)

run_one() { # name, command...
	local name=$1; shift
	case "$name" in *"${T:-}"*) ;; *) return ;; esac
	local log="$logdir/$(echo "$name" | tr '/ ' '__').log"
	local start=$SECONDS
	timeout -k 10 "$TEST_TIMEOUT" "$@" >"$log" 2>&1
	local rc=$?
	local p f s
	p=$(grep -c '^PASS: ' "$log")
	f=$(grep -c '^FAIL: ' "$log")
	s=$(grep -c '^SKIP: ' "$log")
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
		echo "FAIL: $name: exited with status $rc" >>"$log"
	fi
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
	printf '%-44s %3d passed %3d failed %3d skipped  (%ds)\n' "$name" "$p" "$f" "$s" $((SECONDS - start))
	if [ "$f" -gt 0 ]; then
		failures+=("$name")
		grep -E '^(FAIL|SKIP): ' "$log" | sed 's/^/    /'
		echo "    --- last lines of $log:"
		tail -n 25 "$log" | sed 's/^/    | /'
	elif [ "$s" -gt 0 ]; then
		grep '^SKIP: ' "$log" | sed 's/^/    /'
	fi
}

for t in "$BUILD"/tests/unit/test_*; do
	[ -x "$t" ] || continue
	case "$t" in *.d) continue ;; esac
	run_one "unit/$(basename "$t")" "$t"
done

# Each fuzz target mutates from its seeds for FUZZ_TEST_SECONDS (tests/fuzz/fuzz.sh).
for t in "$BUILD"/tests/fuzz/fuzz_*; do
	[ -x "$t" ] || continue
	case "$t" in *.d) continue ;; esac
	run_one "fuzz/$(basename "$t")" tests/fuzz/fuzz.sh test "$t"
done

for t in tests/integration/test_*; do
	case "$t" in
	*.py) run_one "${t#tests/}" "$PYTHON" "$t" ;;
	*.sh) run_one "${t#tests/}" bash "$t" ;;
	esac
done

echo
if [ ${#failures[@]} -gt 0 ]; then
	echo "failed: ${failures[*]} (logs in $logdir)"
else
	rm -rf "$logdir"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
