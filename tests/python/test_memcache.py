"""The memcache adapter through two memcache clients from PyPI:
python-memcached and pymemcache."""

import threading
import time

import memcache
import pytest
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


def test_stock_pymemcache_rejects_the_bare_queue_name(server):
    """Evidence for the closing note: unmodified pymemcache 4.0 cannot read a
    `VALUE q` reply to `get q/open` (Kestrel's wire format, kept here)."""
    c = PymemcacheClient(server.memcache, timeout=30)
    c.set("s", b"x", noreply=False)
    assert c.get("s") == b"x"  # plain gets work
    c.set("s", b"y", noreply=False)
    with pytest.raises(KeyError):
        c.get("s/open")
    c.close()
