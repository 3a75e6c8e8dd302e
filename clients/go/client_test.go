package kestrelclient

// The client against real servers on loopback (KESTREL_BIN, which run.sh points at the
// workspace's debug build).

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"kestrel/gen/go/kestrel"
)

type testServer struct {
	cmd     *exec.Cmd
	address string
}

func startServer(t *testing.T, data string) *testServer {
	t.Helper()
	return startServerWith(t, data, nil)
}

// startServerWith starts a server with extra environment ("KEY=value"), e.g. the
// KESTREL_ZOOKEEPER__* settings.
func startServerWith(t *testing.T, data string, env []string) *testServer {
	t.Helper()
	bin := os.Getenv("KESTREL_BIN")
	if bin == "" {
		bin = "../../target/debug/kestrel"
	}
	cmd := exec.Command(bin, "--listen", "127.0.0.1", "--thrift-port", "0",
		"--memcache-port", "off", "--text-port", "off", "--admin-port", "off", "--data-dir", data)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KESTREL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start kestrel (build it first, or set KESTREL_BIN): %v", err)
	}
	s := &testServer{cmd: cmd}
	t.Cleanup(s.kill)
	lines := make(chan string)
	go func() {
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			lines <- scanner.Text()
		}
		close(lines)
	}()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatal("kestrel exited before it was ready")
			}
			if _, rest, found := strings.Cut(line, "thrift listening on "); found {
				s.address = strings.Fields(rest)[0]
			}
			if strings.Contains(line, "ready to serve") {
				// Keep draining so the server never blocks on a full pipe.
				go func() {
					for range lines {
					}
				}()
				return s
			}
		case <-timeout:
			t.Fatal("kestrel did not start")
		}
	}
}

func (s *testServer) kill() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// stop ends the server cleanly (SIGTERM) and waits for it.
func (s *testServer) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	_ = s.cmd.Wait()
}

func newClient(t *testing.T, servers ...*testServer) *Client {
	t.Helper()
	var addresses []string
	for _, s := range servers {
		addresses = append(addresses, s.address)
	}
	c, err := New(addresses, Config{RetryAfter: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func TestBinaryItemsRoundTrip(t *testing.T) {
	c := newClient(t, startServer(t, t.TempDir()))
	item := []byte{0, 255, 10, 13, 0, 1}
	if n, err := c.Put("rt", [][]byte{item, []byte("second")}, 0); err != nil || n != 2 {
		t.Fatalf("put: %d, %v", n, err)
	}
	got, err := c.Get("rt", 5, 0)
	if err != nil || fmt.Sprint(got) != fmt.Sprint([][]byte{item, []byte("second")}) {
		t.Fatalf("get: %v, %v", got, err)
	}
	if info, err := c.Peek("rt"); err != nil || info.Items != 0 {
		t.Fatalf("peek: %v, %v", info, err)
	}
	if v, err := c.Version(); err != nil || v == "" {
		t.Fatalf("version: %q, %v", v, err)
	}
	if s, err := c.Status(); err != nil || s != kestrel.Status_UP {
		t.Fatalf("status: %v, %v", s, err)
	}
}

func TestAGetTimesOutEmpty(t *testing.T) {
	c := newClient(t, startServer(t, t.TempDir()))
	start := time.Now()
	got, err := c.Get("empty", 1, 300*time.Millisecond)
	if err != nil || len(got) != 0 {
		t.Fatalf("get: %v, %v", got, err)
	}
	if waited := time.Since(start); waited < 300*time.Millisecond {
		t.Fatalf("returned after %v", waited)
	}
}

func TestConsumeConfirmsHandledItemsAndPutsBackFailedOnes(t *testing.T) {
	c := newClient(t, startServer(t, t.TempDir()))
	if _, err := c.Put("work", [][]byte{[]byte("one"), []byte("two")}, 0); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	// The handler fails on the first item: it stays in the queue.
	n, err := c.Consume("work", 1, 0, 30*time.Second, func([]byte) error { return boom })
	if n != 0 || !errors.Is(err, boom) {
		t.Fatalf("failing consume: %d, %v", n, err)
	}
	if info, err := c.Peek("work"); err != nil || info.Items != 2 || info.OpenTransactions != 0 {
		t.Fatalf("peek after abort: %v, %v", info, err)
	}
	// Handled items are confirmed: gone for good.
	var seen []string
	n, err = c.Consume("work", 5, 0, 30*time.Second, func(item []byte) error {
		seen = append(seen, string(item))
		return nil
	})
	if err != nil || n != 2 || strings.Join(seen, ",") != "one,two" {
		t.Fatalf("consume: %d, %v, %v", n, seen, err)
	}
	if info, err := c.Peek("work"); err != nil || info.Items != 0 || info.OpenTransactions != 0 {
		t.Fatalf("peek after confirm: %v, %v", info, err)
	}
	// Nothing to consume: nothing handled.
	if n, err := c.Consume("work", 1, 0, time.Second, func([]byte) error { return nil }); n != 0 || err != nil {
		t.Fatalf("empty consume: %d, %v", n, err)
	}
}

func TestAServerThatRefusesReadsDoesNotStopGetsFromTheOthers(t *testing.T) {
	a, b := startServer(t, t.TempDir()), startServer(t, t.TempDir())
	if _, err := newClient(t, b).Put("q", [][]byte{[]byte("one"), []byte("two")}, 0); err != nil {
		t.Fatal(err)
	}
	onlyA := newClient(t, a)
	if err := onlyA.SetStatus(kestrel.Status_QUIESCENT); err != nil {
		t.Fatal(err)
	}
	// Round-robin: each server comes first once; a refuses, b answers.
	both := newClient(t, a, b)
	for _, want := range []string{"one", "two", ""} {
		got, err := both.Get("q", 1, 0)
		if err != nil || strings.Join(toStrings(got), "") != want {
			t.Fatalf("get: %q, %v; want %q", got, err, want)
		}
	}
	// With only refusing servers the refusal comes back without waiting out the timeout.
	start := time.Now()
	_, err := onlyA.Get("q", 1, 30*time.Second)
	var refused *RefusedError
	if !errors.As(err, &refused) || time.Since(start) > 10*time.Second {
		t.Fatalf("get from a refusing server: %v after %v", err, time.Since(start))
	}
}

func toStrings(items [][]byte) []string {
	var out []string
	for _, item := range items {
		out = append(out, string(item))
	}
	return out
}

func TestWithTwoServersOneStoppedMidRunNothingAcknowledgedIsLost(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	a, b := startServer(t, dirA), startServer(t, dirB)
	c := newClient(t, a, b)
	acked := map[string]bool{}
	for i := 0; i < 200; i++ {
		if i == 100 {
			a.stop() // the client carries on with B
		}
		item := fmt.Sprintf("item-%03d", i)
		n, err := c.Put("two", [][]byte{[]byte(item)}, 0)
		if err != nil {
			t.Fatalf("put %d: %v", i, err)
		}
		if n == 1 {
			acked[item] = true
		}
	}
	if len(acked) != 200 {
		t.Fatalf("%d of 200 puts acknowledged", len(acked))
	}
	// Gets keep working with A down.
	taken, err := c.Get("two", 1, 500*time.Millisecond)
	if err != nil || len(taken) != 1 {
		t.Fatalf("get with A down: %v, %v", taken, err)
	}
	// Bring A back (new port) and collect everything from both.
	reader := newClient(t, startServer(t, dirA), b)
	all := toStrings(taken)
	for {
		got, err := reader.Get("two", 100, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			break
		}
		for _, item := range got {
			all = append(all, string(item))
		}
	}
	// Every acknowledged item exactly once: found, or taken above.
	sort.Strings(all)
	var want []string
	for item := range acked {
		want = append(want, item)
	}
	sort.Strings(want)
	if strings.Join(all, ",") != strings.Join(want, ",") {
		t.Fatalf("found and taken:\n%v\nwant every acknowledged item once:\n%v", all, want)
	}
}
