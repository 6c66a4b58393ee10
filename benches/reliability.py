#!/usr/bin/env python3
"""switchboard under a mixed load while its surroundings break.

Starts a release build on a PostgreSQL cluster and a Redis of this script's
own (never the machine's shared ones), a local upstream for /fetch, and a
mixed load (creates, reads, updates, fetches) from several threads; along
the way it injects faults:

  crash drills       db, cache, fetcher, rate_limiter (SWITCHBOARD_CHAOS)
  PostgreSQL         stopped for a few seconds, then started (twice)
  Redis              stopped for ten seconds, then started
  a slow-body client 100 connections trickling POST bodies from 127.0.0.2
  a hung upstream    /fetch URLs whose upstream never answers, for a while

and reports requests answered, answers by status, acknowledged writes lost
(every 201 is looked up in the database at the end: must be 0), the
server's RSS at start and end, and how long each fault took to heal (from
its end to the first success of what it broke).

  python3 benches/reliability.py                 # 10 minutes
  python3 benches/reliability.py --duration 60   # a short run

Needs root (to run PostgreSQL as its user), redis-server, and PostgreSQL's
server binaries. Not part of CI.
"""

import argparse
import collections
import http.client
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(tool):
    versions = sorted(os.listdir("/usr/lib/postgresql"))
    return os.path.join("/usr/lib/postgresql", versions[-1], "bin", tool)


class Cluster:
    """A PostgreSQL cluster of this run's own."""

    def __init__(self, work):
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        shutil.chown(self.dir, "postgres")
        self.port = free_port()
        self.run("initdb", "-A", "trust", "-U", "postgres", "-D", self.data)
        self.ctl("start")

    @property
    def data(self):
        return os.path.join(self.dir, "data")

    def run(self, tool, *args):
        subprocess.run(["runuser", "-u", "postgres", "--", pg_bin(tool), *args],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def ctl(self, action):
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        extra = ["-m", "fast"] if action == "stop" else []
        self.run("pg_ctl", "-w", "-D", self.data, "-o", options,
                 "-l", os.path.join(self.dir, "server.log"), *extra, action)

    def url(self):
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def emails(self):
        out = subprocess.run(
            ["psql", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
             "-d", "postgres", "-c", "SELECT email FROM users"],
            check=True, capture_output=True, text=True).stdout
        return set(out.split())

    def close(self):
        subprocess.run(["runuser", "-u", "postgres", "--", pg_bin("pg_ctl"), "-D", self.data,
                        "-m", "immediate", "stop"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


class Redis:
    def __init__(self, work):
        self.port = free_port()
        self.dir = os.path.join(work, "redis")
        os.makedirs(self.dir)
        self.process = None
        self.start()

    def start(self):
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    def stop(self):
        self.process.terminate()
        self.process.wait()


class Upstream(BaseHTTPRequestHandler):
    """Answers /ok/* at once; /hang/* only after a minute."""

    def do_GET(self):
        if self.path.startswith("/hang/"):
            time.sleep(60)
        body = b"fine"
        try:
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *_):
        pass


class Tally:
    """What the load saw, shared by its threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.statuses = collections.Counter()
        self.problems = collections.Counter()
        self.acknowledged = set()
        self.successes = collections.defaultdict(list)  # kind -> times

    def add(self, kind, status, problem=None):
        with self.lock:
            self.statuses[status] += 1
            if status >= 500 and problem:
                self.problems[(status, problem)] += 1
            if 200 <= status < 300:
                self.successes[kind].append(time.time())

    def first_success_after(self, kind, moment):
        with self.lock:
            later = [t for t in self.successes[kind] if t >= moment]
        return min(later) if later else None


def request(port, method, path, body=None, headers=None, timeout=15):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        all_headers = {"content-type": "application/json", **(headers or {})}
        connection.request(method, path, body=data, headers=all_headers)
        response = connection.getresponse()
        payload = response.read()
        return response.status, payload, dict(response.getheaders())
    except (OSError, http.client.HTTPException):
        return 0, b"", {}
    finally:
        connection.close()


def problem_type(payload):
    try:
        return json.loads(payload).get("type")
    except ValueError:
        return None


def load(port, upstream_port, tally, stop, lane, hang):
    n = 0
    ids = []
    while not stop.is_set():
        n += 1
        choice = random.random()
        if choice < 0.25 or not ids:
            email = f"r{lane}-{n}@example.com"
            status, payload, _ = request(port, "POST", "/users",
                                         {"name": f"Load {lane}", "email": email})
            if status == 201:
                ids.append(json.loads(payload)["id"])
                with tally.lock:
                    tally.acknowledged.add(email)
            tally.add("write", status, problem_type(payload))
        elif choice < 0.75:
            status, payload, headers = request(port, "GET", f"/users/{random.choice(ids)}")
            tally.add("read", status, problem_type(payload))
            if status == 200 and "ratelimit" in {k.lower() for k in headers}:
                tally.add("limited", 200)
        elif choice < 0.9:
            status, payload, _ = request(port, "PATCH", f"/users/{random.choice(ids)}",
                                         {"name": f"Renamed {n}"})
            tally.add("write", status, problem_type(payload))
        else:
            path = "hang" if hang.is_set() else "ok"
            url = f"http://127.0.0.1:{upstream_port}/{path}/{lane}-{n % 50}"
            status, payload, _ = request(port, "POST", "/fetch", {"urls": [url]})
            if status == 200 and json.loads(payload)[0]["success"]:
                tally.add("fetch", 200)
            else:
                tally.add("fetch-failed", status, problem_type(payload))


def trickle(port, seconds):
    """100 connections from 127.0.0.2, each sending one byte of a body."""
    sockets = []
    for _ in range(100):
        try:
            s = socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.2", 0))
            s.sendall(b"POST /users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{")
            sockets.append(s)
        except OSError:
            pass
    time.sleep(seconds)
    for s in sockets:
        s.close()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument("--threads", type=int, default=12)
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    work = tempfile.mkdtemp(prefix="switchboard-reliability-")
    os.chmod(work, 0o755)  # PostgreSQL's user must reach its folder inside
    cluster = Cluster(work)
    redis = Redis(work)
    upstream_port = free_port()
    upstream = ThreadingHTTPServer(("127.0.0.1", upstream_port), Upstream)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    port = free_port()
    env = dict(os.environ,
               SWITCHBOARD_BIND=f"127.0.0.1:{port}", DATABASE_URL=cluster.url(),
               SWITCHBOARD_CHAOS="true", RUST_LOG="warn",
               SWITCHBOARD_RATE_LIMIT_BACKEND="redis",
               SWITCHBOARD_REDIS_URL=f"redis://127.0.0.1:{redis.port}",
               SWITCHBOARD_RATE_LIMIT_PER_SECOND="100000", SWITCHBOARD_RATE_LIMIT_BURST="100000",
               SWITCHBOARD_FETCH_ALLOW_HOSTS=f"127.0.0.1:{upstream_port}",
               SWITCHBOARD_FETCH_TIMEOUT_MS="2000", SWITCHBOARD_REQUEST_TIMEOUT_MS="10000",
               SWITCHBOARD_BODY_READ_TIMEOUT_MS="3000")
    log = open(os.path.join(work, "switchboard.log"), "w")
    server = subprocess.Popen([os.path.join(ROOT, "target/release/switchboard")], env=env,
                              stdout=log, stderr=log)
    try:
        deadline = time.time() + 30
        while request(port, "GET", "/health")[0] != 200:
            if time.time() > deadline or server.poll() is not None:
                raise SystemExit("switchboard did not start; see " + log.name)
            time.sleep(0.1)
        time.sleep(1)
        rss_start = rss_kib(server.pid)
        tally, stop, hang = Tally(), threading.Event(), threading.Event()
        threads = [threading.Thread(target=load, args=(port, upstream_port, tally, stop, lane, hang))
                   for lane in range(args.threads)]
        for thread in threads:
            thread.start()
        healed = []
        started = time.time()

        def at(fraction):
            time.sleep(max(0, started + args.duration * fraction - time.time()))

        def drill(actor, kind):
            request(port, "POST", f"/debug/crash/{actor}")
            healed.append((f"crash drill: {actor}", kind, time.time()))

        def restart_postgres():
            cluster.ctl("stop")
            time.sleep(5)
            cluster.ctl("start")
            healed.append(("PostgreSQL stopped 5 s", "write", time.time()))

        at(0.10); drill("db", "read")
        at(0.20); restart_postgres()
        at(0.35)
        redis.stop(); time.sleep(10); redis.start()
        healed.append(("Redis stopped 10 s", "limited", time.time()))
        at(0.50); drill("cache", "read"); drill("fetcher", "fetch")
        at(0.60); trickle(port, 20)
        healed.append(("slow-body client, 20 s", "write", time.time()))
        at(0.70); hang.set(); time.sleep(20); hang.clear()
        healed.append(("upstream hung 20 s", "fetch", time.time()))
        at(0.80); restart_postgres()
        at(0.90); drill("rate_limiter", "limited")
        at(1.0)
        stop.set()
        for thread in threads:
            thread.join()
        time.sleep(2)
        rss_end = rss_kib(server.pid)
        stored = cluster.emails()
        lost = len(tally.acknowledged - stored)

        total = sum(tally.statuses.values())
        print(f"\n{args.duration:.0f} s of load, {args.threads} threads: {total} requests answered\n")
        print("| status | answers |\n| --- | ---: |")
        for status, count in sorted(tally.statuses.items()):
            print(f"| {status or 'no answer'} | {count} |")
        print("\n| 5xx by kind | answers |\n| --- | ---: |")
        for (status, kind), count in sorted(tally.problems.items()):
            print(f"| {status} {kind} | {count} |")
        print(f"\nacknowledged writes: {len(tally.acknowledged)}, lost: {lost}")
        print(f"RSS: {rss_start} KiB at start, {rss_end} KiB at the end "
              f"({rss_end / max(rss_start, 1):.2f}x)\n")
        print("| fault | healed after |\n| --- | ---: |")
        for name, kind, ended in healed:
            first = tally.first_success_after(kind, ended)
            after = f"{first - ended:.2f} s" if first else "not within the run"
            print(f"| {name} | {after} |")
        if lost:
            sys.exit(1)
    finally:
        server.terminate()
        server.wait()
        upstream.shutdown()
        redis.stop()
        cluster.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
