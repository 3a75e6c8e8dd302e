package net.lag.kestrel.client;

import java.nio.file.Files;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import net.lag.kestrel.client.KestrelClientTest.Server;
import net.lag.kestrel.client.KestrelClientTest.ZooKeeperServer;
import net.lag.kestrel.thrift.Status;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooKeeper;

/**
 * Discovery through ZooKeeper against a real ZooKeeper (tests/zookeeper/serve) and real
 * servers that register themselves under a fresh prefix. Run by KestrelClientTest's runner.
 */
final class ZooKeeperDiscoveryTest {
  private ZooKeeperDiscoveryTest() {
  }

  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new AssertionError(what);
    }
  }

  /** Environment that makes a server register itself under {@code prefix}. */
  private static Map<String, String> registering(ZooKeeperServer zk, String prefix) {
    return Map.of("KESTREL_ZOOKEEPER__HOSTS", zk.connect, "KESTREL_ZOOKEEPER__PATH_PREFIX", prefix,
        "KESTREL_ZOOKEEPER__SESSION_TIMEOUT", "2s");
  }

  private static KestrelClient.Config config() {
    KestrelClient.Config config = new KestrelClient.Config();
    config.retryAfterMs = 200;
    config.zookeeperSessionTimeoutMs = 2000;
    return config;
  }

  private static long waitUntil(java.util.function.BooleanSupplier done, long ms, String what)
      throws InterruptedException {
    long start = System.nanoTime();
    while (!done.getAsBoolean()) {
      if (System.nanoTime() - start > ms * 1_000_000) {
        throw new AssertionError("not within " + ms + " ms: " + what);
      }
      Thread.sleep(5);
    }
    return (System.nanoTime() - start) / 1_000_000;
  }

  /**
   * The spec's basic case: three servers registered under a fresh prefix; 200 puts spread over
   * them; one goes READ_ONLY and leaves the write set; the next 100 puts land on the other two;
   * gets drain all three and every item comes back exactly once. Then ZooKeeper goes away and
   * the client carries on with the membership it last saw.
   */
  static void aServerGoingReadOnlyLeavesTheWriteSet() throws Exception {
    String prefix = "/kestrel-java-" + System.nanoTime() + "/queues";
    String q = "zk";
    try (ZooKeeperServer zk = new ZooKeeperServer();
        Server a = new Server(Files.createTempDirectory("kestrel-java"), registering(zk, prefix));
        Server b = new Server(Files.createTempDirectory("kestrel-java"), registering(zk, prefix));
        Server c = new Server(Files.createTempDirectory("kestrel-java"), registering(zk, prefix));
        KestrelClient client = new KestrelClient(zk.connect, prefix, config());
        KestrelClient onlyA = new KestrelClient(List.of(a.address), config())) {
      List<String> all = new ArrayList<>(new TreeSet<>(List.of(a.address, b.address, c.address)));
      waitUntil(() -> client.writeServers().equals(all) && client.readServers().equals(all), 20_000,
          "the client sees all three servers: " + client.writeServers() + " " + client.readServers());

      TreeSet<String> put = new TreeSet<>();
      for (int i = 0; i < 200; i++) {
        String item = String.format("item-%03d", i);
        check(client.put(q, List.of(item.getBytes()), 0) == 1, "put " + item);
        put.add(item);
      }
      Map<String, Long> before = new HashMap<>();
      for (Server s : List.of(a, b, c)) {
        try (KestrelClient only = new KestrelClient(List.of(s.address), config())) {
          before.put(s.address, only.peek(q).getItems());
        }
      }
      check(before.values().stream().allMatch(n -> n > 0), "puts spread over all three: " + before);

      onlyA.setStatus(Status.READ_ONLY);
      long took = waitUntil(() -> !client.writeServers().contains(a.address), 10_000,
          "A leaves the write set");
      System.out.println("       the client saw the READ_ONLY change after " + took + " ms");
      check(client.readServers().contains(a.address), "A stays in the read set");

      for (int i = 200; i < 300; i++) {
        String item = String.format("item-%03d", i);
        check(client.put(q, List.of(item.getBytes()), 0) == 1, "put " + item);
        put.add(item);
      }
      check(onlyA.peek(q).getItems() == before.get(a.address), "no put landed on A after READ_ONLY");

      List<String> got = new ArrayList<>();
      for (List<byte[]> batch; !(batch = client.get(q, 50, 0)).isEmpty(); ) {
        for (byte[] item : batch) {
          got.add(new String(item));
        }
      }
      check(onlyA.peek(q).getItems() == 0, "gets drained A too");
      check(got.size() == put.size() && new TreeSet<>(got).equals(put),
          "every item exactly once: " + got.size() + " of " + put.size());

      // ZooKeeper gone: the last membership stays in force.
      zk.stop();
      Thread.sleep(500);
      check(client.writeServers().size() == 2, "write set kept: " + client.writeServers());
      check(client.put(q, List.of("after".getBytes()), 0) == 1, "puts go on without ZooKeeper");
      check(new String(client.get(q, 1, 1000).get(0)).equals("after"), "and gets");
    }
  }

  /**
   * A prefix nobody registered under yet is an empty set: calls fail as with no server; the
   * client notices the first server that registers, and notices it leave when it stops.
   */
  static void anEmptyPrefixFillsWhenAServerRegisters() throws Exception {
    String prefix = "/kestrel-java-empty-" + System.nanoTime();
    try (ZooKeeperServer zk = new ZooKeeperServer();
        KestrelClient client = new KestrelClient(zk.connect, prefix, config())) {
      check(client.writeServers().isEmpty() && client.readServers().isEmpty(), "nothing yet");
      try {
        client.put("e", List.of("x".getBytes()), 0);
        check(false, "no server to put on");
      } catch (KestrelClient.UnavailableException expected) {
        check(expected.getMessage().contains(prefix + "/write"), "says where: " + expected.getMessage());
      }
      try (Server s = new Server(Files.createTempDirectory("kestrel-java"), registering(zk, prefix))) {
        waitUntil(() -> client.writeServers().equals(List.of(s.address)), 10_000, "the server appears");
        check(client.put("e", List.of("x".getBytes()), 0) == 1, "a put once it is there");
        check(new String(client.get("e", 1, 1000).get(0)).equals("x"), "and a get");
      }
      // A clean stop withdraws the members (at the latest when the 2 s session expires).
      waitUntil(() -> client.readServers().isEmpty() && client.writeServers().isEmpty(), 10_000,
          "the stopped server leaves both sets");
    }
  }

  /** The member znodes of one set, as ZooKeeper has them now. */
  private static List<String> members(ZooKeeperServer zk, String path) throws Exception {
    CountDownLatch connected = new CountDownLatch(1);
    ZooKeeper handle = new ZooKeeper(zk.connect, 2000, e -> {
      if (e.getState() == Watcher.Event.KeeperState.SyncConnected) {
        connected.countDown();
      }
    });
    try {
      connected.await(10, TimeUnit.SECONDS);
      return handle.getChildren(path, false);
    } catch (KeeperException.NoNodeException e) {
      return List.of();
    } finally {
      handle.close();
    }
  }

  /**
   * ZooKeeper frozen for longer than every session timeout: on waking it expires them all. The
   * servers register again with new sessions; the client opens a new session too (ZooKeeper
   * never revives an expired one), lists the sets again and follows a later status change.
   */
  static void aLostSessionIsReplacedAndWatchedAgain() throws Exception {
    String prefix = "/kestrel-java-expiry-" + System.nanoTime();
    try (ZooKeeperServer zk = new ZooKeeperServer();
        Server a = new Server(Files.createTempDirectory("kestrel-java"), registering(zk, prefix));
        Server b = new Server(Files.createTempDirectory("kestrel-java"), registering(zk, prefix));
        KestrelClient client = new KestrelClient(zk.connect, prefix, config());
        KestrelClient onlyB = new KestrelClient(List.of(b.address), config())) {
      List<String> all = new ArrayList<>(new TreeSet<>(List.of(a.address, b.address)));
      waitUntil(() -> client.writeServers().equals(all), 20_000, "the client sees both servers");
      List<String> before = members(zk, prefix + "/write");
      zk.pause(5000);
      // Both servers' new members, under new names (the old ones went with their sessions).
      waitUntil(() -> {
        try {
          List<String> now = members(zk, prefix + "/write");
          return now.size() == 2 && now.stream().noneMatch(before::contains);
        } catch (Exception e) {
          return false;
        }
      }, 30_000, "both servers registered again");
      waitUntil(() -> client.writeServers().equals(all) && client.readServers().equals(all), 10_000,
          "the client sees both again: " + client.writeServers());
      onlyB.setStatus(Status.READ_ONLY);
      long took = waitUntil(() -> client.writeServers().equals(List.of(a.address)), 10_000,
          "B leaves the write set: the new session watches it");
      // Counted from set_status, which may come before the client has reconnected with its new
      // session (the ZooKeeper library waits up to a second between attempts).
      System.out.println("       after the expiry, the client saw the READ_ONLY change after " + took + " ms");
      check(client.put("x", List.of("y".getBytes()), 0) == 1, "puts go on");
    }
  }
}
