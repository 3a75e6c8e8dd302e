package kestrelclient

// Discovery through ZooKeeper against a real ZooKeeper (tests/zookeeper/serve) and real
// servers that register themselves under a fresh prefix.

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/samuel/go-zookeeper/zk"
	"kestrel/gen/go/kestrel"
)

type testZooKeeper struct {
	cmd     *exec.Cmd
	connect string
}

// startZooKeeper runs a throwaway ZooKeeper on a free loopback port and a temporary directory;
// the test's cleanup kills it, on failure too.
func startZooKeeper(t *testing.T) *testZooKeeper {
	t.Helper()
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := probe.Addr().(*net.TCPAddr).Port
	probe.Close()
	dir := t.TempDir()
	logFile, err := os.Create(filepath.Join(dir, "zookeeper.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("../../tests/zookeeper/serve", dir, strconv.Itoa(port))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ZooKeeper: %v", err)
	}
	z := &testZooKeeper{cmd: cmd, connect: fmt.Sprintf("127.0.0.1:%d", port)}
	t.Cleanup(func() {
		z.kill()
		logFile.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for !imok(z.connect) {
		if time.Now().After(deadline) {
			t.Fatalf("ZooKeeper did not start on %s", z.connect)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return z
}

// imok tells whether ZooKeeper answers the four-letter word "ruok" with "imok".
func imok(address string) bool {
	conn, err := net.DialTimeout("tcp", address, 500*time.Millisecond)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("ruok")); err != nil {
		return false
	}
	answer, _ := io.ReadAll(conn)
	return string(answer) == "imok"
}

func (z *testZooKeeper) kill() {
	_ = z.cmd.Process.Kill()
	_ = z.cmd.Wait()
}

// registering is the environment that makes a server register itself under prefix.
func registering(z *testZooKeeper, prefix string) []string {
	return []string{"KESTREL_ZOOKEEPER__HOSTS=" + z.connect, "KESTREL_ZOOKEEPER__PATH_PREFIX=" + prefix,
		"KESTREL_ZOOKEEPER__SESSION_TIMEOUT=2s"}
}

func discoveringClient(t *testing.T, z *testZooKeeper, prefix string) *Client {
	t.Helper()
	c, err := NewFromZooKeeper(z.connect, prefix, Config{RetryAfter: 200 * time.Millisecond, SessionTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// waitUntil polls done every few milliseconds for up to limit and returns how long it took.
func waitUntil(t *testing.T, limit time.Duration, what string, done func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !done() {
		if time.Since(start) > limit {
			t.Fatalf("not within %v: %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func sameList(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// The basic case: three servers registered under a fresh prefix; 200 puts spread over them;
// one goes READ_ONLY and leaves the write set; the next 100 puts land on the other two; gets
// drain all three and every item comes back exactly once. Then ZooKeeper goes away and the
// client carries on with the membership it last saw.
func TestZooKeeperAServerGoingReadOnlyLeavesTheWriteSet(t *testing.T) {
	z := startZooKeeper(t)
	prefix := fmt.Sprintf("/kestrel-go-%d/queues", time.Now().UnixNano())
	var servers []*testServer
	var all []string
	for i := 0; i < 3; i++ {
		s := startServerWith(t, t.TempDir(), registering(z, prefix))
		servers = append(servers, s)
		all = append(all, s.address)
	}
	sort.Strings(all)
	a := servers[0]
	c := discoveringClient(t, z, prefix)
	waitUntil(t, 20*time.Second, "the client sees all three servers", func() bool {
		write, read := c.Servers()
		return sameList(write, all) && sameList(read, all)
	})

	const q = "zk"
	put := map[string]bool{}
	putItems := func(from, to int) {
		for i := from; i < to; i++ {
			item := fmt.Sprintf("item-%03d", i)
			if n, err := c.Put(q, [][]byte{[]byte(item)}, 0); err != nil || n != 1 {
				t.Fatalf("put %s: %d, %v", item, n, err)
			}
			put[item] = true
		}
	}
	items := func(s *testServer) int64 {
		info, err := newClient(t, s).Peek(q)
		if err != nil {
			t.Fatal(err)
		}
		return info.Items
	}
	putItems(0, 200)
	for _, s := range servers {
		if items(s) == 0 {
			t.Fatalf("no put landed on %s", s.address)
		}
	}
	onA := items(a)

	if err := newClient(t, a).SetStatus(kestrel.Status_READ_ONLY); err != nil {
		t.Fatal(err)
	}
	took := waitUntil(t, 10*time.Second, "A leaves the write set", func() bool {
		write, _ := c.Servers()
		return !contains(write, a.address)
	})
	fmt.Printf("the client saw the READ_ONLY change after %v\n", took.Round(time.Millisecond))
	if _, read := c.Servers(); !contains(read, a.address) {
		t.Fatalf("A left the read set too: %v", read)
	}

	putItems(200, 300)
	if n := items(a); n != onA {
		t.Fatalf("%d puts landed on A after READ_ONLY", n-onA)
	}
	var got []string
	for {
		batch, err := c.Get(q, 50, 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(batch) == 0 {
			break
		}
		got = append(got, toStrings(batch)...)
	}
	if n := items(a); n != 0 {
		t.Fatalf("%d items left on A", n)
	}
	seen := map[string]bool{}
	for _, item := range got {
		if seen[item] || !put[item] {
			t.Fatalf("%s delivered twice, or never put", item)
		}
		seen[item] = true
	}
	if len(seen) != len(put) {
		t.Fatalf("%d of %d items delivered", len(seen), len(put))
	}

	// ZooKeeper gone: the last membership stays in force.
	z.kill()
	time.Sleep(500 * time.Millisecond)
	if write, _ := c.Servers(); len(write) != 2 {
		t.Fatalf("write set not kept: %v", write)
	}
	if n, err := c.Put(q, [][]byte{[]byte("after")}, 0); err != nil || n != 1 {
		t.Fatalf("put without ZooKeeper: %d, %v", n, err)
	}
	if got, err := c.Get(q, 1, time.Second); err != nil || len(got) != 1 || string(got[0]) != "after" {
		t.Fatalf("get without ZooKeeper: %q, %v", got, err)
	}
}

// A prefix nobody registered under yet is an empty set: calls fail as with no server; the
// client notices the first server that registers, and notices it leave when it stops.
func TestZooKeeperAnEmptyPrefixFillsWhenAServerRegisters(t *testing.T) {
	z := startZooKeeper(t)
	prefix := fmt.Sprintf("/kestrel-go-empty-%d", time.Now().UnixNano())
	c := discoveringClient(t, z, prefix)
	if write, read := c.Servers(); len(write) != 0 || len(read) != 0 {
		t.Fatalf("servers before any registered: %v %v", write, read)
	}
	_, err := c.Put("e", [][]byte{[]byte("x")}, 0)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), prefix+"/write") {
		t.Fatalf("put with no server: %v", err)
	}
	s := startServerWith(t, t.TempDir(), registering(z, prefix))
	waitUntil(t, 10*time.Second, "the server appears", func() bool {
		write, _ := c.Servers()
		return sameList(write, []string{s.address})
	})
	if n, err := c.Put("e", [][]byte{[]byte("x")}, 0); err != nil || n != 1 {
		t.Fatalf("put: %d, %v", n, err)
	}
	if got, err := c.Get("e", 1, time.Second); err != nil || len(got) != 1 {
		t.Fatalf("get: %q, %v", got, err)
	}
	s.stop()
	// A clean stop withdraws the members (at the latest when the 2 s session expires).
	waitUntil(t, 10*time.Second, "the stopped server leaves both sets", func() bool {
		write, read := c.Servers()
		return len(write) == 0 && len(read) == 0
	})
}

// pause freezes ZooKeeper (SIGSTOP) for d, then lets it go on: sessions that could not ping it
// for longer than their timeout expire when it wakes, as after a partition.
func (z *testZooKeeper) pause(t *testing.T, d time.Duration) {
	if err := z.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	time.Sleep(d)
	if err := z.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
}

// members lists the member znodes of path, as ZooKeeper has them now.
func (z *testZooKeeper) members(path string) ([]string, error) {
	conn, _, err := zk.Connect([]string{z.connect}, 2*time.Second, zk.WithLogger(zkLogger(func(string, ...interface{}) {})))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	children, _, err := conn.Children(path)
	if err == zk.ErrNoNode {
		return nil, nil
	}
	return children, err
}

// ZooKeeper frozen for longer than every session timeout: on waking it expires them all. The
// servers register again with new sessions; the client gets a new session too (go-zookeeper
// opens it), lists the sets again and follows a later status change.
func TestZooKeeperALostSessionIsReplacedAndWatchedAgain(t *testing.T) {
	z := startZooKeeper(t)
	prefix := fmt.Sprintf("/kestrel-go-expiry-%d", time.Now().UnixNano())
	a := startServerWith(t, t.TempDir(), registering(z, prefix))
	b := startServerWith(t, t.TempDir(), registering(z, prefix))
	all := []string{a.address, b.address}
	sort.Strings(all)
	c := discoveringClient(t, z, prefix)
	waitUntil(t, 20*time.Second, "the client sees both servers", func() bool {
		write, _ := c.Servers()
		return sameList(write, all)
	})
	session := c.discovery.conn.SessionID()
	before, err := z.members(prefix + "/write")
	if err != nil {
		t.Fatal(err)
	}
	z.pause(t, 5*time.Second)
	// Both servers' new members, under new names (the old ones went with their sessions).
	waitUntil(t, 30*time.Second, "both servers registered again", func() bool {
		now, err := z.members(prefix + "/write")
		return err == nil && len(now) == 2 && !contains(before, now[0]) && !contains(before, now[1])
	})
	waitUntil(t, 10*time.Second, "the client has a new session", func() bool {
		id := c.discovery.conn.SessionID()
		return id != 0 && id != session
	})
	waitUntil(t, 10*time.Second, "the client sees both again", func() bool {
		write, read := c.Servers()
		return sameList(write, all) && sameList(read, all)
	})
	if err := newClient(t, b).SetStatus(kestrel.Status_READ_ONLY); err != nil {
		t.Fatal(err)
	}
	took := waitUntil(t, 10*time.Second, "B leaves the write set: the new session watches it", func() bool {
		write, _ := c.Servers()
		return sameList(write, []string{a.address})
	})
	fmt.Printf("after the expiry, the client saw the READ_ONLY change after %v\n", took.Round(time.Millisecond))
	if n, err := c.Put("x", [][]byte{[]byte("y")}, 0); err != nil || n != 1 {
		t.Fatalf("put: %d, %v", n, err)
	}
}
