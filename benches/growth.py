#!/usr/bin/env python3
"""How switchboard's figures grow with load and with data: tables and plots.

Two studies, each on a fresh PostgreSQL database seeded with COPY (not
through the API), against the release binary with every guard and metrics
on, driven by wrk on loopback with a random client address per request (as
benches/suite.py does):

  connections   10,000 users; cached and uncached GET /users/{id}, POST
                /users and the mixed scenario at 16 to 4,096 connections:
                goodput (2xx answers per second), p50/p99, the slowest
                answer, what was shed (non-2xx) or failed, peak RSS, and
                the CPU time the server spent per 2xx answer and wrk per
                answer. Past SWITCHBOARD_MAX_IN_FLIGHT the server sheds
                with 503: goodput must hold, and no answer may come past
                the request deadline. The bare actix-web yardstick's
                GET /health (benches/baseline.rs) runs alongside: the
                machine's own curve, what the connections alone cost.
  users         10,000 and then 1,000,000 users at 64 connections: a page of
                GET /users deep in the table, GET /users?email=, and
                uncached GET /users/{id} (p99 against 10,000 users); then
                cached GET /users/{id} over every user, a working set larger
                than the cache's SWITCHBOARD_CACHE_MAX_ENTRIES: its hit rate
                (from /metrics) and RSS.

Each figure is the median of the passes. Prints Markdown tables and, with
--plots, writes one PNG per study into that folder (needs matplotlib, e.g.
`python3 -m venv target/bench-venv && target/bench-venv/bin/pip install
matplotlib`, then run this script with target/bench-venv/bin/python).

  python3 benches/growth.py --plots docs/growth      # both studies, 3 passes of 10 s
  python3 benches/growth.py --only users --passes 1
  python3 benches/growth.py --smoke                  # one short pass, 1,000 users

Needs wrk and psql (Debian: wrk, postgresql-client). Exits non-zero if a
connection fails outright or an answer comes past the deadline, or if the
users study (64 connections, under the in-flight cap) gets any answer but
a 2xx.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import suite

# Connections to wrk at once: enough for 4,096 connections, wrk's and the
# server's own ends both on this machine.
resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)

DEADLINE_MS = 30_000
MACHINE_CURVE = "GET /health, bare actix-web"
CORES = os.cpu_count()
CONNECTIONS_USERS = 10_000
LOAD = os.path.join(suite.BENCHES, "load.lua")
# (label, load.lua scenario, server)
CONNECTION_SCENARIOS = [
    ("GET /users/{id} cached", "get", "cached"),
    ("GET /users/{id} no cache", "get", "no cache"),
    ("POST /users", "create", "cached"),
    ("mixed 90% GET / 10% PATCH", "mixed", "cached"),
    # The machine's own curve: what the connections alone cost a server
    # that does nothing with a request (plain actix-web, no guards, nothing
    # to shed), with wrk on the same cores.
    (MACHINE_CURVE, "health", "bare"),
]
USER_SCENARIOS = [
    ("GET /users?after=&limit=50 (last tenth)", "deep"),
    ("GET /users?email=", "email"),
    ("GET /users/{id} no cache", "get"),
]


def main():
    args = parse_args()
    for tool in ("wrk", "psql"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian: apt-get install wrk postgresql-client)")
    binaries = suite.build()
    binary = os.path.abspath(args.switchboard or binaries["switchboard"])
    plots = None
    if args.plots:
        plots = plotter(args.plots)
    late = []
    if "connections" in args.only:
        rows = connections_study(binary, binaries["baseline"], args)
        print_connections(rows, args)
        late += [r for r in rows if r["max"] > DEADLINE_MS or r["socket"]]
        if plots:
            plots.connections(rows)
    if "users" in args.only:
        rows, cache = users_study(binary, args)
        print_users(rows, cache, args)
        late += [r for r in rows + cache if r["max"] > DEADLINE_MS or r["socket"] or r["shed"]]
        if plots:
            plots.users(rows)
    if late:
        sys.exit(f"{len(late)} runs had an answer past the deadline or a failed connection, "
                 "or at 64 connections an answer that was not a 2xx")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="connections,users",
                        help="studies to run: connections, users or both")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each run")
    parser.add_argument("--connections", default="16,64,256,1024,4096")
    parser.add_argument("--users", default="10000,1000000", help="table sizes for the users study")
    parser.add_argument("--plots", help="folder for the PNG plots (needs matplotlib)")
    parser.add_argument("--switchboard", help="measure this switchboard binary, not a new build")
    parser.add_argument("--smoke", action="store_true", help="one short pass: checks it runs")
    args = parser.parse_args()
    if args.smoke:
        args.passes, args.duration, args.warmup = 1, 1, 0
        args.connections, args.users = "16,256", "1000,2000"
    args.only = args.only.split(",")
    args.connections = [int(c) for c in args.connections.split(",")]
    args.users = [int(n) for n in args.users.split(",")]
    return args


class Study:
    """A fresh database seeded with USERS users, and servers on it."""

    def __init__(self, users, servers):
        self.work = tempfile.mkdtemp(prefix="switchboard-growth-")
        self.url = suite.fresh_database("postgres", self.work)
        env = suite.server_env(self.url)
        # The first server is a switchboard: it migrates the database.
        binary = next(iter(servers.values()))[0]
        subprocess.run([binary, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
        suite.seed_by_copy(self.url, users)
        self.users = users
        self.servers = {}
        for port, (name, (binary, overrides)) in enumerate(servers.items(), start=18420):
            self.servers[name] = suite.Server(
                name, [binary], dict(env, SWITCHBOARD_BIND=f"127.0.0.1:{port}", **overrides),
                port, os.path.join(self.work, name.replace(" ", "-") + ".log"))

    def measure(self, server, script, connections, args):
        """One warmed-up wrk run; its figures and the server's peak RSS."""
        server = self.servers[server]
        url = f"http://127.0.0.1:{server.port}"
        def run(seconds):
            # Each run creates users with emails of its own (load_env's TAG).
            env = suite.load_env(script, f"{server.port}c{connections}")
            return suite.wrk(dict(env, USERS=str(self.users)), connections, seconds, LOAD, url)
        if args.warmup:
            run(args.warmup)
        server.reset_peak()
        server_cpu, wrk_cpu = server.cpu_seconds(), children_cpu_seconds()
        result = run(args.duration)
        result["server_cpu"] = server.cpu_seconds() - server_cpu
        result["wrk_cpu"] = children_cpu_seconds() - wrk_cpu
        result["peak_rss_kib"] = server.memory_kib("VmHWM")
        return result

    def close(self):
        for server in self.servers.values():
            server.stop()
        suite.drop_database("postgres")
        shutil.rmtree(self.work, ignore_errors=True)


def children_cpu_seconds():
    """The CPU time of the child processes that have ended: wrk's, read
    either side of one wrk run (the servers are still running)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_of(results):
    """The passes of one run, summed up: medians, and every error."""
    seconds = [r["seconds"] for r in results]
    good = [(r["requests"] - r["errors"]) / s for r, s in zip(results, seconds)]
    return {
        "rps": statistics.median(r["rps"] for r in results),
        "goodput": statistics.median(good),
        "p50": statistics.median(r["p50"] for r in results),
        "p99": statistics.median(r["p99"] for r in results),
        "max": max(r["max"] for r in results),
        "shed": sum(r["non_2xx"] for r in results),
        "socket": sum(r["errors"] - r["non_2xx"] for r in results),
        "peak_rss_kib": max(r["peak_rss_kib"] for r in results),
        # CPU µs per 2xx answer (the server's) and per answer (wrk's).
        "server_us": statistics.median(r["server_cpu"] / max(1, r["requests"] - r["errors"])
                                       for r in results) * 1e6,
        "wrk_us": statistics.median(r["wrk_cpu"] / max(1, r["requests"])
                                    for r in results) * 1e6,
        "cpu_share": statistics.median((r["server_cpu"] + r["wrk_cpu"]) / (CORES * s)
                                       for r, s in zip(results, seconds)),
    }


def connections_study(binary, bare, args):
    study = Study(CONNECTIONS_USERS if not args.smoke else args.users[0],
                  {"cached": (binary, {}),
                   "no cache": (binary, {"SWITCHBOARD_CACHE_MAX_ENTRIES": "0"}),
                   "bare": (bare, {})})
    runs = {}
    try:
        for number in range(1, args.passes + 1):
            print(f"[connections] pass {number} of {args.passes}", file=sys.stderr)
            order = args.connections if number % 2 else list(reversed(args.connections))
            for label, script, server in CONNECTION_SCENARIOS:
                for connections in order:
                    runs.setdefault((label, connections), []).append(
                        study.measure(server, script, connections, args))
    finally:
        study.close()
    return [dict(median_of(results), scenario=label, connections=connections)
            for (label, connections), results in runs.items()]


def users_study(binary, args):
    rows, cache = [], []
    for users in args.users:
        study = Study(users, {"cached": (binary, {}),
                              "no cache": (binary, {"SWITCHBOARD_CACHE_MAX_ENTRIES": "0"})})
        runs, hit_rates = {}, []
        try:
            for number in range(1, args.passes + 1):
                print(f"[users {users:,}] pass {number} of {args.passes}", file=sys.stderr)
                for label, script in USER_SCENARIOS:
                    runs.setdefault(label, []).append(
                        study.measure("no cache", script, 64, args))
                before = cache_lookups(study.servers["cached"])
                runs.setdefault("cached", []).append(study.measure("cached", "get", 64, args))
                after = cache_lookups(study.servers["cached"])
                hits, lookups = (after[0] - before[0], sum(after) - sum(before))
                hit_rates.append(hits / lookups if lookups else 0.0)
            entries = scrape(study.servers["cached"], "cache_entries")
        finally:
            study.close()
        rows += [dict(median_of(results), scenario=label, users=users)
                 for label, results in runs.items() if label != "cached"]
        cache.append(dict(median_of(runs["cached"]), users=users, entries=entries,
                          hit_rate=statistics.median(hit_rates)))
    return rows, cache


def scrape(server, name, labels=""):
    text = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def cache_lookups(server):
    """(hits, misses) so far. A warm-up's lookups count too, so the study
    reads them either side of the measured run alone."""
    time.sleep(0.5)  # the workers' metric batches are flushed every 250 ms
    return (scrape(server, "cache_requests_total", '{result="hit"}'),
            scrape(server, "cache_requests_total", '{result="miss"}'))


def print_connections(rows, args):
    print(f"\n### Connections: {CONNECTIONS_USERS:,} users, {args.passes} passes of "
          f"{args.duration} s, medians\n")
    print("goodput: 2xx answers per second; shed: non-2xx answers (503 past the in-flight "
          "cap), all passes; failed: connections wrk saw fail; slowest: the slowest answer of "
          "any pass; machine's x best: the bare actix-web server's own x best at as many "
          "connections (what the connections alone cost on this machine); server µs per 2xx: "
          "the server's CPU time over its 2xx answers; wrk µs per answer: the load "
          "generator's; server + wrk CPU: their CPU time over all cores' time\n")
    best = {}
    for r in rows:
        best[r["scenario"]] = max(best.get(r["scenario"], 0), r["goodput"])
    machine = {r["connections"]: r["goodput"] / best[MACHINE_CURVE]
               for r in rows if r["scenario"] == MACHINE_CURVE}
    header = ["scenario", "conns", "req/s", "goodput", "x best", "machine's x best", "p50 ms",
              "p99 ms", "slowest ms", "shed", "failed", "peak RSS", "server µs per 2xx",
              "wrk µs per answer", "server + wrk CPU"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for r in sorted(rows, key=lambda r: ([s[0] for s in CONNECTION_SCENARIOS].index(
            r["scenario"]), r["connections"])):
        print("| " + " | ".join([
            r["scenario"], f"{r['connections']:,}", f"{r['rps']:,.0f}", f"{r['goodput']:,.0f}",
            f"{r['goodput'] / best[r['scenario']]:.2f}", f"{machine[r['connections']]:.2f}",
            f"{r['p50']:.2f}", f"{r['p99']:.2f}",
            f"{r['max']:,.0f}", f"{r['shed']:,}", f"{r['socket']:,}",
            f"{r['peak_rss_kib'] / 1024:.1f} MiB", f"{r['server_us']:.1f}",
            f"{r['wrk_us']:.1f}", f"{r['cpu_share']:.0%}"]) + " |")


def print_users(rows, cache, args):
    print(f"\n### Users: 64 connections, {args.passes} passes of {args.duration} s, medians\n")
    first = min(args.users)
    p99_at = {(r["scenario"], r["users"]): r["p99"] for r in rows}
    header = ["scenario", "users", "req/s", "p50 ms", "p99 ms", f"p99 x {first:,}", "errors",
              "peak RSS"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(" --- " for _ in header) + "|")
    for label, _ in USER_SCENARIOS:
        for r in [r for r in rows if r["scenario"] == label]:
            print("| " + " | ".join([
                label, f"{r['users']:,}", f"{r['rps']:,.0f}", f"{r['p50']:.2f}",
                f"{r['p99']:.2f}", f"{r['p99'] / p99_at[(label, first)]:.2f}",
                f"{r['shed'] + r['socket']:,}", f"{r['peak_rss_kib'] / 1024:.1f} MiB"]) + " |")
    print("\nCached GET /users/{id} over every user (the default 10,000 cache entries):\n")
    print("| users | req/s | p99 ms | hit rate | entries | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for c in cache:
        print(f"| {c['users']:,} | {c['rps']:,.0f} | {c['p99']:.2f} | {c['hit_rate']:.1%} "
              f"| {c['entries']:,.0f} | {c['peak_rss_kib'] / 1024:.1f} MiB |")


def plotter(folder):
    """The plots, drawn with matplotlib (imported only when asked for)."""
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    from matplotlib import pyplot

    os.makedirs(folder, exist_ok=True)

    class Plots:
        @staticmethod
        def connections(rows):
            figure, axes = pyplot.subplots(1, 3, figsize=(15, 4.5))
            for label, _, _ in CONNECTION_SCENARIOS:
                mine = sorted((r for r in rows if r["scenario"] == label),
                              key=lambda r: r["connections"])
                x = [r["connections"] for r in mine]
                best = max(r["goodput"] for r in mine)
                style = dict(marker="o", label=label)
                if label == MACHINE_CURVE:
                    style.update(linestyle="--", color="grey")
                axes[0].plot(x, [r["goodput"] / best for r in mine], **style)
                axes[1].plot(x, [r["p99"] for r in mine], **style)
                if label != MACHINE_CURVE:
                    axes[2].plot(x, [r["peak_rss_kib"] / 1024 for r in mine], **style)
            for ax, title in zip(axes, ["goodput, x its best", "p99 (ms)",
                                        "switchboard's peak RSS (MiB)"]):
                ax.set_xscale("log", base=2)
                ax.set_xticks(sorted({r["connections"] for r in rows}))
                ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
                ax.minorticks_off()
                ax.set_xlabel("connections")
                ax.set_title(title)
                ax.grid(True, alpha=0.3)
            axes[1].set_yscale("log")
            axes[0].set_ylim(bottom=0)
            axes[2].set_ylim(bottom=0)
            axes[0].legend(fontsize=8)
            figure.suptitle(f"switchboard on PostgreSQL, {CONNECTIONS_USERS:,} users")
            figure.tight_layout()
            figure.savefig(os.path.join(folder, "connections.png"), dpi=80)

        @staticmethod
        def users(rows):
            sizes = sorted({r["users"] for r in rows})
            figure, axes = pyplot.subplots(1, 2, figsize=(11, 4.5))
            width = 0.8 / len(sizes)
            for i, users in enumerate(sizes):
                mine = [next(r for r in rows if r["scenario"] == label and r["users"] == users)
                        for label, _ in USER_SCENARIOS]
                x = [n + i * width for n in range(len(mine))]
                axes[0].bar(x, [r["p99"] for r in mine], width, label=f"{users:,} users")
                axes[1].bar(x, [r["rps"] for r in mine], width, label=f"{users:,} users")
            for ax, title in zip(axes, ["p99 (ms)", "req/s"]):
                ax.set_xticks([n + width * (len(sizes) - 1) / 2
                               for n in range(len(USER_SCENARIOS))])
                ax.set_xticklabels([label.split(" (")[0] for label, _ in USER_SCENARIOS],
                                   fontsize=8)
                ax.set_title(title)
                ax.grid(True, axis="y", alpha=0.3)
            axes[0].legend(fontsize=8)
            figure.suptitle("switchboard on PostgreSQL, 64 connections, no cache")
            figure.tight_layout()
            figure.savefig(os.path.join(folder, "users.png"), dpi=80)

    return Plots()


if __name__ == "__main__":
    main()
