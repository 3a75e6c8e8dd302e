package net.lag.kestrel.client;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

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
 *       skipping servers that are down or refuse writes; {@code get} polls the servers in turn;
 *   <li>reconnects: a broken connection is dropped and the server tried again after
 *       {@code retryAfterMs};
 *   <li>reliable reads: {@code consume} runs a handler on items opened with an auto-abort
 *       deadline, confirms what it handled and aborts what it failed on.
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

  private final List<Server> servers = new ArrayList<>();
  private final Config config;
  private int next;

  /** A client of {@code servers} ("host:port", Thrift port); connects lazily. */
  public KestrelClient(List<String> servers, Config config) {
    for (String s : servers) {
      this.servers.add(new Server(s));
    }
    if (this.servers.isEmpty()) {
      throw new IllegalArgumentException("no servers given");
    }
    this.config = config;
  }

  public KestrelClient(List<String> servers) {
    this(servers, new Config());
  }

  /** Servers from the next one in turn: those up first, resting ones last. */
  private List<Server> order() {
    int n = servers.size();
    int start = next % n;
    next = (next + 1) % n;
    long now = System.currentTimeMillis();
    List<Server> up = new ArrayList<>();
    List<Server> resting = new ArrayList<>();
    for (int k = 0; k < n; k++) {
      Server s = servers.get((start + k) % n);
      (s.downUntil <= now ? up : resting).add(s);
    }
    up.addAll(resting);
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
      server.socket.setSocketTimeout(config.timeoutMs + waitMs);
      return call.run(server.stub);
    } catch (TApplicationException e) {
      throw new RefusedException(server.address + ": " + e.getMessage());
    } catch (TException e) {
      server.close();
      server.downUntil = System.currentTimeMillis() + config.retryAfterMs;
      throw new UnavailableException(server.address + ": " + e.getMessage(), e);
    }
  }

  private <T> T first(Call<T> call) {
    RuntimeException last = new UnavailableException("no server tried", null);
    for (Server s : order()) {
      try {
        return call(s, 0, call);
      } catch (UnavailableException | RefusedException e) {
        last = e;
      }
    }
    throw last;
  }

  private <T> List<T> all(Call<T> call) {
    List<T> results = new ArrayList<>();
    UnavailableException last = new UnavailableException("no server tried", null);
    for (Server s : servers) {
      try {
        results.add(call(s, 0, call));
      } catch (UnavailableException e) {
        last = e;
      }
    }
    if (results.isEmpty()) {
      throw last;
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

  private Polled poll(String queue, int maxItems, int timeoutMs, int autoAbortMs) {
    long deadline = System.currentTimeMillis() + timeoutMs;
    UnavailableException last = null;
    while (true) {
      boolean reached = false;
      for (Server s : order()) {
        int wait = (int) Math.max(0, Math.min(deadline - System.currentTimeMillis(), config.pollSliceMs));
        try {
          List<Item> items = call(s, wait, k -> k.get(queue, maxItems, wait, autoAbortMs));
          reached = true;
          if (!items.isEmpty()) {
            return new Polled(s, items);
          }
        } catch (UnavailableException e) {
          last = e;
        }
      }
      long left = deadline - System.currentTimeMillis();
      if (left <= 0) {
        if (!reached && last != null) {
          throw last;
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
    return first(k -> k.put(queue, buffers, expiryMs));
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
    if (!back.isEmpty()) {
      call(polled.server, 0, k -> k.abort(queue, back));
    }
    if (!done.isEmpty()) {
      call(polled.server, 0, k -> k.confirm(queue, done));
    }
    if (error != null) {
      throw error;
    }
    return done.size();
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

  public String version() {
    return first(Kestrel.Client::get_version);
  }

  public Status status() {
    return first(Kestrel.Client::current_status);
  }

  /** Sets the status of every server. */
  public void setStatus(Status status) {
    all(k -> {
      k.set_status(status);
      return null;
    });
  }

  @Override
  public void close() {
    for (Server s : servers) {
      s.close();
    }
  }
}
