#!/usr/bin/env python3
"""Soak under hostile load (issue 11, section 3). Run it through benches/soak.sh.

One kestrel server (the release binary, a temporary data directory, ephemeral
ports on 127.0.0.1, default settings) goes through three phases:

  1. baseline   kestrel-bench's 64 B flood on 10 memcache connections, alone.
  2. hostile    at the same time: idle connections, slow-drip connections (a
                memcache set sent one byte at a time), header-only Thrift frames
                (a 4-byte length promising a large frame, then nothing), one
                client that sends set+get requests and never reads a reply, the
                same flood, and a prober doing a memcache set+get every 10 ms.
  3. recovery   the hostile clients leave; 10 s later the server's memory and
                descriptors are read again and the prober drains its queue.

It prints a markdown table and each goal with PASS/FAIL, and exits 1 if a goal
fails. The load runs in separate processes so that none of them measures the
others' CPU time: the hostile clients in one asyncio process (the machine has
two cores; one thread per connection would be the bottleneck), the prober in a
process of its own, the flood in kestrel-bench (Rust).

  soak.py run --kestrel K --bench B --work DIR [--duration S] [...]
  soak.py hostile ...   (started by run)
  soak.py prober ...    (started by run)
"""

import argparse
import asyncio
import json
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import limits  # noqa: E402  (Server, connect, percentile: shared with the limits bench)

PROBE_QUEUE = "soak_probe"
DRIP_QUEUE = "soak_drip"
DEAF_QUEUE = "soak_deaf"
# Just under the default max_frame_size (16 MiB): the largest frame a header
# may promise without being refused at once.
HEADER_PROMISE = 16 * 1024 * 1024 - 1
MIB = 1024 * 1024


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def addr(text):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def raise_fd_limit(needed):
    """Raises the soft open-file limit to the hard one; fails early and clearly
    when even that cannot hold the connections a phase needs."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(f"soak: needs {needed} file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ---------------------------------------------------------------- hostile ---

class Hostile:
    """Every hostile client, on one asyncio loop, over raw non-blocking sockets
    (lighter than streams when there are ten thousand of them)."""

    def __init__(self, args):
        self.args = args
        self.mc = addr(args.memcache)
        self.th = addr(args.thrift)
        self.loop = asyncio.get_running_loop()
        self.socks = set()
        self.stopping = False
        self.counts = {
            "idle_open": 0, "idle_closed_by_server": 0,
            "drip_stored": 0, "drip_other_reply": 0, "drip_closed_by_server": 0,
            "header_sent": 0, "header_closed_by_server": 0,
            "deaf_bytes_sent": 0, "connect_errors": 0,
        }
        self.connect_gate = asyncio.Semaphore(args.connect_concurrency)

    async def open(self, target):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            async with self.connect_gate:
                await self.loop.sock_connect(s, target)
        except OSError:
            s.close()
            self.counts["connect_errors"] += 1
            raise
        self.socks.add(s)
        return s

    def close(self, s):
        self.socks.discard(s)
        s.close()

    async def recv_line(self, s, buf=b""):
        while b"\r\n" not in buf:
            chunk = await self.loop.sock_recv(s, 4096)
            if not chunk:
                raise ConnectionResetError("closed by the server")
            buf += chunk
        return buf

    async def idle(self):
        """Connects, is served once (so the server has a session for it), then
        says nothing; notices if the server ever closes it."""
        s = await self.open(self.mc)
        await self.loop.sock_sendall(s, b"version\r\n")
        await self.recv_line(s)
        self.counts["idle_open"] += 1
        return s

    async def watch_idle(self, s):
        try:
            if not await self.loop.sock_recv(s, 1):
                self.counts["idle_closed_by_server"] += 1
        except OSError:
            self.counts["idle_closed_by_server"] += 1

    async def reconnecting(self, target, session, started, closed_key):
        """Runs `session` on a connection to `target`, and again on a new one
        each time the server closes it, until the clients leave; `started` is
        called once, when the first connection is up."""
        while not self.stopping:
            try:
                s = await self.open(target)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            if started:
                started()
                started = None
            try:
                await session(s)
            except OSError:
                pass
            finally:
                self.close(s)
            if not self.stopping:
                self.counts[closed_key] += 1

    async def drip(self, s):
        """Sends a whole memcache set one byte per interval, reads the reply,
        and starts again."""
        request = f"set {DRIP_QUEUE} 0 0 1\r\nx\r\n".encode()
        interval = self.args.drip_interval
        # Spread the drippers over the interval so the server sees a steady
        # trickle rather than a thousand bytes at once.
        await asyncio.sleep(random.uniform(0, interval))
        while not self.stopping:
            for i in range(len(request)):
                await self.loop.sock_sendall(s, request[i:i + 1])
                await asyncio.sleep(interval)
            reply = await self.recv_line(s)
            self.counts["drip_stored" if reply == b"STORED\r\n" else "drip_other_reply"] += 1

    async def header(self, s):
        """Promises a large Thrift frame and sends nothing more, until the
        server gives up on it (request_timeout)."""
        await self.loop.sock_sendall(s, struct.pack(">I", HEADER_PROMISE))
        self.counts["header_sent"] += 1
        while await self.loop.sock_recv(s, 4096):
            pass  # a Thrift server has nothing to say to half a frame

    async def deaf(self, started):
        """Pipelines 4 KiB sets and gets and never reads a reply, so the
        server's replies back up: it must stop reading this client rather than
        hold its replies without bound."""
        s = await self.open(self.mc)
        started()
        body = b"d" * 4096
        chunk = b"".join(f"set {DEAF_QUEUE} 0 0 {len(body)}\r\n".encode() + body + b"\r\n"
                         + f"get {DEAF_QUEUE}\r\n".encode() for _ in range(16))
        try:
            while not self.stopping:
                await self.loop.sock_sendall(s, chunk)
                self.counts["deaf_bytes_sent"] += len(chunk)
        except OSError:
            pass
        finally:
            self.close(s)

    async def run(self):
        a = self.args
        pending = {"drip": a.drippers, "header": a.headers, "deaf": 1}
        all_started = asyncio.Event()

        def started(kind):
            def done():
                pending[kind] -= 1
                if not any(pending.values()):
                    all_started.set()
            return done

        t0 = time.monotonic()
        idle = await asyncio.gather(*(self.idle() for _ in range(a.idle)))
        watchers = [asyncio.ensure_future(self.watch_idle(s)) for s in idle]
        log(f"hostile: {len(idle)} idle connections in {time.monotonic() - t0:.1f} s")
        tasks = [asyncio.ensure_future(self.reconnecting(self.mc, self.drip, started("drip"),
                                                         "drip_closed_by_server"))
                 for _ in range(a.drippers)]
        tasks += [asyncio.ensure_future(self.reconnecting(self.th, self.header, started("header"),
                                                          "header_closed_by_server"))
                  for _ in range(a.headers)]
        tasks.append(asyncio.ensure_future(self.deaf(started("deaf"))))
        await all_started.wait()
        report({"ready": time.monotonic() - t0, "connections": len(self.socks)})
        # Wait for "leave" (or the parent going away: end of input).
        await self.loop.run_in_executor(None, sys.stdin.readline)
        self.stopping = True
        for t in tasks + watchers:
            t.cancel()
        await asyncio.gather(*tasks, *watchers, return_exceptions=True)
        for s in list(self.socks):
            self.close(s)
        report({"left": self.counts})


def report(obj):
    print(json.dumps(obj), flush=True)


def hostile_main(args):
    raise_fd_limit(args.idle + args.drippers + args.headers + 64)

    async def main():
        await Hostile(args).run()
    asyncio.run(main())


# ----------------------------------------------------------------- prober ---

class MemcacheReader:
    """Reads memcache replies off a blocking socket."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("closed by the server")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            self.fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def get_reply(self):
        """The value of a one-key get reply, or None for an empty queue."""
        line = self.line()
        if line == b"END":
            return None
        parts = line.split()
        if len(parts) != 4 or parts[0] != b"VALUE":
            raise RuntimeError(f"unexpected get reply {line!r}")
        value = self.exact(int(parts[3]) + 2)[:-2]
        if self.line() != b"END":
            raise RuntimeError("get reply without END")
        return value


def prober_main(args):
    """Every 10 ms, one pipelined memcache set of a numbered item and one get,
    timed as one round trip; the items acknowledged (STORED) must all come back,
    here or in the drain at the end."""
    target = addr(args.memcache)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    samples, acked, received = [], [], []
    errors = []
    seq = 0
    sock, reader = None, None
    period = args.period
    next_at = time.monotonic()
    while not stop.is_set():
        if sock is None:
            try:
                sock = limits.connect(target)
            except OSError as e:
                errors.append(f"connect: {e!r}")
                time.sleep(period)
                continue
            sock.settimeout(30)
            reader = MemcacheReader(sock)
        value = f"{seq:012d}".encode()
        request = (f"set {PROBE_QUEUE} 0 0 {len(value)}\r\n".encode() + value
                   + f"\r\nget {PROBE_QUEUE}\r\n".encode())
        t = time.monotonic()
        try:
            sock.sendall(request)
            stored = reader.line()
            if stored == b"STORED":
                acked.append(value)
            got = reader.get_reply()
            if got is not None:
                received.append(got)
        except (OSError, RuntimeError) as e:
            errors.append(f"{seq}: {e!r}")
            sock.close()
            sock = None
            continue
        finally:
            seq += 1
        samples.append((t, time.monotonic() - t))
        next_at += period
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()  # late: start now, do not burst to catch up
    # Drain what is still queued (a get that came back empty left its item).
    if sock is None:
        sock = limits.connect(target)
        sock.settimeout(30)
        reader = MemcacheReader(sock)
    while True:
        sock.sendall(f"get {PROBE_QUEUE}\r\n".encode())
        got = reader.get_reply()
        if got is None:
            break
        received.append(got)
    sock.close()
    acked_set, received_set = set(acked), set(received)
    report({
        "samples": samples,
        "acked": len(acked),
        "received": len(received),
        "lost": sorted(v.decode() for v in acked_set - received_set)[:20],
        "lost_count": len(acked_set - received_set),
        "duplicates": len(received) - len(received_set),
        "unexpected": len(received_set - acked_set),
        "errors": errors[:20],
        "error_count": len(errors),
    })


# -------------------------------------------------------------------- run ---

class Sampler(threading.Thread):
    """Reads the server's VmRSS, VmSize and descriptor count from /proc four
    times a second and keeps each one's peak since the last reset."""

    def __init__(self, server, period=0.25):
        super().__init__(daemon=True)
        self.server = server
        self.period = period
        self.halt = threading.Event()
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with self.lock:
            self.peak = {"rss": 0, "vmsize": 0, "fds": 0}

    def read(self):
        return figures(self.server)

    def run(self):
        while not self.halt.wait(self.period):
            try:
                now = self.read()
            except (FileNotFoundError, ProcessLookupError):
                return  # the server is gone; the run reports it
            with self.lock:
                for k in self.peak:
                    self.peak[k] = max(self.peak[k], now[k])

    def peaks(self):
        with self.lock:
            return dict(self.peak)


def figures(server):
    return {"rss": server.status("VmRSS") / 1024, "vmsize": server.status("VmSize") / 1024,
            "fds": server.fds(), "cpu": cpu_seconds(server.proc.pid),
            # Heap and stacks versus pages of the binary and libraries: only
            # the first says anything about what the server holds on to.
            "rss_anon": server.status("RssAnon") / 1024, "rss_file": server.status("RssFile") / 1024}


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_stats(server):
    s = limits.connect(server.addr["memcache"])
    s.settimeout(30)
    s.sendall(b"stats\r\n")
    buf = limits.read_until(s, b"", b"END\r\n")
    s.close()
    out = {}
    for line in buf.decode().split("\r\n"):
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "STAT":
            out[parts[1]] = parts[2]
    return out


class Children:
    """Every process the run starts, so that each is stopped however the run
    ends; each pid is also written to the work directory, where soak.sh's trap
    finds it if this process itself is killed."""

    def __init__(self, work):
        self.work = work
        self.procs = {}

    def add(self, name, proc):
        self.procs[name] = proc
        with open(os.path.join(self.work, f"{name}.pid"), "w") as f:
            f.write(str(proc.pid))
        return proc

    def done(self, name):
        self.procs.pop(name, None)
        try:
            os.unlink(os.path.join(self.work, f"{name}.pid"))
        except FileNotFoundError:
            pass

    def stop_all(self):
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self.done(name)


def read_json_line(proc, key, timeout):
    """The next JSON line a child prints, which must hold `key`."""
    result = {}

    def reader():
        line = proc.stdout.readline()
        if line:
            result.update(json.loads(line))

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    t.join(timeout)
    if key not in result:
        raise RuntimeError(f"no '{key}' from pid {proc.pid} (exit status {proc.poll()}, "
                           f"or still running after {timeout} s)")
    return result[key]


def flood_command(args, server, items, out):
    return [args.bench, "--quiet", "--target", "%s:%d" % server.addr["memcache"],
           "--server-pid", str(server.proc.pid), "--json", out,
           "flood", "--connections", "10", "--size", "64", "--items", str(items)]


def run_flood(args, children, server, items, out, timeout):
    proc = children.add("flood", subprocess.Popen(
        flood_command(args, server, items, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        children.done("flood")
        return None, f"did not finish {items} items within {timeout:.0f} s"
    children.done("flood")
    if proc.returncode != 0:
        return None, f"kestrel-bench failed: {err.strip()[-300:]}"
    return json.load(open(out))[-1], None


def wait_for(predicate, timeout, period=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(period)
    return predicate()


def run_main(args):
    def terminate(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)

    n_conns = args.idle + args.drippers + args.headers + 1 + 10 + 1
    raise_fd_limit(n_conns + 64)
    children = Children(args.work)
    me = [sys.executable, os.path.abspath(__file__)]
    result = {"settings": {k: getattr(args, k) for k in
                           ("duration", "baseline_items", "idle", "drippers", "headers", "drip_interval")}}
    try:
        server = limits.Server(args.kestrel, os.path.join(args.work, "data"),
                               env=dict(kv.split("=", 1) for kv in args.server_env))
        children.add("kestrel", server.proc)
        limit_line = next((line.strip() for line in open(server.log_path) if "max_connections=" in line), "")
        result["server_limits"] = limit_line.split("limits ", 1)[-1] if limit_line else "(not logged)"
        start = figures(server)
        log(f"server pid {server.proc.pid} on {server.addr}; start RSS {start['rss']:.1f} MiB, "
            f"{start['fds']} fds")

        # Phase 1: the flood alone.
        log(f"baseline: flood of {args.baseline_items} items on 10 connections")
        cpu0 = cpu_seconds(server.proc.pid)
        base, err = run_flood(args, children, server, args.baseline_items,
                              os.path.join(args.work, "baseline.json"), timeout=600)
        if base is None:
            raise RuntimeError(f"baseline flood: {err}")
        base["server_cpu"] = cpu_seconds(server.proc.pid) - cpu0
        after_base = figures(server)
        log(f"baseline: {base['items_per_sec']:,.0f} items/s")

        sampler = Sampler(server)
        sampler.start()

        # Phase 2: prober, hostile clients, then the flood again.
        prober = children.add("prober", subprocess.Popen(
            me + ["prober", "--memcache", "%s:%d" % server.addr["memcache"]],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        t_hostile = time.monotonic()
        hostile = children.add("hostile", subprocess.Popen(
            me + ["hostile", "--memcache", "%s:%d" % server.addr["memcache"],
                  "--thrift", "%s:%d" % server.addr["thrift"], "--idle", str(args.idle),
                  "--drippers", str(args.drippers), "--headers", str(args.headers),
                  "--drip-interval", str(args.drip_interval)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
        ready = read_json_line(hostile, "ready", timeout=300)
        established = figures(server)
        log(f"hostile: all connected in {ready:.1f} s; server has {established['fds']} fds, "
            f"RSS {established['rss']:.1f} MiB")
        items = max(10_000, int(base["items_per_sec"] * args.duration))
        log(f"hostile: flood of {items} items (about {args.duration} s at the baseline rate)")
        cpu0 = cpu_seconds(server.proc.pid)
        under, err = run_flood(args, children, server, items, os.path.join(args.work, "hostile.json"),
                               timeout=3 * args.duration + 60)
        cpu_under = cpu_seconds(server.proc.pid) - cpu0
        if under is not None:
            under["server_cpu"] = cpu_under
        result["flood_hostile_error"] = err
        result["stats_hostile"] = server_stats(server)
        peak = sampler.peaks()

        # Phase 3: the hostile clients leave.
        hostile.stdin.write("leave\n")
        hostile.stdin.flush()
        t_leave = time.monotonic()
        left = read_json_line(hostile, "left", timeout=60)
        hostile.wait(timeout=30)
        children.done("hostile")
        base_conns = 2  # the prober's connection and the one asking
        wait_for(lambda: int(server_stats(server)["curr_connections"]) <= base_conns, timeout=10)
        time.sleep(max(0.0, t_leave + 10 - time.monotonic()))
        end = figures(server)
        peak_after = sampler.peaks()
        result["stats_end"] = server_stats(server)
        sampler.halt.set()

        prober.stdin.write("stop\n")
        prober.stdin.flush()
        probe = json.loads(prober.stdout.readline())
        prober.wait(timeout=30)
        children.done("prober")

        server.stop()
        children.done("kestrel")
        log_text = open(server.log_path, errors="replace").read()
        result.update({
            "start": start, "after_baseline": after_base, "established": established,
            "peak": peak, "peak_incl_recovery": peak_after, "end": end,
            "baseline": base, "hostile": under, "hostile_left": left,
            "server_exit": server.proc.returncode,
            "server_panicked": "panicked" in log_text,
            "window": [t_hostile, t_leave],
        })
    finally:
        children.stop_all()
    if args.server_env:
        result["settings"]["server_env"] = args.server_env
    code = summarize(result, probe, n_conns)
    if args.json:
        result["probe"] = {k: v for k, v in probe.items() if k != "samples"}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return code


def summarize(r, probe, planned_conns):
    t0, t1 = r["window"]
    hostile_ms = sorted(rtt * 1000 for t, rtt in probe["samples"] if t0 <= t < t1)
    quiet_ms = sorted(rtt * 1000 for t, rtt in probe["samples"] if t >= t1)
    pct = lambda v, p: limits.percentile(v, p) if v else float("nan")
    base, under = r["baseline"], r["hostile"]
    rate0 = base["items_per_sec"]
    rate1 = under["items_per_sec"] if under else 0.0
    start, peak, end = r["start"], r["peak"], r["end"]
    conns = max(0, peak["fds"] - start["fds"])
    rss_bound = 64 + 12 * conns / 1024
    st, left = r["stats_hostile"], r["hostile_left"]
    rows = [
        ("prober set+get round trip under hostile load: p50 / p99 / max",
         f"{pct(hostile_ms, 0.5):.2f} / {pct(hostile_ms, 0.99):.2f} / "
         f"{max(hostile_ms, default=float('nan')):.2f} ms ({len(hostile_ms)} probes)"),
        ("prober after the hostile clients left: p50 / p99 / max",
         f"{pct(quiet_ms, 0.5):.2f} / {pct(quiet_ms, 0.99):.2f} / "
         f"{max(quiet_ms, default=float('nan')):.2f} ms ({len(quiet_ms)} probes)"),
        ("flood 64 B, 10 connections: alone / under hostile load",
         f"{rate0:,.0f} / {rate1:,.0f} items/s ({rate1 / rate0:.2f}x)"
         + (f" — {r['flood_hostile_error']}" if r["flood_hostile_error"] else "")),
        ("flood p99 alone / under hostile load",
         f"{base['p99_ms']:.2f} / {under['p99_ms'] if under else float('nan'):.2f} ms"),
        ("server CPU per 1,000 flood items: alone / under hostile load",
         f"{base['server_cpu'] / base['items'] * 1000 * 1000:.1f} / "
         + (f"{under['server_cpu'] / under['items'] * 1000 * 1000:.1f} ms" if under else "-")),
        ("server RSS: start / after the baseline / hostile clients connected / peak / end (10 s after)",
         f"{start['rss']:.1f} / {r['after_baseline']['rss']:.1f} / {r['established']['rss']:.1f} / "
         f"{peak['rss']:.1f} / {end['rss']:.1f} MiB"),
        ("server RssAnon / RssFile: start / end",
         f"{start['rss_anon']:.1f} / {start['rss_file']:.1f} → {end['rss_anon']:.1f} / {end['rss_file']:.1f} MiB"),
        ("server VmSize: start / peak / end",
         f"{start['vmsize']:.0f} / {peak['vmsize']:.0f} / {end['vmsize']:.0f} MiB"),
        ("server fds: start / peak / end", f"{start['fds']} / {peak['fds']} / {end['fds']}"),
        ("connections at peak (server fds − start) / planned", f"{conns:,} / {planned_conns:,}"),
        ("prober items acknowledged / received / lost",
         f"{probe['acked']:,} / {probe['received']:,} / {probe['lost_count']}"
         f" (duplicates {probe['duplicates']}, errors {probe['error_count']})"),
        ("slow-drip sets stored / closed by the server",
         f"{left['drip_stored']:,} / {left['drip_closed_by_server']:,}"),
        ("header-only frames sent / closed by the server",
         f"{left['header_sent']:,} / {left['header_closed_by_server']:,}"),
        ("never-reading client: bytes the server took before it stopped reading",
         f"{left['deaf_bytes_sent'] / MIB:.1f} MiB"),
        ("idle connections closed by the server / connect errors",
         f"{left['idle_closed_by_server']} / {left['connect_errors']}"),
        ("server stats under load: request_timeouts, rejected_connections, buffer_waits",
         f"{st.get('request_timeouts')}, {st.get('rejected_connections')}, {st.get('buffer_waits')}"),
        ("server exit after SIGTERM / panic in its log",
         f"{r['server_exit']} / {'yes' if r['server_panicked'] else 'no'}"),
    ]
    p99 = pct(hostile_ms, 0.99)
    goals = [
        ("prober p99 ≤ 10 ms under hostile load", f"{p99:.2f} ms", p99 <= 10),
        ("flood ≥ 70% of its rate alone", f"{rate1 / rate0:.0%}", under is not None and rate1 >= 0.7 * rate0),
        (f"peak RSS ≤ 64 MiB + 12 KiB × {conns:,} connections = {rss_bound:.0f} MiB",
         f"{peak['rss']:.1f} MiB", peak["rss"] <= rss_bound),
        ("RSS within 16 MiB of start 10 s after the hostile clients left",
         f"{end['rss'] - start['rss']:+.1f} MiB", end["rss"] - start["rss"] <= 16),
        ("0 prober items lost", f"{probe['lost_count']} lost of {probe['acked']:,}",
         probe["lost_count"] == 0 and probe["acked"] > 0),
    ]
    env = r["settings"].get("server_env")
    print(f"Server: defaults ({r['server_limits']})" + (f", environment {' '.join(env)}" if env else "")
          + f"; hostile clients: {r['settings']['idle']:,} idle, "
          f"{r['settings']['drippers']:,} slow-drip (1 byte / {r['settings']['drip_interval']} s), "
          f"{r['settings']['headers']:,} header-only Thrift frames, 1 never reading; "
          f"flood under load sized for {r['settings']['duration']} s.")
    print()
    print("| measure | value |")
    print("|---|---|")
    for k, v in rows:
        print(f"| {k} | {v} |")
    print()
    print("| goal | measured | result |")
    print("|---|---|---|")
    for k, v, ok in goals:
        print(f"| {k} | {v} | {'PASS' if ok else 'FAIL'} |")
    if probe["errors"]:
        log(f"prober errors: {probe['errors']}")
    if probe["lost"]:
        log(f"prober items lost (first 20): {probe['lost']}")
    return 0 if all(ok for _, _, ok in goals) else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--kestrel", required=True)
    run.add_argument("--bench", required=True)
    run.add_argument("--work", required=True, help="an empty directory for the data and logs")
    run.add_argument("--duration", type=float, default=60,
                     help="seconds the flood under hostile load should last at the baseline rate")
    run.add_argument("--baseline-items", type=int, default=300_000)
    run.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                     help="an environment variable for the server only (for A/B runs, e.g. LD_PRELOAD)")
    run.add_argument("--json", help="also write every figure of the run to this file")
    for p in (run, sub.add_parser("hostile")):
        p.add_argument("--idle", type=int, default=10_000)
        p.add_argument("--drippers", type=int, default=1_000)
        p.add_argument("--headers", type=int, default=500)
        p.add_argument("--drip-interval", type=float, default=1.0,
                       help="seconds between the bytes of a slow-drip request")
    hostile = sub.choices["hostile"]
    hostile.add_argument("--memcache", required=True)
    hostile.add_argument("--thrift", required=True)
    hostile.add_argument("--connect-concurrency", type=int, default=256)
    prober = sub.add_parser("prober")
    prober.add_argument("--memcache", required=True)
    prober.add_argument("--period", type=float, default=0.01)
    args = parser.parse_args()
    if args.cmd != "run":
        # Ctrl-C reaches the whole process group; the run stops its children
        # itself, in order, so they leave that to it.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.cmd == "run":
        sys.exit(run_main(args))
    elif args.cmd == "hostile":
        hostile_main(args)
    else:
        prober_main(args)


if __name__ == "__main__":
    main()
