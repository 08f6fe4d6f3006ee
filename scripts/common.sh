# Shared helpers of estream's scripts: sourced, not run.

PG_BINDIR=/usr/lib/postgresql/15/bin
export PG_CONFIG="${PG_CONFIG:-$PG_BINDIR/pg_config}"

if [ "$(id -u)" -eq 0 ]; then
	SUDO=""
else
	SUDO="sudo"
fi

# Install the Debian packages estream needs to build and test, if missing.
estream_install_deps() {
	local pkgs="postgresql-15 postgresql-server-dev-15 postgresql-contrib libipc-run-perl make gcc $*"
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

# Run a command as an unprivileged user that owns the tree (PostgreSQL refuses root).
estream_as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		chown -R postgres: "$ESTREAM_ROOT"
		runuser -u postgres -- env PATH="$PATH" "$@"
	else
		"$@"
	fi
}
