#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The tree keeps the shape the README promises: the size rules (scripts/sizes.sh) hold, the
# checker itself still catches a breach, and the README's Layout names every product .c
# file in its folder and nothing that is not there.
set -u
SRC=${DEPUTY_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$SRC" || exit 1

test_sizes_hold() {
	local out
	if out=$(scripts/sizes.sh 2>&1); then
		echo "PASS: sizes_hold"
	else
		echo "FAIL: sizes_hold: $(echo "$out" | head -5 | tr '\n' ' ')"
	fi
}

# A long function without a why, one with it, and a long file, in a scratch repository.
test_sizes_catches_a_breach() {
	local tmp out rc
	tmp=$(mktemp -d /tmp/deputy-layout.XXXXXX)
	mkdir -p "$tmp/scripts" "$tmp/daemon/lib"
	cp scripts/sizes.sh "$tmp/scripts/"
	{
		echo "int quiet(void)"
		echo "{"
		for i in $(seq 120); do echo "	f($i);"; done
		echo "}"
		echo
		echo "/* Over 100 lines on purpose: a test of the checker. */"
		echo "int explained(void)"
		echo "{"
		for i in $(seq 120); do echo "	f($i);"; done
		echo "}"
		for i in $(seq 500); do echo "int v$i;"; done
	} >"$tmp/daemon/lib/big.c"
	git -C "$tmp" init -q && git -C "$tmp" add -A
	out=$(bash "$tmp/scripts/sizes.sh" 2>&1)
	rc=$?
	rm -rf "$tmp"
	if [ "$rc" -ne 1 ]; then
		echo "FAIL: sizes_catches_a_breach: exit $rc: $out"
	elif ! grep -q '^daemon/lib/big.c:1: a function of 123 lines' <<<"$out"; then
		echo "FAIL: sizes_catches_a_breach: the long function went unnoticed: $out"
	elif grep -q 'big.c:[0-9]*: .*explained\|big.c:126:' <<<"$out"; then
		echo "FAIL: sizes_catches_a_breach: a function with its why was flagged: $out"
	elif ! grep -q '^daemon/lib/big.c: [0-9]* lines' <<<"$out"; then
		echo "FAIL: sizes_catches_a_breach: the long file went unnoticed: $out"
	else
		echo "PASS: sizes_catches_a_breach"
	fi
}

# "folder name" for every file name the Layout block gives under a product folder.
layout_names() {
	awk '
		/^## Layout/ { inl = 1; next }
		inl && /^```/ { if (blk) exit; blk = 1; next }
		!blk { next }
		/^[^ ]/ { dir = ($1 ~ /^(daemon\/[a-z]+|bpf|preload|include\/deputy)\/$/) ? $1 : ""; $1 = "" }
		dir == "" { next }
		{
			line = $0
			while (match(line, /[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\.(c|h|txt|in|example|[158]|bash-completion)([^A-Za-z0-9_.-]|$)/)) {
				name = substr(line, RSTART, RLENGTH)
				sub(/[^A-Za-z0-9_.-]$/, "", name)
				print dir, name
				line = substr(line, RSTART + RLENGTH)
			}
		}' README.md
}

test_readme_layout_names_exist() {
	local dir name missing=""
	while read -r dir name; do
		[ -e "$dir$name" ] || missing+=" $dir$name"
	done < <(layout_names)
	if [ -n "$missing" ]; then
		echo "FAIL: readme_layout_names_exist: named but not in the tree:$missing"
	elif [ "$(layout_names | wc -l)" -lt 40 ]; then
		echo "FAIL: readme_layout_names_exist: only $(layout_names | wc -l) names read from the Layout"
	else
		echo "PASS: readme_layout_names_exist"
	fi
}

test_readme_layout_names_every_c_file() {
	local f names unnamed=""
	names=$(layout_names | tr -d ' ')
	for f in $(git ls-files -- 'daemon/*.c' 'preload/*.c' 'bpf/*.c'); do
		grep -qxF "$f" <<<"$names" || unnamed+=" $f"
	done
	if [ -n "$unnamed" ]; then
		echo "FAIL: readme_layout_names_every_c_file: not in the README's Layout:$unnamed"
	else
		echo "PASS: readme_layout_names_every_c_file"
	fi
}

test_sizes_hold
test_sizes_catches_a_breach
test_readme_layout_names_exist
test_readme_layout_names_every_c_file
