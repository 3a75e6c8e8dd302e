"""The Python client against real servers on loopback."""

import time

import pytest

from kestrel_client import Client, Refused, Status


def test_binary_items_round_trip(start_server):
    with Client([start_server().address]) as c:
        item = bytes([0, 255, 10, 13, 0, 1])
        assert c.put("rt", [item, b"second"]) == 2
        assert c.get("rt", 5) == [item, b"second"]
        assert c.peek("rt").items == 0
        assert c.version()
        assert c.status() == Status.UP


def test_a_get_times_out_empty(start_server):
    with Client([start_server().address]) as c:
        start = time.monotonic()
        assert c.get("empty", timeout=0.3) == []
        assert time.monotonic() - start >= 0.3


def test_consume_confirms_handled_items_and_puts_back_failed_ones(start_server):
    with Client([start_server().address]) as c:
        c.put("work", [b"one", b"two"])

        def fail(_):
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            c.consume("work", fail)
        info = c.peek("work")
        assert (info.items, info.open_transactions) == (2, 0)
        seen = []
        assert c.consume("work", seen.append, max_items=5) == 2
        assert seen == [b"one", b"two"]
        info = c.peek("work")
        assert (info.items, info.open_transactions) == (0, 0)
        assert c.consume("work", seen.append) == 0


def test_with_two_servers_one_stopped_mid_run_nothing_acknowledged_is_lost(start_server):
    a, b = start_server("a"), start_server("b")
    acked = []
    with Client([a.address, b.address], retry_after=0.2) as c:
        for i in range(200):
            if i == 100:
                a.stop()
            item = b"item-%03d" % i
            if c.put("two", [item]) == 1:
                acked.append(item)
        assert len(acked) == 200
        taken = c.get("two", timeout=0.5)  # gets go on with a down
        assert len(taken) == 1
    a2 = start_server("a")  # a again, on its data, with a new port
    found = []
    with Client([a2.address, b.address]) as reader:
        while True:
            got = reader.get("two", 100)
            if not got:
                break
            found += got
    # Every acknowledged item exactly once: found, or taken above.
    assert sorted(found + taken) == sorted(acked)


def test_a_server_that_refuses_reads_does_not_stop_gets_from_the_others(start_server):
    a, b = start_server("a"), start_server("b")
    with Client([b.address]) as c:
        c.put("q", [b"one", b"two"])
    with Client([a.address]) as c:
        c.set_status(Status.QUIESCENT)
    with Client([a.address, b.address]) as c:
        # Round-robin: each server comes first once; a refuses, b answers.
        assert c.get("q") == [b"one"]
        assert c.get("q") == [b"two"]
        assert c.get("q") == []
    with Client([a.address]) as c:
        # With only refusing servers the refusal comes back without waiting
        # out the timeout.
        start = time.monotonic()
        with pytest.raises(Refused):
            c.get("q", timeout=30)
        assert time.monotonic() - start < 10
