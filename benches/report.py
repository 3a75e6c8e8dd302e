#!/usr/bin/env python3
"""Helpers for the benchmark scripts: read kestrel-bench JSON rows, pick
medians, and splice markdown sections into docs/BENCHMARKS.md.

    report.py field FILE KEY [FORMAT]         a field of the last row
    report.py median OUT FILE...              the median run (by items/s) of several JSON files
    report.py table ROWS.jsonl BASELINE       a markdown table, with ratios to the BASELINE target
    report.py matrix ROWS.jsonl               flood and reliable loop, one line per server, CPU per request
    report.py goals ROWS.jsonl MEM.json       the goals, met or not, from this run's rows
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


# A row whose client threads were this busy was paced by the client, not
# by the server: its rate says little about the server (its CPU per
# request still does).
CLIENT_BOUND = 0.9


def load(path):
    return [json.loads(line) for line in open(path) if line.strip()]


def paced(r):
    return " (client-bound)" if r.get("client_busy", 0) >= CLIENT_BOUND else ""


def table(path, baseline):
    rows = load(path)
    base = {}
    key = lambda r: (r["scenario"], r["protocol"], r["connections"], r["item_size"])
    for r in rows:
        if r["target"] == baseline:
            base[key(r)] = r["items_per_sec"]
    print("| scenario | target | protocol | conns | size | items/s | vs " + baseline + " | p50 ms | p99 ms | "
          "p99.9 ms | server CPU s | server CPU µs/op | server peak RSS MiB | client busy | check |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b = base.get(key(r))
        ratio = "-" if not b or r["target"] == baseline else f"{r['items_per_sec'] / b:.2f}x"
        print(f"| {r['scenario']} | {r['target']} | {r['protocol']} | {r['connections']} | {r['item_size']} | "
              f"{r['items_per_sec']:,.0f} | {ratio} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {r['p999_ms']:.3f} | "
              f"{fmt(r['server_cpu_secs'], '.2f')} | {fmt(r.get('server_cpu_us_per_op'), '.1f')} | "
              f"{fmt(r['server_peak_rss_mib'], '.1f')} | {r.get('client_busy', 0):.0%} | {r['verified'] or '-'} |")


# The side-by-side matrix: (heading, scenario, protocol, connections, size, field).
FLOOD = [(f"flood {'64 B' if size == 64 else '1 KiB'} x{conns}", "flood", conns, size)
         for size, conns in ((64, 1), (64, 10), (64, 100), (1024, 10), (1024, 100))]
RELIABLE = [("reliable 2P/4C", 6), ("reliable 4P/4C", 8)]


def find(rows, scenario, target, conns=None, size=None, protocol="memcache"):
    for r in rows:
        if r["scenario"] == scenario and r["target"] == target and r["protocol"] == protocol and \
                (conns is None or r["connections"] == conns) and (size is None or r["item_size"] == size):
            return r
    return None


def targets(rows):
    seen = []
    for r in rows:
        if r["target"] not in seen:
            seen.append(r["target"])
    return seen


def matrix(path):
    rows = load(path)

    def cell(r, field):
        if r is None or not r["ops"]:
            return "—"
        us = r.get("server_cpu_us_per_op")
        busy = " †" if r.get("client_busy", 0) >= CLIENT_BOUND else ""
        return f"{r[field] / 1000:,.1f}k{busy}" + (f" · {us:.1f} µs" if us is not None else "")

    heads = [h for h, *_ in FLOOD] + [h for h, _ in RELIABLE]
    print("| server | " + " | ".join(heads) + " |")
    print("|---|" + "---|" * len(heads))
    for t in targets(rows):
        cells = [cell(find(rows, sc, t, c, s), "ops_per_sec") for _, sc, c, s in FLOOD]
        cells += [cell(find(rows, "reliable", t, c, 64), "items_per_sec") for _, c in RELIABLE]
        print(f"| {t} | " + " | ".join(cells) + " |")


def goals(path, mem_path):
    rows = load(path)
    mem = json.load(open(mem_path))
    names = targets(rows)

    def line(goal, measured, met):
        print(f"| {goal} | {measured} | {'yes' if met else 'no'} |")

    print("| goal | measured | met |")
    print("|---|---|---|")
    for heading, scenario, conns, size in FLOOD[1:]:
        k = find(rows, scenario, "kestrel", conns, size)
        for peer, want in (("memcached", 1.0), ("darner", 1.3)):
            p = find(rows, scenario, peer, conns, size)
            if k and p and p["ops_per_sec"]:
                ratio = k["ops_per_sec"] / p["ops_per_sec"]
                line(f"{heading}: at least {want:.1f}x {peer}'s requests/s",
                     f"{k['ops_per_sec']:,.0f} vs {p['ops_per_sec']:,.0f} ({ratio:.2f}x){paced(k)}", ratio >= want)
        m = find(rows, scenario, "memcached", conns, size)
        if k and m and k.get("server_cpu_us_per_op") and m.get("server_cpu_us_per_op"):
            ku, mu = k["server_cpu_us_per_op"], m["server_cpu_us_per_op"]
            line(f"{heading}: server CPU per request at most memcached's", f"{ku:.2f} vs {mu:.2f} µs", ku <= mu)
    k, m = find(rows, "flood", "kestrel", 1, 64), find(rows, "flood", "memcached", 1, 64)
    if k and m:
        line("one connection: p50 round trip at most memcached's",
             f"{k['p50_ms'] * 1000:.0f} vs {m['p50_ms'] * 1000:.0f} µs", k["p50_ms"] <= m["p50_ms"])
    for (heading, conns), want in zip(RELIABLE, (1.5, 1.3)):
        k, d = find(rows, "reliable", "kestrel", conns, 64), find(rows, "reliable", "darner", conns, 64)
        if k and d and d["items_per_sec"]:
            ratio = k["items_per_sec"] / d["items_per_sec"]
            line(f"{heading}: at least {want:.1f}x darner's items/s",
                 f"{k['items_per_sec']:,.0f} vs {d['items_per_sec']:,.0f} ({ratio:.2f}x)", ratio >= want)
    for scenario in ("batch put", "batch get"):
        r = find(rows, scenario, "kestrel", protocol="thrift")
        if r:
            line(f"Thrift {scenario}, 100 x 64 B per call: at least 4,000,000 items/s",
                 f"{r['items_per_sec']:,.0f} items/s{paced(r)}", r["items_per_sec"] >= 4_000_000)
    r = find(rows, "fairness small puts", "kestrel")
    if r:
        line("small-put p99 below 10 ms during an 8 MiB flood", f"{r['p99_ms']:.2f} ms", r["p99_ms"] < 10)
    line("idle RSS below 10 MiB", f"{mem['idle_rss_mib']:.1f} MiB", mem["idle_rss_mib"] < 10)
    line("RSS after filling and draining 1M x 1 KiB below 32 MiB", f"{mem['drained_rss_mib']:.1f} MiB",
         mem["drained_rss_mib"] < 32)
    bound = [r for r in rows if r.get("client_busy", 0) >= CLIENT_BOUND]
    if bound:
        print()
        print(f"The client was the limit (its thread busy ≥ {CLIENT_BOUND:.0%}) in {len(bound)} of {len(rows)} rows "
              "(marked † above and \"client-bound\" here): their rates are the client's; server CPU per request "
              "still compares the servers.")


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
    commands = {"field": field, "median": lambda out, *p: median(out, p), "table": table, "matrix": matrix,
                "goals": goals, "splice": splice}
    commands[cmd](*args)
