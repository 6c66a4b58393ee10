#!/usr/bin/env python3
"""switchboard's benchmark suite: one command, one table.

Builds release binaries, then for PostgreSQL and for SQLite in turn creates a
fresh database, seeds 10,000 users through the API, and measures every
scenario with wrk on loopback against three servers sharing that database
(`delete`, on PostgreSQL only, deletes users inserted for each run):

  switchboard         the release binary, every guard and metrics on
  switchboard, no cache   the same with SWITCHBOARD_CACHE_MAX_ENTRIES=0
  baseline            benches/baseline.rs: bare actix-web, the same queries
                      on a plain pool (no actors, cache, limiter, metrics)

and a hand-written yardstick, as an actix-web user would write the route:

  tokio-postgres      benches/bare_postgres.rs (PostgreSQL only): the users
                      routes on tokio-postgres + deadpool-postgres, every
                      statement prepared once per connection
  actix-governor      benches/governed.rs: GET /hello behind actix-governor,
                      keyed by the same client address at the same allowance

and, on PostgreSQL, pgbench -M prepared running the same statements: the
database's ceiling for one row per statement. Scenarios, connection counts
and servers alternate within each pass, the servers in reverse order every
other pass, so a noisy machine hits them all alike; each figure is the
median of the passes, with min-max.

Every request claims a random client address (X-Forwarded-For, with
SWITCHBOARD_TRUST_PROXY=true), so switchboard's rate limiter runs at its
default allowance against many clients, as behind a load balancer.

  python3 benches/suite.py                 # 3 passes of 10 s, 64 and 256 connections
  python3 benches/suite.py --smoke         # one 1 s pass: checks it runs and reports
  python3 benches/suite.py --backends postgres --passes 5
  python3 benches/suite.py --backends sqlite --only hello --pin   # steadier A/B of one route

Needs wrk, and psql + pgbench for PostgreSQL (Debian: wrk, postgresql-client).
Exits non-zero if a run fails or any request fails.
"""

import argparse
import concurrent.futures
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHES = os.path.join(ROOT, "benches")
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
PG_DATABASE = "switchboard_bench"
USERS = 10_000
# More than any server deletes in a second: each run of `delete` gets this
# many users per second of its length.
DELETES_PER_SECOND = 60_000
# Seconds for the writes a stopped wrk left in flight to land.
WRITES_SETTLE = 1
# How servers and wrk are started; --pin puts them on a CPU each.
SERVER_PREFIX, LOAD_GENERATOR = [], ["wrk", "-t2"]


class Scenario:
    """One row group of the table: what wrk asks, of which switchboard, and
    what it is compared with (the baseline's row, a pgbench script)."""

    def __init__(self, name, script, server="switchboard", baseline=None, pgbench=None,
                 yardstick="tokio-postgres", backends=("postgres", "sqlite")):
        self.name, self.script, self.server, self.pgbench = name, script, server, pgbench
        self.baseline = baseline or name
        self.yardstick = yardstick
        self.backends = backends


SCENARIOS = [
    Scenario("GET /hello", "hello", yardstick="actix-governor"),
    Scenario("GET /health", "health"),
    Scenario("GET /users/{id} cached", "get", baseline="GET /users/{id}", pgbench="get"),
    Scenario("GET /users/{id} no cache", "get", server="switchboard, no cache",
             baseline="GET /users/{id}"),
    Scenario("GET /users?limit=50", "list", pgbench="list"),
    Scenario("POST /users", "create", pgbench="create"),
    Scenario("PATCH /users/{id}", "update", pgbench="update"),
    Scenario("PATCH /users/{id} If-Match", "conditional"),
    Scenario("DELETE /users/{id}", "delete", backends=("postgres",)),
    Scenario("mixed 90% GET / 10% PATCH", "mixed"),
]


def selected(args, backend=None):
    return [s for s in SCENARIOS if args.only in s.name
            and (backend is None or backend in s.backends)]


def main():
    args = parse_args()
    for tool in ["wrk"] + (["psql", "pgbench"] if "postgres" in args.backends else []):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian: apt-get install wrk postgresql-client)")
    binaries = build()
    if args.switchboard:
        binaries["switchboard"] = os.path.abspath(args.switchboard)
    rows, checks = [], []
    for backend in args.backends:
        with Bench(backend, binaries, args) as bench:
            rows += bench.run()
            checks += bench.memory_checks()
    print_report(rows, checks, args)
    failures = [r for r in rows if r["errors"]]
    if failures:
        sys.exit(f"{len(failures)} runs had failed requests")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one 1 s pass: checks the suite runs")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each run")
    parser.add_argument("--connections", default="64,256")
    parser.add_argument("--backends", default="postgres,sqlite")
    parser.add_argument("--switchboard", help="measure this switchboard binary instead "
                        "(an earlier build, for before/after figures)")
    parser.add_argument("--only", default="", help="scenarios whose name contains this text")
    parser.add_argument("--settle", type=int, default=60, help="seconds before RSS is read again")
    parser.add_argument("--pgbench-clients", type=int, default=16,
                        help="pgbench clients: the pool's size, the most connections switchboard uses")
    parser.add_argument("--pin", action="store_true",
                        help="servers on CPU 0, wrk (one thread) on CPU 1: less noise from the "
                        "scheduler when comparing builds on a route that does not wait for the "
                        "database (which stays unpinned)")
    args = parser.parse_args()
    if args.pin:
        SERVER_PREFIX[:] = ["taskset", "-c", "0"]
        LOAD_GENERATOR[:] = ["taskset", "-c", "1", "wrk", "-t1"]
    if args.smoke:
        args.passes, args.duration, args.warmup, args.settle = 1, 1, 0, 2
    args.connections = [int(c) for c in args.connections.split(",")]
    args.backends = args.backends.split(",")
    return args


def build():
    """Release binaries of switchboard and the baseline; their paths."""
    output = subprocess.run(
        ["cargo", "build", "--release", "--locked", "--bin", "switchboard", "--bench", "baseline",
         "--bench", "bare_postgres", "--bench", "governed", "--bench", "collector",
         "--message-format=json-render-diagnostics"],
        cwd=ROOT, check=True, stdout=subprocess.PIPE, text=True).stdout
    paths = {}
    for line in output.splitlines():
        message = json.loads(line)
        if message.get("reason") == "compiler-artifact" and message.get("executable"):
            paths[message["target"]["name"]] = message["executable"]
    return paths


class Server:
    """One server process on a port of its own, with its memory readings."""

    def __init__(self, name, command, env, port, log_path):
        self.name, self.port = name, port
        self.log = open(log_path, "w")
        self.process = subprocess.Popen(command, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).read()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        sys.exit(f"{name} did not start; see {log_path}")

    def memory_kib(self, field):
        with open(f"/proc/{self.process.pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"no {field} for {self.name}")

    def cpu_seconds(self):
        """The CPU time (user and system) the server has used so far."""
        with open(f"/proc/{self.process.pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def reset_peak(self):
        """Starts a new peak RSS (VmHWM) reading."""
        with open(f"/proc/{self.process.pid}/clear_refs", "w") as clear:
            clear.write("5")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


class Bench:
    """One backend's database, servers and runs."""

    def __init__(self, backend, binaries, args):
        self.backend, self.binaries, self.args = backend, binaries, args
        self.work = tempfile.mkdtemp(prefix=f"switchboard-bench-{backend}-")
        self.servers = {}
        self.runs = {}  # (server, scenario, connections) -> [measurements]
        self.url = fresh_database(backend, self.work)

    def __enter__(self):
        env = server_env(self.url)
        self.start("switchboard", self.binaries["switchboard"], env, 18410)
        seed(18410)
        self.start("switchboard, no cache", self.binaries["switchboard"],
                   dict(env, SWITCHBOARD_CACHE_MAX_ENTRIES="0"), 18411)
        self.start("baseline", self.binaries["baseline"], env, 18412)
        self.start("actix-governor", self.binaries["governed"], env, 18413)
        if self.backend == "postgres":
            self.start("tokio-postgres", self.binaries["bare_postgres"], env, 18414)
        # Warm every server up (pools filled, buffers grown) before its idle
        # RSS is taken: what is compared a minute after the load is that.
        lua = os.path.join(BENCHES, "load.lua")
        for name, server in self.servers.items():
            script = "hello" if name == "actix-governor" else "mixed"
            wrk(load_env(script), max(self.args.connections), 2, lua,
                f"http://127.0.0.1:{server.port}")
        time.sleep(2)
        self.rss_before = {name: s.memory_kib("VmRSS") for name, s in self.servers.items()}
        return self

    def start(self, name, binary, env, port):
        env = dict(env, SWITCHBOARD_BIND=f"127.0.0.1:{port}")
        log = os.path.join(self.work, name.replace(", ", "-").replace(" ", "-") + ".log")
        self.servers[name] = Server(name, SERVER_PREFIX + [binary], env, port, log)

    def __exit__(self, *_):
        for server in self.servers.values():
            server.stop()
        drop_database(self.backend)
        shutil.rmtree(self.work, ignore_errors=True)

    def run(self):
        for number in range(1, self.args.passes + 1):
            print(f"[{self.backend}] pass {number} of {self.args.passes}", file=sys.stderr)
            measured = set()
            for scenario in selected(self.args, self.backend):
                for connections in self.args.connections:
                    turn = [(scenario.server, scenario.name)]
                    for other in ("baseline", scenario.yardstick):
                        if other in self.servers and (other, scenario.baseline, connections) \
                                not in measured:
                            measured.add((other, scenario.baseline, connections))
                            turn.append((other, scenario.baseline))
                    # Every other pass takes the servers in reverse, so none
                    # always runs first on a machine that is warming up.
                    for name, label in turn if number % 2 else reversed(turn):
                        self.measure(name, label, scenario.script, connections)
                if scenario.pgbench and self.backend == "postgres":
                    self.measure_pgbench(scenario.baseline, scenario.pgbench)
        return self.rows()

    def measure(self, name, scenario, script, connections):
        server = self.servers[name]
        url = f"http://127.0.0.1:{server.port}"
        lua = os.path.join(BENCHES, "load.lua")

        def run(seconds):
            env = load_env(script, f"{name.split(',')[0]}{connections}")
            if script == "delete":
                env["FIRST"] = str(self.doomed(seconds))
            if script == "conditional":
                # wrk stops with requests in flight, and the server still
                # writes them: they must land before this run reads its first
                # ETags, or its next patch of that user is rightly a 412.
                time.sleep(WRITES_SETTLE)
            return wrk(env, connections, seconds, lua, url)
        if self.args.warmup:
            run(self.args.warmup)
        server.reset_peak()
        result = run(self.args.duration)
        result["peak_rss_kib"] = server.memory_kib("VmHWM")
        self.runs.setdefault((name, scenario, connections), []).append(result)

    def doomed(self, seconds):
        """Users for one run of `delete` to delete, made anew after what the
        last run left is removed: the first one's id (the rest follow)."""
        psql(self.url, "DELETE FROM users WHERE name = 'Doomed'")
        made = (f"INSERT INTO users (name, email, email_key, created_at, updated_at) "
                f"SELECT 'Doomed', 'doomed' || n || '@example.com', 'doomed' || n || "
                f"'@example.com', now(), now() FROM generate_series(1, "
                f"{DELETES_PER_SECOND * seconds}) AS n RETURNING id")
        return int(psql(self.url, f"WITH made AS ({made}) SELECT min(id) FROM made"))

    def measure_pgbench(self, scenario, script):
        result = pgbench(self.url, os.path.join(BENCHES, "pgbench", script + ".sql"),
                         self.args.pgbench_clients, self.args.duration, self.work)
        self.runs.setdefault(("pgbench", scenario, self.args.pgbench_clients), []).append(result)

    def rows(self):
        rows = []
        for (name, scenario, connections), results in self.runs.items():
            rates = [r["rps"] for r in results]
            rows.append({
                "backend": self.backend, "server": name, "scenario": scenario,
                "connections": connections, "rps": statistics.median(rates),
                "rps_min": min(rates), "rps_max": max(rates),
                "p50": statistics.median(r["p50"] for r in results),
                "p99": statistics.median(r["p99"] for r in results),
                "errors": sum(r["errors"] for r in results),
                "peak_rss_kib": max((r["peak_rss_kib"] for r in results if r["peak_rss_kib"]),
                                    default=None),
            })
        return rows

    def memory_checks(self):
        """RSS a while after the load stopped, against RSS before it."""
        time.sleep(self.args.settle)
        checks = []
        for name, server in self.servers.items():
            if not name.startswith("switchboard"):
                continue
            checks.append({
                "backend": self.backend, "server": name,
                "before_kib": self.rss_before[name], "after_kib": server.memory_kib("VmRSS"),
                "peak_kib": server.memory_kib("VmHWM"),
            })
        return checks


def fresh_database(backend, work):
    """A new, empty database for the backend (SQLite's file in `work`): its URL."""
    if backend == "postgres":
        drop_database(backend)
        psql(PG_ADMIN, f"CREATE DATABASE {PG_DATABASE}")
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + PG_DATABASE
    return os.path.join(work, "switchboard.db")


def drop_database(backend):
    """SQLite's file goes with its folder; PostgreSQL's database is dropped."""
    if backend == "postgres":
        psql(PG_ADMIN, f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")


def server_env(url):
    """How every server is run: on `url`, quiet, trusting X-Forwarded-For."""
    return dict(os.environ, DATABASE_URL=url, RUST_LOG="warn",
                SWITCHBOARD_LOG_FORMAT="json", SWITCHBOARD_TRUST_PROXY="true")


def load_env(script, tag=""):
    """wrk's environment for one run of a load.lua scenario. The TAG keeps
    every run's new emails apart from every other run's."""
    return dict(os.environ, SCENARIO=script, USERS=str(USERS),
                TAG=f"{tag}x{time.monotonic_ns()}")


def psql(url, sql):
    """Runs `sql`; what it printed."""
    return subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql], check=True,
                          stdout=subprocess.PIPE, text=True).stdout.strip()


def seed(port, users=USERS, clients=8):
    """Creates users 1..N through the API, from a few keep-alive clients."""
    def create(numbers):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for n in numbers:
            body = json.dumps({"name": f"User {n}", "email": f"user{n}@example.com"})
            # A client address of its own per user: seeding stays inside the
            # rate limiter's default allowance.
            headers = {"content-type": "application/json",
                       "x-forwarded-for": f"10.200.{n // 250}.{n % 250 + 1}"}
            connection.request("POST", "/users", body, headers)
            response = connection.getresponse()
            response.read()
            if response.status != 201:
                raise RuntimeError(f"seeding user {n}: HTTP {response.status}")
    # The database is fresh, so ids 1..N all exist once every client is done.
    # A client's failure is raised here: no run may start on a partial seed.
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(create, (range(i, users + 1, clients) for i in range(1, clients + 1))))


def seed_by_copy(url, users):
    """Users 1..N, user{n}@example.com, in one COPY with triggers off (no
    server is listening yet), then analysed as autovacuum would."""
    copy = subprocess.Popen(
        ["psql", url, "-v", "ON_ERROR_STOP=1", "-q",
         "-c", "SET session_replication_role = replica",
         "-c", "\\copy users (name, email, email_key, created_at, updated_at) FROM pstdin"],
        stdin=subprocess.PIPE, text=True)
    chunk = 50_000
    for first in range(1, users + 1, chunk):
        copy.stdin.write("".join(
            f"User {n}\tuser{n}@example.com\tuser{n}@example.com\t"
            "2026-01-01 00:00:00\t2026-01-01 00:00:00\n"
            for n in range(first, min(first + chunk, users + 1))))
    copy.stdin.close()
    if copy.wait() != 0:
        raise RuntimeError("seeding by COPY failed")
    psql(url, "VACUUM ANALYZE users")


def wrk(env, connections, seconds, script, url):
    # A response within switchboard's request deadline (30 s) is an answer,
    # however slow; wrk's own 2 s timeout would count SQLite's slowest
    # commits as failed requests.
    output = subprocess.run(
        LOAD_GENERATOR + [f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "--latency",
                          "-s", script, url],
        env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not rps:
        raise RuntimeError("wrk printed no rate:\n" + output)
    non_2xx = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", output))
    errors = non_2xx
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if socket:
        errors += sum(int(n) for n in socket.groups())
    requests = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m),", output)
    return {"rps": float(rps.group(1)), "p50": wrk_latency_ms(output, r"50%"),
            "p99": wrk_latency_ms(output, r"99%"),
            "max": wrk_latency_ms(output, r"Latency(?:\s+\S+){2}"),
            "errors": errors, "non_2xx": non_2xx, "requests": int(requests.group(1)),
            "seconds": float(requests.group(2)) * {"ms": 0.001, "s": 1, "m": 60}[requests.group(3)]}


def wrk_latency_ms(output, label):
    """A latency wrk printed after LABEL (a quantile, or the thread stats'
    maximum), in ms."""
    value, unit = re.search(rf"^\s+{label}\s+([\d.]+)(us|ms|s)\b", output, re.M).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def pgbench(url, script, clients, seconds, work):
    """pgbench -M prepared on one script; latencies from its transaction log."""
    logs = os.path.join(work, "pgbench")
    shutil.rmtree(logs, ignore_errors=True)
    os.makedirs(logs)
    output = subprocess.run(
        ["pgbench", "-n", "-M", "prepared", f"-c{clients}", "-j2", f"-T{seconds}", "-f", script,
         "--log", f"--log-prefix={logs}/log", url],
        check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    tps = re.search(r"tps = ([\d.]+) \(without initial connection time\)", output)
    failed = re.search(r"number of failed transactions: (\d+)", output)
    latencies = sorted(int(line.split()[2]) for name in os.listdir(logs)
                       for line in open(os.path.join(logs, name)))
    quantile = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000
    return {"rps": float(tps.group(1)), "p50": quantile(0.50), "p99": quantile(0.99),
            "errors": int(failed.group(1)) if failed else 0, "peak_rss_kib": None}


def print_report(rows, checks, args):
    pinned = ", servers on CPU 0 and wrk on CPU 1" if args.pin else ""
    print(f"\n{args.passes} passes of {args.duration} s after {args.warmup} s of warm-up, "
          f"{' '.join(LOAD_GENERATOR[-2:])}{pinned}, "
          f"pgbench -M prepared -c{args.pgbench_clients} -j2; req/s: median (min-max) of passes; "
          "p50/p99 in ms: medians; RSS: peak (VmHWM) over the passes; x hand-written: against "
          "tokio-postgres (the users routes) or actix-governor (GET /hello)\n")
    header = ["backend", "scenario", "server", "conns", "req/s (min-max)", "p50", "p99", "errors",
              "peak RSS", "x baseline", "x hand-written", "x pgbench", "p99 x baseline",
              "p99 x hand-written"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    index = {(r["backend"], r["server"], r["scenario"], r["connections"]): r for r in rows}
    ratio = lambda mine, theirs, key: f"{mine[key] / theirs[key]:.2f}" if theirs else ""
    for backend in args.backends:
        printed = set()
        for scenario in selected(args, backend):
            others = ("baseline", scenario.yardstick, "pgbench")
            ours = [r for r in rows if (r["backend"], r["server"], r["scenario"])
                    == (backend, scenario.server, scenario.name)]
            theirs = [r for r in rows if r["backend"] == backend and r["server"] in others
                      and r["scenario"] == scenario.baseline
                      and (r["server"], r["scenario"]) not in printed]
            printed.update((r["server"], r["scenario"]) for r in theirs)
            for row in sorted(ours, key=lambda r: r["connections"]) + theirs:
                base = index.get((backend, "baseline", scenario.baseline, row["connections"]))
                hand = index.get((backend, scenario.yardstick, scenario.baseline,
                                  row["connections"]))
                pg = index.get((backend, "pgbench", scenario.baseline, args.pgbench_clients))
                if not row["server"].startswith("switchboard"):
                    base = hand = pg = None
                print("| " + " | ".join([
                    backend, row["scenario"], row["server"], str(row["connections"]),
                    f"{row['rps']:,.0f} ({row['rps_min']:,.0f}-{row['rps_max']:,.0f})",
                    f"{row['p50']:.2f}", f"{row['p99']:.2f}", str(row["errors"]),
                    f"{row['peak_rss_kib'] / 1024:.1f} MiB" if row["peak_rss_kib"] else "-",
                    ratio(row, base, "rps"), ratio(row, hand, "rps"), ratio(row, pg, "rps"),
                    ratio(row, base, "p99"), ratio(row, hand, "p99"),
                ]) + " |")
    print(f"\nRSS idle after a warm-up (before), at its peak, and {args.settle} s after the "
          "load stopped (after):\n")
    print("| backend | server | before | peak | after | after / before |")
    print("| --- | --- | --- | --- | --- | --- |")
    for c in checks:
        print(f"| {c['backend']} | {c['server']} | {c['before_kib'] / 1024:.1f} MiB "
              f"| {c['peak_kib'] / 1024:.1f} MiB | {c['after_kib'] / 1024:.1f} MiB "
              f"| {c['after_kib'] / c['before_kib']:.2f} |")


if __name__ == "__main__":
    main()
