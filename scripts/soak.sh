#!/usr/bin/env bash
# make soak: build and install estream, then run scripts/soak.py on a private
# instance as an unprivileged user: retention and compaction under steady
# load, with accelerated segment.ms and retention.ms (about 6 minutes).
# Extra arguments go to soak.py (see --help; --smoke is a 20 s run for CI).
# ESTREAM_NO_INSTALL=1 uses the installed build as it is.
set -euo pipefail
ESTREAM_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ESTREAM_ROOT"
. scripts/common.sh

estream_install_deps python3 python3-psycopg2
if [ -z "${ESTREAM_NO_INSTALL:-}" ]; then
	estream_build_install
fi
mkdir -p bench/results
estream_prepare_rundir
estream_as_owner /usr/bin/python3 scripts/soak.py "$@"
