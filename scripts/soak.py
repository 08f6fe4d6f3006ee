#!/usr/bin/python3
"""estream soak test: retention and compaction under steady load.

Started by scripts/soak.sh (make soak), which installs what is needed and runs
this as an unprivileged user.  On a private PostgreSQL 15 instance (estream
preloaded, estream.worker_naptime = 200ms, autovacuum with its defaults):

- topic "soak" (cleanup.policy delete, 4 partitions) with accelerated
  settings: segment.ms 2000 and retention.ms 10000 are 2 min and 10 min
  shrunk 60 times, so the default 300 s of load replay 5 hours of such a
  topic (an hour is 30 rolls and 30 deletions, 24 in the first hour);
- topic "soak_compact" (cleanup.policy compact, 4 partitions, the same
  segment.ms) with keys drawn from 1000 keys and a few tombstones;
- producers: pgbench -c 4 running a mix of produce 1/tx and produce_batch
  100/tx (keyed) to "soak", and produce_batch 10/tx and tombstones to
  "soak_compact";
- consumers of "soak": a consumer group draining with estream.poll() and a
  plain estream.fetch() reader, each a thread with its own connection, both
  checking that the offsets they see are contiguous (a gap is allowed only
  below the log start offset, i.e. deleted by retention before it was read).

Every --sample seconds it records each topic's size and segments by state,
dead and inserted tuples of the log tables (pg_stat_user_tables, and every
--dead-check seconds pgstattuple, which does not depend on statistics being
flushed), the worker's counters, consumer lag, backends waiting for locks and
events/s.  It then prints a summary, writes the samples and the summary as
JSON and CSV under bench/results/soak-<timestamp>.*, and exits non-zero if a
log table of either topic had a dead tuple, a topic kept growing (the largest
size of the second half of the steady state more than --growth-limit times
that of the first half, or its size or number of segment tables never back
down to the first half's largest in the second half), a consumer missed or
repeated a record not deleted by retention, a producer transaction failed or
the worker reported an error.  --smoke is a 20 s run for CI; it does not
judge growth, whose halves are too short there.
"""

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import PGBIN, VALUE_ROW_SQL, VALUE_SQL, Instance, connect  # noqa: E402

TOPIC = "soak"
COMPACT = "soak_compact"
GROUP = "soak_group"
KEYS = 1000

# The settings the accelerated ones stand for.
REF_SEGMENT_MS = 120000
REF_RETENTION_MS = 600000

# Applied with ALTER SYSTEM before the extension exists, on top of the
# settings of bench.py's instance: checkpoints at their defaults (a soak
# should go through some), lock waits logged.
SERVER_SETTINGS = {
    "estream.worker_naptime": "200ms",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "5min",
    "log_lock_waits": "on",
    "log_autovacuum_min_duration": "-1",
}


def scripts(keys):
    """pgbench scripts and weights: (file name, weight, events to 'soak' per
    transaction, events to 'soak_compact' per transaction, text)."""
    return [
        ("produce1.sql", 40, 1, 0,
         "\\set id random(1, 1000000000)\n"
         f"SELECT estream.produce('{TOPIC}', {VALUE_SQL}, 'k' || :id);\n"),
        ("batch100.sql", 1, 100, 0,
         "\\set id random(1, 1000000000)\n"
         f"SELECT count(*) FROM estream.produce_batch('{TOPIC}', "
         f"ARRAY(SELECT {VALUE_ROW_SQL} FROM generate_series(1, 100) g), "
         f"ARRAY(SELECT 'k' || (:id + g) FROM generate_series(1, 100) g));\n"),
        ("compact10.sql", 10, 0, 10,
         f"\\set k random(1, {keys})\n"
         "\\set id random(1, 1000000000)\n"
         f"SELECT count(*) FROM estream.produce_batch('{COMPACT}', "
         f"ARRAY(SELECT jsonb_build_object('key', (:k::int + g) % {keys}, 'v', :id::bigint, 'pad', repeat('x', 100)) "
         f"FROM generate_series(1, 10) g), "
         f"ARRAY(SELECT 'key-' || (:k + g) % {keys} FROM generate_series(1, 10) g));\n"),
        ("tombstone.sql", 1, 0, 1,
         f"\\set k random(1, {keys})\n"
         f"SELECT estream.produce('{COMPACT}', NULL::jsonb, 'key-' || :k % {keys});\n"),
    ]


class Consumer:
    """Offsets seen by one consumer, per partition, with the gaps classified:
    below the log start offset (deleted by retention before it was read) or
    not (a lost record).  A repeated or backwards offset is a duplicate."""

    def __init__(self, name):
        self.name = name
        self.next = {}
        self.consumed = 0
        self.skipped_retention = 0
        self.lost = 0
        self.duplicates = 0
        self.errors = []
        self.lock = threading.Lock()

    def see(self, partition, offsets, log_start):
        """offsets: ascending offsets just read from one partition;
        log_start: a function returning the partition's log start offset now."""
        with self.lock:
            expect = self.next.get(partition, 0)
            for off in offsets:
                if off < expect:
                    self.duplicates += 1
                    continue
                if off > expect:
                    # the log start only moves forward: if it is now at or past
                    # this record, the records before it were deleted by retention
                    if log_start(partition) >= off:
                        self.skipped_retention += off - expect
                    else:
                        self.lost += off - expect
                expect = off + 1
                self.consumed += 1
            self.next[partition] = expect

    def position(self):
        with self.lock:
            return sum(self.next.values())


def log_start_fn(cur):
    def f(partition):
        cur.execute("SELECT log_start_offset FROM estream.watermarks(%s) WHERE partition = %s",
                    (TOPIC, partition))
        return cur.fetchone()[0]
    return f


def group_consumer(inst, cons, stop, max_records, process_ms):
    """A consumer group member draining the topic with poll(), one transaction
    per batch, as an application would; the transaction stays open
    process_ms after poll() (the application's processing)."""
    try:
        c = connect(inst, autocommit=False)
        cur = c.cursor()
        aux = connect(inst).cursor()
        while not stop.is_set():
            cur.execute('SELECT partition, "offset" FROM estream.poll(%s, %s, max_records => %s, wait_ms => 200)',
                        (GROUP, TOPIC, max_records))
            rows = cur.fetchall()
            by_part = {}
            for p, off in rows:
                by_part.setdefault(p, []).append(off)
            # before the commit: until then no other member reads these
            # partitions, so members record each partition in offset order
            for p, offs in by_part.items():
                cons.see(p, offs, log_start_fn(aux))
            if process_ms and rows:
                time.sleep(process_ms / 1000.0)
            c.commit()
        c.close()
    except Exception as e:  # noqa: BLE001 - reported in the summary
        cons.errors.append(repr(e))


def fetch_consumer(inst, cons, stop, partitions, max_records):
    """A plain reader keeping its own positions, fetch() per partition."""
    try:
        c = connect(inst)
        cur = c.cursor()
        aux = connect(inst).cursor()
        while not stop.is_set():
            got = 0
            for p in range(partitions):
                cur.execute('SELECT "offset" FROM estream.fetch(%s, %s, %s, %s)',
                            (TOPIC, p, cons.next.get(p, 0), max_records))
                offs = [r[0] for r in cur.fetchall()]
                if offs:
                    cons.see(p, offs, log_start_fn(aux))
                    got += len(offs)
            if got == 0:
                time.sleep(0.05)
        c.close()
    except Exception as e:  # noqa: BLE001
        cons.errors.append(repr(e))


SAMPLE_SQL = {
    "topics": """
        SELECT t.name, t.topic_id, t.current_segment,
               (SELECT coalesce(sum(stable_offset), 0) FROM estream.watermarks(t.name)),
               (SELECT coalesce(sum(log_start_offset), 0) FROM estream.watermarks(t.name))
          FROM estream.topic t WHERE t.name IN (%s, %s)""",
    "segments": """
        SELECT topic, state, count(*), coalesce(sum(size_bytes), 0),
               count(*) FILTER (WHERE size_bytes IS NOT NULL AND pg_relation_size(relid) = 0)
          FROM estream.segments WHERE topic IN (%s, %s) GROUP BY 1, 2""",
    "late": """
        SELECT coalesce(max(extract(epoch FROM clock_timestamp() - g.sealed_at) * 1000
                            - (estream.effective_config(t.config) ->> 'retention.ms')::bigint)
                          FILTER (WHERE g.state = 'sealed'), 0),
               coalesce(max(extract(epoch FROM clock_timestamp() - g.deleted_at) * 1000)
                          FILTER (WHERE g.state = 'deleted'), 0)
          FROM estream.segments g JOIN estream.topic t ON t.name = g.topic
         WHERE g.topic = %s""",
    "tables": """
        SELECT substring(relname FROM '^log_([0-9]+)'), count(*), coalesce(sum(n_dead_tup), 0),
               coalesce(max(n_dead_tup), 0), coalesce(sum(n_tup_ins), 0),
               coalesce(sum(n_tup_upd + n_tup_del), 0), coalesce(sum(autovacuum_count), 0)
          FROM pg_stat_user_tables
         WHERE schemaname = 'estream' AND relname ~ '^log_[0-9]+(_[0-9]+)?$' GROUP BY 1""",
    "own": """
        SELECT coalesce(sum(n_dead_tup), 0), coalesce(sum(pg_total_relation_size(relid)), 0)
          FROM pg_stat_user_tables
         WHERE schemaname = 'estream' AND relname !~ '^log_'""",
    "worker": """
        SELECT runs, last_run_ms, segments_rolled, segments_deleted, records_compacted,
               segments_dropped, offsets_persisted, markers_reaped, errors, last_error, state
          FROM estream.workers WHERE kind = 'database' AND database = current_database()""",
    "lag": "SELECT coalesce(sum(lag), 0) FROM estream.consumer_lag WHERE \"group\" = %s AND topic = %s",
    "locks": """
        SELECT backend_type, wait_event, left(regexp_replace(query, '\\s+', ' ', 'g'), 100)
          FROM pg_stat_activity WHERE wait_event_type = 'Lock'""",
    "db": "SELECT pg_database_size(current_database()), "
          "(SELECT count(*) FROM pg_class WHERE relnamespace = 'estream'::regnamespace), "
          "(SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)",
}

DEAD_SQL = """
    SELECT t.name, coalesce(sum((pgstattuple(s.relid)).dead_tuple_count), 0)
      FROM estream.segment s JOIN estream.topic t USING (topic_id)
     WHERE t.name IN (%s, %s) AND s.truncated_at IS NULL GROUP BY 1"""


def sample(cur, t, with_dead):
    """One row of measurements."""
    s = {"t": round(t, 2)}
    cur.execute(SAMPLE_SQL["topics"], (TOPIC, COMPACT))
    ids = {}
    for name, tid, seg, stable, start in cur.fetchall():
        k = "d" if name == TOPIC else "c"
        ids[str(tid)] = k
        s[f"{k}_events"] = int(stable)
        s[f"{k}_log_start"] = int(start)
        s[f"{k}_current_segment"] = seg
    cur.execute(SAMPLE_SQL["segments"], (TOPIC, COMPACT))
    for k in ("d", "c"):
        for st in ("active", "closing", "sealed", "deleted"):
            s[f"{k}_seg_{st}"] = 0
        s[f"{k}_size"] = 0
        s[f"{k}_size_live"] = 0
        s[f"{k}_seg_empty"] = 0
    for name, state, n, size, empty in cur.fetchall():
        k = "d" if name == TOPIC else "c"
        s[f"{k}_seg_{state}"] = n
        s[f"{k}_size"] += int(size)
        s[f"{k}_seg_empty"] += empty
        if state != "deleted":
            s[f"{k}_size_live"] += int(size)
    cur.execute(SAMPLE_SQL["late"], (TOPIC,))
    late, undropped = cur.fetchone()
    s["d_retention_late_ms"] = max(0, round(float(late)))
    s["d_drop_wait_ms"] = round(float(undropped))
    cur.execute(SAMPLE_SQL["tables"])
    for k in ("d", "c"):
        s[f"{k}_tables"] = s[f"{k}_dead_tup"] = s[f"{k}_max_dead_tup"] = s[f"{k}_tup_ins"] = 0
        s[f"{k}_tup_upd_del"] = s[f"{k}_autovacuums"] = 0
    for tid, n, dead, maxdead, ins, upddel, av in cur.fetchall():
        k = ids.get(tid)
        if k:
            s[f"{k}_tables"], s[f"{k}_dead_tup"], s[f"{k}_max_dead_tup"] = n, int(dead), int(maxdead)
            s[f"{k}_tup_ins"], s[f"{k}_tup_upd_del"], s[f"{k}_autovacuums"] = int(ins), int(upddel), int(av)
    if with_dead:
        # a segment dropped while this runs cannot be opened: try again
        for attempt in range(3):
            try:
                cur.execute(DEAD_SQL, (TOPIC, COMPACT))
                break
            except psycopg2.Error as e:
                if attempt == 2 or "could not open relation" not in str(e):
                    raise
        for name, dead in cur.fetchall():
            s[f"{'d' if name == TOPIC else 'c'}_dead_pgstattuple"] = int(dead)
    cur.execute(SAMPLE_SQL["own"])
    s["own_dead_tup"], s["own_size"] = (int(x) for x in cur.fetchone())
    cur.execute(SAMPLE_SQL["worker"])
    w = cur.fetchone()
    for i, col in enumerate(("w_runs", "w_last_run_ms", "w_rolled", "w_deleted", "w_compacted", "w_dropped",
                             "w_persisted", "w_reaped", "w_errors", "w_last_error", "w_state")):
        s[col] = w[i] if not isinstance(w[i], float) else round(w[i], 1)
    cur.execute(SAMPLE_SQL["lag"], (GROUP, TOPIC))
    s["group_lag"] = int(cur.fetchone()[0])
    cur.execute(SAMPLE_SQL["locks"])
    waits = cur.fetchall()
    s["lock_waiters"] = len(waits)
    s["lock_wait_examples"] = ["%s %s: %s" % w for w in waits[:3]]
    cur.execute(SAMPLE_SQL["db"])
    s["db_size"], s["estream_relations"], s["checkpoints"] = (int(x) for x in cur.fetchone())
    return s


def cpu_times():
    """The machine's CPU times (user, nice, system, idle, iowait, irq,
    softirq, steal) from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            return [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def cpu_share(before, after):
    """Busy, iowait and steal shares of the CPU time between two readings."""
    if not before or not after:
        return {}
    d = [b - a for a, b in zip(before, after)]
    total = sum(d) or 1
    return dict(cpu_busy=round(100 * (total - d[3] - d[4] - d[7]) / total, 1),
                cpu_iowait=round(100 * d[4] / total, 1), cpu_steal=round(100 * d[7] / total, 1))


def halves(samples, key, start, end):
    """Values of key in the first and second half of [start, end]: the
    largest of each half, their ratio, and whether the second half stayed
    above everything of the first (a quantity that only grows)."""
    mid = (start + end) / 2
    a = [s[key] for s in samples if start <= s["t"] <= mid]
    b = [s[key] for s in samples if mid < s["t"] <= end]
    if not a or not b:
        return dict(first=None, second=None, ratio=None, second_min=None, only_grows=False)
    return dict(first=max(a), second=max(b), ratio=round(max(b) / max(a), 3) if max(a) else None,
                second_min=min(b), only_grows=min(b) > max(a))


def mb(n):
    return f"{n / 1048576:.2f} MB"


def run(args):
    workdir = tempfile.mkdtemp(prefix="estream-soak-")
    inst = Instance(workdir, sync_commit=True)
    inst.start()
    stop = threading.Event()
    threads = []
    samples = []
    try:
        for k, v in SERVER_SETTINGS.items():
            inst.psql(f"ALTER SYSTEM SET {k} = '{v}'")
        inst.psql("SELECT pg_reload_conf()")
        # new sessions have the new settings once the postmaster has reloaded
        for _ in range(100):
            if inst.psql("SHOW estream.worker_naptime") == "200ms":
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("estream.worker_naptime did not become 200ms")
        delete_cfg = {"segment.ms": str(args.segment_ms), "retention.ms": str(args.retention_ms)}
        compact_cfg = {"cleanup.policy": "compact", "segment.ms": str(args.compact_segment_ms),
                       "delete.retention.ms": str(args.retention_ms)}
        inst.psql(f"""
            CREATE EXTENSION estream;
            CREATE EXTENSION pgstattuple;
            SELECT estream.create_topic('{TOPIC}', {args.partitions}, '{json.dumps(delete_cfg)}');
            SELECT estream.create_topic('{COMPACT}', {args.partitions}, '{json.dumps(compact_cfg)}');
            SELECT estream.create_group('{GROUP}', auto_offset_reset => 'earliest');
        """)
        for _ in range(100):
            if inst.psql("SELECT count(*) FROM estream.workers WHERE kind = 'database' AND state IN ('running', 'idle')") == "1":
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the estream worker did not start: " + inst.psql("SELECT * FROM estream.workers"))

        paths = []
        for name, weight, _d, _c, text in scripts(KEYS):
            p = os.path.join(workdir, name)
            with open(p, "w") as f:
                f.write(text)
            paths += ["-f", f"{p}@{weight}"]
        group = Consumer("group (poll)")
        reader = Consumer("reader (fetch)")
        threads = [threading.Thread(target=group_consumer, args=(inst, group, stop, 1000, args.process_ms))
                   for _ in range(args.group_members)]
        threads.append(threading.Thread(target=fetch_consumer, args=(inst, reader, stop, args.partitions, 2000)))
        for th in threads:
            th.start()

        cmd = ["pgbench", "-n", "-M", "prepared", "-c", str(args.clients), "-j", str(min(args.clients, 2)),
               "-T", str(args.seconds)] + (["-R", str(args.rate)] if args.rate else []) + paths
        print(f"load: {' '.join(cmd)}", flush=True)
        sc = connect(inst)
        cur = sc.cursor()
        t0 = time.monotonic()
        pgb = subprocess.Popen(cmd, env=inst.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        next_t, next_dead = 0.0, 0.0
        prev = None
        cpu_prev = cpu_times()
        header_done = False
        while True:
            now = time.monotonic() - t0
            running = pgb.poll() is None
            if now >= next_t or not running:
                s = sample(cur, now, with_dead=now >= next_dead)
                if now >= next_dead:
                    next_dead += args.dead_check
                s["phase"] = "load" if running else "drain"
                s["fetch_lag"] = max(0, s["d_events"] - reader.position())
                cpu = cpu_times()
                s.update(cpu_share(cpu_prev, cpu))
                cpu_prev = cpu
                if prev is not None and s["t"] > prev["t"]:
                    dt = s["t"] - prev["t"]
                    s["d_events_per_s"] = round((s["d_events"] - prev["d_events"]) / dt, 1)
                    s["c_events_per_s"] = round((s["c_events"] - prev["c_events"]) / dt, 1)
                else:
                    s["d_events_per_s"] = s["c_events_per_s"] = None
                samples.append(s)
                prev = s
                if not header_done:
                    print(f"{'t':>6} {'ev/s':>7} {'size':>9} {'segs a/c/s/d':>13} {'dead':>5} "
                          f"{'c size':>9} {'c segs':>6} {'c dead':>6} {'lag g/f':>11} {'rolled':>6} "
                          f"{'deleted':>7} {'dropped':>7} {'compacted':>9} {'locks':>5} {'cpu%':>4} "
                          f"{'steal':>5}", flush=True)
                    header_done = True
                print(f"{s['t']:6.0f} {s['d_events_per_s'] or 0:7.0f} {mb(s['d_size']):>9} "
                      f"{s['d_seg_active']}/{s['d_seg_closing']}/{s['d_seg_sealed']}/{s['d_seg_deleted']:<7} "
                      f"{s['d_dead_tup']:5d} {mb(s['c_size']):>9} "
                      f"{s['c_seg_active'] + s['c_seg_closing'] + s['c_seg_sealed'] + s['c_seg_deleted']:6d} "
                      f"{s['c_dead_tup']:6d} {s['group_lag']:>5}/{s['fetch_lag']:<5} {s['w_rolled']:6d} "
                      f"{s['w_deleted']:7d} {s['w_dropped']:7d} {s['w_compacted']:9d} {s['lock_waiters']:5d} "
                      f"{s.get('cpu_busy', 0):4.0f} {s.get('cpu_steal', 0):5.1f}",
                      flush=True)
                next_t += args.sample
            if not running:
                break
            time.sleep(max(0.0, min(next_t - (time.monotonic() - t0), 0.5)))
        load_end = time.monotonic() - t0
        out, err = pgb.communicate()
        if pgb.returncode != 0:
            raise RuntimeError(f"pgbench failed:\n{out}\n{err}")

        # drain: the consumers catch up with everything produced
        final_events = int(inst.psql(f"SELECT sum(stable_offset) FROM estream.watermarks('{TOPIC}')"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if (group.position() >= final_events and reader.position() >= final_events) or \
               group.errors or reader.errors:
                break
            time.sleep(0.2)
        stop.set()
        for th in threads:
            th.join()
        threads = []

        # Other backends flush their statistics when idle for 10 s at the
        # latest (pgbench's exited): wait, then read everything again.
        time.sleep(args.settle)
        s = sample(cur, time.monotonic() - t0, with_dead=True)
        s["phase"] = "final"
        s["fetch_lag"] = max(0, s["d_events"] - reader.position())
        s["d_events_per_s"] = s["c_events_per_s"] = None
        samples.append(s)
        cur.execute(f"SELECT count(*) FROM estream.latest('{COMPACT}')")
        latest_keys = cur.fetchone()[0]
        cur.execute("SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_dead_tup FROM pg_stat_user_tables "
                    "WHERE schemaname = 'estream' AND relname IN ('partition', 'segment') ORDER BY 1")
        own_stats = {r[0]: dict(n_tup_ins=r[1], n_tup_upd=r[2], n_tup_hot_upd=r[3], n_dead_tup=r[4])
                     for r in cur.fetchall()}
        sc.close()
        server_log = open(os.path.join(inst.root, "log")).read()
        return summarize(args, samples, load_end, out, group, reader, final_events, latest_keys,
                         own_stats, server_log)
    finally:
        stop.set()
        for th in threads:
            th.join()
        inst.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def pgbench_figures(out):
    f = {}
    m = re.search(r"number of transactions actually processed: (\d+)", out)
    f["transactions"] = int(m.group(1)) if m else None
    m = re.search(r"number of failed transactions: (\d+)", out)
    f["failed"] = int(m.group(1)) if m else 0
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    f["tps"] = float(m.group(1)) if m else None
    return f


def summarize(args, samples, load_end, pgbench_out, group, reader, final_events, latest_keys, own_stats, server_log):
    last = samples[-1]
    load = [s for s in samples if s["phase"] == "load"]
    # steady state: from when the first segments can have been deleted
    warm = (args.retention_ms + 2 * args.segment_ms) / 1000.0
    mid = (warm + load_end) / 2
    factor = REF_SEGMENT_MS / args.segment_ms
    equiv_h = load_end * factor / 3600
    topics = {}
    failures = []
    anomalies = []
    for k, name in (("d", TOPIC), ("c", COMPACT)):
        segs_alive = (last[f"{k}_seg_active"] + last[f"{k}_seg_closing"] + last[f"{k}_seg_sealed"])
        segs_all = segs_alive + last[f"{k}_seg_deleted"]
        rolls = last[f"{k}_current_segment"]
        size = halves(samples, f"{k}_size", warm, load_end)
        live = halves(samples, f"{k}_size_live", warm, load_end)
        tables = halves(samples, f"{k}_tables", warm, load_end)
        dead = max(s[f"{k}_max_dead_tup"] for s in samples)
        dead_pst = max(s.get(f"{k}_dead_pgstattuple", 0) for s in samples)
        t = topics[name] = dict(
            cleanup_policy="delete" if k == "d" else "compact",
            events=last[f"{k}_events"],
            events_per_s=round(last[f"{k}_events"] / load_end, 1),
            events_per_s_first_half=None, events_per_s_second_half=None,
            rolls=rolls,
            segments_deleted=rolls + 1 - segs_alive,
            segments_dropped=rolls + 1 - segs_all,
            segments_at_end=dict(active=last[f"{k}_seg_active"], closing=last[f"{k}_seg_closing"],
                                 sealed=last[f"{k}_seg_sealed"], deleted=last[f"{k}_seg_deleted"],
                                 empty=last[f"{k}_seg_empty"]),
            max_deleted_not_dropped=max(s[f"{k}_seg_deleted"] for s in load),
            max_size=max(s[f"{k}_size"] for s in samples),
            final_size=last[f"{k}_size"],
            steady_size=size,
            steady_size_without_deleted=live,
            steady_segment_tables=tables,
            max_n_dead_tup=dead,
            max_dead_tuples_pgstattuple=dead_pst,
            n_tup_ins_of_current_tables=last[f"{k}_tup_ins"],
            tup_upd_del=max(s[f"{k}_tup_upd_del"] for s in samples),
            autovacuums_of_log_tables=last[f"{k}_autovacuums"],
        )
        for half, sel in (("first", [s for s in load if warm <= s["t"] <= mid]),
                          ("second", [s for s in load if s["t"] > mid])):
            if len(sel) >= 2:
                t[f"events_per_s_{half}_half"] = round(
                    (sel[-1][f"{k}_events"] - sel[0][f"{k}_events"]) / (sel[-1]["t"] - sel[0]["t"]), 1)
        if dead > 0 or dead_pst > 0:
            failures.append(f"{name}: dead tuples in its log tables (n_dead_tup up to {dead}, "
                            f"pgstattuple up to {dead_pst})")
        if not args.smoke:
            if size["ratio"] is None or size["ratio"] > args.growth_limit or size["only_grows"]:
                failures.append(f"{name}: size kept growing: at most {mb(size['first'] or 0)} in the first half "
                                f"of the steady state, {mb(size['second'] or 0)} in the second (ratio "
                                f"{size['ratio']}, limit {args.growth_limit}), at least {mb(size['second_min'] or 0)}")
            if tables["only_grows"]:
                failures.append(f"{name}: its number of segment tables kept growing: at most {tables['first'] - 1} "
                                f"in the first half of the steady state, never fewer than {tables['second_min'] - 1} "
                                f"in the second (up to {tables['second'] - 1})")
        if rolls == 0:
            failures.append(f"{name}: no segment was rolled")
        if t["segments_at_end"]["empty"] > 2 and k == "c":
            anomalies.append(f"{name}: {t['segments_at_end']['empty']} of its {segs_all} segments are empty "
                             "(compaction removed every record) and are never dropped")
    if topics[TOPIC]["segments_deleted"] == 0:
        failures.append(f"{TOPIC}: retention deleted no segment")
    if last["w_compacted"] == 0:
        failures.append(f"{COMPACT}: nothing was compacted")
    late = max(s["d_retention_late_ms"] for s in load)
    drop_wait = max(s["d_drop_wait_ms"] for s in load)
    topics[TOPIC]["max_retention_late_ms"] = late
    topics[TOPIC]["max_drop_wait_ms"] = drop_wait
    if late > 1000:
        anomalies.append(f"{TOPIC}: retention ran up to {late / 1000:.1f} s late (a sealed segment past "
                         f"retention.ms not yet deleted; the worker runs every 0.2 s)")
    pending = topics[TOPIC]["max_deleted_not_dropped"]
    if pending > 3:
        anomalies.append(f"{TOPIC}: up to {pending} segments emptied by retention were waiting to be dropped "
                         f"during the load (about {pending * args.segment_ms / 1000:.0f} s of rolls): the drop "
                         "needs a moment when nothing holds a lock on the log")

    consumers = {}
    for c in (group, reader):
        consumers[c.name] = dict(consumed=c.consumed, skipped_by_retention=c.skipped_retention, lost=c.lost,
                                 duplicates=c.duplicates, position=c.position(), errors=c.errors)
        if c.errors or c.lost or c.duplicates or c.position() != final_events or \
           c.consumed + c.skipped_retention != final_events:
            failures.append(f"consumer {c.name}: consumed {c.consumed} + skipped {c.skipped_retention} of "
                            f"{final_events}, lost {c.lost}, duplicates {c.duplicates}, errors {c.errors}")
        if c.skipped_retention:
            anomalies.append(f"consumer {c.name} fell behind retention: {c.skipped_retention} records deleted "
                             "before it read them")
    pgb = pgbench_figures(pgbench_out)
    if pgb["failed"]:
        failures.append(f"pgbench: {pgb['failed']} failed transactions")
    if last["w_errors"]:
        failures.append(f"worker: {last['w_errors']} errors, last: {last['w_last_error']}")
    persisted_upd = own_stats.get("partition", {}).get("n_tup_upd", 0)
    if last["w_persisted"] > 0 and persisted_upd < last["w_persisted"]:
        anomalies.append(f"the worker's table statistics are not reported: it persisted {last['w_persisted']} "
                         f"stable offsets (UPDATEs of estream.partition), pg_stat_user_tables shows "
                         f"{persisted_upd} updates")
    lines = server_log.splitlines()
    log_problems = [ln for i, ln in enumerate(lines)
                    if (re.search(r"\b(ERROR|WARNING|FATAL|PANIC):", ln) or "still waiting for" in ln
                        or "could not" in ln)
                    # the sampler's own pgstattuple of a segment dropped meanwhile (it retries)
                    and not ("could not open relation with OID" in ln and i + 1 < len(lines)
                             and "pgstattuple" in lines[i + 1])]
    if log_problems:
        anomalies.append(f"{len(log_problems)} errors, warnings or lock waits in the server log")
    max_waiters = max(s["lock_waiters"] for s in samples)
    if max_waiters:
        anomalies.append(f"up to {max_waiters} backends were waiting for a lock at a sample")
    ckpt = [s["t"] for p, s in zip(samples, samples[1:]) if s["checkpoints"] > p["checkpoints"]]
    cpu = [s for s in load if "cpu_busy" in s]
    summary = dict(
        load_seconds=round(load_end, 1),
        steady_state_from=warm,
        acceleration=dict(
            factor=factor, segment_ms=args.segment_ms, retention_ms=args.retention_ms,
            stands_for=dict(segment_ms=round(args.segment_ms * factor), retention_ms=round(args.retention_ms * factor)),
            equivalent_hours=round(equiv_h, 2),
            rolls_per_equivalent_hour=round(topics[TOPIC]["rolls"] / equiv_h, 1) if equiv_h else None,
            deletions_per_equivalent_hour=round(topics[TOPIC]["segments_deleted"] / equiv_h, 1) if equiv_h else None),
        pgbench=pgb,
        topics=topics,
        worker={k[2:]: last[k] for k in last if k.startswith("w_")},
        worker_max_run_ms=max((s["w_last_run_ms"] or 0) for s in samples),
        consumers=consumers,
        max_group_lag=max(s["group_lag"] for s in load),
        max_fetch_lag=max(s["fetch_lag"] for s in load),
        compact_latest_keys=latest_keys,
        max_lock_waiters=max_waiters,
        lock_wait_examples=sorted({e for s in samples for e in s["lock_wait_examples"]})[:10],
        checkpoints_at=ckpt,
        cpu_busy_avg=round(sum(s["cpu_busy"] for s in cpu) / len(cpu), 1) if cpu else None,
        cpu_steal_avg=round(sum(s["cpu_steal"] for s in cpu) / len(cpu), 1) if cpu else None,
        estream_tables_max_dead_tup=max(s["own_dead_tup"] for s in samples),
        estream_tables_max_size=max(s["own_size"] for s in samples),
        estream_tables_stats=own_stats,
        db_size_first=samples[0]["db_size"], db_size_max=max(s["db_size"] for s in samples),
        db_size_final=last["db_size"],
        estream_relations_max=max(s["estream_relations"] for s in samples),
        estream_relations_final=last["estream_relations"],
        server_log_problems=log_problems[:50],
        server_log_problem_count=len(log_problems),
        anomalies=anomalies,
        failures=failures,
    )
    return samples, summary


def print_summary(args, s):
    acc = s["acceleration"]
    print("\nsummary")
    print(f"  load                {s['load_seconds']} s, pgbench -c {args.clients}: {s['pgbench']['transactions']} "
          f"transactions, {s['pgbench']['failed']} failed; steady state from {s['steady_state_from']:g} s")
    print(f"  acceleration        {acc['factor']:g}x: segment.ms {acc['segment_ms']} and retention.ms "
          f"{acc['retention_ms']} stand for {acc['stands_for']['segment_ms'] / 60000:g} min and "
          f"{acc['stands_for']['retention_ms'] / 60000:g} min; {s['load_seconds']} s of load = "
          f"{acc['equivalent_hours']} h of such a topic")
    seg_min, ret_min = acc["stands_for"]["segment_ms"] / 60000, acc["stands_for"]["retention_ms"] / 60000
    print(f"                      per equivalent hour: {acc['rolls_per_equivalent_hour']} rolls, "
          f"{acc['deletions_per_equivalent_hour']} deletions of {TOPIC} (there, an hour is {60 / seg_min:g} rolls "
          f"and as many deletions, {max(0, 60 - ret_min - seg_min) / seg_min:g} in the first hour)")
    for name, t in s["topics"].items():
        sz, lv, tb = t["steady_size"], t["steady_size_without_deleted"], t["steady_segment_tables"]
        print(f"  topic {name} (cleanup.policy {t['cleanup_policy']})")
        print(f"    events produced   {t['events']} ({t['events_per_s']}/s; steady state first half "
              f"{t['events_per_s_first_half']}/s, second half {t['events_per_s_second_half']}/s)")
        print(f"    segments          {t['rolls']} rolls, {t['segments_deleted']} deleted by retention, "
              f"{t['segments_dropped']} dropped; at the end {t['segments_at_end']}")
        print(f"    size              max {mb(t['max_size'])}, final {mb(t['final_size'])}; steady state max "
              f"first half {mb(sz['first'] or 0)}, second half {mb(sz['second'] or 0)}, ratio {sz['ratio']}")
        print(f"    w/o deleted segs  max first half {mb(lv['first'] or 0)}, second half {mb(lv['second'] or 0)}, "
              f"ratio {lv['ratio']}")
        print(f"    segment tables    max first half {(tb['first'] or 1) - 1}, second half {(tb['second'] or 1) - 1}, "
              f"min second half {(tb['second_min'] or 1) - 1}; up to {t['max_deleted_not_dropped']} deleted, "
              f"not yet dropped")
        if "max_retention_late_ms" in t:
            print(f"    retention delay   a sealed segment was deleted at most {t['max_retention_late_ms'] / 1000:.1f} s "
                  f"after retention.ms; a deleted one waited at most {t['max_drop_wait_ms'] / 1000:.1f} s to be dropped")
        print(f"    dead tuples       max n_dead_tup {t['max_n_dead_tup']}, max pgstattuple dead "
              f"{t['max_dead_tuples_pgstattuple']}; updates+deletes {t['tup_upd_del']}; autovacuums of its log "
              f"tables {t['autovacuums_of_log_tables']}")
    w = s["worker"]
    print(f"  worker              runs {w['runs']}, rolled {w['rolled']}, deleted {w['deleted']}, dropped "
          f"{w['dropped']}, compacted {w['compacted']} records, offsets persisted {w['persisted']}, "
          f"errors {w['errors']}{' (' + str(w['last_error']) + ')' if w['last_error'] else ''}, "
          f"longest run seen {s['worker_max_run_ms']} ms")
    for name, c in s["consumers"].items():
        print(f"  consumer {name:15} consumed {c['consumed']}, skipped by retention {c['skipped_by_retention']}, "
              f"lost {c['lost']}, duplicates {c['duplicates']}{', errors ' + str(c['errors']) if c['errors'] else ''}")
    print(f"  lag                 max group lag {s['max_group_lag']}, max fetch reader lag {s['max_fetch_lag']} "
          f"({args.group_members} group member(s), transactions open {args.process_ms} ms after poll())")
    print(f"  compacted topic     {s['compact_latest_keys']} live keys of {KEYS} in estream.latest()")
    print(f"  lock waits          at most {s['max_lock_waiters']} backends waiting at a sample"
          + (f": {s['lock_wait_examples']}" if s["lock_wait_examples"] else ""))
    print(f"  checkpoints         at t = {', '.join(f'{x:.0f}' for x in s['checkpoints_at']) or 'none'}; "
          f"CPU during the load {s['cpu_busy_avg']}% busy, {s['cpu_steal_avg']}% stolen ({os.cpu_count()} CPUs)")
    print(f"  estream's tables    max n_dead_tup {s['estream_tables_max_dead_tup']}, max size "
          f"{mb(s['estream_tables_max_size'])}")
    print(f"  database            {mb(s['db_size_first'])} at start, max {mb(s['db_size_max'])}, final "
          f"{mb(s['db_size_final'])}; relations in schema estream: max {s['estream_relations_max']}, "
          f"final {s['estream_relations_final']}")
    print(f"  server log          {s['server_log_problem_count']} errors/warnings/lock waits")
    for ln in s["server_log_problems"][:10]:
        print(f"    {ln}")
    if s["anomalies"]:
        print("\nanomalies:")
        for a in s["anomalies"]:
            print(f"  - {a}")
    if s["failures"]:
        print("\nsoak FAILED:")
        for f in s["failures"]:
            print(f"  - {f}")
    else:
        print("\nsoak passed: no dead tuples, sizes bounded, nothing lost" +
              (" (growth not judged in a smoke run)" if args.smoke else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=300, help="seconds of load (default 300)")
    ap.add_argument("--segment-ms", type=int, default=2000, help="segment.ms of both topics (default 2000)")
    ap.add_argument("--compact-segment-ms", type=int, default=None, help="segment.ms of the compacted topic "
                    "(default: --segment-ms)")
    ap.add_argument("--retention-ms", type=int, default=10000, help="retention.ms (default 10000)")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--clients", type=int, default=4, help="pgbench clients (default 4)")
    ap.add_argument("--group-members", type=int, default=1,
                    help="threads consuming with poll() in the group (default 1)")
    ap.add_argument("--process-ms", type=int, default=0,
                    help="how long each poll() transaction stays open after poll() returned records (default 0)")
    ap.add_argument("--rate", type=int, default=0, help="pgbench -R: transactions/s (default: as fast as it goes)")
    ap.add_argument("--sample", type=float, default=2.0, help="seconds between samples (default 2)")
    ap.add_argument("--dead-check", type=float, default=10.0,
                    help="seconds between pgstattuple checks of every segment (default 10)")
    ap.add_argument("--settle", type=float, default=11.0,
                    help="seconds to wait after the load for statistics to be flushed (default 11)")
    ap.add_argument("--growth-limit", type=float, default=1.3,
                    help="largest allowed ratio of the size maxima, second half / first half of the steady state")
    ap.add_argument("--out", default="bench/results")
    ap.add_argument("--smoke", action="store_true",
                    help="20 s with segment.ms 1000 and retention.ms 5000, samples every second (for CI)")
    args = ap.parse_args()
    if args.smoke:
        args.seconds, args.segment_ms, args.retention_ms, args.sample = 20, 1000, 5000, 1.0
        args.dead_check = 5.0
    if args.compact_segment_ms is None:
        args.compact_segment_ms = args.segment_ms
    started = time.time()
    samples, summary = run(args)
    print_summary(args, summary)
    os.makedirs(args.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = dict(args=vars(args), started=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started)),
                seconds=round(time.time() - started), cpus=os.cpu_count(), server_settings=SERVER_SETTINGS,
                postgres=subprocess.run([f"{PGBIN}/postgres", "--version"], capture_output=True,
                                        text=True).stdout.strip())
    base = os.path.join(args.out, f"soak-{stamp}")
    with open(base + ".json", "w") as f:
        json.dump(dict(meta=meta, summary=summary, samples=samples), f, indent=1, default=str)
    cols = [k for k in samples[0] if k != "lock_wait_examples"]
    for s in samples:
        cols += [k for k in s if k not in cols and k != "lock_wait_examples"]
    with open(base + ".csv", "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        wr.writeheader()
        wr.writerows(samples)
    print(f"\n{len(samples)} samples in {meta['seconds']} s; written to {base}.json and .csv")
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
