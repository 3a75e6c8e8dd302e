package kestrelclient

// Discovery through ZooKeeper: the servers register themselves as ephemeral members of
// <prefix>/write (those taking puts) and <prefix>/read (those serving everything else), each
// member's data being Finagle server-set JSON.

import (
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/samuel/go-zookeeper/zk"
)

// retryListing is how long a set whose listing failed waits before it is listed again, when
// no ZooKeeper event would say when.
const retryListing = time.Second

// NewFromZooKeeper returns a client of the servers registered in ZooKeeper (connect is a
// connect string, "zk1:2181,zk2:2181") under prefix: puts go to the members of prefix/write,
// every other call to those of prefix/read. Membership changes take effect on the next call;
// if ZooKeeper becomes unreachable the last membership seen stays in force.
//
// It waits up to config.Timeout for the first listing, then returns anyway: the sets fill in
// when ZooKeeper answers (until then calls fail with ErrUnavailable).
func NewFromZooKeeper(connect, prefix string, config Config) (*Client, error) {
	c := &Client{config: withDefaults(config), known: map[string]*server{}}
	d, err := startDiscovery(connect, prefix, c.config.SessionTimeout, c.config.Logf)
	if err != nil {
		return nil, err
	}
	c.discovery = d
	select {
	case <-d.listed:
	case <-time.After(c.config.Timeout):
	}
	return c, nil
}

// Servers returns the servers ("host:port") puts go to and those every other call goes to,
// now. Safe for concurrent use, unlike the other methods.
func (c *Client) Servers() (write, read []string) {
	if c.discovery != nil {
		m := c.discovery.membership()
		return append([]string(nil), m.write...), append([]string(nil), m.read...)
	}
	for _, s := range c.writeServers {
		write = append(write, s.address)
	}
	return write, append([]string(nil), write...)
}

// refresh brings the server lists up to the latest membership. Servers still present keep
// their connection and down-mark; those that left are closed. It runs at the start of a call
// only, so a consume settles on the very server its items came from.
func (c *Client) refresh() {
	if c.discovery == nil {
		return
	}
	m := c.discovery.membership()
	if m == c.membership {
		return
	}
	c.membership = m
	now := map[string]*server{}
	pick := func(addresses []string) []*server {
		var out []*server
		for _, a := range addresses {
			s := now[a]
			if s == nil {
				if s = c.known[a]; s == nil {
					s = &server{address: a}
				}
				now[a] = s
			}
			out = append(out, s)
		}
		return out
	}
	c.writeServers, c.readServers = pick(m.write), pick(m.read)
	for a, s := range c.known {
		if now[a] == nil {
			s.close()
		}
	}
	c.known = now
}

// noServer is the error of a call that found no server at all (an empty set, with discovery).
func (c *Client) noServer(write bool) error {
	where := ""
	if c.discovery != nil {
		where = " in " + c.discovery.paths[1]
		if write {
			where = " in " + c.discovery.paths[0]
		}
	}
	return fmt.Errorf("%w: no server available%s", ErrUnavailable, where)
}

// membership is the servers ("host:port", Thrift port, sorted) in each set at one moment.
// It is never changed once published, so clients compare pointers to notice a new one.
type membership struct {
	write, read []string
}

// discovery follows the two sets. A single goroutine does all the ZooKeeper work, so a slow or
// unreachable ZooKeeper never blocks a client call: calls read the last published membership,
// which is also what stays in force while ZooKeeper is unreachable. Child watches are one-shot,
// so each listing sets the next watch; a set whose path does not exist yet is empty and gets an
// existence watch instead. go-zookeeper re-registers watches after a reconnect and, when the
// session expires, opens a new session by itself and reports each lost watch (EventNotWatching),
// upon which the set is listed again.
type discovery struct {
	conn     *zk.Conn
	events   <-chan zk.Event
	paths    [2]string // write, read
	logf     func(format string, args ...interface{})
	mu       sync.Mutex
	current  *membership
	listed   chan struct{} // closed once both sets have been listed
	stop     chan struct{}
	done     chan struct{}
	stopOnce sync.Once
}

// zkLogger sends go-zookeeper's messages (connects, reconnects) to Config.Logf.
type zkLogger func(format string, args ...interface{})

func (l zkLogger) Printf(format string, args ...interface{}) { l(format, args...) }

func startDiscovery(connect, prefix string, sessionTimeout time.Duration, logf func(string, ...interface{})) (*discovery, error) {
	prefix = strings.TrimSuffix(prefix, "/")
	if !strings.HasPrefix(prefix, "/") {
		return nil, fmt.Errorf("the prefix must be an absolute path: %q", prefix)
	}
	var hosts []string
	for _, h := range strings.Split(connect, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	conn, events, err := zk.Connect(hosts, sessionTimeout, zk.WithLogger(zkLogger(logf)))
	if err != nil {
		return nil, err
	}
	d := &discovery{
		conn:    conn,
		events:  events,
		paths:   [2]string{prefix + "/write", prefix + "/read"},
		logf:    logf,
		current: &membership{},
		listed:  make(chan struct{}),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	go d.run()
	return d, nil
}

// membership returns the last published membership; safe for concurrent use.
func (d *discovery) membership() *membership {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.current
}

func (d *discovery) run() {
	defer close(d.done)
	var servers [2][]string
	var watches [2]<-chan zk.Event
	var listed [2]bool
	var retry <-chan time.Time
	for {
		for i, path := range d.paths {
			if watches[i] != nil {
				continue
			}
			select {
			case <-d.stop: // no request after Close: this go-zookeeper would never answer it
				return
			default:
			}
			list, watch, err := d.list(path)
			if err != nil {
				d.logf("kestrel: listing %s failed: %v", path, err)
				if retry == nil {
					retry = time.After(retryListing)
				}
				continue
			}
			watches[i] = watch
			if strings.Join(list, ",") != strings.Join(servers[i], ",") {
				d.logf("kestrel: %s: %v", path, list)
			}
			servers[i] = list
			d.mu.Lock()
			d.current = &membership{write: servers[0], read: servers[1]}
			d.mu.Unlock()
			if !listed[i] {
				listed[i] = true
				if listed[0] && listed[1] {
					close(d.listed)
				}
			}
		}
		select {
		case <-d.stop:
			return
		case <-watches[0]: // a change, or the watch lost with the session: list again
			watches[0] = nil
		case <-watches[1]:
			watches[1] = nil
		case ev, ok := <-d.events:
			if !ok {
				d.events = nil
			} else if ev.State == zk.StateHasSession {
				retry = time.After(0) // (re)connected: sets still unwatched are listed now
			}
		case <-retry:
			retry = nil
		}
	}
}

// list returns the Thrift addresses of the usable members of path and a watch for its next
// change; an absent path is an empty set watched for its creation.
func (d *discovery) list(path string) ([]string, <-chan zk.Event, error) {
	children, _, watch, err := d.conn.ChildrenW(path)
	if err == zk.ErrNoNode {
		var exists bool
		exists, _, watch, err = d.conn.ExistsW(path)
		if err == nil && exists {
			err = fmt.Errorf("created while listing") // rare: list again shortly
		}
	}
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	list := []string{}
	for _, child := range children {
		data, _, err := d.conn.Get(path + "/" + child)
		if err == zk.ErrNoNode {
			continue // left while we listed; the child watch has fired already
		}
		if err != nil {
			return nil, nil, err
		}
		if address := d.thriftAddress(path+"/"+child, data); address != "" && !seen[address] {
			seen[address] = true
			list = append(list, address)
		}
	}
	sort.Strings(list)
	return list, watch, nil
}

type endpoint struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

// serverSetMember is a member's data in the Finagle server-set format.
type serverSetMember struct {
	ServiceEndpoint     *endpoint           `json:"serviceEndpoint"`
	AdditionalEndpoints map[string]endpoint `json:"additionalEndpoints"`
	Status              string              `json:"status"`
}

// thriftAddress is the Thrift endpoint a member advertises, or "" (logged) if its data is not
// JSON, it is not ALIVE or it has no Thrift endpoint: such a member is skipped.
func (d *discovery) thriftAddress(member string, data []byte) string {
	var m serverSetMember
	if err := json.Unmarshal(data, &m); err != nil {
		d.logf("kestrel: skipping %s: unusable data: %v", member, err)
		return ""
	}
	if m.Status != "ALIVE" {
		d.logf("kestrel: skipping %s: status %q", member, m.Status)
		return ""
	}
	thrift, ok := m.AdditionalEndpoints["thrift"]
	if !ok || thrift.Host == "" || thrift.Port < 1 || thrift.Port > 65535 {
		d.logf("kestrel: skipping %s: no usable thrift endpoint", member)
		return ""
	}
	return net.JoinHostPort(thrift.Host, strconv.Itoa(thrift.Port))
}

// close ends the ZooKeeper session (its watches go with it) and the goroutine.
func (d *discovery) close() {
	d.stopOnce.Do(func() {
		close(d.stop)
		d.conn.Close()
		// A listing in flight ends when the closing connection fails it; don't hang on a
		// ZooKeeper that never answers, though.
		select {
		case <-d.done:
		case <-time.After(5 * time.Second):
		}
	})
}
