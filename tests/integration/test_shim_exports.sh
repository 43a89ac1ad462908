#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# libdeputy.so exports exactly the hooks listed in preload/exports.txt: anything more would
# interpose on the agent's own symbols, anything less is a hook that silently never runs.
set -u
BUILD=${BUILD:-$(pwd)/build}
SRC=${DEPUTY_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
LIB=$BUILD/libdeputy.so
LIST=$SRC/preload/exports.txt

test_exports_match_list() {
	local got want
	got=$(nm -D --defined-only "$LIB" | awk '{print $3}' | sed 's/@.*//' | LC_ALL=C sort)
	want=$(grep -v '^#' "$LIST" | sed '/^$/d' | LC_ALL=C sort)
	if [ "$got" = "$want" ]; then
		echo "PASS: exports_match_list"
	else
		echo "FAIL: exports_match_list: $(diff <(echo "$want") <(echo "$got") | grep '^[<>]' | tr '\n' ' ')"
	fi
}

test_no_undefined_openssl() {
	# OpenSSL is looked up at run time in the libssl the process loaded; linking against it
	# would pull a libssl into every agent, even those that never use TLS.
	if nm -D --undefined-only "$LIB" | grep -q ' SSL_'; then
		echo "FAIL: no_undefined_openssl: $(nm -D --undefined-only "$LIB" | grep ' SSL_' | head -3 | tr '\n' ' ')"
	elif readelf -d "$LIB" | grep NEEDED | grep -q libssl; then
		echo "FAIL: no_undefined_openssl: libssl is NEEDED"
	else
		echo "PASS: no_undefined_openssl"
	fi
}

test_loads_into_a_program_without_openssl() {
	# busybox-static ignores LD_PRELOAD; /bin/true is dynamic and has no libssl.
	local out
	out=$(env -u DEPUTY_SESSION LD_PRELOAD="$LIB" /bin/true 2>&1)
	if [ $? -eq 0 ] && [ -z "$out" ]; then
		echo "PASS: loads_into_a_program_without_openssl"
	else
		echo "FAIL: loads_into_a_program_without_openssl: $out"
	fi
}

if [ ! -f "$LIB" ]; then
	echo "FAIL: exports_match_list: $LIB not built"
	exit 1
fi
test_exports_match_list
test_no_undefined_openssl
test_loads_into_a_program_without_openssl
