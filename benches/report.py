#!/usr/bin/env python3
"""Helpers for the benchmark scripts: read kestrel-bench JSON rows, pick
medians, and splice markdown sections into docs/BENCHMARKS.md.

    report.py field FILE KEY [FORMAT]         a field of the last row
    report.py median OUT FILE...              the median run (by items/s) of several JSON files
    report.py table ROWS.jsonl BASELINE       a markdown table, with ratios to the BASELINE target
    report.py goals ROWS.jsonl MEM.json       the issue's goals, met or not, from this run's rows
    report.py splice FILE NAME < fragment     replace <!-- NAME:start --> ... <!-- NAME:end --> in FILE
"""

import json
import sys


def last_row(path):
    return json.load(open(path))[-1]


def field(path, key, spec=""):
    value = last_row(path)[key]
    print("-" if value is None else format(value, spec))


def median(out, paths):
    runs = sorted((json.load(open(p)) for p in paths), key=lambda rows: rows[0]["items_per_sec"])
    json.dump(runs[len(runs) // 2], open(out, "w"))


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def table(path, baseline):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    base = {}
    key = lambda r: (r["scenario"], r["protocol"], r["connections"], r["item_size"])
    for r in rows:
        if r["target"] == baseline:
            base[key(r)] = r["items_per_sec"]
    print("| scenario | target | protocol | conns | size | items/s | vs " + baseline + " | p50 ms | p99 ms | "
          "p99.9 ms | server CPU s | server CPU µs/op | server peak RSS MiB | check |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b = base.get(key(r))
        ratio = "-" if not b or r["target"] == baseline else f"{r['items_per_sec'] / b:.2f}x"
        print(f"| {r['scenario']} | {r['target']} | {r['protocol']} | {r['connections']} | {r['item_size']} | "
              f"{r['items_per_sec']:,.0f} | {ratio} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p999_ms']:.3f} | "
              f"{fmt(r['server_cpu_secs'], '.2f')} | {fmt(r.get('server_cpu_us_per_op'), '.1f')} | "
              f"{fmt(r['server_peak_rss_mib'], '.1f')} | {r['verified'] or '-'} |")


def goals(path, mem_path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    mem = json.load(open(mem_path))

    def find(scenario, target, conns=None, size=None):
        for r in rows:
            if r["scenario"] == scenario and r["target"] == target and \
                    (conns is None or r["connections"] == conns) and (size is None or r["item_size"] == size):
                return r
        return None

    print("| goal | measured | met |")
    print("|---|---|---|")
    for conns in (10, 100):
        k, m = find("flood", "kestrel", conns, 64), find("flood", "memcached", conns, 64)
        if k and m:
            ratio = k["items_per_sec"] / m["items_per_sec"]
            print(f"| flood 64 B, {conns} connections: at least memcached's rate | "
                  f"{k['items_per_sec']:,.0f} vs {m['items_per_sec']:,.0f} items/s ({ratio:.2f}x) | "
                  f"{'yes' if ratio >= 1 else 'no'} |")
    for scenario in ("batch put", "batch get"):
        r = find(scenario, "kestrel")
        if r:
            ok = r["items_per_sec"] >= 1_000_000
            print(f"| Thrift {scenario}, 100 x 64 B per call: at least 1,000,000 items/s | "
                  f"{r['items_per_sec']:,.0f} items/s | {'yes' if ok else 'no'} |")
    r = find("fairness small puts", "kestrel")
    if r:
        print(f"| small-put p99 below 10 ms during an 8 MiB flood | {r['p99_ms']:.2f} ms | "
              f"{'yes' if r['p99_ms'] < 10 else 'no'} |")
    print(f"| idle RSS below 10 MiB | {mem['idle_rss_mib']:.1f} MiB | {'yes' if mem['idle_rss_mib'] < 10 else 'no'} |")
    print(f"| RSS after filling and draining 1M x 1 KiB below 32 MiB | {mem['drained_rss_mib']:.1f} MiB | "
          f"{'yes' if mem['drained_rss_mib'] < 32 else 'no'} |")


def splice(path, name):
    text = open(path).read()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    fragment = sys.stdin.read().rstrip("\n")
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{start}\n{fragment}\n{end}{tail}"
    else:
        text = f"{text.rstrip()}\n\n{start}\n{fragment}\n{end}\n"
    open(path, "w").write(text)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    commands = {"field": field, "median": lambda out, *p: median(out, p), "table": table, "goals": goals,
                "splice": splice}
    commands[cmd](*args)
