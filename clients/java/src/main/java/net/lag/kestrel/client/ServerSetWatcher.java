package net.lag.kestrel.client;

import java.io.IOException;
import java.math.BigDecimal;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.WatchedEvent;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooKeeper;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Follows the kestrel servers registered in ZooKeeper under a prefix: the members of
 * {@code <prefix>/write} take puts, those of {@code <prefix>/read} serve everything else. Each
 * member is an ephemeral znode whose data is Finagle server-set JSON; the Thrift endpoint of
 * each {@code ALIVE} member is what the client uses.
 *
 * <p>All ZooKeeper work happens on one daemon thread, so a slow or unreachable ZooKeeper never
 * blocks a client call: calls read the last published {@link Membership}, which is also what
 * stays in force while ZooKeeper is unreachable. Child watches are one-shot, so each listing
 * sets the next watch; a reconnect lists both sets again (a listing cut off by the disconnect
 * left no watch behind), and an expired session is replaced by a new handle, since ZooKeeper
 * never revives one.
 */
final class ServerSetWatcher implements AutoCloseable {
  private static final Logger LOG = LoggerFactory.getLogger(ServerSetWatcher.class);
  /** How long to wait before listing again after a failure that no event will announce. */
  private static final long RETRY_MS = 1000;

  /** The servers in each set at one moment ("host:port", Thrift port, sorted). */
  static final class Membership {
    final List<String> write;
    final List<String> read;

    Membership(List<String> write, List<String> read) {
      this.write = Collections.unmodifiableList(write);
      this.read = Collections.unmodifiableList(read);
    }
  }

  /** One watched set: its path, its latest listing and the watcher that re-lists it. */
  private final class MemberSet {
    final String path;
    final Watcher watcher;
    List<String> servers = new ArrayList<>();
    boolean listed;
    boolean retryPending;

    MemberSet(String path) {
      this.path = path;
      // Connection-state events reach every watcher; the session watcher handles those.
      this.watcher = event -> {
        if (event.getType() != Watcher.Event.EventType.None) {
          submit(() -> list(this));
        }
      };
    }
  }

  private final String connect;
  private final int sessionTimeoutMs;
  private final MemberSet write;
  private final MemberSet read;
  private final ScheduledExecutorService executor;
  /** Counted down once each set has been listed, so the client can start with servers. */
  private final CountDownLatch firstListing = new CountDownLatch(2);
  private volatile Membership membership = new Membership(new ArrayList<>(), new ArrayList<>());
  private ZooKeeper zk; // guarded by this
  private int generation; // guarded by this: which handle's session events still count
  private boolean closed; // guarded by this

  ServerSetWatcher(String connect, String prefix, int sessionTimeoutMs) throws IOException {
    String base = prefix.endsWith("/") ? prefix.substring(0, prefix.length() - 1) : prefix;
    if (!base.startsWith("/")) {
      throw new IllegalArgumentException("the prefix must be an absolute path: " + prefix);
    }
    this.connect = connect;
    this.sessionTimeoutMs = sessionTimeoutMs;
    this.write = new MemberSet(base + "/write");
    this.read = new MemberSet(base + "/read");
    ScheduledThreadPoolExecutor pool = new ScheduledThreadPoolExecutor(1, r -> {
      Thread t = new Thread(r, "kestrel-zookeeper");
      t.setDaemon(true);
      return t;
    });
    pool.setRemoveOnCancelPolicy(true);
    this.executor = pool;
    try {
      open();
    } catch (IOException | RuntimeException e) {
      executor.shutdownNow();
      throw e;
    }
  }

  /** Path of the write set or the read set, for messages. */
  String path(boolean writeSet) {
    return (writeSet ? write : read).path;
  }

  /** The servers as last listed; empty until ZooKeeper has answered. */
  Membership membership() {
    return membership;
  }

  /** Waits up to {@code ms} for both sets to have been listed once; false if they were not. */
  boolean awaitFirstListing(long ms) throws InterruptedException {
    return firstListing.await(ms, TimeUnit.MILLISECONDS);
  }

  private void submit(Runnable task) {
    try {
      executor.execute(task);
    } catch (java.util.concurrent.RejectedExecutionException e) {
      // closed: nothing more to do
    }
  }

  /**
   * Opens a ZooKeeper handle with a new session. The listing starts when the session is
   * connected (its SyncConnected event), not here: a call made before that would only wait.
   */
  private void open() throws IOException {
    int gen;
    synchronized (this) {
      if (closed) {
        return;
      }
      gen = ++generation;
    }
    ZooKeeper handle = new ZooKeeper(connect, sessionTimeoutMs, event -> onSessionEvent(gen, event));
    ZooKeeper old;
    synchronized (this) {
      if (closed || gen != generation) {
        old = handle;
      } else {
        old = zk;
        zk = handle;
      }
    }
    if (old != null) {
      closeQuietly(old);
    }
  }

  private void onSessionEvent(int gen, WatchedEvent event) {
    if (event.getType() != Watcher.Event.EventType.None) {
      return;
    }
    synchronized (this) {
      if (closed || gen != generation) {
        return; // an old handle's last words
      }
    }
    switch (event.getState()) {
      case SyncConnected:
      case ConnectedReadOnly:
        submit(() -> {
          list(write);
          list(read);
        });
        break;
      case Expired:
        // The session, and with it every watch, is gone for good: start a new one. Until it
        // connects the client keeps the servers it has.
        LOG.debug("ZooKeeper session expired; opening a new one");
        submit(this::reopen);
        break;
      default:
        // Disconnected: the handle reconnects by itself; the last membership stays in force.
        break;
    }
  }

  private void reopen() {
    try {
      open();
    } catch (IOException | RuntimeException e) {
      LOG.debug("could not open a ZooKeeper handle for {}: {}", connect, e.toString());
      try {
        executor.schedule(this::reopen, RETRY_MS, TimeUnit.MILLISECONDS);
      } catch (java.util.concurrent.RejectedExecutionException closedMeanwhile) {
        // closed
      }
    }
  }

  /**
   * Lists one set and sets the watch for its next change. A set whose path does not exist yet
   * is empty, and an existence watch says when it appears. Runs on the ZooKeeper thread only.
   */
  private void list(MemberSet set) {
    ZooKeeper handle;
    synchronized (this) {
      handle = zk;
      if (closed || handle == null) {
        return;
      }
    }
    try {
      List<String> children;
      try {
        children = handle.getChildren(set.path, set.watcher);
      } catch (KeeperException.NoNodeException e) {
        if (handle.exists(set.path, set.watcher) != null) {
          submit(() -> list(set)); // created in between: list it
          return;
        }
        children = new ArrayList<>();
      }
      TreeSet<String> servers = new TreeSet<>();
      for (String child : children) {
        byte[] data;
        try {
          data = handle.getData(set.path + "/" + child, false, null);
        } catch (KeeperException.NoNodeException e) {
          continue; // left while we listed; the child watch has fired already
        }
        String server = thriftAddress(set.path + "/" + child, data);
        if (server != null) {
          servers.add(server);
        }
      }
      publish(set, new ArrayList<>(servers));
    } catch (KeeperException e) {
      // Connection loss is followed by SyncConnected, which lists again; anything else would
      // leave the set unwatched, so try again in a while either way.
      LOG.debug("listing {} failed: {}", set.path, e.toString());
      retryLater(set);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt(); // closing
    }
  }

  private void retryLater(MemberSet set) {
    if (set.retryPending) {
      return;
    }
    set.retryPending = true;
    try {
      executor.schedule(() -> {
        set.retryPending = false;
        list(set);
      }, RETRY_MS, TimeUnit.MILLISECONDS);
    } catch (java.util.concurrent.RejectedExecutionException e) {
      // closed
    }
  }

  private void publish(MemberSet set, List<String> servers) {
    if (!servers.equals(set.servers)) {
      LOG.debug("{}: {}", set.path, servers);
    }
    set.servers = servers;
    membership = new Membership(write.servers, read.servers);
    if (!set.listed) {
      set.listed = true;
      firstListing.countDown();
    }
  }

  /**
   * The Thrift "host:port" a member advertises, or null (logged at debug level) if its data is
   * not JSON, it is not ALIVE or it has no Thrift endpoint: such a member is skipped.
   */
  static String thriftAddress(String member, byte[] data) {
    try {
      Object parsed = Json.parse(new String(data == null ? new byte[0] : data, StandardCharsets.UTF_8));
      Map<?, ?> json = (Map<?, ?>) parsed;
      if (!"ALIVE".equals(json.get("status"))) {
        LOG.debug("skipping {}: status {}", member, json.get("status"));
        return null;
      }
      Object endpoints = json.get("additionalEndpoints");
      Object thrift = endpoints instanceof Map ? ((Map<?, ?>) endpoints).get("thrift") : null;
      if (!(thrift instanceof Map)) {
        LOG.debug("skipping {}: no thrift endpoint", member);
        return null;
      }
      Object host = ((Map<?, ?>) thrift).get("host");
      int port = ((BigDecimal) ((Map<?, ?>) thrift).get("port")).intValueExact();
      if (!(host instanceof String) || ((String) host).isEmpty() || port < 1 || port > 65535) {
        LOG.debug("skipping {}: bad thrift endpoint {}", member, thrift);
        return null;
      }
      return host + ":" + port;
    } catch (IllegalArgumentException | ClassCastException | NullPointerException | ArithmeticException e) {
      LOG.debug("skipping {}: unusable data: {}", member, e.toString());
      return null;
    }
  }

  private static void closeQuietly(ZooKeeper handle) {
    try {
      handle.close(); // ends the session: ephemeral nodes and watches go with it
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  /** Ends the ZooKeeper session and the thread. */
  @Override
  public void close() {
    ZooKeeper handle;
    synchronized (this) {
      if (closed) {
        return;
      }
      closed = true;
      handle = zk;
      zk = null;
    }
    executor.shutdownNow(); // interrupts a listing waiting on an unreachable ZooKeeper
    if (handle != null) {
      closeQuietly(handle);
    }
  }
}
