"""Discovery through ZooKeeper: Client.from_zookeeper against a real
ZooKeeper (tests/zookeeper/serve) and real servers that register
themselves, all on loopback. `pytest -s` shows the measured figures."""

import collections
import concurrent.futures
import pathlib
import queue
import socket
import subprocess
import threading
import time
import uuid

import pytest

pytest.importorskip("kazoo")

from kestrel_client import Client, Refused, Status, Unavailable  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[3]
SERVE = ROOT / "tests" / "zookeeper" / "serve"
WAIT = 25.0  # the bound on waiting for any one event


def wait_for(condition, what, timeout=WAIT):
    """Polls ``condition`` until it holds; returns how long that took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"waited {timeout} s for {what}")
        time.sleep(0.01)
    return time.monotonic() - start


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ZooKeeper:
    """A throwaway ZooKeeper; ``kill`` and ``start`` again keep its port and data."""

    def __init__(self, directory):
        self.directory, self.port = directory, free_port()
        self.hosts = f"127.0.0.1:{self.port}"
        self.proc = None
        self.start()

    def start(self):
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "log", "a") as log:
            self.proc = subprocess.Popen([str(SERVE), str(self.directory), str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        return wait_for(self._ready, "ZooKeeper to answer ruok", timeout=30)

    def _ready(self):
        assert self.proc.poll() is None, f"ZooKeeper exited; see {self.directory / 'log'}"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"ruok")
                return s.recv(4) == b"imok"
        except OSError:
            return False

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=20)


@pytest.fixture
def zookeeper(tmp_path):
    if not pathlib.Path("/usr/share/java/zookeeper.jar").exists():
        pytest.skip("needs Debian's zookeeper package (tests/system-packages installs it)")
    zk = ZooKeeper(tmp_path / "zookeeper")
    yield zk
    zk.kill()


def registering(zk, prefix):
    """Settings that make a server register itself under ``prefix``."""
    return {"KESTREL_ZOOKEEPER__HOSTS": zk.hosts, "KESTREL_ZOOKEEPER__PATH_PREFIX": prefix,
            "KESTREL_ZOOKEEPER__SESSION_TIMEOUT": "2s"}


def fresh_prefix(name):
    return f"/{name}-{uuid.uuid4().hex[:8]}"


def set_status(server, status):
    with Client([server.address]) as c:
        c.set_status(status)


def peek(server, queue_name):
    with Client([server.address]) as c:
        return c.peek(queue_name)


def sees_all(servers):
    addresses = sorted(s.address for s in servers)
    return lambda s: sorted(s.write) == addresses and sorted(s.read) == addresses


def test_an_empty_prefix_is_an_empty_set_until_a_server_registers(zookeeper, start_server):
    prefix = fresh_prefix("empty")
    with Client.from_zookeeper(zookeeper.hosts, prefix) as client:
        assert client.servers() == ([], [])
        with pytest.raises(Unavailable, match="no server"):
            client.put("q", [b"x"])
        start = time.monotonic()
        with pytest.raises(Unavailable, match="no server"):
            client.get("q", timeout=0.3)
        assert time.monotonic() - start >= 0.3
        a = start_server("a", registering(zookeeper, prefix))
        took = wait_for(lambda: sees_all([a])(client.servers()), "the new server")
        print(f"\n[empty prefix] a server registering under a new prefix was seen in {took:.3f} s")
        assert client.put("q", [b"x"]) == 1
        assert client.get("q") == [b"x"]


def test_zookeeper_that_cannot_be_reached_is_unavailable():
    with pytest.raises(Unavailable, match="zookeeper"):
        Client.from_zookeeper(f"127.0.0.1:{free_port()}", zk_timeout=1.0)


def test_puts_leave_a_read_only_server_and_gets_still_drain_it(zookeeper, start_server):
    """The spec's basic case."""
    prefix = fresh_prefix("basic")
    servers = [start_server(n, registering(zookeeper, prefix)) for n in "abc"]
    a = servers[0]
    items = [b"basic-%03d" % i for i in range(400)]
    with Client.from_zookeeper(zookeeper.hosts, prefix) as client:
        took = wait_for(lambda: sees_all(servers)(client.servers()), "all three servers")
        print(f"\n[basic] the client saw all three servers in {took:.3f} s")
        for item in items[:200]:
            assert client.put("basic", [item]) == 1
        on_a = peek(a, "basic").items
        assert on_a > 0  # round-robin: a has its share

        set_status(a, Status.READ_ONLY)
        took = wait_for(lambda: a.address not in client.servers().write, "a to leave the write set")
        assert a.address in client.servers().read
        print(f"[basic] READ_ONLY: the client dropped a from its write set in {took:.3f} s")
        for item in items[200:]:
            assert client.put("basic", [item]) == 1
        assert peek(a, "basic").items == on_a  # no put went to a
        assert sum(peek(s, "basic").items for s in servers) == len(items)

        got = []
        deadline = time.monotonic() + WAIT
        while len(got) < len(items) and time.monotonic() < deadline:
            got += client.get("basic", 50, timeout=0.2)
        assert sorted(got) == items  # every item once, a's included
        assert peek(a, "basic").items == 0


class Producer(threading.Thread):
    """Puts distinct items through its own client until stopped. Between puts
    it runs jobs given to ``on_thread``, so the test can use the producer's
    client (which is for one thread) to check where its puts land."""

    def __init__(self, client, queue_name):
        super().__init__(daemon=True)
        self.client, self.queue_name = client, queue_name
        self.stopping = threading.Event()
        self.jobs = queue.Queue()
        self.attempts, self.acked, self.failed = 0, [], []
        self.calls = {}  # item -> (start, end) of its put call
        self.error = None

    def on_thread(self, job):
        done = concurrent.futures.Future()
        self.jobs.put((job, done))
        return done.result(timeout=WAIT)

    def run(self):
        try:
            while not self.stopping.is_set():
                while not self.jobs.empty():
                    job, done = self.jobs.get()
                    try:
                        done.set_result(job(self.client))
                    except Exception as e:  # noqa: BLE001 - handed to the test
                        done.set_exception(e)
                item = b"item-%06d" % self.attempts
                self.attempts += 1
                start = time.monotonic()
                try:
                    ok = self.client.put(self.queue_name, [item]) == 1
                except (Unavailable, Refused):
                    ok = False
                self.calls[item] = (start, time.monotonic())
                (self.acked if ok else self.failed).append(item)
                time.sleep(0.005 if ok else 0.05)  # a steady trickle, gentle on two cores
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


class Consumer(threading.Thread):
    """Reads reliably through its own client until stopped. An item counts as
    delivered when its consume returned, i.e. its confirm succeeded; items
    handled whose settling failed are 'in doubt' (they may come back)."""

    def __init__(self, client, queue_name):
        super().__init__(daemon=True)
        self.client, self.queue_name = client, queue_name
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.confirmed, self.handled = collections.Counter(), collections.Counter()
        self.in_doubt = []
        self.error = None

    def snapshot(self):
        with self.lock:
            return collections.Counter(self.confirmed), collections.Counter(self.handled), list(self.in_doubt)

    def count(self):
        with self.lock:
            return sum(self.confirmed.values())

    def run(self):
        try:
            while not self.stopping.is_set():
                batch = []
                try:
                    n = self.client.consume(self.queue_name, batch.append, max_items=10, timeout=0.2,
                                            auto_abort=3.0)
                    assert n == len(batch)
                    settled = True
                except (Unavailable, Refused):
                    settled = False
                with self.lock:
                    self.handled.update(batch)
                    if settled:
                        self.confirmed.update(batch)
                    else:
                        self.in_doubt += batch
                if not settled and not batch:
                    time.sleep(0.05)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            self.error = e


class Watcher(threading.Thread):
    """Notes every change in what the clients see, for the printed timeline."""

    def __init__(self, clients, names):
        super().__init__(daemon=True)
        self.clients, self.names = clients, names
        self.stopping = threading.Event()
        self.start_time = time.monotonic()
        self.changes = []

    def run(self):
        last = {}
        while not self.stopping.is_set():
            for who, client in self.clients.items():
                now = client.servers()
                if last.get(who) != now:
                    last[who] = now
                    self.changes.append((time.monotonic() - self.start_time, who, now))
            time.sleep(0.01)

    def show(self):
        name = {address: label for label, address in self.names.items()}
        short = lambda addresses: ",".join(sorted(name.get(a, a) for a in addresses)) or "-"  # noqa: E731
        return "\n".join(f"  {t:6.2f} s {who:8} write={short(s.write):8} read={short(s.read)}"
                         for t, who, s in self.changes)


def test_three_servers_come_go_and_change_status_and_zookeeper_restarts_and_nothing_is_lost(
        zookeeper, start_server):
    """The full scenario: a producer and a reliable consumer, each through its
    own discovery client, run throughout while one server goes READ_ONLY and
    back, one QUIESCENT and back, one is killed (-9) and restarted on its
    data, and ZooKeeper itself is killed and restarted. Every acknowledged
    item must be delivered, and none confirmed twice."""
    prefix = fresh_prefix("fleet")
    env = registering(zookeeper, prefix)
    q = "fleet"
    a, b, c = (start_server(n, env) for n in "abc")
    names = {"a": a.address, "b": b.address, "c": c.address}

    with Client.from_zookeeper(zookeeper.hosts, prefix, retry_after=0.2) as pc, \
            Client.from_zookeeper(zookeeper.hosts, prefix, retry_after=0.2) as cc:
        clients = {"producer": pc, "consumer": cc}
        watcher = Watcher(clients, names)
        watcher.start()

        def measure(what, check, since):
            """Waits until both clients' membership passes ``check``; notes
            how long each took since the moment of the change."""
            took = {}

            def seen():
                for who, client in clients.items():
                    if who not in took and check(client.servers()):
                        took[who] = time.monotonic() - since
                return len(took) == len(clients)

            wait_for(seen, f"both clients: {what}")
            print(f"[fleet] {what}: producer {took['producer']:.3f} s, consumer {took['consumer']:.3f} s")

        def progress(what, n=25):
            """Waits until both more puts are acknowledged and more items confirmed."""
            acked, confirmed = len(producer.acked), consumer.count()
            wait_for(lambda: len(producer.acked) >= acked + n and consumer.count() >= confirmed + n,
                     f"puts and gets to go on ({what})")
            assert producer.error is None and consumer.error is None, (producer.error, consumer.error)

        print()
        measure("all three registered", sees_all([a, b, c]), watcher.start_time)
        producer, consumer = Producer(pc, q), Consumer(cc, q)
        producer.start()
        consumer.start()
        try:
            progress("at the start")

            # READ_ONLY: a leaves the write sets; puts avoid it; gets drain it.
            t = time.monotonic()
            set_status(a, Status.READ_ONLY)
            measure("READ_ONLY a: out of the write set",
                    lambda s: a.address not in s.write and a.address in s.read, t)
            probes = [b"probe-%02d" % i for i in range(30)]
            assert producer.on_thread(lambda client: [client.put("probe", [p]) for p in probes]) == [1] * len(probes)
            assert peek(a, "probe").items == 0
            assert peek(b, "probe").items + peek(c, "probe").items == len(probes)
            wait_for(lambda: peek(a, q).items == 0, "the consumer to drain read-only a")
            t = time.monotonic()
            set_status(a, Status.UP)
            measure("UP a: back in the write set", lambda s: a.address in s.write, t)

            # QUIESCENT: b leaves both sets, then comes back.
            t = time.monotonic()
            set_status(b, Status.QUIESCENT)
            measure("QUIESCENT b: out of both sets", lambda s: b.address not in s.write + s.read, t)
            progress("with b quiescent")
            t = time.monotonic()
            set_status(b, Status.UP)
            measure("UP b: back in both sets", sees_all([a, b, c]), t)
            progress("with b back")

            # kill -9 c: its members go when its session expires (2 s). A
            # batch is held open on c across the kill (read reliably, never
            # confirmed): after the restart it must be delivered again.
            held, holding, release = [], threading.Event(), threading.Event()

            def hold(item):
                held.append(item)
                holding.set()
                release.wait(WAIT)

            def hold_a_batch(server):
                with Client([server.address]) as side, pytest.raises(Unavailable):
                    side.consume(q, hold, max_items=5, timeout=WAIT, auto_abort=60.0)

            side = threading.Thread(target=hold_a_batch, args=(c,), daemon=True)
            side.start()
            wait_for(holding.is_set, "an item opened on c")
            killed_at = time.monotonic()
            c.kill()
            killed = (killed_at, time.monotonic())
            release.set()
            side.join(timeout=WAIT)
            measure("kill -9 c: its members gone", lambda s: c.address not in s.write + s.read, killed_at)
            progress("with c dead")
            t = time.monotonic()
            c = start_server("c", env)  # the same data, a new port
            started = time.monotonic() - t
            names["c (restarted)"] = c.address
            measure(f"restart c ({started:.2f} s to start): back", sees_all([a, b, c]), t)
            progress("with c back")

            # ZooKeeper killed: the clients go on with the servers they know.
            before = {who: client.servers() for who, client in clients.items()}
            t = time.monotonic()
            zookeeper.kill()
            progress("with ZooKeeper down", n=50)
            wait_for(lambda: time.monotonic() - t >= 3.0, "3 s of ZooKeeper down")  # longer than any session
            assert {who: client.servers() for who, client in clients.items()} == before
            down_for = time.monotonic() - t
            ready_in = zookeeper.start()
            print(f"[fleet] ZooKeeper down for {down_for:.2f} s, puts and gets went on; "
                  f"restarted on the same port and data, answering in {ready_in:.2f} s")
            progress("after ZooKeeper's restart")
            t = time.monotonic()
            set_status(a, Status.READ_ONLY)
            measure("after ZooKeeper's restart, READ_ONLY a: out of the write set",
                    lambda s: a.address not in s.write and a.address in s.read, t)
            t = time.monotonic()
            set_status(a, Status.UP)
            measure("UP a again", sees_all([a, b, c]), t)
            progress("at the end")
        finally:
            producer.stopping.set()
            producer.join(timeout=WAIT)

        # Drain: every acknowledged item handled, nothing left or open anywhere.
        acked = set(producer.acked)
        fleet = [a, b, c]

        def drained():
            _, handled, _ = consumer.snapshot()
            if not acked <= set(handled):
                return False
            infos = [peek(s, q) for s in fleet]
            return all(i.items == 0 and i.open_transactions == 0 for i in infos)

        try:
            wait_for(drained, "the consumer to drain every server")
        finally:
            consumer.stopping.set()
            consumer.join(timeout=WAIT)
            watcher.stopping.set()
            watcher.join(timeout=WAIT)
        assert producer.error is None and consumer.error is None, (producer.error, consumer.error)

    confirmed, handled, in_doubt = consumer.snapshot()
    lost = acked - set(handled)
    never_confirmed = acked - set(confirmed)
    duplicates = {item for item, n in confirmed.items() if n > 1}
    # A put cut off by the kill may have been stored on c and then again on
    # the server the client tried next (producers are at-least-once): only
    # such an item may be confirmed twice.
    in_flight = {item for item, (start, end) in producer.calls.items() if start <= killed[1] and end >= killed[0]}
    unexplained = duplicates - in_flight
    strangers = set(handled) - acked - set(producer.failed)
    print(f"[fleet] put {producer.attempts}, acknowledged {len(acked)}, failed {len(producer.failed)}; "
          f"delivered (confirmed) {len(set(confirmed))} of them {sum(confirmed.values())} times, "
          f"handled again after an unsettled batch {sum(handled.values()) - sum(confirmed.values())}, "
          f"in doubt {len(in_doubt)}; duplicates {len(duplicates)} "
          f"({len(duplicates & in_flight)} from a put cut off by the kill); lost {len(lost)}")
    redelivered = [item for item in held if confirmed[item]]
    print(f"[fleet] opened on c and unconfirmed when it was killed: {len(held)}; "
          f"delivered after its restart: {len(redelivered)}")
    print("[fleet] what the clients saw (a, b, c; c's new port after its restart):")
    print(watcher.show())

    assert held and redelivered == held
    assert not lost, sorted(lost)[:10]
    assert never_confirmed <= set(in_doubt), sorted(never_confirmed - set(in_doubt))[:10]
    assert not unexplained, sorted(unexplained)[:10]
    assert not strangers, sorted(strangers)[:10]
