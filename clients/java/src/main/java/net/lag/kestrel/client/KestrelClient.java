package net.lag.kestrel.client;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;

import net.lag.kestrel.thrift.Item;
import net.lag.kestrel.thrift.Kestrel;
import net.lag.kestrel.thrift.QueueInfo;
import net.lag.kestrel.thrift.Status;
import org.apache.thrift.TApplicationException;
import org.apache.thrift.TConfiguration;
import org.apache.thrift.TException;
import org.apache.thrift.protocol.TBinaryProtocol;
import org.apache.thrift.transport.TSocket;
import org.apache.thrift.transport.layered.TFramedTransport;

/**
 * A client for kestrel, and for Kestrel 2.4 servers, over Thrift.
 *
 * <p>The generated stubs ({@code net.lag.kestrel.thrift}, from {@code idl/kestrel.thrift}) speak
 * the protocol; this class adds what an application needs around them:
 * <ul>
 *   <li>several servers, Kestrel's way: {@code put} goes to one server per call, round-robin,
 *       skipping servers that are down or refuse writes; {@code get} polls the servers in turn,
 *       skipping those that are down or refuse reads;
 *   <li>reconnects: a broken connection is dropped and the server left alone for
 *       {@code retryAfterMs} before it is tried again;
 *   <li>reliable reads: {@code consume} runs a handler on items opened with an auto-abort
 *       deadline, confirms what it handled and aborts what it failed on;
 *   <li>servers from a static list, or discovered through ZooKeeper (see
 *       {@link #KestrelClient(String, String, Config)}).
 * </ul>
 *
 * <p>Not thread-safe: use one client per thread.
 */
public final class KestrelClient implements AutoCloseable {
  /** Timeouts and retry behaviour, in milliseconds. */
  public static final class Config {
    public int connectTimeoutMs = 1000;
    public int timeoutMs = 5000;
    public long retryAfterMs = 1000;
    public int pollSliceMs = 100;
    /** ZooKeeper session timeout, for a client that discovers its servers there. */
    public int zookeeperSessionTimeoutMs = 10_000;
  }

  /** No server could be reached. */
  public static final class UnavailableException extends RuntimeException {
    UnavailableException(String message, Throwable cause) {
      super(message, cause);
    }
  }

  /** A server refused the call (bad queue name, read-only server, ...). */
  public static final class RefusedException extends RuntimeException {
    RefusedException(String message) {
      super(message);
    }
  }

  /** What {@link #consume} runs on each item; throwing puts the item back. */
  @FunctionalInterface
  public interface Handler {
    void handle(byte[] item) throws Exception;
  }

  /** One call to a server's stub. */
  @FunctionalInterface
  private interface Call<T> {
    T run(Kestrel.Client stub) throws TException;
  }

  private static final class Server {
    final String host;
    final int port;
    final String address;
    TSocket socket;
    Kestrel.Client stub;
    long downUntil;

    Server(String address) {
      int at = address.lastIndexOf(':');
      this.host = at > 0 ? address.substring(0, at) : "127.0.0.1";
      this.port = Integer.parseInt(address.substring(at + 1));
      this.address = address;
    }

    void close() {
      if (socket != null) {
        socket.close();
      }
      socket = null;
      stub = null;
    }
  }

  /**
   * Closes the socket of a call that outlives its read timeout: a socket timeout covers reads
   * only, so this is what bounds a write to a server that stopped reading.
   */
  private static final ScheduledThreadPoolExecutor WATCHDOG = watchdog();

  private static ScheduledThreadPoolExecutor watchdog() {
    ScheduledThreadPoolExecutor executor = new ScheduledThreadPoolExecutor(1, r -> {
      Thread t = new Thread(r, "kestrel-client-watchdog");
      t.setDaemon(true);
      return t;
    });
    executor.setRemoveOnCancelPolicy(true);
    return executor;
  }

  /** Milliseconds from a clock that never jumps, for deadlines and retry intervals. */
  private static long now() {
    return System.nanoTime() / 1_000_000;
  }

  private final Config config;
  /** Servers that take puts, and servers that take everything else; the same list if static. */
  private List<Server> writeServers = new ArrayList<>();
  private List<Server> readServers = new ArrayList<>();
  private int nextWrite;
  private int nextRead;
  /** With discovery: the membership the lists above were built from, and every server in them. */
  private final ServerSetWatcher discovery;
  private ServerSetWatcher.Membership membership;
  private final Map<String, Server> known = new HashMap<>();

  /** A client of {@code servers} ("host:port", Thrift port); connects lazily. */
  public KestrelClient(List<String> servers, Config config) {
    for (String s : servers) {
      this.writeServers.add(new Server(s));
    }
    if (this.writeServers.isEmpty()) {
      throw new IllegalArgumentException("no servers given");
    }
    this.readServers = this.writeServers;
    this.config = config;
    this.discovery = null;
  }

  public KestrelClient(List<String> servers) {
    this(servers, new Config());
  }

  /**
   * A client of the servers registered in ZooKeeper ({@code connectString}, e.g.
   * "zk1:2181,zk2:2181") under {@code prefix}: puts go to the members of {@code prefix/write},
   * every other call to those of {@code prefix/read}. Membership changes take effect on the next
   * call; if ZooKeeper becomes unreachable the last membership seen stays in force.
   *
   * <p>Waits up to {@code timeoutMs} for the first listing, then returns anyway: the sets fill
   * in when ZooKeeper answers (until then calls fail with {@link UnavailableException}).
   */
  public KestrelClient(String connectString, String prefix, Config config) {
    this.config = config;
    try {
      this.discovery = new ServerSetWatcher(connectString, prefix, config.zookeeperSessionTimeoutMs);
    } catch (IOException e) {
      throw new UncheckedIOException(e);
    }
    try {
      discovery.awaitFirstListing(config.timeoutMs);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }

  public KestrelClient(String connectString, String prefix) {
    this(connectString, prefix, new Config());
  }

  /** The servers puts go to now ("host:port"). Safe to call from any thread. */
  public List<String> writeServers() {
    return discovery != null ? discovery.membership().write : addresses(writeServers);
  }

  /** The servers gets and every other call go to now ("host:port"). Safe from any thread. */
  public List<String> readServers() {
    return discovery != null ? discovery.membership().read : addresses(readServers);
  }

  private static List<String> addresses(List<Server> servers) {
    List<String> out = new ArrayList<>();
    for (Server s : servers) {
      out.add(s.address);
    }
    return out;
  }

  /**
   * Brings the server lists up to the latest membership. Servers still present keep their
   * connection and down-mark; those that left are closed. Called at the start of a call only,
   * so a consume settles on the very server object its items came from.
   */
  private void refresh() {
    if (discovery == null || discovery.membership() == membership) {
      return;
    }
    membership = discovery.membership();
    Map<String, Server> now = new HashMap<>();
    writeServers = pick(membership.write, now);
    readServers = pick(membership.read, now);
    for (Map.Entry<String, Server> e : known.entrySet()) {
      if (!now.containsKey(e.getKey())) {
        e.getValue().close();
      }
    }
    known.clear();
    known.putAll(now);
  }

  private List<Server> pick(List<String> addresses, Map<String, Server> now) {
    List<Server> out = new ArrayList<>();
    for (String a : addresses) {
      out.add(now.computeIfAbsent(a, k -> known.getOrDefault(k, new Server(k))));
    }
    return out;
  }

  private List<Server> servers(boolean write) {
    refresh();
    return write ? writeServers : readServers;
  }

  /** The error of a call that found no server at all (an empty set, with discovery). */
  private UnavailableException noServer(boolean write) {
    String where = discovery == null ? "" : " in " + discovery.path(write);
    return new UnavailableException("no server available" + where, null);
  }

  /**
   * Servers from the next one in turn: those up first, then those resting after a failure, as a
   * last resort or ({@code skipResting}) only when every server is resting.
   */
  private List<Server> order(boolean write, boolean skipResting) {
    List<Server> servers = servers(write);
    int n = servers.size();
    if (n == 0) {
      return servers;
    }
    int next = write ? nextWrite : nextRead;
    int start = next % n;
    if (write) {
      nextWrite = (start + 1) % n;
    } else {
      nextRead = (start + 1) % n;
    }
    long now = now();
    List<Server> up = new ArrayList<>();
    List<Server> resting = new ArrayList<>();
    for (int k = 0; k < n; k++) {
      Server s = servers.get((start + k) % n);
      (s.downUntil <= now ? up : resting).add(s);
    }
    if (!skipResting || up.isEmpty()) {
      up.addAll(resting);
    }
    return up;
  }

  private <T> T call(Server server, int waitMs, Call<T> call) {
    try {
      if (server.stub == null) {
        TSocket socket = new TSocket(new TConfiguration(), server.host, server.port,
            config.timeoutMs, config.connectTimeoutMs);
        TFramedTransport transport = new TFramedTransport(socket);
        transport.open(); // TSocket sets TCP_NODELAY
        server.socket = socket;
        server.stub = new Kestrel.Client(new TBinaryProtocol(transport));
        server.downUntil = 0;
      }
      long readTimeout = Math.min((long) config.timeoutMs + waitMs, Integer.MAX_VALUE);
      server.socket.setSocketTimeout((int) readTimeout);
      TSocket socket = server.socket;
      ScheduledFuture<?> watch =
          WATCHDOG.schedule(socket::close, readTimeout + config.timeoutMs, TimeUnit.MILLISECONDS);
      try {
        return call.run(server.stub);
      } finally {
        watch.cancel(false);
      }
    } catch (TApplicationException e) {
      throw new RefusedException(server.address + ": " + e.getMessage());
    } catch (TException e) {
      server.close();
      server.downUntil = now() + config.retryAfterMs;
      throw new UnavailableException(server.address + ": " + e.getMessage(), e);
    } catch (RuntimeException e) {
      // Cut off half-way (say, by a null item): the framed transport may hold part of a
      // message, so the connection goes; the error is the caller's, not the server's.
      server.close();
      throw e;
    }
  }

  private <T> T first(boolean write, Call<T> call) {
    RuntimeException last = noServer(write);
    for (Server s : order(write, false)) {
      try {
        return call(s, 0, call);
      } catch (UnavailableException | RefusedException e) {
        last = e;
      }
    }
    throw last;
  }

  /**
   * Runs {@code call} on every server. Servers that cannot be reached are passed over unless
   * none can; a refusal from any server is thrown after every server has had the call.
   */
  private <T> List<T> all(Call<T> call) {
    List<T> results = new ArrayList<>();
    RefusedException refused = null;
    UnavailableException down = null;
    for (Server s : servers(false)) {
      try {
        results.add(call(s, 0, call));
      } catch (RefusedException e) {
        refused = e;
      } catch (UnavailableException e) {
        down = e;
      }
    }
    if (refused != null) {
      throw refused;
    }
    if (results.isEmpty()) {
      throw down != null ? down : noServer(false);
    }
    return results;
  }

  /** Items from the first server (in turn) that has some, and that server. */
  private static final class Polled {
    final Server server;
    final List<Item> items;

    Polled(Server server, List<Item> items) {
      this.server = server;
      this.items = items;
    }
  }

  /**
   * Polls the servers in turn until one has items. Servers that are down or refuse are passed
   * over; when no server answered in a round, a refusal is thrown at once (waiting will not
   * change it) and otherwise the round is tried again until the deadline.
   */
  private Polled poll(String queue, int maxItems, int timeoutMs, int autoAbortMs) {
    long deadline = now() + timeoutMs;
    while (true) {
      boolean reached = false;
      RefusedException refused = null;
      UnavailableException down = null;
      for (Server s : order(false, true)) { // each round sees membership changes
        int wait = (int) Math.max(0, Math.min(deadline - now(), config.pollSliceMs));
        try {
          List<Item> items = call(s, wait, k -> k.get(queue, maxItems, wait, autoAbortMs));
          reached = true;
          if (!items.isEmpty()) {
            return new Polled(s, items);
          }
        } catch (RefusedException e) {
          refused = e;
        } catch (UnavailableException e) {
          down = e;
        }
      }
      if (!reached && refused != null) {
        throw refused;
      }
      long left = deadline - now();
      if (left <= 0) {
        if (!reached) {
          throw down != null ? down : noServer(false);
        }
        return new Polled(null, new ArrayList<>());
      }
      if (!reached) {
        try {
          Thread.sleep(Math.min(config.pollSliceMs, left));
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          return new Polled(null, new ArrayList<>());
        }
      }
    }
  }

  /** Puts {@code items} on one server; returns how many it accepted. */
  public int put(String queue, List<byte[]> items, int expiryMs) {
    List<ByteBuffer> buffers = new ArrayList<>();
    for (byte[] item : items) {
      buffers.add(ByteBuffer.wrap(item));
    }
    return first(true, k -> k.put(queue, buffers, expiryMs));
  }

  /** Up to {@code maxItems} items, polling the servers for up to {@code timeoutMs}. */
  public List<byte[]> get(String queue, int maxItems, int timeoutMs) {
    List<byte[]> out = new ArrayList<>();
    for (Item item : poll(queue, maxItems, timeoutMs, 0).items) {
      out.add(item.getData());
    }
    return out;
  }

  /**
   * Runs {@code handler} on up to {@code maxItems} items read reliably. Handled items are
   * confirmed; if the handler throws, that item and the rest of the batch are aborted (back at
   * the head) and the exception is rethrown. Returns how many items were handled.
   *
   * <p>Confirming and aborting are each tried twice (the second time on a new connection); items
   * they could not settle come back when their auto-abort deadline passes, so a handler may see
   * an item again.
   */
  public int consume(String queue, Handler handler, int maxItems, int timeoutMs, int autoAbortMs)
      throws Exception {
    Polled polled = poll(queue, maxItems, timeoutMs, Math.max(1, autoAbortMs));
    Set<Long> done = new HashSet<>();
    Set<Long> back = new HashSet<>();
    Exception error = null;
    for (Item item : polled.items) {
      if (error != null) {
        back.add(item.getId());
        continue;
      }
      try {
        handler.handle(item.getData());
        done.add(item.getId());
      } catch (Exception e) {
        back.add(item.getId());
        error = e;
      }
    }
    RuntimeException unsettled = null;
    if (!done.isEmpty()) {
      unsettled = settle(polled.server, k -> k.confirm(queue, done));
    }
    if (!back.isEmpty()) {
      RuntimeException e = settle(polled.server, k -> k.abort(queue, back));
      unsettled = unsettled != null ? unsettled : e;
    }
    if (error != null) {
      throw error;
    }
    if (unsettled != null) {
      throw unsettled;
    }
    return done.size();
  }

  /**
   * Confirms or aborts on {@code server}; a broken connection is replaced and the call made once
   * more (settling twice is harmless: the second call finds nothing open). Returns the failure,
   * if any.
   */
  private RuntimeException settle(Server server, Call<Integer> call) {
    for (int attempt = 0; ; attempt++) {
      try {
        call(server, 0, call);
        return null;
      } catch (UnavailableException e) {
        if (attempt == 1) {
          return e;
        }
      } catch (RefusedException e) {
        return e;
      }
    }
  }

  /** What every reachable server reports for {@code queue}, added up. */
  public QueueInfo peek(String queue) {
    QueueInfo total = new QueueInfo();
    total.setItems(0).setBytes(0).setJournal_bytes(0).setAge(0).setWaiters(0).setOpen_transactions(0);
    for (QueueInfo info : all(k -> k.peek(queue))) {
      if (total.getHead_item() == null && info.getHead_item() != null) {
        total.setHead_item(info.getHead_item());
      }
      total.setItems(total.getItems() + info.getItems());
      total.setBytes(total.getBytes() + info.getBytes());
      total.setJournal_bytes(total.getJournal_bytes() + info.getJournal_bytes());
      total.setAge(Math.max(total.getAge(), info.getAge()));
      total.setWaiters(total.getWaiters() + info.getWaiters());
      total.setOpen_transactions(total.getOpen_transactions() + info.getOpen_transactions());
    }
    return total;
  }

  /** Removes every item of {@code queue} on every server. */
  public void flush(String queue) {
    all(k -> {
      k.flush_queue(queue);
      return null;
    });
  }

  /** Deletes {@code queue} on every server. */
  public void delete(String queue) {
    all(k -> {
      k.delete_queue(queue);
      return null;
    });
  }

  /** The version of the next reachable server in turn. */
  public String version() {
    return first(false, Kestrel.Client::get_version);
  }

  /** The status of the next reachable server in turn. */
  public Status status() {
    return first(false, Kestrel.Client::current_status);
  }

  /** Sets the status of every server. */
  public void setStatus(Status status) {
    all(k -> {
      k.set_status(status);
      return null;
    });
  }

  /** Closes every connection and, with discovery, ends the ZooKeeper session. */
  @Override
  public void close() {
    for (Server s : writeServers) {
      s.close();
    }
    for (Server s : readServers) {
      s.close();
    }
    if (discovery != null) {
      discovery.close();
    }
  }
}
