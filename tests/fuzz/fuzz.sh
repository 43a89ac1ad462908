#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the libFuzzer targets (build/tests/fuzz/fuzz_*, one per tests/fuzz/fuzz_*.c, each with
# its seeds in tests/fuzz/corpus/<target>/). Three uses:
#   fuzz.sh test TARGET       make test: one target for FUZZ_TEST_SECONDS (20) from its seeds;
#                             prints PASS/FAIL lines for tests/run.sh
#   fuzz.sh campaign          make fuzz: every target for FUZZ_SECONDS (600) on FUZZ_JOBS (2)
#                             processes, growing build/fuzz/corpus/<target>
#   fuzz.sh merge             make fuzz-merge: the grown inputs that add coverage go into the
#                             seeds under tests/fuzz/corpus
# A crash (or leak, timeout, out-of-memory) leaves its input in build/fuzz/crashes/<target>/
# next to a .replay file holding the command that replays it.
set -u
BUILD=${BUILD:-$(pwd)/build}
FUZZ_TEST_SECONDS=${FUZZ_TEST_SECONDS:-20}
FUZZ_SECONDS=${FUZZ_SECONDS:-600}
FUZZ_JOBS=${FUZZ_JOBS:-$(nproc)}
FUZZ_MAX_LEN=${FUZZ_MAX_LEN:-8192}
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
# State (grown corpora, crashes) stays in the top build folder, also for SAN=1 builds.
STATE=$ROOT/build/fuzz
# A unit slower than this is a finding too (a hang); generous, for a busy machine.
UNIT_TIMEOUT=30

# The seed directory of a target, if it has one (a new target may start from nothing).
seeds() {
	[ -d "tests/fuzz/corpus/$1" ] && echo "tests/fuzz/corpus/$1"
}

targets() {
	local t
	for t in "$BUILD"/tests/fuzz/fuzz_*; do
		[ -x "$t" ] && [ "${t%.d}" = "$t" ] && echo "$t"
	done
}

# After a failed run: name each input libFuzzer saved and write the command replaying it.
report_crashes() { # name, bin, crashdir, since-marker
	local name=$1 bin=$2 dir=$3 since=$4 a found=1
	for a in $(find "$dir" -type f ! -name '*.replay' -newer "$since" 2>/dev/null); do
		echo "$bin $a" >"$a.replay"
		echo "FAIL: $name: $(basename "$a" | cut -d- -f1) on $a; replay: $bin $a"
		found=0
	done
	return $found
}

run_test() { # bin
	local bin=$1 name work log mark rc execs
	name=$(basename "$bin")
	work=$(mktemp -d /tmp/deputy-fuzz.XXXXXX)
	log=$work.log
	mark=$work.mark
	mkdir -p "$STATE/crashes/$name"
	touch "$mark"
	# New inputs go to the scratch directory first in the list, never to the seeds.
	"$bin" -max_total_time="$FUZZ_TEST_SECONDS" -max_len="$FUZZ_MAX_LEN" \
		-timeout=$UNIT_TIMEOUT -print_final_stats=1 \
		-artifact_prefix="$STATE/crashes/$name/" \
		"$work" $(seeds "$name") >/dev/null 2>"$log"
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	if [ "$rc" -ne 0 ]; then
		tail -n 40 "$log"
		report_crashes "$name" "$bin" "$STATE/crashes/$name" "$mark" ||
			echo "FAIL: $name: libFuzzer exited with status $rc"
	elif [ -z "$execs" ] || [ "$execs" -eq 0 ]; then
		tail -n 20 "$log"
		echo "FAIL: $name: ran no inputs"
	else
		echo "PASS: $name: ${execs} inputs in ${FUZZ_TEST_SECONDS} s, no invariant broken"
	fi
	rm -rf "$work" "$log" "$mark"
}

run_campaign() {
	local bin name corpus mark failed=0 summary=()
	mkdir -p "$STATE"
	for bin in $(targets); do
		name=$(basename "$bin")
		corpus=$STATE/corpus/$name
		mark=$STATE/.mark-$name
		mkdir -p "$corpus" "$STATE/crashes/$name"
		touch "$mark"
		echo "== $name: $FUZZ_SECONDS s on $FUZZ_JOBS processes, corpus $corpus"
		# -fork runs the jobs as children and keeps going after a crash, so one finding
		# does not end the campaign; each crash is still saved under crashes/.
		"$bin" -fork="$FUZZ_JOBS" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
			-max_total_time="$FUZZ_SECONDS" -max_len="$FUZZ_MAX_LEN" \
			-timeout=$UNIT_TIMEOUT -artifact_prefix="$STATE/crashes/$name/" \
			"$corpus" $(seeds "$name") 2>"$STATE/$name.log"
		if report_crashes "$name" "$bin" "$STATE/crashes/$name" "$mark"; then
			failed=1
			summary+=("$name: FINDINGS (see above; log $STATE/$name.log)")
		else
			summary+=("$name: $(grep -o '^#[0-9]*' "$STATE/$name.log" | tail -n 1 | tr -d '#') inputs run, $(ls "$corpus" | wc -l) in the corpus, no finding")
		fi
		rm -f "$mark"
	done
	echo
	printf '%s\n' "${summary[@]}"
	return $failed
}

run_merge() {
	local bin name
	for bin in $(targets); do
		name=$(basename "$bin")
		[ -d "$STATE/corpus/$name" ] || continue
		mkdir -p "tests/fuzz/corpus/$name"
		echo "== $name"
		# -merge=1 copies only the inputs that add coverage to what the seeds reach.
		"$bin" -merge=1 -max_len="$FUZZ_MAX_LEN" "tests/fuzz/corpus/$name" \
			"$STATE/corpus/$name" 2>&1 | grep -E '^MERGE-OUTER: [0-9]+ new files' || true
	done
}

case "${1:-}" in
test) run_test "$2" ;;
campaign) run_campaign ;;
merge) run_merge ;;
*)
	echo "usage: $0 test TARGET | campaign | merge" >&2
	exit 2
	;;
esac
