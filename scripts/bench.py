#!/usr/bin/python3
"""estream benchmark: every workload side by side with its reference, on one
private PostgreSQL 15 instance, in one run.

Started by scripts/bench.sh (make bench), which installs what is needed and
runs this as an unprivileged user.  Prints one table (workload, clients,
events/s median/min/max over the runs, ratio to the reference measured in the
same run) and writes it as JSON and CSV under bench/results/.

Runs of a workload and of its reference are interleaved (A B A B ...) so that
drift of a shared, noisy machine hits both alike.

The CDC workload compares estream.capture() (source row changes written into a
topic by the worker) with wal2json read through pg_logical_slot_get_changes(),
under the same pgbench load: changes/s and the lag from the source commit until
a reader has the change.  It also checks that each side delivered every
committed change exactly once, and fails the run otherwise.
"""

import argparse
import csv
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def server_bindir():
    """The server binaries of $PG_CONFIG (bench.sh exports it, defaulting to
    the system's PostgreSQL 15), so that a private installation can be
    measured; /usr/lib/postgresql/15/bin without it."""
    pg_config = os.environ.get("PG_CONFIG")
    if pg_config:
        r = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    return "/usr/lib/postgresql/15/bin"


PGBIN = server_bindir()

# A JSON value of about 200 bytes, with a varying id.
VALUE_SQL = ("('{\"id\": ' || :id || ', \"type\": \"order.created\", \"customer\": \"c-' || (:id % 9973) || "
             "'\", \"amount\": 1234.56, \"currency\": \"EUR\", \"items\": [\"sku-1\", \"sku-2\", \"sku-3\"], "
             "\"note\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}')::jsonb")
VALUE_ROW_SQL = VALUE_SQL.replace(":id", "(:id + g)")


def server_has_setting(name):
    """Does this server know the setting?  (Debian's 15.19 and later have
    output_plugin_libraries; older servers refuse to start with it.)"""
    r = subprocess.run([f"{PGBIN}/postgres", "--describe-config"], capture_output=True, text=True)
    return any(line.split("\t", 1)[0] == name for line in r.stdout.splitlines())


def library_version():
    """md5 and modification time of the installed estream.so: what the
    instances load at their start."""
    import hashlib
    libdir = subprocess.run([f"{PGBIN}/pg_config", "--pkglibdir"], capture_output=True, text=True).stdout.strip()
    path = os.path.join(libdir, "estream.so")
    with open(path, "rb") as f:
        md5 = hashlib.md5(f.read()).hexdigest()
    return dict(md5=md5, mtime=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(os.path.getmtime(path))))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Instance:
    """A private PostgreSQL instance with estream preloaded."""

    def __init__(self, root, sync_commit, settings=()):
        self.root = root
        self.data = os.path.join(root, "data")
        self.port = free_port()
        self.sync_commit = sync_commit
        self.settings = settings    # more lines of postgresql.conf

    def start(self):
        subprocess.run([f"{PGBIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                        "--no-sync"], check=True, stdout=subprocess.DEVNULL)
        # CDC: the estream worker's slot and the wal2json reference's slot
        plugins = ("output_plugin_libraries = 'pgoutput, test_decoding, estream, wal2json'\n"
                   if server_has_setting("output_plugin_libraries") else "")
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write(f"""
port = {self.port}
listen_addresses = ''
unix_socket_directories = '{self.root}'
shared_preload_libraries = 'estream'
wal_level = logical
max_connections = 60
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
synchronous_commit = {'on' if self.sync_commit else 'off'}
autovacuum = on
max_replication_slots = 10
{plugins}""")
            for line in self.settings:
                f.write(line + "\n")
        subprocess.run([f"{PGBIN}/pg_ctl", "-D", self.data, "-l", os.path.join(self.root, "log"),
                        "-w", "start"], check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run([f"{PGBIN}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def env(self):
        e = dict(os.environ)
        e.update(PGHOST=self.root, PGPORT=str(self.port), PGUSER="postgres", PGDATABASE="postgres")
        return e

    def psql(self, sql):
        r = subprocess.run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                           env=self.env(), check=True, capture_output=True, text=True)
        return r.stdout.strip()

    def pgbench(self, script, clients, seconds, workdir, user=None):
        return self.pgbench_tx(script, clients, seconds, workdir, user=user)[0]

    def pgbench_tx(self, script, clients, seconds, workdir, rate=0, user=None):
        """Run pgbench (at most rate transactions/s if given), as user if given
        (else the superuser postgres); returns (tps, transactions processed)."""
        path = os.path.join(workdir, "script.sql")
        with open(path, "w") as f:
            f.write(script)
        r = subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", str(clients),
                            "-j", str(min(clients, 2)), "-T", str(seconds), "-f", path]
                           + (["-R", str(rate)] if rate else [])
                           + (["-U", user] if user else []),
                           env=self.env(), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pgbench failed:\n{r.stdout}\n{r.stderr}")
        m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", r.stdout)
        if not m:
            raise RuntimeError(f"no tps in pgbench output:\n{r.stdout}")
        n = re.search(r"number of transactions actually processed: ([0-9]+)", r.stdout)
        if not n:
            raise RuntimeError(f"no transaction count in pgbench output:\n{r.stdout}")
        return float(m.group(1)), int(n.group(1))


SETUP_SQL = """
CREATE EXTENSION IF NOT EXISTS estream;
DROP TABLE IF EXISTS ref_log;
DROP SEQUENCE IF EXISTS ref_offset;
CREATE SEQUENCE ref_offset;
CREATE TABLE ref_log (partition int NOT NULL, "offset" bigint NOT NULL DEFAULT nextval('ref_offset'),
                      key text, value jsonb, ts timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON ref_log (partition, "offset");
SELECT estream.drop_topic('bench', if_exists => true);
SELECT estream.create_topic('bench', {partitions});
CREATE EXTENSION IF NOT EXISTS pgq;
SELECT pgq.drop_queue('benchq', true) FROM pgq.queue WHERE queue_name = 'benchq';
SELECT pgq.create_queue('benchq');
DROP TABLE IF EXISTS lc_counter, lc_log;
CREATE TABLE lc_counter (partition int PRIMARY KEY, next bigint NOT NULL);
INSERT INTO lc_counter SELECT g, 0 FROM generate_series(0, 7) g;
CREATE TABLE lc_log (partition int NOT NULL, "offset" bigint NOT NULL, key text, value jsonb,
                     ts timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (partition, "offset"));
-- an application role with only estream rights, for the SECURITY DEFINER
-- path measured against the superuser's
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'bench_app') THEN
        CREATE ROLE bench_app LOGIN;
    END IF;
END $$;
SELECT estream.grant_acl('bench_app', 'read,write', 'topic', 'bench');
SELECT estream.drop_topic('benchread', if_exists => true);
SELECT estream.create_topic('benchread', 8);
SELECT estream.grant_acl('bench_app', 'read', 'topic', 'benchread');
SELECT count(*) FROM generate_series(0, 7) p,
    LATERAL estream.produce_batch('benchread',
        ARRAY(SELECT ('{{"id": ' || g || ', "type": "order.created"}}')::jsonb FROM generate_series(1, 20000) g),
        partition => p);
"""


def workloads(clients, batches=(100,), only=None):
    """(name, clients, events per transaction, reference name or None, pgbench script,
    role or None for the superuser)"""
    w = []
    w.append(("insert 1/tx", clients, 1, None,
              "\\set id random(1, 1000000000)\n"
              f"INSERT INTO ref_log (partition, key, value) VALUES (:id % 8, 'k' || :id, {VALUE_SQL});\n"))
    w.append(("produce 1/tx keyed", clients, 1, "insert 1/tx",
              "\\set id random(1, 1000000000)\n"
              f"SELECT estream.produce('bench', {VALUE_SQL}, 'k' || :id);\n"))
    w.append(("produce 1/tx unkeyed", clients, 1, "insert 1/tx",
              "\\set id random(1, 1000000000)\n"
              f"SELECT estream.produce('bench', {VALUE_SQL});\n"))
    w.append(("pgq insert_event 1/tx", clients, 1, "insert 1/tx",
              "\\set id random(1, 1000000000)\n"
              f"SELECT pgq.insert_event('benchq', 'order.created', ({VALUE_SQL})::text);\n"))
    for lp in (1, 8):
        w.append((f"locked counter 1/tx {lp}p", clients, 1, "insert 1/tx",
                  "\\set id random(1, 1000000000)\n"
                  "BEGIN;\n"
                  f"UPDATE lc_counter SET next = next + 1 WHERE partition = :id % {lp} RETURNING next - 1 AS off \\gset\n"
                  f"INSERT INTO lc_log (partition, \"offset\", key, value) VALUES (:id % {lp}, :off, 'k' || :id, {VALUE_SQL});\n"
                  "END;\n"))
    for n in batches:
        w.append((f"insert {n}/tx", clients, n, None,
                  "\\set id random(1, 1000000000)\n"
                  f"INSERT INTO ref_log (partition, key, value) SELECT (:id + g) % 8, 'k' || (:id + g), "
                  f"{VALUE_ROW_SQL} FROM generate_series(1, {n}) g;\n"))
        w.append((f"produce_batch {n}/tx keyed", clients, n, f"insert {n}/tx",
                  "\\set id random(1, 1000000000)\n"
                  f"SELECT count(*) FROM estream.produce_batch('bench', "
                  f"ARRAY(SELECT {VALUE_ROW_SQL} FROM generate_series(1, {n}) g), "
                  f"ARRAY(SELECT 'k' || (:id + g) FROM generate_series(1, {n}) g));\n"))
        w.append((f"produce_batch {n}/tx unkeyed", clients, n, f"insert {n}/tx",
                  "\\set id random(1, 1000000000)\n"
                  f"SELECT count(*) FROM estream.produce_batch('bench', "
                  f"ARRAY(SELECT {VALUE_ROW_SQL} FROM generate_series(1, {n}) g));\n"))
        w.append((f"pgq insert_event {n}/tx", clients, n, f"insert {n}/tx",
                  "\\set id random(1, 1000000000)\n"
                  f"SELECT count(pgq.insert_event('benchq', 'order.created', ({VALUE_ROW_SQL})::text)) "
                  f"FROM generate_series(1, {n}) g;\n"))
    # the same calls by the superuser and by an ordinary role that holds
    # only estream rights (checked, then the work done as the extension's
    # owner)
    for who in ("superuser", "app role"):
        ref = None if who == "superuser" else "produce 1/tx keyed, superuser"
        w.append((f"produce 1/tx keyed, {who}", clients, 1, ref,
                  "\\set id random(1, 1000000000)\n"
                  f"SELECT estream.produce('bench', {VALUE_SQL}, 'k' || :id);\n",
                  "bench_app" if who == "app role" else None))
    for who in ("superuser", "app role"):
        ref = None if who == "superuser" else "fetch 100/tx, superuser"
        w.append((f"fetch 100/tx, {who}", clients, 100, ref,
                  "\\set p random(0, 7)\n"
                  "\\set o random(0, 19900)\n"
                  "SELECT count(*) FROM estream.fetch('benchread', :p, :o, 100);\n",
                  "bench_app" if who == "app role" else None))
    w = [x if len(x) == 6 else x + (None,) for x in w]
    if only is not None:
        w = [x for x in w if x[0] in only or (x[3] is None and not x[0].endswith(", superuser"))]
    return w


def plan(quick):
    """(synchronous_commit on?, topic partitions, workloads) in the order they run.
    A workload and its reference always run in the same step, interleaved."""
    if quick:
        return [(True, 8, workloads(8))]
    estream_only = {"produce 1/tx keyed", "produce 1/tx unkeyed", "produce_batch 100/tx keyed",
                    "produce_batch 100/tx unkeyed"}
    return [
        (True, 8, [w for w in workloads(1, (100,)) if not w[0].startswith("locked")]
         + workloads(8, (100, 1000))),
        # the partition count matters only to estream
        (True, 1, workloads(8, (100,), only=estream_only)),
        (False, 8, workloads(8, (100,), only=estream_only | {"pgq insert_event 1/tx", "pgq insert_event 100/tx"})),
    ]


def cdc_plan(args):
    """(clients, seconds per side, runs, loads) of the CDC workload; a load
    is "full", "backlog" or a number of transactions per second."""
    loads = ["full", CDC_STEADY_RATE, "backlog"]
    if args.smoke:
        clients, seconds, runs, loads = 4, 5, 1, ["full"]
    elif args.mode == "quick":
        clients, seconds, runs = 8, 10, 1
    else:
        clients, seconds, runs = 8, 30, max(3, args.runs)
    if args.cdc_loads:
        loads = [int(x) if x.isdigit() else x for x in args.cdc_loads.split(",")]
        if any(x not in ("full", "backlog") and not isinstance(x, int) for x in loads):
            raise SystemExit(f"--cdc-loads: full, backlog or transactions/s, not {args.cdc_loads}")
    return clients, args.cdc_seconds or seconds, runs, loads


def run(args):
    """Returns (rows, metadata of the CDC part or None, failed correctness checks)."""
    quick = args.mode == "quick"
    seconds = args.seconds or (2 if quick else 5)
    runs = max(3, args.runs)
    results = []
    cdc_meta, problems = None, []
    only_sync = args.only_client or args.only_cdc
    workdir = tempfile.mkdtemp(prefix="estream-bench-")
    steps = plan(quick)
    syncs = set() if args.only_scale else ({st[0] for st in steps} if not only_sync else {True})
    for sync in sorted(syncs, reverse=True):
        inst = Instance(os.path.join(workdir, "sync" if sync else "async"), sync, args.set)
        os.makedirs(inst.root)
        inst.start()
        try:
            for st_sync, partitions, wls in steps:
                if st_sync != sync or only_sync:
                    continue
                inst.psql(SETUP_SQL.format(partitions=partitions))
                groups = {}
                for wl in wls:
                    groups.setdefault((wl[1], wl[3] or wl[0]), []).append(wl)
                for (_clients, _ref), members in groups.items():
                    samples = {m[0]: [] for m in members}
                    for _ in range(runs):
                        for name, clients, per_tx, _r, script, user in members:
                            # one client waits for every fsync: its rate jitters, so run longer
                            secs = seconds * 2 if clients == 1 else seconds
                            tps = inst.pgbench(script, clients, secs, workdir, user=user)
                            samples[name].append(tps * per_tx)
                    ref_median = None
                    for name, clients, per_tx, ref, _s, _u in members:
                        s = samples[name]
                        med = statistics.median(s)
                        if ref is None:
                            ref_median = med
                        row = dict(workload=name, clients=clients, partitions=partitions,
                                   synchronous_commit="on" if sync else "off",
                                   events_per_s_median=round(med, 1), min=round(min(s), 1),
                                   max=round(max(s), 1), runs=len(s),
                                   reference=ref or "", ratio=round(med / ref_median, 3) if ref else None)
                        results.append(row)
                        print_row(row)
                inst.psql("CHECKPOINT")
            if sync and not args.skip_cdc and not args.only_client:
                cdc_clients, cdc_seconds, cdc_runs, cdc_loads = cdc_plan(args)
                settings, problems = cdc_workload(inst, cdc_clients, cdc_seconds, cdc_runs, cdc_loads, workdir,
                                                  lambda row: (results.append(row), print_row(row)))
                cdc_meta = dict(settings, clients=cdc_clients, seconds_per_run=cdc_seconds, runs=cdc_runs,
                                loads=cdc_loads)
                inst.psql("CHECKPOINT")
            if sync and not args.skip_client and not args.only_cdc:
                if args.only_client:
                    inst.psql(SETUP_SQL.format(partitions=8))
                client_workloads(inst, quick, runs, seconds, workdir,
                                 lambda row: (results.append(row), print_row(row)))
        finally:
            inst.stop()
    if args.scale or args.only_scale or (args.mode == "full" and not (args.only_client or args.only_cdc
                                                                         or args.smoke)):
        scale_workload(workdir, args, lambda row: (results.append(row), print_row(row)))
    shutil.rmtree(workdir, ignore_errors=True)
    print_targets(results)
    return results, cdc_meta, problems


def print_targets(results):
    """The targets the issues set, computed from this run's rows."""
    def find(workload, clients=8, partitions=8, sync="on"):
        for r in results:
            if (r["workload"] == workload and r["clients"] == clients and r["partitions"] == partitions
                    and r["synchronous_commit"] == sync):
                return r
        return None

    checks = []
    p1, i1, q1 = find("produce 1/tx keyed"), find("insert 1/tx"), find("pgq insert_event 1/tx")
    pb, ib = find("produce_batch 100/tx keyed"), find("insert 100/tx")
    lat = find("latency: estream long-poll", clients=1, partitions=1)
    if p1 and i1:
        checks.append(("single-event produce vs plain INSERT (8 clients)", p1["events_per_s_median"] / i1["events_per_s_median"], ">= 0.90"))
    if p1 and q1:
        checks.append(("single-event produce vs PgQ insert_event (8 clients)", p1["events_per_s_median"] / q1["events_per_s_median"], ">= 1.10"))
    if pb and ib:
        checks.append(("batched produce vs plain batched INSERT (100/tx, 8 clients)", pb["events_per_s_median"] / ib["events_per_s_median"], ">= 0.80"))
    if lat:
        checks.append(("end-to-end latency p50, ms", lat["latency_ms"]["p50"], "< 2"))
    for what in ("produce 1/tx keyed", "fetch 100/tx"):
        su, app = find(f"{what}, superuser"), find(f"{what}, app role")
        if su and app:
            checks.append((f"{what}: ordinary role vs superuser (8 clients)",
                           app["events_per_s_median"] / su["events_per_s_median"], ">= 0.95"))
    pgq = next((r for r in results if r["workload"].startswith("read backlog: pgq")), None)
    for r in results:
        if pgq and r["workload"].startswith("consume+commit"):
            print(f"  {r['workload'][:62]:62} {r['events_per_s_median'] / pgq['events_per_s_median']:8.2f}x PgQ's batch reading")
    if checks:
        print("\ntargets:")
        for name, value, target in checks:
            op, bound = target.split()
            ok = value >= float(bound) if op == ">=" else value < float(bound)
            print(f"  {name:62} {value:8.2f}  target {target:8} {'met' if ok else 'NOT met'}")


# ---------------------------------------------------------------------------
# Client-side workloads (psycopg2): backlog reading, end-to-end latency, WAL
# bytes per event, produce rate against a large topic.

def connect(inst, autocommit=True):
    import psycopg2
    c = psycopg2.connect(host=inst.root, port=inst.port, user="postgres", dbname="postgres")
    c.autocommit = autocommit
    return c


def fill_backlog(inst, n):
    """The same n records into an estream topic, an indexed table and a PgQ queue."""
    inst.psql("""
        SELECT estream.drop_topic('backlog', if_exists => true);
        SELECT estream.create_topic('backlog', 1);
        SELECT estream.drop_topic('backlog4', if_exists => true);
        SELECT estream.create_topic('backlog4', 4);
        DROP TABLE IF EXISTS ref_backlog;
        CREATE TABLE ref_backlog (partition int NOT NULL, "offset" bigint NOT NULL, key text, value jsonb,
                                  ts timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (partition, "offset"));
        SELECT pgq.drop_queue('backlogq', true) FROM pgq.queue WHERE queue_name = 'backlogq';
        SELECT pgq.create_queue('backlogq');
        SELECT pgq.register_consumer('backlogq', 'c' || g) FROM generate_series(1, 5) g;
    """)
    c = connect(inst, autocommit=False)
    cur = c.cursor()
    chunk = 10000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        val = VALUE_ROW_SQL.replace(":id", str(start))
        cur.execute(f"SELECT count(*) FROM estream.produce_batch('backlog', ARRAY(SELECT {val} FROM generate_series(1, {m}) g))")
        cur.execute(f"INSERT INTO ref_backlog SELECT 0, {start} + g - 1, NULL, {val} FROM generate_series(1, {m}) g")
        cur.execute(f"SELECT count(pgq.insert_event('backlogq', 'order.created', ({val})::text)) FROM generate_series(1, {m}) g")
        cur.execute(f"SELECT count(*) FROM estream.produce_batch('backlog4', ARRAY(SELECT {val} FROM generate_series(1, {m}) g), "
                    f"ARRAY(SELECT 'k' || ({start} + g) FROM generate_series(1, {m}) g))")
        c.commit()
        cur.execute("SELECT pgq.ticker('backlogq')")
        c.commit()
    c.close()
    inst.psql("VACUUM ANALYZE")


# All three readers fetch the value as text: psycopg2 would otherwise parse
# every jsonb value into a Python object, which PgQ's text ev_data escapes.

def read_backlog_estream(inst, n):
    c = connect(inst)
    cur = c.cursor()
    pos, got = 0, 0
    t0 = time.perf_counter()
    while got < n:
        cur.execute("SELECT \"offset\", value::text FROM estream.fetch('backlog', 0, %s, 10000)", (pos,))
        rows = cur.fetchall()
        got += len(rows)
        pos = rows[-1][0] + 1
    dt = time.perf_counter() - t0
    c.close()
    return got / dt


def poll_backlog(inst, n, workers, group):
    """Consume the 4-partition backlog with poll(): each worker reads up to
    1000 records and commits their offsets in one transaction.  The workers
    are processes (forked), as a consumer's workers would be: threads of one
    Python process measured the client's interpreter lock, not estream (4
    threads went slower than 1)."""
    import multiprocessing
    ctx = multiprocessing.get_context("fork")
    total = ctx.Value("q", 0)
    failed = ctx.Value("i", 0)
    # the clock starts once every worker is connected (a short backlog is
    # read in a fraction of a second: four connections would weigh)
    ready = ctx.Barrier(workers + 1)
    # and stops when the last record is committed, not when the last
    # worker's long-poll times out
    finished = ctx.Value("d", 0.0)

    def worker():
        try:
            c = connect(inst, autocommit=False)
            cur = c.cursor()
            # a new session plans and compiles poll() on its first call:
            # once, before the clock starts (a group of its own, at the end)
            cur.execute("SELECT count(*) FROM estream.poll('warm-up-' || pg_backend_pid(), 'backlog4', 1, 0, 'latest')")
            c.commit()
            ready.wait()
            idle = 0
            while True:
                with total.get_lock():
                    if total.value >= n:
                        break
                # a long-poll, as consumers do: a worker whose partitions
                # are drained waits instead of spinning on the CPUs
                cur.execute("SELECT count(*) FROM estream.poll(%s, 'backlog4', 1000, 100, 'earliest')",
                            (group,))
                got = cur.fetchone()[0]
                c.commit()
                with total.get_lock():
                    total.value += got
                    if got and total.value >= n:
                        finished.value = time.perf_counter()
                idle = idle + 1 if got == 0 else 0
                if idle > 1000:
                    raise RuntimeError("poll returned nothing 1000 times in a row")
            c.close()
        except Exception as e:  # noqa: BLE001
            print(f"poll worker failed: {e}", file=sys.stderr)
            with failed.get_lock():
                failed.value += 1

    procs = [ctx.Process(target=worker) for _ in range(workers)]
    for p in procs:
        p.start()
    ready.wait(timeout=60)
    t0 = time.perf_counter()
    for p in procs:
        p.join()
    dt = finished.value - t0
    if failed.value or any(p.exitcode != 0 for p in procs):
        raise RuntimeError("poll workers failed (see above)")
    if total.value != n:
        raise RuntimeError(f"poll workers consumed {total.value} records, expected {n}")
    return total.value / dt


def read_backlog_select(inst, n):
    c = connect(inst)
    cur = c.cursor()
    pos, got = 0, 0
    t0 = time.perf_counter()
    while got < n:
        cur.execute('SELECT "offset", value::text FROM ref_backlog WHERE partition = 0 AND "offset" >= %s '
                    'ORDER BY "offset" LIMIT 10000', (pos,))
        rows = cur.fetchall()
        got += len(rows)
        pos = rows[-1][0] + 1
    dt = time.perf_counter() - t0
    c.close()
    return got / dt


def read_backlog_pgq(inst, n, consumer):
    c = connect(inst, autocommit=False)
    cur = c.cursor()
    got = 0
    t0 = time.perf_counter()
    while got < n:
        cur.execute("SELECT pgq.next_batch('backlogq', %s)", (consumer,))
        batch = cur.fetchone()[0]
        if batch is None:
            c.commit()
            break
        cur.execute("SELECT ev_id, ev_data FROM pgq.get_batch_events(%s)", (batch,))
        got += len(cur.fetchall())
        cur.execute("SELECT pgq.finish_batch(%s)", (batch,))
        c.commit()
    dt = time.perf_counter() - t0
    c.close()
    return got / dt


def percentile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    k = min(len(sorted_vals) - 1, max(0, int(round(q * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def latency_run(inst, kind, n, rate, ticker_period=1.0, tuned=False):
    """Producer at a steady rate; a consumer receives each record.  Latency is
    from the moment the producer sends COMMIT to the consumer's receipt."""
    import threading
    sent = [None] * n
    lat = []
    done = threading.Event()
    errors = []

    def producer():
        try:
            c = connect(inst, autocommit=False)
            cur = c.cursor()
            t0 = time.perf_counter()
            for i in range(n):
                delay = t0 + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                if kind == "estream":
                    cur.execute("SELECT estream.produce('lat', %s::jsonb)", (json.dumps({"i": i}),))
                else:
                    cur.execute("SELECT pgq.insert_event('latq', 'e', %s)", (str(i),))
                sent[i] = time.perf_counter()
                c.commit()
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def ticker():
        c = connect(inst)
        cur = c.cursor()
        while not done.is_set():
            cur.execute("SELECT pgq.ticker()")
            time.sleep(ticker_period)
        c.close()

    def consumer():
        try:
            c = connect(inst, autocommit=kind == "estream")
            cur = c.cursor()
            pos, got = 0, 0
            deadline = time.perf_counter() + n / rate + 30
            while got < n and time.perf_counter() < deadline:
                if kind == "estream":
                    cur.execute("SELECT \"offset\", (value->>'i')::int FROM estream.fetch('lat', 0, %s, 1000, 1000)",
                                (pos,))
                    rows = cur.fetchall()
                    now = time.perf_counter()
                    for off, i in rows:
                        lat.append(now - sent[i])
                        pos = off + 1
                    got += len(rows)
                else:
                    cur.execute("SELECT pgq.next_batch('latq', 'c')")
                    batch = cur.fetchone()[0]
                    if batch is None:
                        c.commit()
                        time.sleep(0.005)
                        continue
                    cur.execute("SELECT ev_data::int FROM pgq.get_batch_events(%s)", (batch,))
                    rows = cur.fetchall()
                    now = time.perf_counter()
                    for (i,) in rows:
                        lat.append(now - sent[i])
                    got += len(rows)
                    cur.execute("SELECT pgq.finish_batch(%s)", (batch,))
                    c.commit()
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    if kind == "estream":
        inst.psql("SELECT estream.drop_topic('lat', if_exists => true); SELECT estream.create_topic('lat', 1);")
    else:
        inst.psql("SELECT pgq.drop_queue('latq', true) FROM pgq.queue WHERE queue_name = 'latq';"
                  "SELECT pgq.create_queue('latq'); SELECT pgq.register_consumer('latq', 'c');")
        if tuned:
            # tick as soon as there is one event, at most every ticker period
            inst.psql("SELECT pgq.set_queue_config('latq', 'ticker_max_count', '1');"
                      "SELECT pgq.set_queue_config('latq', 'ticker_max_lag', '0');")
    threads = [threading.Thread(target=consumer), threading.Thread(target=producer)]
    if kind == "pgq":
        threads.append(threading.Thread(target=ticker))
    for t in threads:
        t.start()
    threads[0].join()
    threads[1].join()
    done.set()
    for t in threads[2:]:
        t.join()
    if errors:
        raise RuntimeError(f"latency run failed: {errors[0]}")
    lat.sort()
    return dict(n=len(lat), p50=percentile(lat, 0.5) * 1000, p99=percentile(lat, 0.99) * 1000,
                max=(lat[-1] * 1000 if lat else float("nan")))


def wal_per_event(inst, script, events_per_tx, transactions, workdir):
    inst.psql("CHECKPOINT")
    before = inst.psql("SELECT pg_current_wal_insert_lsn()")
    path = os.path.join(workdir, "wal.sql")
    with open(path, "w") as f:
        f.write(script)
    subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", "1", "-t", str(transactions), "-f", path],
                   env=inst.env(), check=True, capture_output=True)
    nbytes = int(inst.psql(f"SELECT pg_current_wal_insert_lsn() - '{before}'::pg_lsn"))
    return nbytes / (transactions * events_per_tx)


def fill_topic(inst, topic, n, partitions):
    inst.psql(f"SELECT estream.drop_topic('{topic}', if_exists => true); "
              f"SELECT estream.create_topic('{topic}', {partitions});")
    c = connect(inst, autocommit=True)
    cur = c.cursor()
    chunk = 20000
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        val = VALUE_ROW_SQL.replace(":id", str(start))
        cur.execute(f"SELECT count(*) FROM estream.produce_batch('{topic}', ARRAY(SELECT {val} FROM generate_series(1, {m}) g), "
                    f"ARRAY(SELECT 'k' || ({start} + g) FROM generate_series(1, {m}) g))")
    c.close()
    inst.psql("VACUUM ANALYZE")


# rows client_workloads() emits: 3 backlog readers, 2 poll consumers, 3
# latency runs, 5 WAL measurements, 2 produce rates (empty and large topic)
CLIENT_ROWS = 15

# rows cdc_workload() emits per load: wal2json and estream
CDC_ROWS = 2


def client_workloads(inst, quick, runs, seconds, workdir, emit):
    n_backlog = 100000 if quick else 1000000
    fill_backlog(inst, n_backlog)
    samples = {"select": [], "estream": [], "pgq": []}
    for r in range(runs):
        samples["select"].append(read_backlog_select(inst, n_backlog))
        samples["estream"].append(read_backlog_estream(inst, n_backlog))
        samples["pgq"].append(read_backlog_pgq(inst, n_backlog, f"c{r + 1}"))
    samples["poll1"] = []
    samples["poll4"] = []
    for r in range(runs):
        samples["poll1"].append(poll_backlog(inst, n_backlog, 1, f"bench1_{r}"))
        samples["poll4"].append(poll_backlog(inst, n_backlog, 4, f"bench4_{r}"))
    ref = statistics.median(samples["select"])
    for name, key in (("read backlog: indexed SELECT", "select"), ("read backlog: estream.fetch", "estream"),
                      ("read backlog: pgq batches", "pgq"),
                      ("consume+commit: poll, 1 worker", "poll1"),
                      ("consume+commit: poll, 4 workers", "poll4")):
        s = samples[key]
        med = statistics.median(s)
        emit(dict(workload=f"{name} ({n_backlog})", clients=4 if key == "poll4" else 1,
                  partitions=4 if key.startswith("poll") else 1, synchronous_commit="on",
                  events_per_s_median=round(med, 1), min=round(min(s), 1), max=round(max(s), 1), runs=len(s),
                  reference="" if key == "select" else "read backlog: indexed SELECT",
                  ratio=None if key == "select" else round(med / ref, 3)))

    n_lat = 2000 if quick else 10000
    rate = 500 if quick else 1000
    for kind, period, tuned in (("estream", None, False), ("pgq", 1.0, False), ("pgq", 0.05, True)):
        res = latency_run(inst, kind, n_lat, rate, period or 1.0, tuned)
        if kind == "estream":
            name = "latency: estream long-poll"
        elif tuned:
            name = f"latency: pgq, tick every {period:g} s, max_count 1"
        else:
            name = f"latency: pgq, pgqd defaults (tick {period:g} s)"
        emit(dict(workload=name, clients=1, partitions=1, synchronous_commit="on",
                  events_per_s_median=rate, min=None, max=None, runs=1, reference="", ratio=None,
                  latency_ms=dict(p50=round(res["p50"], 3), p99=round(res["p99"], 3), max=round(res["max"], 3),
                                  events=res["n"])))

    tx = 2000 if quick else 10000
    wal = {}
    scripts = {w[0]: (w[2], w[4]) for w in workloads(1, (100,))}
    for name in ("insert 1/tx", "produce 1/tx keyed", "pgq insert_event 1/tx",
                 "insert 100/tx", "produce_batch 100/tx keyed"):
        per_tx, script = scripts[name]
        wal[name] = wal_per_event(inst, script, per_tx, max(20, tx // per_tx), workdir)
    for name, b in wal.items():
        ref = "insert 1/tx" if "1/tx" in name else "insert 100/tx"
        emit(dict(workload=f"WAL bytes/event: {name}", clients=1, partitions=8, synchronous_commit="on",
                  events_per_s_median=None, min=None, max=None, runs=1, reference="" if name == ref else f"WAL bytes/event: {ref}",
                  ratio=None if name == ref else round(b / wal[ref], 3), wal_bytes_per_event=round(b, 1)))

    n_big = 500000 if quick else 10000000
    fill_topic(inst, "big", n_big, 8)
    inst.psql("SELECT estream.drop_topic('empty', if_exists => true); SELECT estream.create_topic('empty', 8);")
    samples = {"empty": [], "big": []}
    for _ in range(runs):
        for topic in ("empty", "big"):
            script = ("\\set id random(1, 1000000000)\n"
                      f"SELECT estream.produce('{topic}', {VALUE_SQL}, 'k' || :id);\n")
            samples[topic].append(inst.pgbench(script, 8, seconds, workdir))
    ref = statistics.median(samples["empty"])
    for topic, label in (("empty", "produce 1/tx keyed, empty topic"),
                         ("big", f"produce 1/tx keyed, topic of {n_big} records")):
        s = samples[topic]
        med = statistics.median(s)
        emit(dict(workload=label, clients=8, partitions=8, synchronous_commit="on",
                  events_per_s_median=round(med, 1), min=round(min(s), 1), max=round(max(s), 1), runs=len(s),
                  reference="" if topic == "empty" else "produce 1/tx keyed, empty topic",
                  ratio=None if topic == "empty" else round(med / ref, 3)))


# ---------------------------------------------------------------------------
# CDC: changes of a source table under steady load, captured into a topic by
# the estream worker, against decoding the same WAL with wal2json through
# pg_logical_slot_get_changes().  Both sides run on the same instance, table
# and pgbench load, interleaved; only one of them decodes at a time.

CDC_PREFILL = 100000
CDC_TOPIC = "cdc_bench"
CDC_W2J_SLOT = "cdc_w2j"


def cdc_names(load):
    """Row names (wal2json, estream) of a CDC load: "full" (as fast as the
    clients go), "backlog", or a rate in transactions/s."""
    label = {"full": "full load", "backlog": "backlog"}.get(load, f"{load} tx/s")
    return f"cdc {label}: wal2json get_changes", f"cdc {label}: estream capture"


CDC_SETUP_SQL = f"""
CREATE EXTENSION IF NOT EXISTS estream;
SELECT estream.uncapture(relid::regclass) FROM estream.capture WHERE relid = to_regclass('public.cdc_src');
SELECT estream.drop_topic('{CDC_TOPIC}', if_exists => true);
DROP TABLE IF EXISTS cdc_src;
CREATE TABLE cdc_src (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, account int NOT NULL,
                      amount numeric(12,2) NOT NULL, status text NOT NULL, note text,
                      updated_at timestamptz NOT NULL DEFAULT now());
INSERT INTO cdc_src (id, account, amount, status, note)
SELECT g, g % 1000, (g % 100000) / 100.0, 'new', 'order ' || g || ' of account ' || g % 1000
FROM generate_series(1, {CDC_PREFILL}) g;
SELECT setval(pg_get_serial_sequence('cdc_src', 'id'), {CDC_PREFILL});
"""

# Two row changes per transaction: a new row, and an update of a random row
# of the pre-filled ones (they all exist: nothing deletes, so every UPDATE
# changes exactly one row and a run commits exactly 2 x transactions changes).
CDC_SCRIPT = f"""\\set acc random(1, 1000)
\\set row random(1, {CDC_PREFILL})
BEGIN;
INSERT INTO cdc_src (account, amount, status, note) VALUES (:acc, random() * 1000, 'new', 'order of account ' || :acc);
UPDATE cdc_src SET amount = amount + 1, status = 'paid', updated_at = now() WHERE id = :row;
END;
"""

# wal2json: one line per change (no B/C lines), each with its transaction's
# commit time and the change's LSN; only the source table.  The lines begin
# {"action":"I","timestamp":"...","lsn":"0/...", so split_part() takes the
# three fields: parsing every line as JSON would take longer than decoding.
CDC_W2J_SQL = ("SELECT split_part(data, '\"', 4), "
               "extract(epoch FROM split_part(data, '\"', 8)::timestamptz)::float8 * 1000, "
               "split_part(data, '\"', 12) "
               f"FROM pg_logical_slot_get_changes('{CDC_W2J_SLOT}', NULL, %s, 'format-version', '2', "
               "'include-timestamp', '1', 'include-lsn', '1', 'include-transaction', '0', "
               "'add-tables', 'public.cdc_src')")
CDC_W2J_CHANGES = 10000     # upto_nchanges of one call
CDC_W2J_IDLE = 0.1          # seconds between calls that returned nothing

# The second load: 1,000 transactions (2,000 changes) per second, which both
# sides keep up with here, so that the lag is not that of a CPU-bound machine.
CDC_STEADY_RATE = 1000


def wait_for(inst, sql, what, timeout=60):
    """Poll until sql returns 't'."""
    deadline = time.time() + timeout
    while inst.psql(sql) != "t":
        if time.time() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


def set_worker(inst, on):
    """Turn the estream worker on or off, and wait until it is so."""
    if on:
        inst.psql("ALTER SYSTEM RESET estream.enable_worker")
    else:
        inst.psql("ALTER SYSTEM SET estream.enable_worker = off")
    inst.psql("SELECT pg_reload_conf()")
    if not on:
        wait_for(inst, "SELECT bool_and(state = 'disabled') FROM estream.workers "
                       "WHERE database = current_database()", "the worker to stop")


def cdc_run(inst, kind, clients, seconds, load, workdir):
    """One side of the CDC comparison: set up the capture (or the wal2json
    slot), run the pgbench load ("full": as fast as the clients go; a number:
    at most that many transactions/s) while a reader takes every change as
    soon as it is readable, then wait until every committed change has been
    read.  "backlog": the full load with capture held back (the worker off;
    nobody reading the wal2json slot), then the time it takes to catch up.

    Lag of a change: the reader's wall clock when the change was returned
    minus its source transaction's commit time (source.ts_ms for estream, the
    timestamp wal2json writes), both from this machine's clock."""
    import threading
    backlog = load == "backlog"
    rate = load if isinstance(load, int) else 0
    if kind == "estream":
        inst.psql(f"SELECT estream.uncapture('cdc_src', if_exists => true); "
                  f"SELECT estream.drop_topic('{CDC_TOPIC}', if_exists => true);")
        inst.psql(f"SELECT estream.capture('cdc_src', '{CDC_TOPIC}', '{{\"snapshot\": false}}')")
        # streaming at once (no copy), but changes are decoded only once the
        # worker has created the database's slot
        wait_for(inst, f"SELECT bool_and(slot_name IS NOT NULL AND state = 'streaming') "
                       f"FROM estream.captures WHERE topic = '{CDC_TOPIC}'", "the capture's slot")
        if backlog:
            set_worker(inst, False)
    else:
        inst.psql(f"SELECT pg_create_logical_replication_slot('{CDC_W2J_SLOT}', 'wal2json')")
    first_new = int(inst.psql("SELECT max(id) FROM cdc_src"))
    # a backlog is read in one call: with a limit, every call would decode
    # again from the slot's restart point the WAL the calls before consumed
    w2j_limit = None if backlog else CDC_W2J_CHANGES

    st = dict(lags=[], ops={}, lsns=set(), got=0, last=None, target=None, error=None, reads=0)
    load_done = threading.Event()

    def reader():
        try:
            c = connect(inst)
            cur = c.cursor()
            # every call of pg_logical_slot_get_changes() logs two lines
            cur.execute("SET log_min_messages = warning")
            pos = 0
            drain_deadline = None
            while True:
                if kind == "estream":
                    # long poll: returns as soon as the worker's batch commits
                    cur.execute("SELECT \"offset\", value->>'op', (value->'source'->>'ts_ms')::float8, "
                                "value->'source'->>'lsn' FROM estream.fetch(%s, 0, %s, 10000, 200)",
                                (CDC_TOPIC, pos))
                else:
                    cur.execute(CDC_W2J_SQL, (w2j_limit,))
                rows = cur.fetchall()
                now = time.time() * 1000
                for r in rows:
                    if kind == "estream":
                        pos = r[0] + 1
                    op, commit_ms, lsn = r[-3], r[-2], r[-1]
                    st["lags"].append(now - commit_ms)
                    st["ops"][op] = st["ops"].get(op, 0) + 1
                    st["lsns"].add(lsn)
                if rows:
                    st["got"] += len(rows)
                    st["reads"] += 1
                    st["last"] = now / 1000
                if load_done.is_set():
                    if st["got"] >= st["target"]:
                        break
                    if drain_deadline is None:
                        drain_deadline = time.time() + max(60, 4 * seconds)
                    elif time.time() > drain_deadline:
                        break
                if not rows and kind != "estream":
                    time.sleep(CDC_W2J_IDLE)
            if kind != "estream":
                # nothing more: the next call must return no change
                cur.execute(CDC_W2J_SQL, (w2j_limit,))
                st["got"] += len(cur.fetchall())
            c.close()
        except Exception as e:  # noqa: BLE001 - reported below
            st["error"] = e

    t = threading.Thread(target=reader)
    if not backlog:
        t.start()
    t0 = time.time()
    try:
        tps, tx = inst.pgbench_tx(CDC_SCRIPT, clients, seconds, workdir, rate)
        inserted = int(inst.psql(f"SELECT count(*) FROM cdc_src WHERE id > {first_new}"))
        st["target"] = 2 * inserted
    finally:
        if st["target"] is None:
            st["target"] = 0    # the load failed: stop reading
        load_done.set()
        if backlog:
            # catching up starts now
            t0 = time.time()
            t.start()
            if kind == "estream":
                set_worker(inst, True)
        t.join()
    if kind == "estream":
        # end the capture; once the worker has dropped the slot nothing more
        # can be written: the topic must hold exactly what the reader got
        inst.psql("SELECT estream.uncapture('cdc_src')")
        wait_for(inst, "SELECT count(*) = 0 FROM pg_replication_slots WHERE slot_name LIKE 'estream\\_%'",
                 "the worker to drop its slot")
        in_topic = int(inst.psql(f"SELECT sum(next_offset) FROM estream.watermarks('{CDC_TOPIC}')"))
    else:
        inst.psql(f"SELECT pg_drop_replication_slot('{CDC_W2J_SLOT}')")
        in_topic = st["got"]
    if st["error"]:
        raise RuntimeError(f"CDC reader ({kind}) failed: {st['error']}")
    committed = 2 * tx
    lags = sorted(st["lags"])
    problems = []
    if inserted != tx:
        problems.append(f"pgbench counted {tx} transactions, the table got {inserted} new rows")
    if st["got"] != committed or in_topic != committed:
        problems.append(f"{committed} changes committed, {st['got']} read, {in_topic} in all")
    if st["ops"] != {("c" if kind == "estream" else "I"): tx, ("u" if kind == "estream" else "U"): tx}:
        problems.append(f"changes by kind {st['ops']}, expected {tx} of each")
    if len(st["lsns"]) != len(lags):
        problems.append(f"{len(lags) - len(st['lsns'])} changes read twice (same LSN)")
    return dict(source_rate=2 * tps, committed=committed, read=st["got"],
                rate=st["got"] / (st["last"] - t0) if st["last"] else 0.0,
                p50=percentile(lags, 0.5), p99=percentile(lags, 0.99), max=lags[-1] if lags else float("nan"),
                drain=(st["last"] - t0 - (0 if backlog else seconds)) if st["last"] else float("nan"),
                reads=st["reads"], problems=problems)


def cdc_settings(inst):
    """The settings CDC figures depend on, for the results' metadata."""
    def show(name):
        try:
            return inst.psql(f"SHOW {name}")
        except subprocess.CalledProcessError:
            return None     # not a setting of this build
    w2j = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "postgresql-15-wal2json"],
                         capture_output=True, text=True)
    return {"estream.worker_naptime": show("estream.worker_naptime"),
            "estream.capture_naptime": show("estream.capture_naptime"),
            "output_plugin_libraries": show("output_plugin_libraries"),
            "wal2json": w2j.stdout.strip() or None}


def cdc_workload(inst, clients, seconds, runs, loads, workdir, emit):
    """For each load (see cdc_run()), interleaved runs (wal2json, estream,
    wal2json, ...) of both sides; emits their two rows.  Returns (settings,
    problems)."""
    if not os.path.exists(os.path.join(
            subprocess.run([f"{PGBIN}/pg_config", "--pkglibdir"], capture_output=True,
                           text=True).stdout.strip(), "wal2json.so")):
        raise RuntimeError("wal2json is not installed (Debian: postgresql-15-wal2json)")
    inst.psql(CDC_SETUP_SQL)
    inst.psql("VACUUM ANALYZE cdc_src")
    inst.psql("CHECKPOINT")
    problems = []
    for load in loads:
        problems += cdc_load(inst, clients, seconds, runs, load, workdir, emit)
    return cdc_settings(inst), problems


def cdc_load(inst, clients, seconds, runs, load, workdir, emit):
    """The runs of one load and its two rows; returns the failed checks."""
    samples = {"wal2json": [], "estream": []}
    for _ in range(runs):
        for kind in ("wal2json", "estream"):
            samples[kind].append(cdc_run(inst, kind, clients, seconds, load, workdir))
    problems = []
    ref = None
    w2j_name, estream_name = cdc_names(load)
    for kind, name in (("wal2json", w2j_name), ("estream", estream_name)):
        s = samples[kind]
        measured = [x["rate"] for x in s]
        med = statistics.median(measured)
        if kind == "wal2json":
            ref = med
        row = dict(workload=name, clients=clients, partitions=1, synchronous_commit="on",
                   events_per_s_median=round(med, 1), min=round(min(measured), 1), max=round(max(measured), 1),
                   runs=len(s), reference="" if kind == "wal2json" else w2j_name,
                   ratio=None if kind == "wal2json" else round(med / ref, 3),
                   # for a backlog: how old the changes were when read
                   lag_ms=dict(p50=round(statistics.median(x["p50"] for x in s), 1),
                               p99=round(statistics.median(x["p99"] for x in s), 1),
                               max=round(max(x["max"] for x in s), 1),
                               events=sum(x["read"] for x in s)),
                   source_changes_per_s=round(statistics.median(x["source_rate"] for x in s), 1),
                   committed_changes=sum(x["committed"] for x in s),
                   # from the end of the load (the start of catching up, for a backlog) until the last change
                   drain_s=round(max(x["drain"] for x in s), 2),
                   reads=sum(x["reads"] for x in s),
                   load=load,
                   exact=not any(x["problems"] for x in s))
        emit(row)
        problems += [f"{name}: {p}" for x in s for p in x["problems"]]
    return problems


# ---------------------------------------------------------------------------
# Scale with the number of topics (issue 14): a private instance grows from
# 10 to 1,000 to 16,000 partitions (topics of 8, each with two records, all
# idle but one busy topic).  At each size: the worker's CPU per minute and
# run time while everything is idle, the admin views and run_maintenance()
# from a fresh session, and produce and fetch rates on the busy topic
# (ratio to the rate at 10 partitions).

SCALE_PRODUCE = """\\set k random(1, 100000)
SELECT estream.produce('busy', '{"id": 1, "type": "order.created"}', 'k' || :k);
"""
SCALE_FETCH = """\\set p random(0, 7)
\\set o random(0, 9000)
SELECT count(*) FROM estream.fetch('busyread', :p, :o, 100);
"""
SCALE_VIEWS = ["estream.partitions", "estream.topics", "estream.segments", "estream.consumer_lag"]


def scale_sizes(args):
    if args.mode == "quick":
        return [10, 1000], 10, 3
    return [10, 1000, 16000], 30, 5


def worker_cpu_ticks(inst):
    pid = inst.psql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'estream worker' "
                    "AND datname = current_database()")
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime, fields 14 and 15 of proc(5), counted after the name
    return int(fields[11]) + int(fields[12])


def grow_topics(inst, partitions):
    """Topics of 8 partitions (the busy ones count) up to about partitions
    partitions in all; each new topic gets two records."""
    have = int(inst.psql("SELECT coalesce(sum(partitions), 0) FROM estream.topic"))
    start = int(inst.psql("SELECT count(*) FROM estream.topic WHERE name LIKE 'idle%'"))
    n = max(0, (partitions - have) // 8)
    for first in range(start + 1, start + n + 1, 200):
        last = min(first + 199, start + n)
        inst.psql(f"""DO $$ BEGIN
            FOR i IN {first}..{last} LOOP
                PERFORM estream.create_topic('idle' || i, 8);
                PERFORM estream.produce_batch('idle' || i, ARRAY['{{"a": 1}}'::jsonb, '{{"a": 2}}'], ARRAY['k1', 'k2']);
                COMMIT;
            END LOOP; END $$""")


def timed_fresh(inst, sql):
    """Milliseconds sql takes in a new session (cold caches, as an admin's psql)."""
    c = connect(inst)
    cur = c.cursor()
    t0 = time.perf_counter()
    cur.execute(sql)
    cur.fetchall()
    dt = (time.perf_counter() - t0) * 1000
    c.close()
    return dt


def scale_workload(workdir, args, emit):
    sizes, cpu_seconds, pgbench_seconds = scale_sizes(args)
    inst = Instance(os.path.join(workdir, "scale"), True,
                    list(args.set) + ["estream.max_partitions = 20000", "max_locks_per_transaction = 256"])
    os.makedirs(inst.root)
    inst.start()
    base = {}
    try:
        inst.psql("""CREATE EXTENSION IF NOT EXISTS estream;
            SELECT estream.create_topic('busy', 8);
            SELECT estream.create_topic('busyread', 8);
            SELECT count(*) FROM generate_series(0, 7) p,
                LATERAL estream.produce_batch('busyread',
                    ARRAY(SELECT ('{"id": ' || g || '}')::jsonb FROM generate_series(1, 10000) g), partition => p);""")
        for size in sizes:
            grow_topics(inst, size)
            total = int(inst.psql("SELECT sum(partitions) FROM estream.topic"))
            inst.psql("CHECKPOINT")
            time.sleep(3)       # a maintenance run or two over the new topics
            t0, c0 = time.time(), worker_cpu_ticks(inst)
            time.sleep(cpu_seconds)
            t1, c1 = time.time(), worker_cpu_ticks(inst)
            cpu_per_min = (c1 - c0) / os.sysconf("SC_CLK_TCK") * 60 / (t1 - t0)
            run_ms = float(inst.psql("SELECT last_run_ms FROM estream.workers WHERE database = current_database()"))
            views = {v: round(timed_fresh(inst, f"SELECT * FROM {v}"), 1) for v in SCALE_VIEWS}
            maint = round(timed_fresh(inst, "SELECT * FROM estream.run_maintenance()"), 1)
            prod = inst.pgbench(SCALE_PRODUCE, 4, pgbench_seconds, workdir)
            fetch = inst.pgbench(SCALE_FETCH, 4, pgbench_seconds, workdir) * 100
            if not base:
                base = dict(produce=prod, fetch=fetch, partitions=total)
            row = dict(workload=f"scale: {total} partitions", clients=4, partitions=total,
                       synchronous_commit="on", events_per_s_median=round(prod, 1), min=round(prod, 1),
                       max=round(prod, 1), runs=1, reference=f"scale: {base['partitions']} partitions",
                       ratio=round(prod / base["produce"], 3),
                       scale=dict(topics=int(inst.psql("SELECT count(*) FROM estream.topic")),
                                  worker_cpu_s_per_min=round(cpu_per_min, 2), worker_run_ms=round(run_ms, 1),
                                  views_ms=views, run_maintenance_ms=maint,
                                  fetch_events_per_s=round(fetch, 1), fetch_ratio=round(fetch / base["fetch"], 3),
                                  pg_class_rows=int(inst.psql("SELECT count(*) FROM pg_class"))))
            emit(row)
    finally:
        inst.stop()


HEADER = f"{'workload':40} {'sync':>4} {'parts':>5} {'clients':>7} {'events/s':>10} {'min':>10} {'max':>10} {'ratio':>7}  reference"


def print_row(row):
    if not getattr(print_row, "done", False):
        print(HEADER)
        print("-" * len(HEADER))
        print_row.done = True
    ratio = f"{row['ratio']:.2f}x" if row.get("ratio") is not None else ""

    def num(v):
        return f"{v:>10.0f}" if isinstance(v, (int, float)) else f"{'':>10}"
    extra = ""
    if "latency_ms" in row:
        lm = row["latency_ms"]
        extra = f"  latency ms p50 {lm['p50']:.2f} p99 {lm['p99']:.2f} max {lm['max']:.2f} ({lm['events']} events)"
    if "wal_bytes_per_event" in row:
        extra = f"  {row['wal_bytes_per_event']:.0f} WAL bytes/event"
    if "scale" in row:
        sc = row["scale"]
        extra = (f"  (produce on a busy topic) worker {sc['worker_cpu_s_per_min']:.2f} CPU s/min, run "
                 f"{sc['worker_run_ms']:.0f} ms; views ms "
                 + " ".join(f"{k.split('.')[1]} {v:.0f}" for k, v in sc["views_ms"].items())
                 + f"; run_maintenance {sc['run_maintenance_ms']:.0f} ms; fetch {sc['fetch_ratio']:.2f}x;"
                 f" {sc['topics']} topics, {sc['pg_class_rows']} pg_class rows")
    if "lag_ms" in row and row["load"] == "backlog":
        extra = (f"  caught up in {row['drain_s']:.1f} s ({row['lag_ms']['events']} events"
                 f"{'' if row['exact'] else ', NOT EXACT'}, {row['reads']} reads); "
                 f"source {row['source_changes_per_s']:.0f} changes/s")
    elif "lag_ms" in row:
        lm = row["lag_ms"]
        extra = (f"  lag ms p50 {lm['p50']:.0f} p99 {lm['p99']:.0f} max {lm['max']:.0f} ({lm['events']} events"
                 f"{'' if row['exact'] else ', NOT EXACT'}, {row['reads']} reads); "
                 f"source {row['source_changes_per_s']:.0f} changes/s")
    print(f"{row['workload'][:40]:40} {row['synchronous_commit']:>4} {row['partitions']:>5} {row['clients']:>7} "
          f"{num(row['events_per_s_median'])} {num(row['min'])} {num(row['max'])} {ratio:>7}  {row['reference']}{extra}",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["quick", "full"], default=os.environ.get("BENCH_MODE", "quick"))
    ap.add_argument("--seconds", type=int, default=0, help="seconds per pgbench run")
    ap.add_argument("--runs", type=int, default=3, help="runs per workload (at least 3)")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--skip-client", action="store_true",
                    help="without the client-side workloads (backlog, consume, latency, WAL, large topic)")
    ap.add_argument("--only-client", action="store_true",
                    help="only the client-side workloads (backlog, consume, latency, WAL, large topic)")
    ap.add_argument("--skip-cdc", action="store_true", help="without the CDC workload")
    ap.add_argument("--only-cdc", action="store_true",
                    help="only the CDC workload (estream capture against wal2json)")
    ap.add_argument("--cdc-seconds", type=int, default=0,
                    help="seconds of load per CDC run (default 30; 10 in quick mode, 5 with --smoke)")
    ap.add_argument("--cdc-loads", default="",
                    help="CDC loads to run, comma-separated: full (as fast as the clients go), a number of "
                         "transactions/s, backlog (capture held back during the load, then catching up); "
                         f"default full,{CDC_STEADY_RATE},backlog (full with --smoke)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="another server setting for the instances, e.g. --set estream.capture_naptime=20ms")
    ap.add_argument("--scale", action="store_true",
                    help="also the scale workload (always in full mode): 10, 1,000 and 16,000 partitions "
                         "(10 and 1,000 in quick mode)")
    ap.add_argument("--only-scale", action="store_true", help="only the scale workload")
    ap.add_argument("--smoke", action="store_true",
                    help="exit non-zero unless every planned row was measured (for CI; figures are not "
                         "checked); a shorter CDC run")
    args = ap.parse_args()
    if sum((args.skip_client and args.only_client, args.only_client and args.only_cdc,
            args.skip_cdc and args.only_cdc)):
        ap.error("contradictory --skip-*/--only-* options")
    cdc_plan(args)     # checks --cdc-loads
    for i, setting in enumerate(args.set):
        name, sep, value = setting.partition("=")
        if not sep or not name.strip():
            ap.error(f"--set {setting}: expected NAME=VALUE")
        args.set[i] = "{} = '{}'".format(name.strip(), value.strip().replace("'", "''"))
    started = time.time()
    load_before = os.getloadavg()
    library = library_version()
    results, cdc_meta, problems = run(args)
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = dict(mode=args.mode, started=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
                seconds=round(time.time() - started), cpus=os.cpu_count(),
                # a shared machine: the load average (1, 5, 15 min) before and after
                loadavg=[[round(x, 2) for x in load_before], [round(x, 2) for x in os.getloadavg()]],
                postgres=subprocess.run([f"{PGBIN}/postgres", "--version"], capture_output=True,
                                        text=True).stdout.strip(),
                estream_so=library, settings=args.set)
    if library_version()["md5"] != library["md5"]:
        # instances started after the change loaded the new build
        print("WARNING: estream.so was replaced during the run: rows may come from different builds")
        meta["estream_so_replaced"] = True
    if cdc_meta:
        meta["cdc"] = cdc_meta
    with open(os.path.join(args.out, f"bench-{stamp}.json"), "w") as f:
        json.dump(dict(meta=meta, results=results), f, indent=1)
    with open(os.path.join(args.out, f"bench-{stamp}.csv"), "w", newline="") as f:
        # every key of every row, in the order they first appear
        wr = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in results for k in r)))
        wr.writeheader()
        wr.writerows(results)
    print(f"\n{len(results)} rows in {meta['seconds']} s; written to {args.out}/bench-{stamp}.json and .csv")
    if problems:
        # CDC must deliver every committed change exactly once, in every mode
        print("CDC check FAILED:\n  " + "\n  ".join(problems))
        return 1
    if args.smoke:
        expected = 0
        if not args.only_client and not args.only_cdc:
            expected += sum(len(wls) for _s, _p, wls in plan(args.mode == "quick"))
        if not args.skip_client and not args.only_cdc:
            expected += CLIENT_ROWS
        if not args.skip_cdc and not args.only_client:
            expected += CDC_ROWS * len(cdc_plan(args)[3])
        missing = [r["workload"] for r in results
                   if r.get("events_per_s_median") is None and "latency_ms" not in r and "wal_bytes_per_event" not in r]
        if len(results) != expected or missing:
            print(f"bench smoke test FAILED: {len(results)} rows of {expected}; without figures: {missing}")
            return 1
        print(f"bench smoke test passed: all {expected} rows measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
