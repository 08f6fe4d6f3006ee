# Shared helpers of estream's scripts: sourced, not run.

PG_BINDIR=/usr/lib/postgresql/15/bin
export PG_CONFIG="${PG_CONFIG:-$PG_BINDIR/pg_config}"

if [ "$(id -u)" -eq 0 ]; then
	SUDO=""
else
	SUDO="sudo"
fi

# Install the Debian packages estream needs to build and test, if missing
# (postgresql-15-plpgsql-check: the lint of sql/lint.sql, a plain extension
# that the temporary instances load without preloading).
estream_install_deps() {
	local pkgs="postgresql-15 postgresql-server-dev-15 postgresql-contrib postgresql-15-plpgsql-check pg-bsd-indent libipc-run-perl make gcc $*"
	local missing=""
	for p in $pkgs; do
		dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
	done
	if [ -n "$missing" ]; then
		echo "== installing:$missing"
		$SUDO apt-get update -qq
		DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
	fi
	# Debian starts a main cluster on install; estream uses private instances only.
}

# Build and install the extension into the server's directories.
estream_build_install() {
	make -s PG_CONFIG="$PG_CONFIG" ${PG_CFLAGS:+PG_CFLAGS="$PG_CFLAGS"}
	$SUDO make -s PG_CONFIG="$PG_CONFIG" install
}

# Choose where to run as an unprivileged user (PostgreSQL refuses root).
# As root, the tree is handed to the "postgres" user; if that user cannot
# reach the tree (a clone under /root, say), a copy under /tmp is used.
# Sets ESTREAM_RUNDIR.
estream_prepare_rundir() {
	ESTREAM_RUNDIR="$ESTREAM_ROOT"
	if [ "$(id -u)" -ne 0 ]; then
		return
	fi
	chown -R postgres: "$ESTREAM_ROOT"
	if ! runuser -u postgres -- test -w "$ESTREAM_ROOT/Makefile" 2>/dev/null ||
	   ! runuser -u postgres -- test -x "$ESTREAM_ROOT" 2>/dev/null; then
		ESTREAM_RUNDIR="$(mktemp -d /tmp/estream-run.XXXXXX)"
		cp -a "$ESTREAM_ROOT"/. "$ESTREAM_RUNDIR"/
		chmod 755 "$ESTREAM_RUNDIR"
		chown -R postgres: "$ESTREAM_RUNDIR"
		echo "== $ESTREAM_ROOT is not reachable by user postgres; running in $ESTREAM_RUNDIR"
	fi
}

# Run a command in ESTREAM_RUNDIR as its unprivileged owner.
estream_as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		(cd "$ESTREAM_RUNDIR" && runuser -u postgres -- env PATH="$PATH" "$@")
	else
		(cd "$ESTREAM_RUNDIR" && "$@")
	fi
}
