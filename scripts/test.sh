#!/usr/bin/env bash
# Run every estream test: pg_regress (sql/), isolation (specs/) and TAP
# (test/t/), each on its own temporary instance with estream preloaded.
# Works from a clean clone on Debian 12, as root or as a user with sudo.
set -euo pipefail
ESTREAM_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ESTREAM_ROOT"
. scripts/common.sh

estream_install_deps
estream_build_install

# the shape of the C sources: laid out as pgindent would, modules called
# in one direction only, no function of 150 lines or more
./scripts/format.sh --check
make -s PG_CONFIG="$PG_CONFIG" check-modules

estream_prepare_rundir
status=0
estream_as_owner make -s PG_CONFIG="$PG_CONFIG" installcheck || status=$?
if [ "$status" -ne 0 ]; then
	cd "$ESTREAM_RUNDIR"
	for f in regression.diffs output_iso/regression.diffs; do
		[ -f "$f" ] && { echo "== $f"; cat "$f"; }
	done
	for f in tmp_check/log/regress_log_*; do
		[ -f "$f" ] && { echo "== tail of $f"; tail -n 40 "$f"; }
	done
	exit "$status"
fi
echo "== all estream tests passed"
