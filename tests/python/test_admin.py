"""The admin HTTP port (issue 13) over real HTTP against the real binary:
reading endpoints, /metrics through Prometheus's own text parser, ?period=
windows, the token-protected control endpoints, protocol_admin_commands and
turning the port off.

The memcache and text traffic here goes through a small raw-socket client so
that every request (and every byte) the server sees is known exactly."""

import math
import socket
import time

import pytest
import requests
from conftest import Server, ThriftClient
from kestrel.ttypes import Status
from prometheus_client.parser import text_string_to_metric_families
from thrift.Thrift import TApplicationException

TOKEN = "correct horse battery staple"
REFUSED = ("admin commands are off on this port (protocol_admin_commands = false); "
           "use the admin HTTP port")

GLOBAL_COUNTERS = (
    "total_items cmd_get cmd_set cmd_peek get_hits get_misses bytes_read bytes_written "
    "total_connections queue_creates queue_deletes queue_expires rejected_connections "
    "accept_errors request_timeouts protocol_errors rejected_open_reads rejected_creates "
    "journal_fsyncs").split()
QUEUE_COUNTERS = (
    "total_items put_items put_bytes get_items_hit get_items_miss transactions "
    "canceled_transactions expired_items discarded total_flushes journal_rewrites "
    "journal_rotations").split()
GLOBAL_GAUGES = ("connections items bytes open_files uptime status/readable "
                 "status/writeable").split()
QUEUE_GAUGES = ("items bytes journal_size mem_items mem_bytes age_msec waiters "
                "open_transactions").split()
METRICS = ("set_latency_usec get_hit_latency_usec get_miss_latency_usec get_timeout_msec "
           "delivery_latency_msec").split()
METRIC_FIELDS = {"count", "sum", "minimum", "maximum", "average", "p50", "p90", "p95", "p99",
                 "p999", "p9999"}
PERCENTILES = ("p50", "p90", "p95", "p99", "p999", "p9999")
CONTROL = ("/status/up", "/status/readonly", "/status/quiescent", "/reload", "/shutdown",
           "/flush/jobs", "/delete/jobs")


# --- clients ------------------------------------------------------------------------------

class Memcache:
    """One memcache connection; counts the bytes it sends and the bytes of
    the replies it reads, which are the server's bytes_read/bytes_written."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=30)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.file = self.sock.makefile("rb")
        self.sent = 0
        self.received = 0

    def send(self, data):
        self.sock.sendall(data)
        self.sent += len(data)

    def line(self):
        raw = self.file.readline()
        if not raw:
            raise ConnectionError("memcache connection closed")
        self.received += len(raw)
        return raw.rstrip(b"\r\n").decode()

    def call(self, command):
        self.send(command.encode() + b"\r\n")
        return self.line()

    def set(self, queue, data):
        self.send(b"set %s 0 0 %d\r\n%s\r\n" % (queue.encode(), len(data), data))
        return self.line()

    def get(self, key):
        """The item, or None for an empty reply."""
        self.send(b"get %s\r\n" % key.encode())
        first = self.line()
        if first == "END":
            return None
        assert first.startswith("VALUE "), first
        n = int(first.split()[3])
        data = self.file.read(n + 2)
        self.received += len(data)
        assert self.line() == "END"
        return data[:-2]

    def close(self):
        self.file.close()
        self.sock.close()


class Text:
    """One text-protocol connection: a line out, a line back."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=30)
        self.file = self.sock.makefile("rb")

    def call(self, command):
        self.sock.sendall(command.encode() + b"\n")
        return self.file.readline().rstrip(b"\r\n").decode()

    def close(self):
        self.file.close()
        self.sock.close()


def url(server, path):
    host, port = server.admin
    return f"http://{host}:{port}{path}"


def http_get(server, path, **kw):
    return requests.get(url(server, path), timeout=30, **kw)


def http_post(server, path, token=None, **kw):
    headers = kw.pop("headers", {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url(server, path), timeout=30, headers=headers, **kw)


def stats(server, period=None):
    r = http_get(server, "/stats.json" if period is None else f"/stats.json?period={period}")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    return r.json()


def server_info(server):
    r = http_get(server, "/server_info.json")
    assert r.status_code == 200, r.text
    return r.json()


def counter(s, name):
    return s["counters"].get(name, 0)


def count(s, name):
    return s["metrics"].get(name, {"count": 0})["count"]


def queue_names(s):
    return {k.split("/")[1] for section in ("counters", "gauges", "metrics")
            for k in s[section] if k.startswith("q/")}


def wait_until(condition, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} never became true"
        time.sleep(0.01)


@pytest.fixture
def start(tmp_path):
    """Starts servers with a configuration file's text (and extra flags);
    stops them all after the test."""
    servers = []

    def make(config=None, *extra, **kw):
        n = len(servers)
        args = list(extra)
        if config is not None:
            path = tmp_path / f"kestrel-{n}.toml"
            path.write_text(config)
            args = ["--config", str(path), *args]
        s = Server(tmp_path / f"data-{n}", *args, **kw)
        s.config_path = tmp_path / f"kestrel-{n}.toml"
        servers.append(s)
        return s

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def mc(server):
    c = Memcache(server.memcache)
    yield c
    c.close()


# --- reading ------------------------------------------------------------------------------

def test_ping(server):
    r = http_get(server, "/ping")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"response": "pong"}


def test_server_info(server, mc):
    before = time.time()
    info = server_info(server)
    assert info["name"] == "kestrel"
    assert info["version"] and mc.call("version") == "VERSION " + info["version"]
    assert info["status"] == "UP"
    assert info["ports"] == {"thrift": server.thrift[1], "memcache": server.memcache[1],
                             "text": server.text[1], "admin": server.admin[1]}
    assert isinstance(info["uptime"], int) and info["uptime"] >= 0
    assert isinstance(info["start_time"], int)
    # The server started before this request, and a moment ago.
    assert before - 60 <= info["start_time"] <= time.time() + 1
    assert abs(info["start_time"] + info["uptime"] - before) <= 2


def test_unknown_path_is_404(server):
    assert http_get(server, "/no/such/page").status_code == 404


def check_shape(s, queues):
    """Every counter, gauge and metric of the contract, globally and for each
    queue, each metric with its eleven integer fields."""
    assert set(s) == {"counters", "gauges", "metrics", "labels"}
    for name in GLOBAL_COUNTERS:
        assert isinstance(s["counters"][name], int), name
    for name in GLOBAL_GAUGES:
        assert isinstance(s["gauges"][name], int), name
    names = list(METRICS)
    for q in queues:
        for name in QUEUE_COUNTERS:
            assert isinstance(s["counters"][f"q/{q}/{name}"], int), (q, name)
        for name in QUEUE_GAUGES:
            assert isinstance(s["gauges"][f"q/{q}/{name}"], int), (q, name)
        names += [f"q/{q}/{name}" for name in METRICS]
    for name in names:
        m = s["metrics"][name]
        assert set(m) == METRIC_FIELDS, name
        assert all(isinstance(v, int) and v >= 0 for v in m.values()), (name, m)
        if m["count"] == 0:
            assert all(v == 0 for v in m.values()), (name, m)
        else:
            assert m["minimum"] <= m["average"] <= m["maximum"], (name, m)
            assert m["average"] == m["sum"] // m["count"], (name, m)
            ps = [m[p] for p in PERCENTILES]
            assert ps == sorted(ps), (name, m)
            assert m["minimum"] <= ps[0] and ps[-1] <= m["maximum"], (name, m)
    assert s["labels"]["version"] and s["labels"]["status"] in ("UP", "READONLY", "QUIESCENT")


def test_stats_json_counters_move_by_exactly_the_requests(server, mc):
    first, later = [b"x" * 1, b"y" * 10, b"z" * 100], [b"w" * 1000, b"v" * 3]
    assert mc.call("version").startswith("VERSION ")  # the connection is counted by now
    before = stats(server)
    check_shape(before, [])
    sent, received = mc.sent, mc.received

    for item in first:
        assert mc.set("a", item) == "STORED"
    assert [mc.get("a") for _ in first] == first  # three gets that hit
    assert mc.get("a") is None and mc.get("a") is None  # two that miss, no timeout
    for item in later:
        assert mc.set("a", item) == "STORED"
    assert mc.get("a/peek") == later[0]  # one peek

    after = stats(server)
    check_shape(after, ["a"])

    def moved(name):
        return counter(after, name) - counter(before, name)

    put_bytes = sum(map(len, first + later))
    assert {name: moved(name) for name in (
        "cmd_set", "total_items", "cmd_get", "get_misses", "cmd_peek",
        "q/a/put_items", "q/a/total_items", "q/a/put_bytes", "q/a/get_items_miss",
        "queue_creates", "total_connections", "q/a/transactions",
    )} == {
        "cmd_set": 5, "total_items": 5, "cmd_get": 5, "get_misses": 2, "cmd_peek": 1,
        "q/a/put_items": 5, "q/a/total_items": 5, "q/a/put_bytes": put_bytes,
        "q/a/get_items_miss": 2, "queue_creates": 1, "total_connections": 0,
        "q/a/transactions": 0,
    }
    # Socket-level byte counts: exactly what this connection sent and read.
    assert moved("bytes_read") == mc.sent - sent
    assert moved("bytes_written") == mc.received - received

    # Gauges: the current values.
    g = after["gauges"]
    left = sum(map(len, later))
    assert (g["q/a/items"], g["q/a/bytes"], g["q/a/mem_items"], g["q/a/mem_bytes"]) == \
        (2, left, 2, left)
    assert (g["q/a/waiters"], g["q/a/open_transactions"]) == (0, 0)
    assert g["q/a/journal_size"] > 0 and g["q/a/age_msec"] >= 0
    assert (g["items"], g["bytes"]) == (2, left)
    assert g["connections"] == 1  # this memcache connection
    assert (g["status/readable"], g["status/writeable"]) == (1, 1)
    assert g["uptime"] >= 0
    assert after["labels"]["status"] == "UP"

    # Every request is timed once, globally and under its queue.
    expected = {"set_latency_usec": 5, "get_miss_latency_usec": 2,
                "delivery_latency_msec": 3, "get_timeout_msec": 0}
    for name, n in expected.items():
        assert count(after, name) - count(before, name) == n, name
        assert count(after, f"q/a/{name}") == n, name

    # The same figures as the memcache `stats` command.
    mc.send(b"stats\r\n")
    mc_stats = {}
    while (line := mc.line()) != "END":
        _, key, value = line.split(" ", 2)
        mc_stats[key] = value
    for name in ("cmd_set", "total_items", "cmd_get", "get_hits", "get_misses", "cmd_peek"):
        assert int(mc_stats[name]) == counter(after, name), name
    assert int(mc_stats["queue_a_items"]) == g["q/a/items"]

    # A peek counts in cmd_peek, not cmd_get, but, as in Kestrel, a read that
    # finds an item is a hit whether it takes it or peeks: three gets and the
    # peek hit. Only the gets deliver.
    assert (moved("get_hits"), moved("q/a/get_items_hit")) == (4, 4)
    assert count(after, "get_hit_latency_usec") - count(before, "get_hit_latency_usec") == 4
    assert count(after, "q/a/get_hit_latency_usec") == 4


def test_a_get_whose_timeout_expires_counts_as_a_timeout(server, mc):
    before = stats(server)
    started = time.monotonic()
    assert mc.get("t/t=200") is None
    waited_ms = (time.monotonic() - started) * 1000
    after = stats(server)
    assert count(after, "get_timeout_msec") - count(before, "get_timeout_msec") == 1
    assert count(after, "get_miss_latency_usec") == count(before, "get_miss_latency_usec")
    assert counter(after, "get_misses") - counter(before, "get_misses") == 1
    assert counter(after, "cmd_get") - counter(before, "cmd_get") == 1
    assert counter(after, "q/t/get_items_miss") == 1
    m = after["metrics"]["q/t/get_timeout_msec"]
    assert m["count"] == 1
    assert 199 <= m["minimum"] == m["maximum"] == m["sum"] <= waited_ms + 2, m
    # A percentile is a bucket bound, within 19% of the value.
    assert m["sum"] * 0.8 <= m["p50"] <= m["sum"] * 1.2, m


def test_delivery_latency_is_the_time_from_put_to_get(server, mc):
    put_at = time.monotonic()
    assert mc.set("d", b"payload") == "STORED"
    time.sleep(0.3)  # the latency being measured, not a synchronisation
    assert mc.get("d") == b"payload"
    elapsed_ms = (time.monotonic() - put_at) * 1000
    m = stats(server)["metrics"]["q/d/delivery_latency_msec"]
    assert m["count"] == 1
    assert 299 <= m["minimum"] == m["maximum"] <= elapsed_ms + 2, m


def parse_stats_txt(text):
    sections, current = {}, None
    for line in text.splitlines():
        if not line.strip():
            continue
        if not line.startswith(" "):
            assert line.endswith(":"), line
            current = sections.setdefault(line[:-1], [])
            continue
        assert line.startswith("  ") and current is not None, line
        name, value = line.strip().split(": ", 1)
        current.append((name, value))
    return sections


def parse_metric_txt(value):
    assert value.startswith("(") and value.endswith(")"), value
    fields = dict(part.split("=", 1) for part in value[1:-1].split(", "))
    return {k: int(v) for k, v in fields.items()}


def test_stats_txt_matches_stats_json(server, mc):
    for item in (b"one", b"two", b"three"):
        mc.set("txt", item)
    mc.get("txt")
    mc.get("nothing")
    j1 = stats(server)
    r = http_get(server, "/stats.txt")
    j2 = stats(server)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    txt = parse_stats_txt(r.text)
    assert list(txt) == ["counters", "gauges", "labels", "metrics"]
    for section, entries in txt.items():
        names = [name for name, _ in entries]
        assert names == sorted(names), section
        assert set(names) == set(j2[section]), section
    for section in ("counters", "gauges"):
        for name, value in txt[section]:
            # A figure that moved between the two JSON reads (uptime) may
            # show either; the rest are exactly equal.
            lo, hi = sorted((j1[section][name], j2[section][name]))
            assert lo <= int(value) <= hi, (section, name, value)
    assert dict(txt["labels"]) == j2["labels"]
    for name, value in txt["metrics"]:
        assert parse_metric_txt(value) == j2["metrics"][name], name
    assert dict(txt["counters"])["q/txt/put_items"] == "3"


# --- /metrics -----------------------------------------------------------------------------

def scrape(server):
    """/metrics through prometheus-client's parser of the text format:
    {(sample name, labels): (value, type of the family it was declared in)}."""
    r = http_get(server, "/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    samples = {}
    for f in text_string_to_metric_families(r.text):
        for s in f.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in samples, key
            samples[key] = (s.value, f.type)
    return samples


def sample(samples, name, kind=None, **labels):
    """A sample's value; with `kind`, asserts the type its family declares."""
    value, declared = samples[(name, tuple(sorted(labels.items())))]
    if kind is not None:
        assert declared == kind, (name, labels, declared)
    return value


def histogram(samples, name, **labels):
    """The buckets (le, cumulative count), count and sum of one histogram."""
    buckets = sorted(
        (float(dict(key)["le"]), value) for (n, key), (value, kind) in samples.items()
        if n == name + "_bucket" and {k: v for k, v in key if k != "le"} == labels
        and kind == "histogram")
    return buckets, sample(samples, name + "_count", "histogram", **labels), \
        sample(samples, name + "_sum", "histogram", **labels)


def check_histogram(samples, name, json_metric, unit, **labels):
    buckets, n, total = histogram(samples, name, **labels)
    assert buckets, (name, labels)
    assert n == json_metric["count"], (name, labels)
    # Prometheus has the sum in seconds to the microsecond; stats.json in the
    # metric's unit, whole units (a `_msec` metric drops the microseconds).
    assert json_metric["sum"] == math.floor(round(total / unit, 6)), \
        (name, labels, total, json_metric)
    counts = [c for _, c in buckets]
    assert counts == sorted(counts), (name, labels, buckets)  # cumulative
    assert buckets[-1] == (math.inf, n), (name, labels)
    for le, _ in buckets[:-1]:  # powers of two of microseconds
        exp = math.log2(le / 1e-6)
        assert abs(exp - round(exp)) < 1e-6 and round(exp) >= 0, (name, le)
    assert buckets[0][0] == pytest.approx(1e-6)


def test_metrics_parse_and_agree_with_stats_json(server, mc):
    for q, items in (("a", [b"1", b"22", b"333"]), ("b", [b"4444"])):
        for item in items:
            assert mc.set(q, item) == "STORED"
    assert mc.get("a") == b"1"
    assert mc.get("b") == b"4444"
    assert mc.get("b") is None
    assert mc.get("b/t=50") is None
    j1 = stats(server)
    samples = scrape(server)
    j2 = stats(server)

    for name in GLOBAL_COUNTERS:
        lo, hi = sorted((j1["counters"][name], j2["counters"][name]))
        assert lo <= sample(samples, f"kestrel_{name}_total", "counter") <= hi, name
    assert sample(samples, "kestrel_cmd_set_total") == 4
    assert sample(samples, "kestrel_get_misses_total") == 2

    for name, json_name in (("connections", "connections"), ("items", "items"),
                            ("bytes", "bytes"), ("open_files", "open_files")):
        lo, hi = sorted((j1["gauges"][json_name], j2["gauges"][json_name]))
        assert lo <= sample(samples, f"kestrel_{name}", "gauge") <= hi, name
    assert j1["gauges"]["uptime"] <= sample(samples, "kestrel_uptime_seconds", "gauge") \
        <= j2["gauges"]["uptime"]
    assert {status: sample(samples, "kestrel_status", "gauge", status=status)
            for status in ("UP", "READONLY", "QUIESCENT")} == \
        {"UP": 1, "READONLY": 0, "QUIESCENT": 0}

    gauges = {"items": "kestrel_queue_items", "bytes": "kestrel_queue_bytes",
              "journal_size": "kestrel_queue_journal_bytes",
              "mem_items": "kestrel_queue_mem_items", "mem_bytes": "kestrel_queue_mem_bytes",
              "waiters": "kestrel_queue_waiters",
              "open_transactions": "kestrel_queue_open_transactions"}
    counters = {"put_items": "kestrel_queue_put_items",
                "put_bytes": "kestrel_queue_put_bytes",
                "get_items_hit": "kestrel_queue_get_hits",
                "get_items_miss": "kestrel_queue_get_misses",
                "expired_items": "kestrel_queue_expired_items",
                "discarded": "kestrel_queue_discarded",
                "transactions": "kestrel_queue_transactions",
                "canceled_transactions": "kestrel_queue_canceled_transactions",
                "total_flushes": "kestrel_queue_flushes",
                "journal_rewrites": "kestrel_queue_journal_rewrites",
                "journal_rotations": "kestrel_queue_journal_rotations"}
    for q in ("a", "b"):
        for json_name, prom in gauges.items():
            assert sample(samples, prom, "gauge", queue=q) == j2["gauges"][f"q/{q}/{json_name}"], \
                (q, prom)
        for json_name, prom in counters.items():
            assert sample(samples, prom + "_total", "counter", queue=q) == \
                j2["counters"][f"q/{q}/{json_name}"], (q, prom)
        age = sample(samples, "kestrel_queue_age_seconds", "gauge", queue=q)
        assert j1["gauges"][f"q/{q}/age_msec"] / 1000 - 0.001 <= age \
            <= j2["gauges"][f"q/{q}/age_msec"] / 1000 + 0.001, (q, age)
    assert sample(samples, "kestrel_queue_items", queue="a") == 2
    assert sample(samples, "kestrel_queue_put_bytes_total", queue="a") == 6

    # Histograms: the same counts as stats.json's metrics.
    ops = {"put": "set_latency_usec", "get_hit": "get_hit_latency_usec",
           "get_miss": "get_miss_latency_usec", "get_timeout": "get_timeout_msec"}
    for op, json_name in ops.items():
        unit = 1e-3 if json_name.endswith("_msec") else 1e-6
        check_histogram(samples, "kestrel_request_duration_seconds",
                        j2["metrics"][json_name], unit, op=op)
        for q in ("a", "b"):
            check_histogram(samples, "kestrel_queue_request_duration_seconds",
                            j2["metrics"][f"q/{q}/{json_name}"], unit, queue=q, op=op)
    check_histogram(samples, "kestrel_delivery_seconds",
                    j2["metrics"]["delivery_latency_msec"], 1e-3)
    for q in ("a", "b"):
        check_histogram(samples, "kestrel_queue_delivery_seconds",
                        j2["metrics"][f"q/{q}/delivery_latency_msec"], 1e-3, queue=q)
    counts = {op: histogram(samples, "kestrel_request_duration_seconds", op=op)[1]
              for op in ops}
    assert counts == {"put": 4, "get_hit": 2, "get_miss": 1, "get_timeout": 1}
    assert histogram(samples, "kestrel_queue_request_duration_seconds", queue="b",
                     op="get_timeout")[1] == 1


def test_record_latencies_off_keeps_counters_but_no_latencies(start):
    server = start("record_latencies = false\n")
    mc = Memcache(server.memcache)
    assert mc.set("q", b"x") == "STORED"
    assert mc.get("q") == b"x" and mc.get("q") is None and mc.get("q/t=10") is None
    s = stats(server)
    assert (counter(s, "cmd_set"), counter(s, "cmd_get"), counter(s, "q/q/get_items_hit"),
            counter(s, "q/q/get_items_miss")) == (1, 3, 1, 2)
    for name in METRICS:
        assert count(s, name) == 0 and count(s, f"q/q/{name}") == 0, name
    mc.close()


# --- ?period= windows ---------------------------------------------------------------------

def test_period_must_be_1_to_3600(server):
    for path in ("/stats.json", "/stats.txt"):
        for bad in ("0", "100000", "3601", "-1", "abc", ""):
            r = http_get(server, f"{path}?period={bad}")
            assert r.status_code == 400, (path, bad, r.status_code)
        assert http_get(server, f"{path}?period=3600").status_code == 200
        assert http_get(server, f"{path}?period=1").status_code == 200


def test_period_before_its_first_window_ends_is_the_change_since_the_first_request(
        server, mc):
    mc.set("early", b"x")
    first = stats(server, period=3600)
    for item in (b"a", b"bb", b"ccc"):
        mc.set("early", item)
    mc.get("early")
    s = stats(server, period=3600)
    assert (counter(s, "cmd_set"), counter(s, "q/early/put_items"),
            counter(s, "q/early/put_bytes"), counter(s, "cmd_get")) == (3, 3, 6, 1)
    assert count(s, "set_latency_usec") == 3 and count(s, "q/early/delivery_latency_msec") == 1
    assert s["gauges"]["q/early/items"] == 3  # gauges are current
    assert counter(first, "cmd_set") == 0


def test_period_windows(server, mc):
    """A 1-second window shows exactly the requests made in it, then a quiet
    window shows nothing; gauges stay current throughout."""
    def window():
        return stats(server, period=1)

    def puts(s):
        return counter(s, "q/w/put_items")

    def changed(s, shown):
        """`s` once it no longer shows the window that had `shown` puts."""
        return s if puts(s) != shown else None

    window()  # the first request for period=1 starts its windows
    # A marker put; once a window without it is shown, a window has just
    # been latched, and the next one has (nearly) a second to run.
    assert mc.set("w", b"marker") == "STORED"
    wait_until(lambda: puts(window()) == 0, timeout=5,
               what="a window with the marker, then one without")
    latched = time.monotonic()
    for _ in range(4):
        assert mc.set("w", b"0123456789") == "STORED"
    assert mc.get("w") == b"marker"
    assert time.monotonic() < latched + 0.8, "the requests did not fit in one window"

    w1 = wait_until(lambda: changed(window(), 0), timeout=5, what="the busy window shown")
    assert (puts(w1), counter(w1, "q/w/put_bytes"), counter(w1, "cmd_set"),
            counter(w1, "total_items"), counter(w1, "cmd_get"), counter(w1, "get_hits"),
            counter(w1, "q/w/get_items_hit"), counter(w1, "get_misses")) == \
        (4, 40, 4, 4, 1, 1, 1, 0)
    assert count(w1, "set_latency_usec") == 4 and count(w1, "q/w/set_latency_usec") == 4
    assert count(w1, "get_hit_latency_usec") == 1 and count(w1, "q/w/delivery_latency_msec") == 1
    assert w1["gauges"]["q/w/items"] == 4

    # The gauges are current while the window is not.
    shown = time.monotonic()
    assert mc.set("w", b"abc") == "STORED"
    assert time.monotonic() < shown + 0.8, "the put did not fit in the next window"
    w1_again = window()
    if puts(w1_again) == 4:
        assert w1_again["gauges"]["q/w/items"] == 5
    w2 = wait_until(lambda: changed(window(), 4), timeout=5, what="the next window shown")
    assert (puts(w2), counter(w2, "cmd_set"), count(w2, "set_latency_usec")) == (1, 1, 1)

    # A quiet window: nothing moved; the gauges still say where things are.
    w3 = wait_until(lambda: changed(window(), 1), timeout=5, what="a quiet window shown")
    assert (puts(w3), counter(w3, "cmd_set"), counter(w3, "cmd_get"),
            counter(w3, "q/w/put_bytes")) == (0, 0, 0, 0)
    assert all(count(w3, name) == 0 for name in METRICS)
    assert all(count(w3, f"q/w/{name}") == 0 for name in METRICS)
    assert (w3["gauges"]["q/w/items"], w3["gauges"]["q/w/bytes"]) == (5, 43)
    assert w3["gauges"]["connections"] == 1
    # Without a period: the totals since start.
    total = stats(server)
    assert (puts(total), counter(total, "cmd_get")) == (6, 1)


def test_period_windows_are_latched_every_n_seconds_from_the_first_request(server, mc):
    """Windows start at the first request for the period and end every N
    seconds after it (here within 100 ms)."""
    def window():
        return stats(server, period=1)

    def puts(s):
        return counter(s, "q/w/put_items")

    s0 = time.monotonic()
    window()
    r0 = time.monotonic()
    assert mc.set("w", b"first") == "STORED"  # in [T0, T0+1)
    assert time.monotonic() < s0 + 0.9
    wait_until(lambda: window() and time.monotonic() >= r0 + 1.1, what="T0 + 1.1")
    for _ in range(2):
        assert mc.set("w", b"second") == "STORED"  # in [T0+1, T0+2)
    assert time.monotonic() < s0 + 1.9
    wait_until(lambda: window() and time.monotonic() >= r0 + 2.1, what="T0 + 2.1")
    sent = time.monotonic()
    shown = window()
    assert time.monotonic() < s0 + 2.9, "the window [T0+1, T0+2) was not read in time"
    assert sent >= r0 + 2.1
    assert puts(shown) == 2, "the window [T0+1, T0+2) holds the two puts made in it"


# --- control ------------------------------------------------------------------------------

def test_control_is_refused_403_without_a_configured_token(server, mc):
    assert mc.set("jobs", b"x") == "STORED"
    for path in CONTROL:
        for token in (None, "", "anything"):
            r = http_post(server, path, token)
            assert r.status_code == 403, (path, token, r.status_code)
            assert r.headers["Content-Type"].startswith("application/json")
            assert r.json()["error"], path
        assert http_get(server, path).status_code == 405, path
    # Nothing happened.
    assert server.proc.poll() is None
    assert mc.call("status") == "UP"
    assert stats(server)["gauges"]["q/jobs/items"] == 1


def check_token(server, token, mc):
    """401 without the right token (with a WWW-Authenticate challenge), 405
    for GET, and no effect; then each endpoint does its work with it."""
    assert mc.set("jobs", b"x") == "STORED"
    wrong = [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {token[:-1]}"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": "Bearer "},
        {"Authorization": token},
        {"Authorization": f"Basic {token}"},
    ]
    for path in CONTROL:
        for headers in wrong:
            r = http_post(server, path, headers=dict(headers))
            assert r.status_code == 401, (path, headers, r.status_code)
            assert r.headers["WWW-Authenticate"].startswith("Bearer"), path
            assert r.json()["error"], path
        assert http_get(server, path).status_code == 405, path
        assert http_get(server, path, headers={"Authorization": f"Bearer {token}"}) \
            .status_code == 405, path
    assert server.proc.poll() is None
    assert mc.call("status") == "UP"
    assert stats(server)["gauges"]["q/jobs/items"] == 1

    ok = {"response": "ok"}
    for path, word, readable, writeable in (("/status/readonly", "READONLY", 1, 0),
                                            ("/status/quiescent", "QUIESCENT", 0, 0),
                                            ("/status/up", "UP", 1, 1)):
        r = http_post(server, path, token)
        assert (r.status_code, r.json()) == (200, ok), path
        assert mc.call("status") == word
        assert server_info(server)["status"] == word
        s = stats(server)
        assert s["labels"]["status"] == word
        assert (s["gauges"]["status/readable"], s["gauges"]["status/writeable"]) == \
            (readable, writeable)

    for item in (b"1", b"2"):
        assert mc.set("jobs", item) == "STORED"
    r = http_post(server, "/flush/jobs", token)
    assert (r.status_code, r.json()) == (200, ok)
    s = stats(server)
    assert (s["gauges"]["q/jobs/items"], s["counters"]["q/jobs/total_flushes"]) == (0, 1)
    assert mc.get("jobs") is None

    assert mc.set("doomed", b"x") == "STORED"
    assert "doomed" in queue_names(stats(server))
    r = http_post(server, "/delete/doomed", token)
    assert (r.status_code, r.json()) == (200, ok)
    s = stats(server)
    assert "doomed" not in queue_names(s) and "jobs" in queue_names(s)

    r = http_post(server, "/reload", token)
    assert (r.status_code, r.json()) == (200, ok)

    r = http_post(server, "/shutdown", token)
    assert (r.status_code, r.json()) == (200, ok)
    assert server.proc.wait(timeout=30) == 0


def test_control_with_admin_token(start):
    server = start(f'admin_token = "{TOKEN}"\n')
    mc = Memcache(server.memcache)
    check_token(server, TOKEN, mc)
    mc.close()


def test_control_with_admin_token_file(start, tmp_path):
    token_file = tmp_path / "admin-token"
    token_file.write_text("  from-a-file-0123456789  \n")
    server = start(f'admin_token_file = "{token_file}"\n')
    mc = Memcache(server.memcache)
    # The file's text with its surrounding whitespace trimmed.
    r = http_post(server, "/status/up", headers={"Authorization": "Bearer from-a-file"})
    assert r.status_code == 401
    check_token(server, "from-a-file-0123456789", mc)
    mc.close()


def test_control_errors(start):
    server = start(f'admin_token = "{TOKEN}"\nstatus_change_grace_period = "60s"\n')
    mc = Memcache(server.memcache)
    # Not a queue name, not a status.
    r = http_post(server, "/flush/bad~name", TOKEN)
    assert r.status_code == 400 and r.json()["error"]
    r = http_post(server, "/delete/bad~name", TOKEN)
    assert r.status_code == 400 and r.json()["error"]
    assert http_post(server, "/status/bogus", TOKEN).status_code == 404
    # A stricter status waits out the grace period; another meanwhile: 409.
    r = http_post(server, "/status/readonly", TOKEN)
    assert (r.status_code, r.json()) == (200, {"response": "ok"})
    assert mc.call("status") == "UP"
    r = http_post(server, "/status/quiescent", TOKEN)
    assert r.status_code == 409 and r.json()["error"]
    assert mc.call("status") == "UP"
    mc.close()


def test_flush_and_delete_refused_503_by_the_server_status(start):
    server = start(f'admin_token = "{TOKEN}"\n')
    mc = Memcache(server.memcache)
    assert mc.set("jobs", b"x") == "STORED"
    assert http_post(server, "/status/readonly", TOKEN).status_code == 200
    for path in ("/flush/jobs", "/delete/jobs"):
        r = http_post(server, path, TOKEN)
        assert r.status_code == 503 and r.json()["error"], path
    assert http_post(server, "/status/up", TOKEN).status_code == 200
    assert stats(server)["gauges"]["q/jobs/items"] == 1
    mc.close()


def test_reload_applies_the_file_and_refuses_a_bad_one(start):
    server = start(f'admin_token = "{TOKEN}"\n')
    mc = Memcache(server.memcache)
    assert mc.set("small", b"1") == "STORED" and mc.set("small", b"2") == "STORED"
    assert mc.get("small") == b"1" and mc.get("small") == b"2"
    config = server.config_path.read_text()
    server.config_path.write_text(config + "[queues.small]\nmax_items = 1\n")
    r = http_post(server, "/reload", TOKEN)
    assert (r.status_code, r.json()) == (200, {"response": "ok"})
    assert mc.set("small", b"1") == "STORED"
    assert mc.set("small", b"2") == "NOT_STORED"
    server.config_path.write_text(config + "no_such_setting = 1\n")
    r = http_post(server, "/reload", TOKEN)
    assert r.status_code == 500 and "no_such_setting" in r.json()["error"]
    assert server.proc.poll() is None and mc.set("small", b"3") == "NOT_STORED"
    mc.close()


# --- protocol_admin_commands --------------------------------------------------------------

def test_protocol_admin_commands_off(start):
    server = start(f'protocol_admin_commands = false\nadmin_token = "{TOKEN}"\n')
    mc = Memcache(server.memcache)
    assert mc.set("jobs", b"first") == "STORED"
    assert mc.set("jobs", b"second") == "STORED"
    for command in ("shutdown", "reload", "flush_all", "delete jobs", "status readonly",
                    "status quiescent", "status up"):
        assert mc.call(command) == "CLIENT_ERROR " + REFUSED, command
    text = Text(server.text)
    for command in ("status readonly", "shutdown", "delete jobs"):
        assert text.call(command) == "-" + REFUSED, command
    thrift = ThriftClient(server.thrift)
    for call in (lambda: thrift.flush_all_queues(), lambda: thrift.delete_queue("jobs"),
                 lambda: thrift.set_status(Status.READ_ONLY)):
        with pytest.raises(TApplicationException) as refused:
            call()
        assert refused.value.message == REFUSED
    thrift.close()

    # Nothing happened, and everything else works.
    assert server.proc.poll() is None
    assert mc.call("status") == "UP" and text.call("status") == ":UP"
    assert stats(server)["gauges"]["q/jobs/items"] == 2
    assert mc.get("jobs") == b"first"
    assert mc.set("jobs", b"third") == "STORED"
    assert text.call("get jobs") == ":second"
    assert mc.set("other", b"x") == "STORED"
    assert mc.call("flush other") == "END" and mc.get("other") is None  # one queue's flush
    # The token-protected port still controls the server.
    assert http_post(server, "/status/readonly", TOKEN).status_code == 200
    assert mc.call("status") == "READONLY"
    text.close()
    mc.close()


def test_protocol_admin_commands_on_by_default(server, mc):
    assert mc.set("gone", b"x") == "STORED"
    assert mc.call("delete gone") == "DELETED"
    assert mc.call("status readonly") == "END"
    assert mc.call("status") == "READONLY"
    assert mc.call("status up") == "END"
    assert mc.call("flush_all") == "Flushed all queues."


# --- the port itself ----------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def refuses_connections(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_admin_port_off_by_flag(start):
    port = free_port()
    server = start(f"admin_port = {port}\n", "--admin-port", "off")
    assert "admin" not in server.addrs
    assert any("admin disabled" in line for line in server.log)
    assert refuses_connections(port)
    mc = Memcache(server.memcache)
    assert mc.set("q", b"x") == "STORED"  # the other ports serve
    mc.close()


def test_admin_port_off_by_setting(start):
    server = start('admin_port = "off"\n', admin_port=None)
    assert "admin" not in server.addrs
    assert any("admin disabled" in line for line in server.log)


def test_admin_port_setting(start):
    port = free_port()
    server = start(f"admin_port = {port}\n", admin_port=None)
    assert server.admin == ("127.0.0.1", port)
    assert http_get(server, "/ping").json() == {"response": "pong"}
    assert server_info(server)["ports"]["admin"] == port


def start_fails(tmp_path, config):
    path = tmp_path / "bad.toml"
    path.write_text(config)
    with pytest.raises(RuntimeError) as failed:
        Server(tmp_path / "data-bad", "--config", str(path))
    return str(failed.value)


def test_a_token_must_be_one_nonblank_setting(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("  \n")
    log = start_fails(tmp_path, f'admin_token_file = "{token_file}"\n')
    assert "admin_token" in log and "empty" in log
    log = start_fails(tmp_path, f'admin_token = "x"\nadmin_token_file = "{token_file}"\n')
    assert "admin_token and admin_token_file" in log
    log = start_fails(tmp_path, f'admin_token_file = "{tmp_path}/missing"\n')
    assert "admin_token_file" in log and "missing" in log
