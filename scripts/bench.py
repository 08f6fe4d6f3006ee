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
"""


def workloads(quick):
    """(name, clients, events per transaction, reference name or None, pgbench script)"""
    w = []
    for clients in ([8] if quick else [1, 8]):
        w.append(("insert 1/tx", clients, 1, None,
                  "\\set id random(1, 1000000000)\n"
                  f"INSERT INTO ref_log (partition, key, value) VALUES (:id % 8, 'k' || :id, {VALUE_SQL});\n"))
        w.append(("produce 1/tx keyed", clients, 1, "insert 1/tx",
                  "\\set id random(1, 1000000000)\n"
                  f"SELECT estream.produce('bench', {VALUE_SQL}, 'k' || :id);\n"))
        w.append(("produce 1/tx unkeyed", clients, 1, "insert 1/tx",
                  "\\set id random(1, 1000000000)\n"
                  f"SELECT estream.produce('bench', {VALUE_SQL});\n"))
        for n in ([100] if quick else [100, 1000]):
            w.append((f"insert {n}/tx", clients, n, None,
                      "\\set id random(1, 1000000000)\n"
                      f"INSERT INTO ref_log (partition, key, value) SELECT (:id + g) % 8, 'k' || (:id + g), "
                      f"{VALUE_ROW_SQL} FROM generate_series(1, {n}) g;\n"))
            w.append((f"produce_batch {n}/tx keyed", clients, n, f"insert {n}/tx",
                      "\\set id random(1, 1000000000)\n"
                      f"SELECT count(*) FROM estream.produce_batch('bench', "
                      f"ARRAY(SELECT {VALUE_ROW_SQL} FROM generate_series(1, {n}) g), "
                      f"ARRAY(SELECT 'k' || (:id + g) FROM generate_series(1, {n}) g));\n"))
    return w


def run(args):
    quick = args.mode == "quick"
    seconds = args.seconds or (5 if quick else 15)
    runs = max(3, args.runs)
    results = []
    workdir = tempfile.mkdtemp(prefix="estream-bench-")
    for sync in ([True] if quick else [True, False]):
        inst = Instance(os.path.join(workdir, "sync" if sync else "async"), sync)
        os.makedirs(inst.root)
        inst.start()
        try:
            for partitions in ([8] if quick else [1, 8]):
                inst.psql(SETUP_SQL.format(partitions=partitions))
                groups = {}
                for wl in workloads(quick):
                    groups.setdefault((wl[1], wl[3] or wl[0]), []).append(wl)
                for (_clients, _ref), members in groups.items():
                    samples = {m[0]: [] for m in members}
                    for _ in range(runs):
                        for name, clients, per_tx, _r, script in members:
                            tps = inst.pgbench(script, clients, seconds, workdir)
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
        finally:
            inst.stop()
    shutil.rmtree(workdir, ignore_errors=True)
    return results


HEADER = f"{'workload':28} {'sync':>4} {'parts':>5} {'clients':>7} {'events/s':>10} {'min':>10} {'max':>10} {'ratio':>7}  reference"


def print_row(row):
    if not getattr(print_row, "done", False):
        print(HEADER)
        print("-" * len(HEADER))
        print_row.done = True
    ratio = f"{row['ratio']:.2f}x" if row["ratio"] is not None else ""
    print(f"{row['workload']:28} {row['synchronous_commit']:>4} {row['partitions']:>5} {row['clients']:>7} "
          f"{row['events_per_s_median']:>10.0f} {row['min']:>10.0f} {row['max']:>10.0f} {ratio:>7}  {row['reference']}",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=["quick", "full"], default=os.environ.get("BENCH_MODE", "quick"))
    ap.add_argument("--seconds", type=int, default=0, help="seconds per pgbench run")
    ap.add_argument("--runs", type=int, default=3, help="runs per workload (at least 3)")
    ap.add_argument("--out", default="bench/results")
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
        wr = csv.DictWriter(f, fieldnames=list(results[0].keys()))
        wr.writeheader()
        wr.writerows(results)
    print(f"\n{len(results)} rows in {meta['seconds']} s; written to {args.out}/bench-{stamp}.json and .csv")


if __name__ == "__main__":
    sys.exit(main())
