#!/usr/bin/env bash
# make bench: build and install estream, then run scripts/bench.py on a
# private instance as an unprivileged user.  BENCH_MODE=quick (default, a few
# minutes) or full.  Extra arguments go to bench.py (see --help).
# ESTREAM_NO_INSTALL=1 uses the installed build as it is.
set -euo pipefail
ESTREAM_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ESTREAM_ROOT"
. scripts/common.sh

estream_install_deps python3 python3-psycopg2 postgresql-15-pgq3 postgresql-15-wal2json
if [ -z "${ESTREAM_NO_INSTALL:-}" ]; then
	estream_build_install
fi
mkdir -p bench/results
estream_prepare_rundir
estream_as_owner /usr/bin/python3 scripts/bench.py "$@"
