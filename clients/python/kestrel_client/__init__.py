"""A client for kestrel, and for Kestrel 2.4 servers, over Thrift.

The generated stubs (``kestrel_client.gen``, from ``idl/kestrel.thrift``)
speak the protocol; this module adds what an application needs around them:

- several servers, Kestrel's way: ``put`` goes to one server per call,
  round-robin, skipping servers that are down or refuse writes; ``get`` polls
  the servers in turn, skipping those that are down or refuse reads;
- reconnects: a broken connection is dropped and the server left alone for
  ``retry_after`` seconds before it is tried again;
- reliable reads: ``consume`` runs a handler on items opened with an
  auto-abort deadline, confirms what it handled and aborts what it failed on;
- discovery: ``Client.from_zookeeper`` takes the servers from ZooKeeper
  instead of a fixed list, and follows them as they come, go and change
  status (needs the ``zookeeper`` extra, i.e. kazoo).

    client = Client(["127.0.0.1:2229"])
    client.put("jobs", [b"hello"])
    client.consume("jobs", print, timeout=1.0)
"""

import collections
import socket
import threading
import time

from thrift.protocol import TBinaryProtocol
from thrift.Thrift import TApplicationException, TException
from thrift.transport import TSocket, TTransport

from .gen import Kestrel
from .gen.ttypes import QueueInfo, Status

__all__ = ["Client", "QueueInfo", "Servers", "Status", "Unavailable", "Refused"]

# Milliseconds on the wire are an i32.
_MAX_MS = 2**31 - 1

_DISCOVERED = object()


class Unavailable(Exception):
    """No server could be reached."""


class Refused(Exception):
    """A server refused the call (bad queue name, read-only server, ...)."""


Servers = collections.namedtuple("Servers", "write read")
Servers.__doc__ = """The servers a client uses now: ``write`` takes puts, ``read`` the rest."""


class _Server:
    def __init__(self, address):
        host, _, port = address.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)
        self.address = address
        self.conn = None
        self.socket = None
        self.down_until = 0.0

    def close(self):
        if self.conn is not None:
            try:
                self.conn[1].close()
            except Exception:
                pass
        self.conn = None


class Client:
    """A client of one or more servers (``"host:port"`` strings, Thrift port).

    A client is for one thread at a time (only the ZooKeeper watches of
    ``from_zookeeper`` run on threads of their own)."""

    def __init__(self, servers, connect_timeout=1.0, timeout=5.0, retry_after=1.0, poll_slice=0.1):
        if isinstance(servers, str):
            servers = [servers]
        if servers is _DISCOVERED:
            servers = []  # from_zookeeper: the watches fill the lists in
        elif not servers:
            raise ValueError("no servers given")
        # Puts go to the write servers, everything else to the read servers;
        # with a fixed list both are that list.
        self._write = self._read = [_Server(s) for s in servers]
        self._lock = threading.Lock()
        self._left = []  # servers that left the lists, to close on our thread
        self._discovery = None
        self._next = 0
        self.connect_timeout, self.timeout = connect_timeout, timeout
        self.retry_after, self.poll_slice = retry_after, poll_slice

    @classmethod
    def from_zookeeper(cls, hosts, prefix="/kestrel", zk_timeout=10.0, **options):
        """A client of the servers registered in ZooKeeper (``hosts``, a
        connect string like ``"127.0.0.1:2181"``) under ``prefix``: puts go to
        the members of ``<prefix>/write``, everything else to those of
        ``<prefix>/read``. Membership changes take effect at once; servers
        still present keep their connections and down-marks. If ZooKeeper
        becomes unreachable the client goes on with the last members it saw.
        With no member in a set, calls raise ``Unavailable`` (a get after
        waiting its timeout, in case one appears).

        ``zk_timeout`` (seconds) is the ZooKeeper session timeout and how long
        to wait for the first connection; ``options`` are ``Client``'s.
        Needs kazoo (``pip install 'kestrel-client[zookeeper]'``)."""
        from .discovery import Discovery

        client = cls(_DISCOVERED, **options)
        client._discovery = Discovery(hosts, prefix, client._set_servers,
                                      session_timeout=zk_timeout, start_timeout=zk_timeout)
        return client

    def servers(self):
        """The current write and read servers (``host:port`` lists)."""
        with self._lock:
            return Servers([s.address for s in self._write], [s.address for s in self._read])

    def _set_servers(self, write, read):
        """New lists from ZooKeeper (called on kazoo's thread). Servers still
        present keep their state; the connections of those that left are
        closed by the next call on the client's own thread, so a call in
        flight is not cut off. A consume settles on the server object it
        holds, so it still confirms on a server that has left."""
        with self._lock:
            known = {s.address: s for s in self._write + self._read}
            self._left += [s for a, s in known.items() if a not in write and a not in read]
            for address in write + read:
                if address not in known:
                    known[address] = _Server(address)
            self._write = [known[a] for a in write]
            self._read = [known[a] for a in read]

    # -- plumbing ---------------------------------------------------------

    def _members(self, write=False):
        """The write or read servers now (closing those that left)."""
        with self._lock:
            left, self._left = self._left, []
            servers = self._write if write else self._read
        for server in left:
            server.close()
        return servers

    def _order(self, servers, skip_resting=False):
        """``servers`` from the next one in turn: those up first, then those
        resting after a failure, as a last resort or (``skip_resting``) only
        when every server is resting."""
        n = len(servers)
        if n == 0:
            return []
        start, self._next = self._next % n, (self._next + 1) % n
        ring = [servers[(start + k) % n] for k in range(n)]
        now = time.monotonic()
        up = [s for s in ring if s.down_until <= now]
        if skip_resting and up:
            return up
        return up + [s for s in ring if s.down_until > now]

    def _connect(self, server):
        sock = TSocket.TSocket(server.host, server.port)
        sock.setTimeout(self.connect_timeout * 1000)
        transport = TTransport.TFramedTransport(sock)
        transport.open()
        sock.handle.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        server.socket = sock
        server.conn = (Kestrel.Client(TBinaryProtocol.TBinaryProtocolAccelerated(transport)), transport)

    def _call(self, server, call, wait=0.0):
        """Runs ``call(stub)`` on ``server``; raises Refused, or Unavailable
        (after dropping the connection) when the server cannot be reached."""
        try:
            if server.conn is None:
                self._connect(server)
                server.down_until = 0.0
            server.socket.setTimeout((self.timeout + wait) * 1000)
            return call(server.conn[0])
        except TApplicationException as e:
            raise Refused(f"{server.address}: {e.message}") from e
        except (TException, OSError, EOFError) as e:
            server.close()
            server.down_until = time.monotonic() + self.retry_after
            raise Unavailable(f"{server.address}: {e}") from e
        except BaseException:
            # Cut off half-way (say, an item that is not bytes): the framed
            # transport may hold part of a message, so the connection goes.
            server.close()
            raise

    def _first(self, call, servers):
        last = Unavailable("no server available")
        for server in servers:
            try:
                return self._call(server, call)
            except (Refused, Unavailable) as e:
                last = e
        raise last

    def _all(self, call):
        """Runs ``call`` on every server. Servers that cannot be reached are
        passed over unless none can; a refusal from any server is raised
        after every server has had the call."""
        results, refused, down = [], None, Unavailable("no server available")
        for server in self._members():
            try:
                results.append(self._call(server, call))
            except Refused as e:
                refused = e
            except Unavailable as e:
                down = e
        if refused is not None:
            raise refused
        if not results:
            raise down
        return results

    def _poll(self, queue, max_items, timeout, auto_abort_ms):
        """Polls the servers in turn until one has items; returns (server, items).
        Servers that are down or refuse are passed over; when no server
        answered in a round, a refusal is raised at once (waiting will not
        change it) and otherwise the round is tried again until the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            # Read again every round: servers may come and go while we wait.
            reached, refused, down = False, None, Unavailable("no server available")
            for server in self._order(self._members(), skip_resting=True):
                wait = max(0.0, min(deadline - time.monotonic(), self.poll_slice))
                try:
                    items = self._call(server, lambda k: k.get(queue, max_items, int(wait * 1000), auto_abort_ms),
                                       wait)
                except Refused as e:
                    refused = e
                    continue
                except Unavailable as e:
                    down = e
                    continue
                reached = True
                if items:
                    return server, items
            if not reached and refused is not None:
                raise refused
            if time.monotonic() >= deadline:
                if not reached:
                    raise down
                return None, []
            if not reached:
                time.sleep(min(self.poll_slice, max(0.0, deadline - time.monotonic())))

    def _settle(self, server, call):
        """Confirms or aborts on ``server``; a broken connection is replaced
        and the call made once more (settling twice is harmless: the second
        call finds nothing open)."""
        try:
            return self._call(server, call)
        except Unavailable:
            return self._call(server, call)

    # -- operations -------------------------------------------------------

    def put(self, queue, items, expiry_ms=0):
        """Puts ``items`` (bytes) on one server; returns how many it accepted."""
        return self._first(lambda k: k.put(queue, list(items), min(expiry_ms, _MAX_MS)),
                           self._order(self._members(write=True)))

    def get(self, queue, max_items=1, timeout=0.0):
        """Up to ``max_items`` items, polling the servers for up to ``timeout`` seconds."""
        _, items = self._poll(queue, max_items, timeout, 0)
        return [i.data for i in items]

    def consume(self, queue, handler, max_items=1, timeout=0.0, auto_abort=30.0):
        """Runs ``handler(data)`` on up to ``max_items`` items read reliably.
        Handled items are confirmed; if the handler raises, that item and the
        rest of the batch are aborted (back at the head) and the exception
        propagates. Returns how many items were handled.

        Confirming and aborting are each tried twice (the second time on a
        new connection); items they could not settle come back when their
        ``auto_abort`` deadline passes, so a handler may see an item again."""
        auto_abort_ms = min(max(1, int(auto_abort * 1000)), _MAX_MS)
        server, items = self._poll(queue, max_items, timeout, auto_abort_ms)
        done, back, error = set(), set(), None
        for item in items:
            if error is not None:
                back.add(item.id)
                continue
            try:
                handler(item.data)
                done.add(item.id)
            except Exception as e:  # noqa: BLE001 - any handler failure puts the item back
                back.add(item.id)
                error = e
        unsettled = None
        for ids, settle in ((done, lambda k: k.confirm(queue, done)), (back, lambda k: k.abort(queue, back))):
            if ids:
                try:
                    self._settle(server, settle)
                except (Refused, Unavailable) as e:
                    unsettled = unsettled or e
        if error is not None:
            raise error
        if unsettled is not None:
            raise unsettled
        return len(done)

    def peek(self, queue):
        """What every reachable server reports for ``queue``, added up."""
        infos = self._all(lambda k: k.peek(queue))
        return QueueInfo(
            head_item=next((i.head_item for i in infos if i.head_item is not None), None),
            items=sum(i.items for i in infos),
            bytes=sum(i.bytes for i in infos),
            journal_bytes=sum(i.journal_bytes for i in infos),
            age=max(i.age for i in infos),
            waiters=sum(i.waiters for i in infos),
            open_transactions=sum(i.open_transactions for i in infos),
        )

    def flush(self, queue):
        """Removes every item of ``queue`` on every server."""
        self._all(lambda k: k.flush_queue(queue))

    def delete(self, queue):
        """Deletes ``queue`` on every server."""
        self._all(lambda k: k.delete_queue(queue))

    def version(self):
        """The version of the next reachable server in turn."""
        return self._first(lambda k: k.get_version(), self._order(self._members()))

    def status(self):
        """The status of the next reachable server in turn."""
        return self._first(lambda k: k.current_status(), self._order(self._members()))

    def set_status(self, status):
        """Sets the status (``Status.UP``, ``READ_ONLY``, ``QUIESCENT``) of every server."""
        self._all(lambda k: k.set_status(status))

    def close(self):
        """Closes every connection and ends the ZooKeeper session, if any."""
        if self._discovery is not None:
            self._discovery.stop()
        with self._lock:
            servers, self._left = set(self._write + self._read + self._left), []
        for server in servers:
            server.close()

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.close()
