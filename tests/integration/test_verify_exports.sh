#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# libdeputy-verify.a, the library C backends link, exports exactly what include/deputy/verify.h
# declares (daemon/lib/verify-exports.txt): anything more could clash with a backend's own
# symbols, anything less is a declared function that does not link.
set -u
BUILD=${BUILD:-$(pwd)/build}
SRC=${DEPUTY_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
LIB=$BUILD/libdeputy-verify.a
LIST=$SRC/daemon/lib/verify-exports.txt
HDR=$SRC/include/deputy/verify.h
CC=${CC:-cc}
# A SAN=1 library needs the sanitizer runtimes its objects call into.
SAN=
if nm -u "$LIB" 2>/dev/null | grep -q ' __asan_'; then
	SAN=-fsanitize=address,undefined
fi

want() { grep -v '^#' "$LIST" | sed '/^$/d' | LC_ALL=C sort; }

test_exports_match_list() {
	local got
	got=$(nm -g --defined-only "$LIB" | awk 'NF == 3 {print $3}' | LC_ALL=C sort)
	if [ "$got" = "$(want)" ]; then
		echo "PASS: exports_match_list"
	else
		echo "FAIL: exports_match_list: $(diff <(want) <(echo "$got") | grep '^[<>]' | tr '\n' ' ')"
	fi
}

test_list_matches_header() {
	local got
	got=$(grep -oE '\bdeputy_[a-z_]+ *\(' "$HDR" | sed 's/ *($//' | LC_ALL=C sort -u)
	if [ "$got" = "$(want)" ]; then
		echo "PASS: list_matches_header"
	else
		echo "FAIL: list_matches_header: $(diff <(want) <(echo "$got") | grep '^[<>]' | tr '\n' ' ')"
	fi
}

# A backend with functions named like deputy's internals links against the library with only
# the libraries the README names, and the library still answers.
test_links_beside_clashing_names() {
	local dir out
	dir=$(mktemp -d)
	cat > "$dir/b.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <deputy/verify.h>
long dp_now(void) { return 0; }
void dp_log(int lvl, const char *fmt, ...) { (void)lvl; (void)fmt; abort(); }
int dp_jws_parse(void) { return 1; }
int main(void)
{
	char err[256] = "";
	char *claims = NULL;
	int r = deputy_verify_token("{\"keys\":[]}", "not.a.token", "https://api", NULL,
				    &claims, err, sizeof(err));
	printf("%d %s\n", r, err);
	return 0;
}
C
	if ! out=$($CC $SAN -I"$SRC/include" -o "$dir/b" "$dir/b.c" "$LIB" -ljansson -lcurl -lssl \
		-lcrypto -lpthread 2>&1); then
		echo "FAIL: links_beside_clashing_names: $(echo "$out" | head -3 | tr '\n' ' ')"
	elif ! out=$("$dir/b" 2>&1) || [ "$out" != "-1 malformed token: bad base64url in header" ]; then
		echo "FAIL: links_beside_clashing_names: ran: $out"
	else
		echo "PASS: links_beside_clashing_names"
	fi
	rm -rf "$dir"
}

if [ ! -f "$LIB" ]; then
	echo "FAIL: exports_match_list: $LIB not built"
	exit 1
fi
test_exports_match_list
test_list_matches_header
test_links_beside_clashing_names
