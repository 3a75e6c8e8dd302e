package net.lag.kestrel.client;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
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
import org.apache.zookeeper.CreateMode;
import org.apache.zookeeper.KeeperException;
import org.apache.zookeeper.Watcher;
import org.apache.zookeeper.ZooDefs;
import org.apache.zookeeper.ZooKeeper;

/**
 * Discovery through ZooKeeper against a real ZooKeeper (tests/zookeeper/serve) and real
 * servers that register themselves under a fresh prefix. Run by KestrelClientTest's runner.
 */
final class ZooKeeperDiscoveryTest {
  private ZooKeeperDiscoveryTest() {
  }

  /** DEV MODE until /tmp/kestrel-zk-server-ready: the test registers the servers itself. */
  static final boolean SELF_REGISTERING = Files.exists(Path.of("/tmp/kestrel-zk-server-ready"));

  /** Stands in for the servers' own registration while the server cannot do it yet. */
  static final class Registrar implements AutoCloseable {
    final ZooKeeper zk;
    final String prefix;
    final Map<String, List<String>> members = new HashMap<>();

    Registrar(String connect, String prefix) throws Exception {
      CountDownLatch connected = new CountDownLatch(1);
      zk = new ZooKeeper(connect, 2000, e -> {
        if (e.getState() == Watcher.Event.KeeperState.SyncConnected) {
          connected.countDown();
        }
      });
      connected.await(10, TimeUnit.SECONDS);
      this.prefix = prefix;
    }

    void register(String address, boolean write) throws Exception {
      if (SELF_REGISTERING) {
        return;
      }
      int at = address.lastIndexOf(':');
      String data = "{\"serviceEndpoint\":{\"host\":\"" + address.substring(0, at) + "\",\"port\":"
          + address.substring(at + 1) + "},\"additionalEndpoints\":{\"thrift\":{\"host\":\""
          + address.substring(0, at) + "\",\"port\":" + address.substring(at + 1) + "}},\"status\":\"ALIVE\"}";
      List<String> paths = new ArrayList<>();
      for (String set : write ? List.of("read", "write") : List.of("read")) {
        String parent = "";
        for (String part : (prefix + "/" + set).substring(1).split("/")) {
          parent += "/" + part;
          try {
            zk.create(parent, new byte[0], ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.PERSISTENT);
          } catch (KeeperException.NodeExistsException e) {
            // there already
          }
        }
        paths.add(zk.create(parent + "/member_", data.getBytes(StandardCharsets.UTF_8),
            ZooDefs.Ids.OPEN_ACL_UNSAFE, CreateMode.EPHEMERAL_SEQUENTIAL));
      }
      members.put(address, paths);
    }

    /** What the server does on READ_ONLY: its write member goes. */
    void readOnly(String address) throws Exception {
      if (SELF_REGISTERING) {
        return;
      }
      for (String p : members.get(address)) {
        if (p.contains("/write/")) {
          zk.delete(p, -1);
        }
      }
    }

    /** What a stopping server's session end does: its members go. */
    void gone(String address) throws Exception {
      if (SELF_REGISTERING) {
        return;
      }
      for (String p : members.remove(address)) {
        zk.delete(p, -1);
      }
    }

    @Override
    public void close() throws Exception {
      zk.close();
    }
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
        Registrar registrar = new Registrar(zk.connect, prefix);
        Server a = new Server(Files.createTempDirectory("kestrel-java"), registering(zk, prefix));
        Server b = new Server(Files.createTempDirectory("kestrel-java"), registering(zk, prefix));
        Server c = new Server(Files.createTempDirectory("kestrel-java"), registering(zk, prefix));
        KestrelClient client = new KestrelClient(zk.connect, prefix, config());
        KestrelClient onlyA = new KestrelClient(List.of(a.address), config())) {
      for (Server s : List.of(a, b, c)) {
        registrar.register(s.address, true);
      }
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
      registrar.readOnly(a.address);
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
      zk.close();
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
        Registrar registrar = new Registrar(zk.connect, prefix);
        KestrelClient client = new KestrelClient(zk.connect, prefix, config())) {
      check(client.writeServers().isEmpty() && client.readServers().isEmpty(), "nothing yet");
      try {
        client.put("e", List.of("x".getBytes()), 0);
        check(false, "no server to put on");
      } catch (KestrelClient.UnavailableException expected) {
        check(expected.getMessage().contains(prefix + "/write"), "says where: " + expected.getMessage());
      }
      try (Server s = new Server(Files.createTempDirectory("kestrel-java"), registering(zk, prefix))) {
        registrar.register(s.address, true);
        waitUntil(() -> client.writeServers().equals(List.of(s.address)), 10_000, "the server appears");
        check(client.put("e", List.of("x".getBytes()), 0) == 1, "a put once it is there");
        check(new String(client.get("e", 1, 1000).get(0)).equals("x"), "and a get");
        registrar.gone(s.address);
      }
      // A clean stop withdraws the members (at the latest when the 2 s session expires).
      waitUntil(() -> client.readServers().isEmpty() && client.writeServers().isEmpty(), 10_000,
          "the stopped server leaves both sets");
    }
  }
}
