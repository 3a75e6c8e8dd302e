#!/usr/bin/env python3
"""Puts and gets 64-byte items and prints the round trips per second:

    python3 clients/python/examples/roundtrip.py 127.0.0.1:2229 5
"""

import sys
import time

from kestrel_client import Client

server = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:2229"
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 5.0
with Client([server]) as client:
    client.flush("client_roundtrip")
    item, n, start = b"x" * 64, 0, time.monotonic()
    while time.monotonic() - start < seconds:
        client.put("client_roundtrip", [item])
        assert client.get("client_roundtrip") == [item]
        n += 1
    rate = n / (time.monotonic() - start)
    print(f"python client: {n} round trips (put + get, 64 B) in {seconds} s: {rate:.0f} round trips/s")
