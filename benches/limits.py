#!/usr/bin/env python3
"""Resource figures of a kestrel server under hostile or unusual load (issue 10).

Each measurement starts its own server (the binary given by --kestrel) on
127.0.0.1 with ephemeral ports and a temporary data directory, and stops it:

  queues       N queues of one 1-byte item: fill time, disk and inodes per
               queue, open file descriptors, RSS, and the time from start to
               ready (and to the first get) after a clean stop and after
               kill -9.
  headers      500 Thrift connections that send a 4-byte header announcing a
               16 MiB frame and nothing more: RSS before, during, after.
  frames       64 connections that send all but the last byte of a 16 MiB
               Thrift frame: RSS during, and 10 s after they close.
  idle         10,000 idle connections: RSS and descriptors.
  big-put      A client putting 1M empty items in one 4 MiB Thrift call, ten
               times, while a prober does a memcache set+get every 10 ms on
               another queue: the prober's p50, p99 and max round trip.

  benches/limits.py [--kestrel target/release/kestrel] [--queues 100000]
                    [--only queues,headers,...]

Prints a markdown table. Loopback only.
"""

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Server:
    """A kestrel process on a data directory."""

    def __init__(self, binary, data_dir, env=None, timeout=120):
        self.data_dir = data_dir
        self.log_path = data_dir + ".log"
        cmd = [binary, "--data-dir", data_dir, "--listen", "127.0.0.1",
               "--thrift-port", "0", "--memcache-port", "0", "--text-port", "0", "--admin-port", "off"]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("KESTREL_")}
        full_env.update(env or {})
        full_env.setdefault("RUST_LOG", "info")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL,
                                     stderr=open(self.log_path, "w"), env=full_env)
        self.ready_after = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = open(self.log_path).read()
            if "ready to serve" in text:
                self.ready_after = time.monotonic() - self.started
                break
            if self.proc.poll() is not None:
                raise RuntimeError("kestrel exited: " + text)
            time.sleep(0.005)
        else:
            raise RuntimeError("kestrel did not start: " + open(self.log_path).read())
        addrs = dict(re.findall(r"(thrift|memcache|text) listening on ([\d.]+:\d+)", text))
        self.addr = {k: (v.split(":")[0], int(v.split(":")[1])) for k, v in addrs.items()}

    def status(self, field):
        for line in open(f"/proc/{self.proc.pid}/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def rss_mib(self):
        return self.status("VmRSS") / 1024

    def fds(self):
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def stop(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)
        self.proc.wait(timeout=120)


@contextlib.contextmanager
def fresh_server(binary, scenario):
    """A server on a data directory of its own, stopped and removed after."""
    work = tempfile.mkdtemp(prefix=f"kestrel-{scenario}-")
    try:
        server = Server(binary, os.path.join(work, "data"))
        yield server
        server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def connect(addr):
    s = socket.create_connection(addr)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_until(s, buf, token, count=1):
    while buf.count(token) < count:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return buf


def disk_usage(path):
    blocks, inodes = 0, 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            st = os.lstat(os.path.join(root, name))
            blocks += st.st_blocks
            inodes += 1
    return blocks * 512, inodes


def fill_queues(server, n, prefix="q"):
    s = connect(server.addr["memcache"])
    batch = 1000
    for start in range(0, n, batch):
        end = min(n, start + batch)
        s.sendall(b"".join(f"set {prefix}{i} 0 0 1\r\nx\r\n".encode() for i in range(start, end)))
        buf = read_until(s, b"", b"\r\n", end - start)
        refused = [line for line in buf.split(b"\r\n")[:-1] if line != b"STORED"]
        if refused:
            raise RuntimeError(f"{len(refused)} sets refused in {prefix}{start}..: {refused[0]!r}")
    s.close()


def first_get(server, queue):
    s = connect(server.addr["memcache"])
    s.sendall(f"get {queue}\r\n".encode())
    buf = read_until(s, b"", b"END\r\n")
    s.close()
    return b"VALUE" in buf


def measure_queues(binary, n, rows):
    work = tempfile.mkdtemp(prefix="kestrel-queues-")
    data = os.path.join(work, "data")
    try:
        server = Server(binary, data)
        t0 = time.monotonic()
        fill_queues(server, n)
        fill = time.monotonic() - t0
        time.sleep(3)  # let checkpoints settle, as a quiet server would
        rows.append(("queues", f"fill {n} queues, 1 item each", f"{fill:.1f} s"))
        rows.append(("queues", "server fds after the fill", server.fds()))
        rows.append(("queues", "server RSS after the fill", f"{server.rss_mib():.0f} MiB"))
        server.stop()
        size, inodes = disk_usage(os.path.join(data, "queues"))
        rows.append(("queues", "disk per queue", f"{size / n / 1024:.1f} KiB"))
        rows.append(("queues", "inodes per queue", f"{inodes / n:.2f}"))
        for how in ["clean stop", "kill -9"]:
            server = Server(binary, data, timeout=600)
            ready = server.ready_after
            ok = first_get(server, f"q{n - 1}")
            got = time.monotonic() - server.started
            rows.append(("queues", f"restart after {how}: ready / first get",
                         f"{ready:.2f} s / {got:.2f} s" + ("" if ok else " (item missing!)")))
            rows.append(("queues", f"fds after restart ({how})", server.fds()))
            rows.append(("queues", f"RSS after restart ({how})", f"{server.rss_mib():.0f} MiB"))
            # Put the item back for the next round.
            fill_queues_one(server, f"q{n - 1}")
            if how == "clean stop":
                # Touch every queue so each journal has unflushed records.
                fill_queues(server, n, prefix="q")
                server.stop(signal.SIGKILL)
            else:
                server.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fill_queues_one(server, queue):
    s = connect(server.addr["memcache"])
    s.sendall(f"set {queue} 0 0 1\r\nx\r\n".encode())
    read_until(s, b"", b"\r\n")
    s.close()


def thrift_header(length):
    return struct.pack(">I", length)


def measure_headers(binary, rows):
    with fresh_server(binary, "headers") as server:
        before = server.rss_mib()
        conns = []
        for _ in range(500):
            s = connect(server.addr["thrift"])
            s.sendall(thrift_header(16 * 1024 * 1024 - 1))
            conns.append(s)
        time.sleep(1)
        during = server.rss_mib()
        vm = server.status("VmSize") / 1024
        for s in conns:
            s.close()
        time.sleep(2)
        after = server.rss_mib()
        rows.append(("headers", "500 header-only Thrift frames: RSS before / during / after",
                     f"{before:.0f} / {during:.0f} / {after:.0f} MiB (VmSize during {vm:.0f} MiB)"))


def measure_frames(binary, rows):
    with fresh_server(binary, "frames") as server:
        before = server.rss_mib()
        size = 16 * 1024 * 1024 - 16
        body = b"\0" * (size - 1)
        conns = []
        def send(s):
            try:
                s.sendall(thrift_header(size) + body)
            except OSError:
                pass  # closed below while held back: expected
        threads = []
        for _ in range(64):
            s = connect(server.addr["thrift"])
            conns.append(s)
            t = threading.Thread(target=send, args=(s,))
            t.start()
            threads.append(t)
        # Senders block once the server stops reading; give it time either way.
        deadline = time.monotonic() + 20
        peak = before
        while time.monotonic() < deadline and any(t.is_alive() for t in threads):
            peak = max(peak, server.rss_mib())
            time.sleep(0.2)
        peak = max(peak, server.rss_mib())
        blocked = sum(t.is_alive() for t in threads)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in threads:
            t.join(timeout=30)
        time.sleep(10)
        after = server.rss_mib()
        rows.append(("frames", "64 nearly complete 16 MiB frames: RSS before / peak / 10 s after close",
                     f"{before:.0f} / {peak:.0f} / {after:.0f} MiB ({blocked} senders held back)"))


def measure_idle(binary, rows, n=10000):
    with fresh_server(binary, "idle") as server:
        before, fds_before = server.rss_mib(), server.fds()
        conns = [connect(server.addr["memcache"]) for _ in range(n)]
        # One round trip on each, so each has been served once.
        for s in conns:
            s.sendall(b"version\r\n")
        for s in conns:
            read_until(s, b"", b"\r\n")
        time.sleep(1)
        rows.append(("idle", f"{n} idle connections: RSS before / with them",
                     f"{before:.0f} / {server.rss_mib():.0f} MiB"))
        rows.append(("idle", f"{n} idle connections: fds before / with them",
                     f"{fds_before} / {server.fds()}"))
        for s in conns:
            s.close()


def thrift_put(queue, items):
    name = b"put"
    body = struct.pack(">I", 0x80010001) + struct.pack(">I", len(name)) + name + struct.pack(">i", 1)
    q = queue.encode()
    body += struct.pack(">bh", 11, 1) + struct.pack(">I", len(q)) + q
    body += struct.pack(">bh", 15, 2) + struct.pack(">bI", 11, len(items))
    body += b"".join(struct.pack(">I", len(i)) + i for i in items)
    body += struct.pack(">bhi", 8, 3, 0) + b"\0"
    return struct.pack(">I", len(body)) + body


def read_frame(s, buf):
    buf = read_until_len(s, buf, 4)
    n = struct.unpack(">I", buf[:4])[0]
    buf = read_until_len(s, buf, 4 + n)
    return buf[4:4 + n], buf[4 + n:]


def read_until_len(s, buf, n):
    while len(buf) < n:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise RuntimeError("connection closed")
        buf += chunk
    return buf


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


def measure_big_put(binary, rows):
    with fresh_server(binary, "bigput") as server:
        frame = thrift_put("big", [b""] * 1_000_000)
        done = threading.Event()
        latencies = []

        def prober():
            s = connect(server.addr["memcache"])
            while not done.is_set():
                t = time.monotonic()
                s.sendall(b"set probe 0 0 1\r\nx\r\nget probe\r\n")
                read_until(s, b"", b"END\r\n")
                latencies.append(time.monotonic() - t)
                time.sleep(0.01)
            s.close()

        p = threading.Thread(target=prober)
        p.start()
        time.sleep(0.5)
        s = connect(server.addr["thrift"])
        buf = b""
        for _ in range(10):
            s.sendall(frame)
            _, buf = read_frame(s, buf)
        done.set()
        p.join()
        ms = [x * 1000 for x in latencies]
        rows.append(("big-put", "prober set+get during 10 puts of 1M empty items: p50 / p99 / max",
                     f"{percentile(ms, 0.5):.2f} / {percentile(ms, 0.99):.2f} / {max(ms):.2f} ms ({len(ms)} probes)"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kestrel", default="target/release/kestrel")
    parser.add_argument("--queues", type=int, default=100_000)
    parser.add_argument("--only", default="queues,headers,frames,idle,big-put")
    args = parser.parse_args()
    only = args.only.split(",")
    rows = []
    steps = {
        "queues": lambda: measure_queues(args.kestrel, args.queues, rows),
        "headers": lambda: measure_headers(args.kestrel, rows),
        "frames": lambda: measure_frames(args.kestrel, rows),
        "idle": lambda: measure_idle(args.kestrel, rows),
        "big-put": lambda: measure_big_put(args.kestrel, rows),
    }
    for name in only:
        log(f"== {name}")
        try:
            steps[name]()
        except Exception as e:  # a server that dies is a result too
            rows.append((name, "failed", repr(e)[:200]))
    print("| scenario | measure | value |")
    print("|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")


if __name__ == "__main__":
    main()
