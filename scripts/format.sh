#!/usr/bin/env bash
# Lay out estream's C sources as PostgreSQL's pgindent does: pg_bsd_indent
# (Debian package pg-bsd-indent) with pgindent's options, and a list of
# typedef names taken from the server's headers and from src/.
#
#   scripts/format.sh            rewrite src/*.c src/*.h in place
#   scripts/format.sh --check    change nothing; list what is not laid out
#                                and exit 1 (the test command runs this)
#
# Not pgindent itself: its Perl pre- and post-processing (comments after
# #else and #endif, blank lines before a closing brace) is left out.
set -euo pipefail
cd "$(dirname "$0")/.."
PG_CONFIG="${PG_CONFIG:-pg_config}"
INDENT="${PG_BSD_INDENT:-pg_bsd_indent}"
check=0
[ "${1:-}" = "--check" ] && check=1

command -v "$INDENT" >/dev/null || {
	echo "format.sh: $INDENT not found (apt-get install pg-bsd-indent)" >&2
	exit 2
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Typedef names: what follows "typedef ..." up to the semicolon, the name
# after the closing brace of a typedef'd struct, and function pointer types.
server="$("$PG_CONFIG" --includedir-server)"
{
	grep -rhoE '^typedef\s+(struct|union|enum)?\s*[A-Za-z_0-9 *]+\s+\**[A-Za-z_][A-Za-z_0-9]*\s*;' "$server" src |
		sed -E 's/.*[ *]([A-Za-z_][A-Za-z_0-9]*)\s*;$/\1/'
	grep -rhoE '^\}\s*[A-Za-z_][A-Za-z_0-9]*\s*;' "$server" src |
		sed -E 's/^\}\s*([A-Za-z_0-9]+)\s*;/\1/'
	grep -rhoE 'typedef [^;(]*\(\s*\*\s*[A-Za-z_][A-Za-z_0-9]*\)' "$server" src |
		sed -E 's/.*\(\s*\*\s*([A-Za-z_0-9]+)\)/\1/'
} | sort -u > "$work/typedefs.list"

# pgindent's options for pg_bsd_indent
opts=(-bad -bap -bbb -bc -bl -cli1 -cp33 -cdb -nce -d0 -di12 -nfc1 -i4 -l79
	  -lp -lpl -nip -npro -sac -tpg -ts4 "-U$work/typedefs.list")

status=0
for f in src/*.c src/*.h; do
	"$INDENT" "${opts[@]}" "$f" "$work/out" 2>"$work/err" || {
		echo "format.sh: $INDENT failed on $f:" >&2
		cat "$work/err" >&2
		exit 2
	}
	if ! cmp -s "$f" "$work/out"; then
		if [ "$check" -eq 1 ]; then
			echo "== $f is not laid out as pgindent would (scripts/format.sh fixes it):"
			diff -u "$f" "$work/out" | head -40 || true
			status=1
		else
			cp "$work/out" "$f"
			echo "formatted $f"
		fi
	fi
done
exit $status
