#!/usr/bin/python3
"""estream benchmark: every workload side by side with its reference, on one
private PostgreSQL 15 instance, in one run.

Started by scripts/bench.sh (make bench), which installs what is needed and
runs this as an unprivileged user.  Prints one table (workload, clients,
events/s median/min/max over the runs, ratio to the reference measured in the
same run) and writes it as JSON and CSV under bench/results/.

Runs of a workload and of its reference are interleaved (A B A B ...) so that
drift of a shared, noisy machine hits both alike.
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

PGBIN = "/usr/lib/postgresql/15/bin"

# A JSON value of about 200 bytes, with a varying id.
VALUE_SQL = ("('{\"id\": ' || :id || ', \"type\": \"order.created\", \"customer\": \"c-' || (:id % 9973) || "
             "'\", \"amount\": 1234.56, \"currency\": \"EUR\", \"items\": [\"sku-1\", \"sku-2\", \"sku-3\"], "
             "\"note\": \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}')::jsonb")
VALUE_ROW_SQL = VALUE_SQL.replace(":id", "(:id + g)")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Instance:
    """A private PostgreSQL instance with estream preloaded."""

    def __init__(self, root, sync_commit):
        self.root = root
        self.data = os.path.join(root, "data")
        self.port = free_port()
        self.sync_commit = sync_commit

    def start(self):
        subprocess.run([f"{PGBIN}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres",
                        "--no-sync"], check=True, stdout=subprocess.DEVNULL)
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
""")
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

    def pgbench(self, script, clients, seconds, workdir):
        path = os.path.join(workdir, "script.sql")
        with open(path, "w") as f:
            f.write(script)
        r = subprocess.run(["pgbench", "-n", "-M", "prepared", "-c", str(clients),
                            "-j", str(min(clients, 2)), "-T", str(seconds), "-f", path],
                           env=self.env(), capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"pgbench failed:\n{r.stdout}\n{r.stderr}")
        m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", r.stdout)
        if not m:
            raise RuntimeError(f"no tps in pgbench output:\n{r.stdout}")
        return float(m.group(1))


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
"""


def workloads(clients, batches=(100,), only=None):
    """(name, clients, events per transaction, reference name or None, pgbench script)"""
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
    if only is not None:
        w = [x for x in w if x[0] in only or x[3] is None]
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


def run(args):
    quick = args.mode == "quick"
    seconds = args.seconds or (2 if quick else 5)
    runs = max(3, args.runs)
    results = []
    workdir = tempfile.mkdtemp(prefix="estream-bench-")
    steps = plan(quick)
    for sync in sorted({st[0] for st in steps} if not args.only_client else {True}, reverse=True):
        inst = Instance(os.path.join(workdir, "sync" if sync else "async"), sync)
        os.makedirs(inst.root)
        inst.start()
        try:
            for st_sync, partitions, wls in steps:
                if st_sync != sync or args.only_client:
                    continue
                inst.psql(SETUP_SQL.format(partitions=partitions))
                groups = {}
                for wl in wls:
                    groups.setdefault((wl[1], wl[3] or wl[0]), []).append(wl)
                for (_clients, _ref), members in groups.items():
                    samples = {m[0]: [] for m in members}
                    for _ in range(runs):
                        for name, clients, per_tx, _r, script in members:
                            # one client waits for every fsync: its rate jitters, so run longer
                            secs = seconds * 2 if clients == 1 else seconds
                            tps = inst.pgbench(script, clients, secs, workdir)
                            samples[name].append(tps * per_tx)
                    ref_median = None
                    for name, clients, per_tx, ref, _s in members:
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
            if sync and not args.skip_client:
                if args.only_client:
                    inst.psql(SETUP_SQL.format(partitions=8))
                client_workloads(inst, quick, runs, seconds, workdir,
                                 lambda row: (results.append(row), print_row(row)))
        finally:
            inst.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    print_targets(results)
    return results


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
    1000 records and commits their offsets in one transaction."""
    import threading
    lock = threading.Lock()
    total = [0]
    errors = []

    def worker():
        try:
            c = connect(inst, autocommit=False)
            cur = c.cursor()
            idle = 0
            while True:
                with lock:
                    if total[0] >= n:
                        break
                cur.execute("SELECT count(*) FROM estream.poll(%s, 'backlog4', 1000, 0, 'earliest')",
                            (group,))
                got = cur.fetchone()[0]
                c.commit()
                with lock:
                    total[0] += got
                idle = idle + 1 if got == 0 else 0
                if idle > 1000:
                    raise RuntimeError("poll returned nothing 1000 times in a row")
            c.close()
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"poll workers failed: {errors[0]}")
    if total[0] != n:
        raise RuntimeError(f"poll workers consumed {total[0]} records, expected {n}")
    return total[0] / dt


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
    print(f"{row['workload'][:40]:40} {row['synchronous_commit']:>4} {row['partitions']:>5} {row['clients']:>7} "
          f"{num(row['events_per_s_median'])} {num(row['min'])} {num(row['max'])} {ratio:>7}  {row['reference']}{extra}",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["quick", "full"], default=os.environ.get("BENCH_MODE", "quick"))
    ap.add_argument("--seconds", type=int, default=0, help="seconds per pgbench run")
    ap.add_argument("--runs", type=int, default=3, help="runs per workload (at least 3)")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--skip-client", action="store_true", help="only the pgbench workloads")
    ap.add_argument("--only-client", action="store_true",
                    help="only the client-side workloads (backlog, consume, latency, WAL, large topic)")
    ap.add_argument("--smoke", action="store_true",
                    help="exit non-zero unless every planned row was measured (for CI; figures are not checked)")
    args = ap.parse_args()
    started = time.time()
    results = run(args)
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = dict(mode=args.mode, started=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
                seconds=round(time.time() - started), cpus=os.cpu_count(),
                postgres=subprocess.run([f"{PGBIN}/postgres", "--version"], capture_output=True,
                                        text=True).stdout.strip())
    with open(os.path.join(args.out, f"bench-{stamp}.json"), "w") as f:
        json.dump(dict(meta=meta, results=results), f, indent=1)
    with open(os.path.join(args.out, f"bench-{stamp}.csv"), "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=sorted({k for r in results for k in r}, key=lambda k: list(results[0]).index(k) if k in results[0] else 99))
        wr.writeheader()
        wr.writerows(results)
    print(f"\n{len(results)} rows in {meta['seconds']} s; written to {args.out}/bench-{stamp}.json and .csv")
    if args.smoke:
        expected = 0 if args.only_client else sum(len(wls) for _s, _p, wls in plan(args.mode == "quick"))
        if not args.skip_client:
            expected += CLIENT_ROWS
        missing = [r["workload"] for r in results
                   if r.get("events_per_s_median") is None and "latency_ms" not in r and "wal_bytes_per_event" not in r]
        if len(results) != expected or missing:
            print(f"bench smoke test FAILED: {len(results)} rows of {expected}; without figures: {missing}")
            return 1
        print(f"bench smoke test passed: all {expected} rows measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
