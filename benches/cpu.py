#!/usr/bin/env python3
"""Where a request's time goes: the server's CPU per request, part by part.

For each scenario of benches/load.lua asked for, against each server
variant (switchboard with every guard on, and the same with a setting
changed: the rate limiter off, the cache off, ...), runs wrk while `perf
stat -p` counts the server's CPU time (task-clock) and context switches,
and divides them by the requests wrk counted: CPU µs per request, switches
per request. Variants and scenarios alternate within each pass; figures are
medians of the passes.

With --parts, one more run per row under `perf record` attributes the CPU
to the parts of a request by the function each sample fell in (the kernel's
sockets and scheduling, HTTP, matching path patterns, routing, the rate
limiter, the cache, the actors' mailboxes and channels, metrics, JSON,
memory, the runtime), in µs
per request. Inlined code counts where it was inlined.

  python3 benches/cpu.py --scenarios health,hello,get --parts
  python3 benches/cpu.py --variant "limiter off=SWITCHBOARD_RATE_LIMIT_PER_SECOND=0"
  python3 benches/cpu.py --scenarios get --traces --build "before=old/switchboard"

With --traces, two more variants export their traces to a local collector
(benches/collector.rs, which answers every export at once): every trace
sampled, and 1 % of them; the spans each could not export are reported.

Runs on PostgreSQL with 10,000 users seeded by COPY. Needs wrk, psql and
perf (Debian: wrk, postgresql-client, linux-perf).
"""

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request

import suite

USERS = 10_000
COLLECTOR_PORT = 18430
LOAD = os.path.join(suite.BENCHES, "load.lua")
# A request's parts, by the functions its CPU time was spent in: the first
# pattern a sample's function matches names its part.
PARTS = [
    ("kernel: sockets, scheduling", r"^\[kernel"),
    ("spans: logs and traces",
     r"opentelemetry|tracing_subscriber|tracing_core|tracing::|switchboard::traces|span_exporter|prost"),
    ("rate limiter", r"rate_limit|governor|RateLimit"),
    ("cache", r"actors::cache|mini_moka|CacheActor|CacheHandle"),
    ("metrics", r"switchboard::metrics|actors::metrics|prometheus"),
    ("actor mailboxes and channels",
     r"actix::(address|mailbox|contextimpl|fut)|actor_ref|oneshot|futures_channel|tokio::sync"),
    ("routing: path patterns", r"regex|actix_router"),
    ("HTTP: parse, dispatch, write", r"actix_http|httparse|http::header|h1::"),
    ("routing, middleware, handlers", r"actix_web|actix_service|switchboard::"),
    ("JSON", r"serde_json|serde::"),
    ("memory: allocate, copy, free",
     r"malloc|free|realloc|memcpy|memmove|memset|_int_|alloc::|bytes::"),
    ("runtime: tasks, timers, I/O", r"tokio|actix_rt|mio"),
]


def main():
    args = parse_args()
    for tool in ("wrk", "psql", "perf"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian: wrk, postgresql-client, linux-perf)")
    binaries = suite.build()
    binary = os.path.abspath(args.switchboard or binaries["switchboard"])
    work = tempfile.mkdtemp(prefix="switchboard-cpu-")
    collector = None
    if args.traces:
        collector = subprocess.Popen([binaries["collector"], str(COLLECTOR_PORT)])
        endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{COLLECTOR_PORT}"}
        args.variants += [
            ("traces, all sampled", endpoint),
            ("traces, 1 % sampled", dict(endpoint, OTEL_TRACES_SAMPLER="parentbased_traceidratio",
                                         OTEL_TRACES_SAMPLER_ARG="0.01")),
        ]
    url = suite.fresh_database("postgres", work)
    env = suite.server_env(url)
    subprocess.run([binary, "migrate"], env=env, check=True, stdout=subprocess.DEVNULL)
    suite.seed_by_copy(url, USERS)
    servers = {}
    runs, parts = {}, {}
    try:
        for port, (name, overrides) in enumerate(args.variants, start=18440):
            servers[name] = suite.Server(
                name, [args.builds.get(name, binary)],
                dict(env, SWITCHBOARD_BIND=f"127.0.0.1:{port}", **overrides),
                port, os.path.join(work, f"{port}.log"))
        for number in range(1, args.passes + 1):
            print(f"pass {number} of {args.passes}", file=sys.stderr)
            order = list(servers.items()) if number % 2 else list(reversed(servers.items()))
            for scenario in args.scenarios:
                for name, server in order:
                    runs.setdefault((scenario, name), []).append(
                        measure(server, scenario, args, work, record=False))
        if args.parts:
            for scenario in args.scenarios:
                for name, server in servers.items():
                    parts[(scenario, name)] = measure(server, scenario, args, work,
                                                      record=True)["parts"]
        for name, server in servers.items():
            dropped = metric(server.port, "otel_spans_dropped_total")
            if name.startswith("traces"):
                print(f"{name}: {dropped:.0f} spans dropped", file=sys.stderr)
    finally:
        for server in servers.values():
            server.stop()
        if collector is not None:
            collector.terminate()
        suite.drop_database("postgres")
        shutil.rmtree(work, ignore_errors=True)
    report(runs, parts, args)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="health,hello,get",
                        help="load.lua scenarios, comma-separated")
    parser.add_argument("--variant", action="append", default=[],
                        help="NAME=VAR=VALUE[,VAR=VALUE]: a server run with these settings, "
                        "beside the one with every default (repeatable)")
    parser.add_argument("--build", action="append", default=[],
                        help="NAME=BINARY: another switchboard build, with every default "
                        "(a change's before, say; repeatable)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--duration", type=int, default=6, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--parts", action="store_true", help="also attribute CPU to parts")
    parser.add_argument("--switchboard", help="measure this switchboard binary, not a new build")
    parser.add_argument("--traces", action="store_true",
                        help="also with traces exported, all sampled and 1 %% sampled")
    args = parser.parse_args()
    args.scenarios = args.scenarios.split(",")
    args.variants = [("every guard on", {})]
    args.builds = {}
    for build in args.build:
        name, path = build.split("=", 1)
        args.variants.append((name, {}))
        args.builds[name] = os.path.abspath(path)
    for variant in args.variant:
        name, settings = variant.split("=", 1)
        args.variants.append((name, dict(s.split("=", 1) for s in settings.split(","))))
    return args


def measure(server, scenario, args, work, record):
    """One warmed-up wrk run with perf watching the server."""
    url = f"http://127.0.0.1:{server.port}"
    env = suite.load_env(scenario, str(server.port))
    if args.warmup:
        suite.wrk(env, args.connections, args.warmup, LOAD, url)
    output = os.path.join(work, "perf.out")
    pid = str(server.process.pid)
    command = (["perf", "record", "-q", "-F", "1999", "-o", os.path.join(work, "perf.data"),
                "-p", pid] if record else
               ["perf", "stat", "-x,", "-o", output, "-e", "task-clock,context-switches",
                "-p", pid])
    perf = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        result = suite.wrk(env, args.connections, args.duration, LOAD, url)
    finally:
        perf.send_signal(2)
        perf.wait()
    requests = result["requests"]
    if record:
        result["parts"] = parts_of(work)
        return result
    counts = {}
    for line in open(output):
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in ("task-clock", "context-switches"):
            counts[fields[2]] = float(fields[0])
    result["cpu_us"] = counts["task-clock"] * 1000 / requests
    result["switches"] = counts["context-switches"] / requests
    return result


def metric(port, name):
    """A counter's value on a running server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def parts_of(work):
    """Each part's share of the samples perf recorded."""
    report = subprocess.run(
        ["perf", "report", "-i", os.path.join(work, "perf.data"), "--no-children", "--stdio",
         "-q", "--sort", "dso,sym", "-g", "none", "--percent-limit", "0"],
        check=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout
    shares = {part: 0.0 for part, _ in PARTS}
    shares["other"] = 0.0
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[([.k])\]\s+(.*)", line)
        if not match:
            continue
        share, _library, kind, symbol = match.groups()
        subject = "[kernel]" if kind == "k" else symbol
        part = next((name for name, pattern in PARTS if re.search(pattern, subject)), "other")
        shares[part] += float(share) / 100
    return shares


def report(runs, parts, args):
    print(f"\n{args.passes} passes of {args.duration} s at {args.connections} connections, "
          "medians (min-max); CPU: the server's task-clock over the requests wrk counted\n")
    print("| scenario | server | req/s | CPU µs per request | context switches per request |")
    print("| --- | --- | --- | --- | --- |")
    for (scenario, name), results in runs.items():
        rps = [r["rps"] for r in results]
        cpu = [r["cpu_us"] for r in results]
        print(f"| {scenario} | {name} | {statistics.median(rps):,.0f} "
              f"({min(rps):,.0f}-{max(rps):,.0f}) | {statistics.median(cpu):.1f} "
              f"({min(cpu):.1f}-{max(cpu):.1f}) "
              f"| {statistics.median(r['switches'] for r in results):.3f} |")
    if not parts:
        return
    columns = list(parts)
    print("\nCPU µs per request by part (perf record, one run each; a part's share of the "
          "samples times the median CPU per request above):\n")
    print("| part | " + " | ".join(f"{s} ({n})" for s, n in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    cpu = {key: statistics.median(r["cpu_us"] for r in runs[key]) for key in columns}
    for part in [name for name, _ in PARTS] + ["other"]:
        print(f"| {part} | " + " | ".join(f"{parts[key][part] * cpu[key]:.2f}"
                                          for key in columns) + " |")


if __name__ == "__main__":
    main()
