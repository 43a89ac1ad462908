#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The size rules of the house (README, Layout): no product source file (daemon/, preload/,
# bpf/, include/) over 700 lines, and no C function anywhere in the repository over 100
# lines unless the comment directly above it says why it is long (it mentions "lines" or
# "long", as in "Over 100 lines on purpose: ..."). A file that must stay long goes into
# FILE_ALLOW below with its reason. Prints one line per breach; exits 1 if there is any.
# tests/integration/test_layout.sh runs it in make test.
#
# Functions are found by the shape clang-format gives them here: a signature starting in
# column 0, its "{" and its "}" alone in column 0.
set -u
cd "$(dirname "$0")/.."

MAX_FILE=700
MAX_FUNC=100

# path: why it may be longer than MAX_FILE
FILE_ALLOW=(
	# The programs share their maps and helpers; libbpf-bootstrap's one-object-per-feature
	# shape would split one feature in two (the file's header says so too).
	"bpf/deputy.bpf.c"
)

allowed() {
	local f
	for f in "${FILE_ALLOW[@]}"; do
		[ "$f" = "$1" ] && return 0
	done
	return 1
}

# The C sources under the given folders: the files git tracks, or, outside a checkout (an
# unpacked release), what is there but build output and npm packages.
sources() {
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git ls-files -- "$@" | grep -E '\.[ch]$'
	else
		find "$@" \( -name build -o -name node_modules \) -prune -o -type f -name '*.[ch]' \
			-print | sed 's|^\./||'
	fi
}

bad=0
while read -r n f; do
	if [ "$n" -gt "$MAX_FILE" ] && ! allowed "$f"; then
		echo "$f: $n lines (at most $MAX_FILE; split it, or say why in FILE_ALLOW)"
		bad=1
	fi
done < <(sources daemon preload bpf include | xargs -r wc -l | grep -v ' total$')

long=$(sources . | xargs -r awk -v max="$MAX_FUNC" '
	FNR == 1 { sig = 0; body = 0; cend = -1; ctext = ""; incom = 0 }
	# comment blocks: remember the text of the last one and where it ended
	!body && !incom && /^[ \t]*\/\*/ { incom = 1; ctext = "" }
	!body && incom { ctext = ctext " " $0; if ($0 ~ /\*\//) { incom = 0; cend = FNR }; next }
	!body && /^[ \t]*\/\// { ctext = (cend == FNR - 1 ? ctext : "") " " $0; cend = FNR; next }
	!body && !sig && /^[A-Za-z_]/ && !/;[ \t]*$/ {
		sig = FNR
		why = cend == FNR - 1 && tolower(ctext) ~ /lines|long/
	}
	!body && sig && /;[ \t]*$/ && !/^\{/ { sig = 0 }
	!body && sig && /^\{/ { body = 1; next }
	body && /^\}/ {
		if (FNR - sig + 1 > max && !why)
			printf "%s:%d: a function of %d lines without a comment above it saying why\n",
			       FILENAME, sig, FNR - sig + 1
		body = 0; sig = 0
	}')
if [ -n "$long" ]; then
	echo "$long"
	bad=1
fi
exit $bad
