#!/usr/bin/env python3
"""Round trips per second of one Python client doing put + get of one item.

    python3 benches/thrift_roundtrip.py [--port 2229] [--seconds 5] [--size 64] [--accelerated]

Each round trip is a put of one random item followed by a get of one item
(two calls). Needs `pip install thrift`; uses the stubs in gen/py.
"""

import argparse
import os
import pathlib
import socket
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "gen" / "py"))
from kestrel import Kestrel  # noqa: E402
from thrift.protocol import TBinaryProtocol  # noqa: E402
from thrift.transport import TSocket, TTransport  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2229)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--queue", default="bench_roundtrip")
    p.add_argument("--accelerated", action="store_true", help="use the C-accelerated binary protocol")
    a = p.parse_args()

    sock = TSocket.TSocket(a.host, a.port)
    transport = TTransport.TFramedTransport(sock)
    proto = (TBinaryProtocol.TBinaryProtocolAccelerated if a.accelerated else TBinaryProtocol.TBinaryProtocol)
    client = Kestrel.Client(proto(transport))
    transport.open()
    sock.handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    client.flush_queue(a.queue)

    n = 0
    start = time.perf_counter()
    deadline = start + a.seconds
    while time.perf_counter() < deadline:
        for _ in range(100):
            client.put(a.queue, [os.urandom(a.size)], 0)
            got = client.get(a.queue, 1, 0, 0)
            assert len(got) == 1 and len(got[0].data) == a.size
        n += 100
    elapsed = time.perf_counter() - start
    kind = "accelerated" if a.accelerated else "pure-python"
    print(f"{n} round trips (put+get, {a.size} B, {kind} TBinaryProtocol) in {elapsed:.2f} s: "
          f"{n / elapsed:,.0f} round trips/s, {2 * n / elapsed:,.0f} calls/s")


if __name__ == "__main__":
    main()
