package net.lag.kestrel.client;

import java.io.BufferedReader;
import java.io.File;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

import net.lag.kestrel.thrift.QueueInfo;
import net.lag.kestrel.thrift.Status;

/**
 * The Java client against real servers on loopback (KESTREL_BIN, or the workspace's debug
 * build). A plain runner: every test runs, failures are listed, and the exit status says.
 */
public final class KestrelClientTest {
  private static final Pattern LISTENING = Pattern.compile("thrift listening on (\\S+)");

  /** A kestrel process on a data directory. */
  static final class Server implements AutoCloseable {
    final Process process;
    final String address;

    Server(Path data) throws Exception {
      this(data, Map.of());
    }

    /** A server with extra environment, e.g. the KESTREL_ZOOKEEPER__* settings. */
    Server(Path data, Map<String, String> env) throws Exception {
      String bin = System.getenv().getOrDefault("KESTREL_BIN",
          new File("../../target/debug/kestrel").getAbsolutePath());
      ProcessBuilder pb = new ProcessBuilder(bin, "--listen", "127.0.0.1", "--thrift-port", "0",
          "--memcache-port", "off", "--text-port", "off", "--admin-port", "off", "--data-dir", data.toString());
      pb.environment().keySet().removeIf(k -> k.startsWith("KESTREL_"));
      pb.environment().putAll(env);
      pb.redirectOutput(ProcessBuilder.Redirect.DISCARD);
      process = pb.start();
      BlockingQueue<String> lines = new LinkedBlockingQueue<>();
      Thread pump = new Thread(() -> {
        try (BufferedReader r = new BufferedReader(
            new InputStreamReader(process.getErrorStream(), StandardCharsets.UTF_8))) {
          for (String line; (line = r.readLine()) != null; ) {
            lines.add(line);
          }
        } catch (Exception ignored) {
          // the process ended
        }
      });
      pump.setDaemon(true);
      pump.start();
      String found = null;
      while (true) {
        String line = lines.poll(20, TimeUnit.SECONDS);
        if (line == null) {
          throw new IllegalStateException("kestrel did not start");
        }
        Matcher m = LISTENING.matcher(line);
        if (m.find()) {
          found = m.group(1);
        }
        if (line.contains("ready to serve")) {
          break;
        }
      }
      address = found;
    }

    @Override
    public void close() throws Exception {
      process.destroy(); // SIGTERM: a clean stop
      process.waitFor(20, TimeUnit.SECONDS);
    }
  }

  /**
   * A throwaway ZooKeeper (tests/zookeeper/serve) on a free loopback port and a temporary
   * directory; close() kills it, which try-with-resources does on failure too.
   */
  static final class ZooKeeperServer implements AutoCloseable {
    final String connect;
    final Path dir;
    private final int port;
    private Process process;

    ZooKeeperServer() throws Exception {
      try (ServerSocket probe = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
        port = probe.getLocalPort();
      }
      dir = Files.createTempDirectory("kestrel-java-zk");
      connect = "127.0.0.1:" + port;
      start();
    }

    private void start() throws Exception {
      ProcessBuilder pb = new ProcessBuilder(new File("../../tests/zookeeper/serve").getAbsolutePath(),
          dir.toString(), String.valueOf(port));
      pb.redirectErrorStream(true);
      pb.redirectOutput(ProcessBuilder.Redirect.appendTo(dir.resolve("zookeeper.log").toFile()));
      process = pb.start();
      long deadline = System.nanoTime() + 30_000_000_000L;
      while (!imok(port)) {
        if (System.nanoTime() > deadline || !process.isAlive()) {
          close();
          throw new IllegalStateException("ZooKeeper did not start on " + connect);
        }
        Thread.sleep(100);
      }
    }

    /**
     * Freezes ZooKeeper (SIGSTOP) for {@code ms}, then lets it go on: sessions that could not
     * ping it for longer than their timeout expire when it wakes, as after a partition.
     */
    void pause(long ms) throws Exception {
      signal("STOP");
      try {
        Thread.sleep(ms);
      } finally {
        signal("CONT");
      }
    }

    private void signal(String name) throws Exception {
      new ProcessBuilder("kill", "-" + name, String.valueOf(process.pid())).inheritIO().start().waitFor();
    }

    void stop() throws InterruptedException {
      process.destroyForcibly();
      process.waitFor(20, TimeUnit.SECONDS);
    }

    /** Whether ZooKeeper answers the four-letter word "ruok" with "imok". */
    private static boolean imok(int port) {
      try (Socket s = new Socket()) {
        s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 500);
        s.setSoTimeout(1000);
        OutputStream out = s.getOutputStream();
        out.write("ruok".getBytes(StandardCharsets.US_ASCII));
        out.flush();
        InputStream in = s.getInputStream();
        return new String(in.readAllBytes(), StandardCharsets.US_ASCII).equals("imok");
      } catch (Exception e) {
        return false;
      }
    }

    @Override
    public void close() throws Exception {
      stop();
      if (!Files.exists(dir)) {
        return; // closed already
      }
      try (var paths = Files.walk(dir)) {
        paths.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
      }
    }
  }

  private static void check(boolean ok, String what) {
    if (!ok) {
      throw new AssertionError(what);
    }
  }

  private static KestrelClient client(String... servers) {
    KestrelClient.Config config = new KestrelClient.Config();
    config.retryAfterMs = 200;
    return new KestrelClient(Arrays.asList(servers), config);
  }

  static void binaryItemsRoundTrip() throws Exception {
    try (Server s = new Server(Files.createTempDirectory("kestrel-java"));
        KestrelClient c = client(s.address)) {
      byte[] item = {0, (byte) 255, 10, 13, 0, 1};
      check(c.put("rt", List.of(item, "second".getBytes()), 0) == 2, "both items put");
      List<byte[]> got = c.get("rt", 5, 0);
      check(got.size() == 2 && Arrays.equals(got.get(0), item)
          && new String(got.get(1)).equals("second"), "the same bytes back, in order");
      check(c.peek("rt").getItems() == 0, "queue empty");
      check(!c.version().isEmpty(), "a version");
      check(c.status() == Status.UP, "status UP");
    }
  }

  static void aGetTimesOutEmpty() throws Exception {
    try (Server s = new Server(Files.createTempDirectory("kestrel-java"));
        KestrelClient c = client(s.address)) {
      long start = System.currentTimeMillis();
      check(c.get("empty", 1, 300).isEmpty(), "nothing");
      check(System.currentTimeMillis() - start >= 300, "waited the timeout");
    }
  }

  static void consumeConfirmsHandledItemsAndPutsBackFailedOnes() throws Exception {
    try (Server s = new Server(Files.createTempDirectory("kestrel-java"));
        KestrelClient c = client(s.address)) {
      c.put("work", List.of("one".getBytes(), "two".getBytes()), 0);
      try {
        c.consume("work", item -> {
          throw new IllegalStateException("boom");
        }, 1, 0, 30000);
        check(false, "the handler's failure is rethrown");
      } catch (IllegalStateException expected) {
        check(expected.getMessage().equals("boom"), "the handler's own exception");
      }
      QueueInfo info = c.peek("work");
      check(info.getItems() == 2 && info.getOpen_transactions() == 0, "the failed item is back");
      List<String> seen = new ArrayList<>();
      check(c.consume("work", item -> seen.add(new String(item)), 5, 0, 30000) == 2, "two handled");
      check(seen.equals(List.of("one", "two")), "in order");
      info = c.peek("work");
      check(info.getItems() == 0 && info.getOpen_transactions() == 0, "confirmed: gone");
      check(c.consume("work", item -> { }, 1, 0, 1000) == 0, "nothing left");
    }
  }

  static void withTwoServersOneStoppedMidRunNothingAcknowledgedIsLost() throws Exception {
    Path dirA = Files.createTempDirectory("kestrel-java");
    Set<String> acked = new HashSet<>();
    List<String> found = new ArrayList<>();
    try (Server b = new Server(Files.createTempDirectory("kestrel-java"))) {
      Server a = new Server(dirA);
      try (KestrelClient c = client(a.address, b.address)) {
        for (int i = 0; i < 200; i++) {
          if (i == 100) {
            a.close();
          }
          String item = String.format("item-%03d", i);
          if (c.put("two", List.of(item.getBytes()), 0) == 1) {
            acked.add(item);
          }
        }
        check(acked.size() == 200, "every put acknowledged by one server or the other");
        List<byte[]> taken = c.get("two", 1, 500);
        check(taken.size() == 1, "gets go on with one server down");
        found.add(new String(taken.get(0)));
      }
      try (Server a2 = new Server(dirA); KestrelClient reader = client(a2.address, b.address)) {
        for (List<byte[]> got; !(got = reader.get("two", 100, 0)).isEmpty(); ) {
          for (byte[] g : got) {
            found.add(new String(g));
          }
        }
        // Every acknowledged item exactly once: found, or taken above.
        check(found.size() == 200 && new HashSet<>(found).equals(acked),
            "every acknowledged item there once: " + found);
      }
    }
  }

  static void aServerThatRefusesReadsDoesNotStopGetsFromTheOthers() throws Exception {
    try (Server a = new Server(Files.createTempDirectory("kestrel-java"));
        Server b = new Server(Files.createTempDirectory("kestrel-java"));
        KestrelClient onlyA = client(a.address);
        KestrelClient onlyB = client(b.address);
        KestrelClient both = client(a.address, b.address)) {
      onlyB.put("q", List.of("one".getBytes(), "two".getBytes()), 0);
      onlyA.setStatus(Status.QUIESCENT);
      // Round-robin: each server comes first once; a refuses, b answers.
      check(new String(both.get("q", 1, 0).get(0)).equals("one"), "one from b");
      check(new String(both.get("q", 1, 0).get(0)).equals("two"), "two from b");
      check(both.get("q", 1, 0).isEmpty(), "nothing left");
      // With only refusing servers the refusal comes back without waiting out the timeout.
      long start = System.nanoTime();
      try {
        onlyA.get("q", 1, 30000);
        check(false, "a refusal");
      } catch (KestrelClient.RefusedException expected) {
        check(System.nanoTime() - start < 10_000_000_000L, "at once");
      }
    }
  }

  @FunctionalInterface
  interface Test {
    void run() throws Exception;
  }

  public static void main(String[] args) {
    Object[][] tests = {
      {"binary items round trip", (Test) KestrelClientTest::binaryItemsRoundTrip},
      {"a get times out empty", (Test) KestrelClientTest::aGetTimesOutEmpty},
      {"consume confirms handled items and puts back failed ones",
          (Test) KestrelClientTest::consumeConfirmsHandledItemsAndPutsBackFailedOnes},
      {"with two servers, one stopped mid-run, nothing acknowledged is lost",
          (Test) KestrelClientTest::withTwoServersOneStoppedMidRunNothingAcknowledgedIsLost},
      {"a server that refuses reads does not stop gets from the others",
          (Test) KestrelClientTest::aServerThatRefusesReadsDoesNotStopGetsFromTheOthers},
      {"zookeeper: a server going READ_ONLY leaves the write set",
          (Test) ZooKeeperDiscoveryTest::aServerGoingReadOnlyLeavesTheWriteSet},
      {"zookeeper: an empty prefix fills when a server registers",
          (Test) ZooKeeperDiscoveryTest::anEmptyPrefixFillsWhenAServerRegisters},
      {"zookeeper: a lost session is replaced and watched again",
          (Test) ZooKeeperDiscoveryTest::aLostSessionIsReplacedAndWatchedAgain},
    };
    int failed = 0;
    for (Object[] t : tests) {
      try {
        ((Test) t[1]).run();
        System.out.println("ok     " + t[0]);
      } catch (Throwable e) {
        failed++;
        System.out.println("FAILED " + t[0] + ": " + e);
      }
    }
    System.out.println(tests.length - failed + " passed, " + failed + " failed");
    System.exit(failed == 0 ? 0 : 1);
  }
}
