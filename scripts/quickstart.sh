#!/usr/bin/env bash
# Try estream in one command.
#
# Installs the Debian packages estream needs, builds and installs the
# extension, then runs a private PostgreSQL 15 instance with estream
# preloaded (data, socket and log in .estream-demo/ under the repository,
# no TCP listener) and plays a short demo in psql.  Works from a clean clone
# on Debian 12, as root (the instance then belongs to the "postgres" user)
# or as a user with sudo (the instance then belongs to you).
#
#   ./scripts/quickstart.sh          build, install, (re)start, run the demo
#   ./scripts/quickstart.sh stop     stop the demo instance
#   ./scripts/quickstart.sh reset    stop it and delete it
#
# Environment: ESTREAM_DEMO_PORT (default 5440), ESTREAM_DEMO_DIR (default
# <repository>/.estream-demo), ESTREAM_DEMO_DB (default estream_demo).
set -euo pipefail
ESTREAM_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${ESTREAM_DEMO_DIR:-}" ]; then
	ESTREAM_DEMO_DIR="$(realpath -m "$ESTREAM_DEMO_DIR")"
fi
cd "$ESTREAM_ROOT"
. scripts/common.sh

ACTION="${1:-run}"
case "$ACTION" in
	run|stop|reset) ;;
	-h|--help|help)
		sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
		exit 0 ;;
	*)
		echo "usage: $0 [run|stop|reset]" >&2
		exit 2 ;;
esac

PORT="${ESTREAM_DEMO_PORT:-5440}"
DB="${ESTREAM_DEMO_DB:-estream_demo}"

if [ "$(id -u)" -eq 0 ]; then
	OWNER=postgres
else
	OWNER="$(id -un)"
fi

# Run a command as the instance's owner (from /, which the owner can reach).
as_owner() {
	if [ "$(id -u)" -eq 0 ]; then
		(cd / && runuser -u "$OWNER" -- "$@")
	else
		"$@"
	fi
}

# Where the instance lives.  As root, the postgres user must be able to
# reach it: a clone under /root (mode 700) is not reachable, so fall back to
# the postgres user's home rather than loosening permissions on /root.
choose_demo_dir() {
	DEMO_DIR="${ESTREAM_DEMO_DIR:-$ESTREAM_ROOT/.estream-demo}"
	if [ "$(id -u)" -eq 0 ] && [ -z "${ESTREAM_DEMO_DIR:-}" ] &&
		! runuser -u "$OWNER" -- test -x "$ESTREAM_ROOT"; then
		DEMO_DIR="$(getent passwd "$OWNER" | cut -d: -f6)/estream-demo"
		echo "== $ESTREAM_ROOT is not reachable by the $OWNER user; using $DEMO_DIR"
	fi
	DATA="$DEMO_DIR/data"
	LOG="$DEMO_DIR/postgresql.log"
	SOCK="$DEMO_DIR/socket"
	# a Unix socket path has at most 107 bytes
	if [ "${#SOCK}" -gt 90 ]; then
		SOCK="/tmp/estream-demo-$OWNER-$PORT"
	fi
}

pg_ctl_cmd() {
	if [ "$(id -u)" -eq 0 ]; then
		echo "runuser -u $OWNER -- $PG_BINDIR/pg_ctl -D $DATA"
	else
		echo "$PG_BINDIR/pg_ctl -D $DATA"
	fi
}

is_running() {
	[ -f "$DATA/PG_VERSION" ] && as_owner "$PG_BINDIR/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

stop_instance() {
	if is_running; then
		echo "== stopping the demo instance in $DATA"
		as_owner "$PG_BINDIR/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
	fi
}

# Without the server packages there is no instance to stop.
if [ "$ACTION" != run ]; then
	if ! getent passwd "$OWNER" >/dev/null || [ ! -x "$PG_BINDIR/pg_ctl" ]; then
		echo "== nothing to $ACTION: PostgreSQL 15 is not installed"
		exit 0
	fi
	choose_demo_dir
	stop_instance
	if [ "$ACTION" = reset ]; then
		# only what this script created, in case ESTREAM_DEMO_DIR names a
		# directory that holds other files
		echo "== deleting the demo instance in $DEMO_DIR"
		rm -rf "$DATA" "$SOCK" "$LOG"
		rmdir "$DEMO_DIR" 2>/dev/null || true
	fi
	exit 0
fi

estream_install_deps
estream_build_install
choose_demo_dir

# A server that was left running keeps the previous estream.so loaded.
stop_instance

if [ ! -f "$DATA/PG_VERSION" ]; then
	echo "== creating a PostgreSQL 15 instance in $DATA"
	rm -rf "$DATA"		# what an interrupted initdb may have left
	if [ ! -d "$DEMO_DIR" ]; then
		mkdir -p "$DEMO_DIR"
		chown "$OWNER": "$DEMO_DIR"
		chmod 700 "$DEMO_DIR"
	fi
	# Local connections are trusted, but only the owner (and root) can
	# reach the socket directory, and there is no TCP listener.
	as_owner "$PG_BINDIR/initdb" -D "$DATA" -U "$OWNER" --auth=trust \
		--encoding=UTF8 --locale=C.UTF-8 >/dev/null
fi
mkdir -p "$SOCK"
chown "$OWNER": "$SOCK"
chmod 700 "$SOCK"

# Written on every run, so that a changed port or socket directory applies.
as_owner tee "$DATA/estream-demo.conf" >/dev/null <<EOF
# Written by scripts/quickstart.sh: settings of the estream demo instance.
shared_preload_libraries = 'estream'
wal_level = logical
port = $PORT
listen_addresses = ''
unix_socket_directories = '$SOCK'
unix_socket_permissions = 0700
EOF
# Debian's 15.19 and later list the output plugins that slots may use: CDC
# needs estream there.  Older servers do not know the setting.  (grep reads
# all the output: with -q, postgres could die of SIGPIPE and pipefail say no.)
if as_owner "$PG_BINDIR/postgres" --describe-config 2>/dev/null | grep '^output_plugin_libraries' >/dev/null; then
	echo "output_plugin_libraries = 'pgoutput, test_decoding, estream'" |
		as_owner tee -a "$DATA/estream-demo.conf" >/dev/null
fi
if ! grep -q "^include_if_exists = 'estream-demo.conf'" "$DATA/postgresql.conf"; then
	echo "include_if_exists = 'estream-demo.conf'" | as_owner tee -a "$DATA/postgresql.conf" >/dev/null
fi

echo "== starting the instance (port $PORT, socket directory $SOCK)"
if ! as_owner "$PG_BINDIR/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null; then
	echo "== the server did not start; end of $LOG:" >&2
	tail -n 30 "$LOG" >&2
	exit 1
fi

PSQL=("$PG_BINDIR/psql" -X -q -h "$SOCK" -p "$PORT" -U "$OWNER")

# The demo runs in a fresh database, so that every run prints the same
# offsets.
"${PSQL[@]}" -d postgres -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning" \
	-c "DROP DATABASE IF EXISTS \"$DB\" WITH (FORCE)" -c "CREATE DATABASE \"$DB\""

echo "== demo: psql -d $DB"
echo
PGOPTIONS="-c client_min_messages=warning" \
	"${PSQL[@]}" -d "$DB" -v ON_ERROR_STOP=1 -P pager=off -P footer=off <<'SQL'
\set ECHO queries

\echo '-- estream is loaded at server start (shared_preload_libraries); each database that'
\echo '-- uses it runs CREATE EXTENSION.'
CREATE EXTENSION estream;

\echo
\echo '-- The application runs as an ordinary role.  It holds estream rights (Kafka-style ACLs),'
\echo '-- never privileges on estream\'s tables: it may create topics, and owns (with every'
\echo '-- right) those it creates; use consumer groups; and see the views (estream_monitor).'
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'app') THEN
    CREATE ROLE app LOGIN;
  END IF;
END $$;
GRANT CREATE ON SCHEMA public TO app;
GRANT estream_monitor TO app;
SELECT estream.grant_acl('app', 'create', 'cluster');
SELECT estream.grant_acl('app', 'read', 'group', '*');
SET ROLE app;
SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;

\echo
\echo '-- A topic with three partitions.'
SELECT estream.create_topic('orders', partitions => 3);

\echo
\echo '-- Records with a key: the same key always lands in the same partition (Kafka\'s'
\echo '-- partitioner), and offsets are dense within a partition.'
SELECT * FROM estream.produce('orders', '{"order_id": 1, "status": "created"}', key => 'customer-42');
SELECT * FROM estream.produce('orders', '{"order_id": 1, "status": "paid"}', key => 'customer-42');

\echo
\echo '-- A record without a key goes round-robin.'
SELECT * FROM estream.produce('orders', '{"note": "no key"}');

\echo
\echo '-- The business row and its event commit together, or not at all.'
CREATE TABLE shop_order (id int PRIMARY KEY, customer text NOT NULL, total numeric NOT NULL);
BEGIN;
INSERT INTO shop_order VALUES (2, 'customer-7', 19.90);
SELECT * FROM estream.produce('orders', '{"order_id": 2, "status": "created", "total": 19.90}',
                              key => 'customer-7', headers => '{"source": "quickstart"}');
COMMIT;

\echo
\echo '-- Many records in one call; each goes to its key\'s partition.'
SELECT * FROM estream.produce_batch('orders',
    ARRAY['{"order_id": 3}', '{"order_id": 4}', '{"order_id": 5}']::jsonb[],
    keys => ARRAY['customer-1', 'customer-2', 'customer-3']);

\echo
\echo '-- A transaction that rolls back: its order and its event are gone.  The offset it'
\echo '-- took stays unused (a hole that consumers skip).'
BEGIN;
INSERT INTO shop_order VALUES (6, 'customer-42', 5.00);
SELECT * FROM estream.produce('orders', '{"order_id": 6, "status": "created"}', key => 'customer-42');
ROLLBACK;
SELECT * FROM estream.produce('orders', '{"order_id": 7, "status": "created"}', key => 'customer-42');

\echo
\echo '-- Per partition: the first offset kept, the stable offset (consumers read below'
\echo '-- it) and the next offset to be handed out.'
SELECT * FROM estream.watermarks('orders') ORDER BY partition;

\echo
\echo '-- Read the partition of customer-42 from offset 0: order 6 never shows up.'
SELECT "offset", key, value, headers
FROM estream.fetch('orders', estream.partition_for('customer-42', 3), 0);

\echo
\echo '-- Read every partition from offset 0.'
SELECT f.partition, f."offset", f.key, f.value
FROM estream.watermarks('orders') w,
     LATERAL estream.fetch('orders', w.partition, 0) f
ORDER BY f.partition, f."offset";

\echo
\echo '-- The business table agrees: no order 6.'
SELECT * FROM shop_order ORDER BY id;

\echo
\echo '-- A consumer group reads in its own transaction: poll() returns records and'
\echo '-- advances the group\'s committed offsets when the transaction commits.'
BEGIN;
SELECT partition, "offset", key, value FROM estream.poll('billing', 'orders', auto_offset_reset => 'earliest');
COMMIT;
SELECT * FROM estream.consumer_lag WHERE "group" = 'billing' ORDER BY partition;

\echo
\echo '-- A compacted topic keeps the latest value per key; latest() reads it as a table.'
SELECT estream.create_topic('customer-status', 2,
       '{"cleanup.policy": "compact", "segment.ms": 1000, "min.cleanable.dirty.ratio": 0.01}');
SELECT count(*) AS produced FROM (
  SELECT estream.produce('customer-status', jsonb_build_object('status', s), key => c)
  FROM (VALUES ('customer-42', 'new'), ('customer-7', 'new'), ('customer-42', 'gold'),
               ('customer-7', 'silver'), ('customer-42', 'platinum')) v(c, s)) x;
SELECT key, value FROM estream.latest('customer-status') ORDER BY key;

\echo
\echo '-- CDC: the changes of an ordinary table stream into a topic, with Debezium\'s envelope.'
\echo '-- The existing rows come first (op r), then inserts, updates and deletes.'
CREATE TABLE customer (id integer PRIMARY KEY, name text, tier text);
INSERT INTO customer VALUES (1, 'Ada', 'basic'), (2, 'Grace', 'basic');
SELECT estream.capture('customer', topic => 'customers');
-- the worker copies the existing rows within a second or two
DO $$ BEGIN
  FOR i IN 1 .. 100 LOOP
    EXIT WHEN (SELECT state FROM estream.captures WHERE topic = 'customers') = 'streaming';
    PERFORM pg_sleep(0.1);
  END LOOP;
  IF (SELECT state FROM estream.captures WHERE topic = 'customers') <> 'streaming' THEN
    RAISE EXCEPTION 'the capture of table customer did not start'
      USING DETAIL = coalesce((SELECT last_error FROM estream.captures WHERE topic = 'customers'), 'no error'),
            HINT = 'Look at estream.workers and the server log.';
  END IF;
END $$;
INSERT INTO customer VALUES (3, 'Edsger', 'basic');
UPDATE customer SET tier = 'gold' WHERE id = 1;
DELETE FROM customer WHERE id = 2;
-- and then streams the changes
DO $$ BEGIN
  FOR i IN 1 .. 100 LOOP
    EXIT WHEN (SELECT stable_offset FROM estream.watermarks('customers')) >= 5;
    PERFORM pg_sleep(0.1);
  END LOOP;
  IF (SELECT stable_offset FROM estream.watermarks('customers')) < 5 THEN
    RAISE EXCEPTION 'the changes of table customer were not captured'
      USING HINT = 'Look at estream.captures and the server log.';
  END IF;
END $$;
SELECT "offset", key, value->>'op' AS op, value->'before' AS before, value->'after' AS after
FROM estream.fetch('customers', 0, 0);
SELECT source, topic, state, lag_bytes, lag_seconds, events_captured FROM estream.captures;

\echo
\echo '-- Rights: app owns its topics; estream.acls lists what was granted.'
SELECT topic, owner FROM estream.topics ORDER BY topic;
SELECT role, resource_type, resource_name, operation FROM estream.acls WHERE NOT predefined;

\echo
\echo '-- The background worker of this database rolls segments, applies retention and'
\echo '-- compaction and persists stable offsets (for standbys) every second.'
SELECT database, kind, state, runs, segments_rolled, errors FROM estream.workers ORDER BY kind DESC;

\echo
\echo '-- Topics and partitions at a glance.'
SELECT topic, partitions, config, segments, size_bytes FROM estream.topics;
SELECT topic, partition, log_start_offset, stable_offset, next_offset
FROM estream.partitions ORDER BY topic, partition;
SELECT topic, partition, records, bytes FROM estream.partition_stats ORDER BY topic, partition;
SQL

cat <<EOF

== estream is running.

Open psql on the demo instance:
    psql -h $SOCK -p $PORT -U $OWNER $DB

Stop it:
    ./scripts/quickstart.sh stop      (or: $(pg_ctl_cmd) stop)

Delete it:
    ./scripts/quickstart.sh reset

Run the test suites:
    ./scripts/test.sh
EOF
