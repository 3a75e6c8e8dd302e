import java.util.List;

import net.lag.kestrel.client.KestrelClient;

/** Puts and gets 64-byte items and prints the round trips per second. */
public final class RoundTrip {
  public static void main(String[] args) {
    String server = args.length > 0 ? args[0] : "127.0.0.1:2229";
    double seconds = args.length > 1 ? Double.parseDouble(args[1]) : 5;
    try (KestrelClient client = new KestrelClient(List.of(server))) {
      client.flush("client_roundtrip");
      byte[] item = new byte[64];
      java.util.Arrays.fill(item, (byte) 'x');
      long start = System.nanoTime();
      long n = 0;
      while (System.nanoTime() - start < seconds * 1e9) {
        client.put("client_roundtrip", List.of(item), 0);
        if (client.get("client_roundtrip", 1, 0).size() != 1) {
          throw new IllegalStateException("item missing");
        }
        n++;
      }
      double rate = n / ((System.nanoTime() - start) / 1e9);
      System.out.printf("java client: %d round trips (put + get, 64 B) in %.0f s: %.0f round trips/s%n",
          n, seconds, rate);
    }
  }
}
