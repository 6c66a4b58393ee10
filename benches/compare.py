#!/usr/bin/env python3
"""switchboard builds against each other and the baseline, on one scenario.

The suite (`suite.py`) measures one build; a change's before and after,
measured in two runs minutes apart, can differ by more than the change on a
noisy machine. This starts every build given, and the baseline, on one
freshly seeded database as the suite starts its servers, then measures each
in turn with the suite's wrk command, reversing the order every pass so that
drift hits them alike, and prints the medians with their ratios to the
baseline's.

  python3 benches/compare.py --scenario mixed --passes 6 old/switchboard target/release/switchboard
  python3 benches/compare.py --backend sqlite --scenario hello target/release/switchboard

A build is any executable: a script that sets a variable and then runs a
binary measures a setting. Scenarios are `benches/load.lua`'s (hello, health,
get, list, create, update, conditional, mixed, delete). Exits non-zero if any request
fails.

`delete` (PostgreSQL only) deletes users that exist: each run, warm-ups
included, gets a block of `--block` users of its own, inserted by SQL
before the first run, and a run that reaches the end of its block fails.

  python3 benches/compare.py --scenario delete --passes 3 --duration 5 before after
"""

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time

import suite

FIRST_PORT = 18420


def main():
    args = parse_args()
    baseline = suite.build()["baseline"]
    work = tempfile.mkdtemp(prefix="switchboard-compare-")
    url = suite.fresh_database(args.backend, work)
    env = suite.server_env(url)
    servers = []
    try:
        for number, build in enumerate(args.builds):
            port = FIRST_PORT + number
            servers.append(suite.Server(f"{number + 1}: {build}", [build], dict(
                env, SWITCHBOARD_BIND=f"127.0.0.1:{port}"), port, os.path.join(work, f"{number}.log")))
            if number == 0:
                suite.seed(port)
                if args.scenario == "delete":
                    blocks = (len(args.builds) + 1) * (args.passes + 1)
                    suite.psql(url, "INSERT INTO users (name, email, email_key, created_at, "
                               "updated_at) SELECT 'Doomed', 'doomed' || n || '@example.com', "
                               "'doomed' || n || '@example.com', now(), now() "
                               f"FROM generate_series(1, {blocks * args.block}) AS n")
        port = FIRST_PORT + len(args.builds)
        servers.append(suite.Server("baseline", [baseline], dict(
            env, SWITCHBOARD_BIND=f"127.0.0.1:{port}"), port, os.path.join(work, "baseline.log")))
        results = measure(servers, args)
    finally:
        for server in servers:
            server.stop()
        suite.drop_database(args.backend)
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)
    if any(run["errors"] for runs in results.values() for run in runs):
        sys.exit("some requests failed")


def measure(servers, args):
    """Each server's runs, the servers taken in turn, the order reversed
    every pass."""
    lua = os.path.join(suite.BENCHES, "load.lua")
    # Ids above the seeded users, a block per run (used by `delete` only).
    blocks = itertools.count(suite.USERS + 1, args.block)

    def run(server, seconds):
        env = dict(suite.load_env(args.scenario, f"compare{server.port}"), FIRST=str(next(blocks)))
        return suite.wrk(env, args.connections, seconds, lua, f"http://127.0.0.1:{server.port}")
    for server in servers:
        run(server, args.warmup)
    results = {server.name: [] for server in servers}
    for number in range(args.passes):
        print(f"pass {number + 1} of {args.passes}", file=sys.stderr)
        for server in servers if number % 2 == 0 else reversed(servers):
            results[server.name].append(run(server, args.duration))
            time.sleep(args.pause)
    return results


def report(results, args):
    print(f"\n{args.backend}, {args.scenario}, {args.connections} connections, "
          f"{args.passes} passes of {args.duration} s; medians (min-max) of the passes\n")
    print("| build | req/s (min-max) | x baseline | p99 ms (min-max) | p99 x baseline | errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    median = lambda runs, key: statistics.median(run[key] for run in runs)
    base = results["baseline"]
    for name, runs in results.items():
        rps, p99 = [run["rps"] for run in runs], [run["p99"] for run in runs]
        print(f"| {name} | {median(runs, 'rps'):,.0f} ({min(rps):,.0f}-{max(rps):,.0f}) "
              f"| {median(runs, 'rps') / median(base, 'rps'):.2f} "
              f"| {median(runs, 'p99'):.2f} ({min(p99):.2f}-{max(p99):.2f}) "
              f"| {median(runs, 'p99') / median(base, 'p99'):.2f} "
              f"| {sum(run['errors'] for run in runs)} |")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", help="switchboard executables to compare")
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--scenario", default="mixed", help="a load.lua scenario")
    parser.add_argument("--connections", type=int, default=256)
    parser.add_argument("--passes", type=int, default=4)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of load per server first")
    parser.add_argument("--pause", type=float, default=2, help="seconds between runs")
    parser.add_argument("--block", type=int, default=250_000,
                        help="users each run of `delete` may delete")
    args = parser.parse_args()
    if args.scenario == "delete" and args.backend != "postgres":
        sys.exit("the delete scenario runs on PostgreSQL only")
    args.builds = [os.path.abspath(build) for build in args.builds]
    for tool in ["wrk"] + (["psql"] if args.backend == "postgres" else []):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian: apt-get install wrk postgresql-client)")
    return args


if __name__ == "__main__":
    main()
