#!/usr/bin/env python3
"""Writes a Kestrel 2.x journal file for the import benchmark (benches/import.sh):
ITEMS items of SIZE bytes (ADDX records), of which the first CONSUMED are then
removed (REMOVE records), as a queue whose consumers are behind.

    benches/kestrel-journal.py OUT_FILE ITEMS SIZE [CONSUMED]
"""
import struct
import sys
import time


def main():
    out, items, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    consumed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    now = int(time.time() * 1000)
    payload = (b"%d-byte item " % size * (size // 8 + 2))[:size]
    header = struct.Struct("<Biqq")
    with open(out, "wb", buffering=8 << 20) as f:
        for n in range(items):
            # ADDX: opcode, size (data + 16), add time, expiry (0: none), data.
            f.write(header.pack(2, size + 16, now - items + n, 0))
            f.write(payload)
        f.write(b"\x01" * consumed)  # REMOVE


if __name__ == "__main__":
    main()
