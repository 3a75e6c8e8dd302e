"""Server lists from ZooKeeper (``Client.from_zookeeper``).

A kestrel server with ZooKeeper on keeps ephemeral, sequential member znodes
under ``<prefix>/write`` (while it takes puts) and ``<prefix>/read`` (while it
serves gets); their data is Finagle server-set JSON. This module watches both
paths with kazoo and hands the Thrift addresses of the members to the client
whenever they change.

Watches: a ``DataWatch`` on each path notices it appear (a prefix nobody has
registered under yet is an empty set) and disappear; while the path exists a
``ChildrenWatch`` on it re-reads the members at every change. If ZooKeeper
goes away, nothing is called and the client keeps the last lists it was given.
"""

import json
import logging
import threading

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.protocol.states import KazooState

from . import Unavailable

log = logging.getLogger(__name__)


def member_address(data):
    """The Thrift ``host:port`` a member's data advertises, or None when the
    member is not usable by this client (no Thrift endpoint, not ALIVE, or
    data that is not server-set JSON)."""
    try:
        doc = json.loads(data.decode("utf-8"))
        endpoint = doc["additionalEndpoints"]["thrift"]
        host, port = endpoint["host"], int(endpoint["port"])
        status = doc.get("status")
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        log.debug("skipping member without a Thrift endpoint (%s): %r", e, data)
        return None
    if status != "ALIVE":
        log.debug("skipping member with status %r: %s:%s", status, host, port)
        return None
    return f"{host}:{port}"


class _MemberSet:
    """The addresses of the members under one path, kept current."""

    def __init__(self, zk, path, changed):
        self._zk, self._path, self._changed = zk, path, changed
        self._lock = threading.RLock()
        # Member name -> address (or None: skipped). A member's data is read
        # once: the server never rewrites it (a status change makes new members).
        self._members = {}
        # Bumped when the path disappears, so that a ChildrenWatch left over
        # from before stops (returning False ends a kazoo watch).
        self._generation = 0
        self._watching = False
        # True when member data could not be read (ZooKeeper went away
        # half-way): read the children again once it is back.
        self.stale = False
        self.addresses = []
        zk.DataWatch(path, self._on_path)

    def _on_path(self, _data, stat):
        with self._lock:
            if stat is None:
                self._generation += 1
                self._watching = False
                self._set({})
                return
            if self._watching:
                return
            self._watching = True
            generation = self._generation
        self._zk.ChildrenWatch(self._path, lambda children: self._on_children(generation, children))

    def _on_children(self, generation, children):
        with self._lock:
            if generation != self._generation:
                return False
            members = {}
            for name in sorted(children):
                if name in self._members:
                    members[name] = self._members[name]
                    continue
                try:
                    data, _ = self._zk.get(f"{self._path}/{name}")
                except NoNodeError:
                    continue  # gone already; the next children event says so
                except KazooException as e:
                    log.info("reading members of %s: %s; keeping the last ones", self._path, e)
                    self.stale = True
                    return None
                members[name] = member_address(data)
            self.stale = False
            self._set(members)
        return None

    def refresh(self):
        """Reads the members again (after a failed read), watch or no watch."""
        with self._lock:
            generation = self._generation
        try:
            children = self._zk.get_children(self._path)
        except NoNodeError:
            children = []
        except KazooException as e:
            log.info("reading members of %s: %s", self._path, e)
            return
        self._on_children(generation, children)

    def _set(self, members):
        self._members = members
        addresses = []
        for address in members.values():
            if address is not None and address not in addresses:
                addresses.append(address)  # a server may have two members for a moment
        if addresses != self.addresses:
            self.addresses = addresses
            self._changed()


class Discovery:
    """A ZooKeeper session watching ``<prefix>/write`` and ``<prefix>/read``;
    calls ``on_change(write, read)`` (lists of ``host:port``) from kazoo's
    thread whenever either changes, and once at the start."""

    def __init__(self, hosts, prefix, on_change, session_timeout=10.0, start_timeout=15.0):
        prefix = "/" + prefix.strip("/")
        # Reconnect attempts back off, but no further apart than 2 s: the
        # lists are only as fresh as the connection.
        self._zk = KazooClient(hosts=hosts, timeout=session_timeout,
                               connection_retry={"max_tries": -1, "max_delay": 2.0},
                               command_retry={"max_tries": -1, "max_delay": 2.0})
        self._on_change = on_change
        # Both sets' watches may fire at once on different threads; the lock
        # keeps their snapshots from reaching the client out of order.
        self._lock = threading.Lock()
        self._ready = False
        try:
            self._zk.start(timeout=start_timeout)
        except KazooTimeoutError as e:
            raise Unavailable(f"zookeeper {hosts}: no connection in {start_timeout} s") from e
        try:
            self._write = _MemberSet(self._zk, prefix + "/write", self._changed)
            self._read = _MemberSet(self._zk, prefix + "/read", self._changed)
        except BaseException:
            self.stop()
            raise
        self._zk.add_listener(self._on_state)
        with self._lock:
            self._ready = True
        self._changed()

    def _changed(self):
        with self._lock:
            if self._ready:
                self._on_change(list(self._write.addresses), list(self._read.addresses))

    def _on_state(self, state):
        # Listeners must not block: the refresh runs on a thread of its own.
        if state == KazooState.CONNECTED:
            for members in (self._write, self._read):
                if members.stale:
                    self._zk.handler.spawn(members.refresh)

    def stop(self):
        """Ends the ZooKeeper session."""
        try:
            self._zk.stop()
        finally:
            self._zk.close()
