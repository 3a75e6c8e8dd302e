"""The memcache adapter through two memcache clients from PyPI:
python-memcached and pymemcache."""

import threading
import time

import memcache
import pytest
from conftest import Server
from pymemcache.client.base import Client as PymemcacheClient


class KestrelPymemcache(PymemcacheClient):
    """pymemcache, told that Kestrel answers `get q/open` with `VALUE q ...`.

    pymemcache maps each VALUE line's key back to a requested key and raises
    KeyError for the bare queue name Kestrel (and this server) sends.
    `_extract_value` is pymemcache's documented hook for other value formats.
    """

    def _extract_value(self, expect_cas, line, buf, remapped_keys, prefixed_keys):
        _, key, *rest = line.split(b" ")
        for requested in prefixed_keys:
            if requested.split(b"/", 1)[0] == key:
                line = b" ".join([b"VALUE", requested, *rest])
                break
        return super()._extract_value(expect_cas, line, buf, remapped_keys, prefixed_keys)


# Kestrel ignores flags and answers with flags 0, so python-memcached hands
# values back as bytes.
@pytest.fixture
def pm(server):
    c = memcache.Client(["%s:%d" % server.memcache])
    yield c
    c.disconnect_all()


@pytest.fixture
def pym(server):
    c = KestrelPymemcache(server.memcache, timeout=30)
    yield c
    c.close()


def test_python_memcached_basics(pm):
    assert pm.set("jobs", "hello")
    assert pm.set("jobs", "world")
    assert pm.get("jobs") == b"hello"
    assert pm.delete("jobs")
    [(_, stats)] = pm.get_stats()
    assert stats["version"] and int(stats["curr_connections"]) >= 1
    assert "queue_jobs_items" not in stats  # deleted
    assert pm.get("jobs") is None  # (and created again)


def test_python_memcached_accepts_the_bare_queue_name(pm):
    for item in ("a", "b", "c"):
        assert pm.set("r", item)
    assert pm.get("r/peek") == b"a"
    assert pm.get("r/open") == b"a"
    assert pm.get("r/abort") is None
    assert pm.get("r/close/open") == b"a"  # nothing open to close; opens "a" again
    assert pm.get("r/close/open") == b"b"
    assert pm.get("r/close") is None
    assert pm.get("r/t=100") == b"c"
    start = time.monotonic()
    assert pm.get("r/t=200") is None
    assert time.monotonic() - start >= 0.2


def test_python_memcached_blocking_get(server, pm):
    result = {}

    def reader():
        c = memcache.Client(["%s:%d" % server.memcache], socket_timeout=30)
        result["item"] = c.get("later/t=20000/open")
        c.get("later/close")

    t = threading.Thread(target=reader)
    t.start()
    deadline = time.monotonic() + 20
    while int(pm.get_stats()[0][1].get("queue_later_waiters", 0)) != 1:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    pm.set("later", "x")
    t.join()
    assert result["item"] == b"x"


def test_pymemcache_basics(pym):
    assert pym.set("jobs", b"hello", noreply=False)
    assert pym.set("jobs", b"world", noreply=False)
    assert pym.get("jobs") == b"hello"
    assert pym.delete("jobs", noreply=False)
    assert pym.get("jobs") is None
    assert pym.version() == pym.stats()[b"version"]
    assert pym.stats()[b"curr_connections"] >= 1


def test_pymemcache_options(pym):
    for item in (b"a", b"b", b"c"):
        assert pym.set("r", item, noreply=False)
    assert pym.get("r/peek") == b"a"
    assert pym.get("r/open") == b"a"
    assert pym.get("r/abort") is None
    assert pym.get("r/open") == b"a"
    assert pym.get("r/close/open") == b"b"
    assert pym.get("r/close") is None
    assert pym.get("r/t=100") == b"c"
    assert pym.get("r/t=50") is None
    assert pym.stats()[b"queue_r_open_transactions"] == 0


def wait_for_stat(client, name, value, timeout=20.0):
    """Polls pymemcache `stats` until `name` reads `value` (a server-side
    state, such as a disconnect's aborted reads, with no event to wait on)."""
    deadline = time.monotonic() + timeout
    while client.stats().get(name) != value:
        assert time.monotonic() < deadline, f"{name} never became {value}"
        time.sleep(0.01)


@pytest.fixture
def server_with(tmp_path):
    """Starts servers with KESTREL_* settings; stops them after the test."""
    servers = []

    def start(**settings):
        s = Server(tmp_path / f"data-{len(servers)}", settings=settings)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


N_ITEMS = 300
ITEMS = [b"item-%d" % i for i in range(N_ITEMS)]


def filled(server):
    """A stock pymemcache client, after putting ITEMS into queue `work`."""
    c = PymemcacheClient(server.memcache, timeout=30)
    for item in ITEMS:
        assert c.set("work", item, noreply=False)
    return c


def test_stock_pymemcache_rejects_bare_value_keys(server_with):
    """With memcache_value_key = "bare" (the default, Kestrel's `VALUE
    <queue>`), unmodified pymemcache 4.0 cannot run the reliable worker loop:
    it matches each VALUE line's key to the key it asked for, and raises
    KeyError for the bare queue name."""
    for settings in ({}, {"KESTREL_MEMCACHE_VALUE_KEY": "bare"}):
        server = server_with(**settings)
        producer = filled(server)
        worker = PymemcacheClient(server.memcache, timeout=30)
        with pytest.raises(KeyError):
            worker.get("work/close/open")
        # pymemcache dropped the connection: the item it was sent goes back.
        wait_for_stat(producer, b"queue_work_open_transactions", 0)
        assert worker.get("work") == b"item-0"  # plain gets work (same key)
        assert producer.stats()[b"queue_work_items"] == N_ITEMS - 1
        worker.close()
        producer.close()


def test_stock_pymemcache_reliable_read_loop_with_full_value_keys(server_with):
    """With memcache_value_key = "full" the VALUE line echoes the key as
    sent, and unmodified pymemcache runs the worker loop: each `get
    work/close/open` confirms the previous item and opens the next. Two
    workers deliver every item exactly once, after a third disconnected
    holding one open."""
    server = server_with(KESTREL_MEMCACHE_VALUE_KEY="full")
    producer = filled(server)
    quitter = PymemcacheClient(server.memcache, timeout=30)
    assert quitter.get("work/open") == b"item-0"
    quitter.close()
    # Its open item goes back to the head, for a worker to get.
    wait_for_stat(producer, b"queue_work_open_transactions", 0)

    delivered = [[], []]

    def worker(out):
        c = PymemcacheClient(server.memcache, timeout=30)
        # The last get confirms the last item and finds the queue empty.
        while (item := c.get("work/close/open")) is not None:
            out.append(item)
        c.close()

    threads = [threading.Thread(target=worker, args=(out,)) for out in delivered]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Every item once, none twice, each worker's in queue order.
    assert sorted(delivered[0] + delivered[1]) == sorted(ITEMS)
    for out in delivered:
        assert out == sorted(out, key=ITEMS.index)
    stats = producer.stats()
    assert (stats[b"queue_work_items"], stats[b"queue_work_open_transactions"]) == (0, 0)
    assert stats[b"queue_work_transactions"] == N_ITEMS + 1
    assert stats[b"queue_work_canceled_transactions"] == 1  # the quitter's
    producer.close()
