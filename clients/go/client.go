// Package kestrelclient is a client for kestrel, and for Kestrel 2.4 servers, over Thrift.
//
// The generated stubs (kestrel/gen/go/kestrel, from idl/kestrel.thrift) speak the protocol;
// this package adds what an application needs around them: several servers used Kestrel's
// way (puts round-robin, gets polling every server, both skipping servers that are down or
// refuse), reconnects after a retry interval, and reliable reads that confirm what a handler
// handled and abort what it failed on. The servers come from a static list (New) or from
// ZooKeeper, where they register themselves (NewFromZooKeeper).
//
// A Client is not safe for concurrent use: use one per goroutine.
package kestrelclient

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/apache/thrift/lib/go/thrift"
	"kestrel/gen/go/kestrel"
)

// Config holds timeouts and retry behaviour.
type Config struct {
	ConnectTimeout time.Duration // opening a connection
	Timeout        time.Duration // each call, on top of a blocking get's own wait
	RetryAfter     time.Duration // how long a server that failed is skipped
	PollSlice      time.Duration // how long a get waits on one server before trying the next
	SessionTimeout time.Duration // the ZooKeeper session's, with discovery

	// Logf, if set, gets debug messages: discovery's membership changes, skipped members,
	// ZooKeeper connection events.
	Logf func(format string, args ...interface{})
}

// DefaultConfig is what New uses for zero fields.
var DefaultConfig = Config{
	ConnectTimeout: time.Second,
	Timeout:        5 * time.Second,
	RetryAfter:     time.Second,
	PollSlice:      100 * time.Millisecond,
	SessionTimeout: 10 * time.Second,
}

// ErrUnavailable is wrapped by every error that means no server could be reached.
var ErrUnavailable = errors.New("kestrel unavailable")

// RefusedError is a server refusing a call (bad queue name, read-only server, ...).
type RefusedError struct {
	Server  string
	Message string
}

func (e *RefusedError) Error() string { return e.Server + ": " + e.Message }

type server struct {
	address   string
	transport thrift.TTransport
	socket    *thrift.TSocket
	stub      *kestrel.KestrelClient
	downUntil time.Time
}

func (s *server) close() {
	if s.transport != nil {
		s.transport.Close()
	}
	s.transport, s.socket, s.stub = nil, nil, nil
}

// Client talks to one or more servers ("host:port", Thrift port); it connects lazily.
type Client struct {
	// Servers that take puts, and servers that take everything else: the same list if static.
	writeServers, readServers []*server
	nextWrite, nextRead       int
	config                    Config
	// With discovery: the membership the lists were built from, and every server in them.
	discovery  *discovery
	membership *membership
	known      map[string]*server
}

// New returns a client of servers; zero fields of config take DefaultConfig's values.
func New(servers []string, config Config) (*Client, error) {
	if len(servers) == 0 {
		return nil, errors.New("no servers given")
	}
	c := &Client{config: withDefaults(config)}
	for _, a := range servers {
		c.writeServers = append(c.writeServers, &server{address: a})
	}
	c.readServers = c.writeServers
	return c, nil
}

// servers returns the write or the read set, up to date.
func (c *Client) servers(write bool) []*server {
	c.refresh()
	if write {
		return c.writeServers
	}
	return c.readServers
}

// withDefaults gives zero fields of config DefaultConfig's values.
func withDefaults(config Config) Config {
	if config.ConnectTimeout == 0 {
		config.ConnectTimeout = DefaultConfig.ConnectTimeout
	}
	if config.Timeout == 0 {
		config.Timeout = DefaultConfig.Timeout
	}
	if config.RetryAfter == 0 {
		config.RetryAfter = DefaultConfig.RetryAfter
	}
	if config.PollSlice == 0 {
		config.PollSlice = DefaultConfig.PollSlice
	}
	if config.SessionTimeout == 0 {
		config.SessionTimeout = DefaultConfig.SessionTimeout
	}
	if config.Logf == nil {
		config.Logf = func(string, ...interface{}) {}
	}
	return config
}

// millis converts d for the wire, where milliseconds are an int32.
func millis(d time.Duration) int32 {
	ms := d.Milliseconds()
	if ms > math.MaxInt32 {
		return math.MaxInt32
	}
	if ms < 0 {
		return 0
	}
	return int32(ms)
}

// order lists the servers from the next one in turn: those up first, then those resting
// after a failure, as a last resort or (skipResting) only when every server is resting.
func (c *Client) order(write, skipResting bool) []*server {
	servers := c.servers(write)
	n := len(servers)
	if n == 0 {
		return nil
	}
	next := &c.nextRead
	if write {
		next = &c.nextWrite
	}
	start := *next % n
	*next = (start + 1) % n
	now := time.Now()
	var up, resting []*server
	for k := 0; k < n; k++ {
		s := servers[(start+k)%n]
		if s.downUntil.After(now) {
			resting = append(resting, s)
		} else {
			up = append(up, s)
		}
	}
	if skipResting && len(up) > 0 {
		return up
	}
	return append(up, resting...)
}

// call runs one stub call on s, connecting first if needed. wait is how long the call may
// block on the server on top of the configured timeout.
func (c *Client) call(s *server, wait time.Duration, run func(*kestrel.KestrelClient) error) error {
	if s.stub == nil {
		conf := &thrift.TConfiguration{ConnectTimeout: c.config.ConnectTimeout, SocketTimeout: c.config.Timeout}
		socket := thrift.NewTSocketConf(s.address, conf)
		transport := thrift.NewTFramedTransportConf(socket, conf)
		if err := transport.Open(); err != nil { // Go sockets have TCP_NODELAY on
			s.downUntil = time.Now().Add(c.config.RetryAfter)
			return fmt.Errorf("%w: %s: %v", ErrUnavailable, s.address, err)
		}
		protocol := thrift.NewTBinaryProtocolConf(transport, conf)
		s.transport, s.socket = transport, socket
		s.stub = kestrel.NewKestrelClient(thrift.NewTStandardClient(protocol, protocol))
		s.downUntil = time.Time{}
	}
	if err := s.socket.SetSocketTimeout(c.config.Timeout + wait); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, s.address, err)
	}
	err := run(s.stub)
	var refused thrift.TApplicationException
	switch {
	case err == nil:
		return nil
	case errors.As(err, &refused):
		return &RefusedError{Server: s.address, Message: refused.Error()}
	default:
		s.close()
		s.downUntil = time.Now().Add(c.config.RetryAfter)
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, s.address, err)
	}
}

// first runs call on the first server, in turn, of the write or the read set that takes it.
func (c *Client) first(write bool, run func(*kestrel.KestrelClient) error) error {
	last := c.noServer(write)
	for _, s := range c.order(write, false) {
		if last = c.call(s, 0, run); last == nil {
			return nil
		}
	}
	return last
}

// all runs call on every server. Servers that cannot be reached are passed over unless none
// can; a refusal from any server is returned after every server has had the call.
func (c *Client) all(run func(*kestrel.KestrelClient) error) error {
	var refused, down error
	reached := false
	for _, s := range c.servers(false) {
		err := c.call(s, 0, run)
		switch {
		case err == nil:
			reached = true
		case errors.Is(err, ErrUnavailable):
			down = err
		default:
			refused = err
		}
	}
	if refused != nil {
		return refused
	}
	if !reached && down != nil {
		return down
	}
	if !reached {
		return c.noServer(false)
	}
	return nil
}

// poll asks the servers in turn for items until one has some or timeout has passed.
// Servers that are down or refuse are passed over; when no server answered in a round, a
// refusal is returned at once (waiting will not change it) and otherwise the round is tried
// again until the deadline.
func (c *Client) poll(queue string, max int, timeout, autoAbort time.Duration) (*server, []*kestrel.Item, error) {
	deadline := time.Now().Add(timeout)
	for {
		reached := false
		var refused, down error
		for _, s := range c.order(false, true) { // each round sees membership changes
			wait := time.Until(deadline)
			if wait < 0 {
				wait = 0
			}
			if wait > c.config.PollSlice {
				wait = c.config.PollSlice
			}
			var items []*kestrel.Item
			err := c.call(s, wait, func(k *kestrel.KestrelClient) (err error) {
				items, err = k.Get(context.Background(), queue, int32(max), millis(wait), millis(autoAbort))
				return err
			})
			switch {
			case err == nil:
				reached = true
				if len(items) > 0 {
					return s, items, nil
				}
			case errors.Is(err, ErrUnavailable):
				down = err
			default:
				refused = err
			}
		}
		if !reached && refused != nil {
			return nil, nil, refused
		}
		left := time.Until(deadline)
		if left <= 0 {
			if !reached && down != nil {
				return nil, nil, down
			}
			if !reached {
				return nil, nil, c.noServer(false)
			}
			return nil, nil, nil
		}
		if !reached {
			if left > c.config.PollSlice {
				left = c.config.PollSlice
			}
			time.Sleep(left)
		}
	}
}

// Put puts items on one server and returns how many it accepted; expiry 0 means never.
func (c *Client) Put(queue string, items [][]byte, expiry time.Duration) (int, error) {
	var n int32
	err := c.first(true, func(k *kestrel.KestrelClient) (err error) {
		n, err = k.Put(context.Background(), queue, items, millis(expiry))
		return err
	})
	return int(n), err
}

// Get returns up to max items, polling the servers for up to timeout.
func (c *Client) Get(queue string, max int, timeout time.Duration) ([][]byte, error) {
	_, items, err := c.poll(queue, max, timeout, 0)
	out := make([][]byte, 0, len(items))
	for _, item := range items {
		out = append(out, item.Data)
	}
	return out, err
}

// Consume runs handler on up to max items read reliably (the server aborts them by itself
// after autoAbort). Handled items are confirmed; when handler fails, that item and the rest
// of the batch are aborted (back at the head) and its error returned. It returns how many
// items were handled.
//
// Confirming and aborting are each tried twice (the second time on a new connection); items
// they could not settle come back when their autoAbort deadline passes, so a handler may see
// an item again.
func (c *Client) Consume(queue string, max int, timeout, autoAbort time.Duration, handler func([]byte) error) (int, error) {
	if autoAbort < time.Millisecond {
		autoAbort = time.Millisecond
	}
	s, items, err := c.poll(queue, max, timeout, autoAbort)
	if err != nil {
		return 0, err
	}
	var done, back []int64
	var failure error
	for _, item := range items {
		if failure == nil {
			if failure = handler(item.Data); failure == nil {
				done = append(done, item.ID)
				continue
			}
		}
		back = append(back, item.ID)
	}
	unsettled := c.settle(s, done, func(k *kestrel.KestrelClient) error {
		_, err := k.Confirm(context.Background(), queue, done)
		return err
	})
	if err := c.settle(s, back, func(k *kestrel.KestrelClient) error {
		_, err := k.Abort(context.Background(), queue, back)
		return err
	}); unsettled == nil {
		unsettled = err
	}
	if failure != nil {
		return len(done), failure
	}
	return len(done), unsettled
}

// settle confirms or aborts ids on s; a broken connection is replaced and the call made once
// more (settling twice is harmless: the second call finds nothing open).
func (c *Client) settle(s *server, ids []int64, run func(*kestrel.KestrelClient) error) error {
	if len(ids) == 0 {
		return nil
	}
	err := c.call(s, 0, run)
	if errors.Is(err, ErrUnavailable) {
		err = c.call(s, 0, run)
	}
	return err
}

// Peek adds up what every reachable server reports for queue.
func (c *Client) Peek(queue string) (*kestrel.QueueInfo, error) {
	total := kestrel.NewQueueInfo()
	err := c.all(func(k *kestrel.KestrelClient) error {
		info, err := k.Peek(context.Background(), queue)
		if err != nil {
			return err
		}
		if total.HeadItem == nil {
			total.HeadItem = info.HeadItem
		}
		total.Items += info.Items
		total.Bytes += info.Bytes
		total.JournalBytes += info.JournalBytes
		if info.Age > total.Age {
			total.Age = info.Age
		}
		total.Waiters += info.Waiters
		total.OpenTransactions += info.OpenTransactions
		return nil
	})
	return total, err
}

// Flush removes every item of queue on every server.
func (c *Client) Flush(queue string) error {
	return c.all(func(k *kestrel.KestrelClient) error { return k.FlushQueue(context.Background(), queue) })
}

// Delete deletes queue on every server.
func (c *Client) Delete(queue string) error {
	return c.all(func(k *kestrel.KestrelClient) error { return k.DeleteQueue(context.Background(), queue) })
}

// Version is the version of the next reachable server in turn.
func (c *Client) Version() (version string, err error) {
	err = c.first(false, func(k *kestrel.KestrelClient) (err error) {
		version, err = k.GetVersion(context.Background())
		return err
	})
	return version, err
}

// Status is the status of the next reachable server in turn.
func (c *Client) Status() (status kestrel.Status, err error) {
	err = c.first(false, func(k *kestrel.KestrelClient) (err error) {
		status, err = k.CurrentStatus(context.Background())
		return err
	})
	return status, err
}

// SetStatus sets the status of every server.
func (c *Client) SetStatus(status kestrel.Status) error {
	return c.all(func(k *kestrel.KestrelClient) error { return k.SetStatus(context.Background(), status) })
}

// Close closes every connection and, with discovery, ends the ZooKeeper session.
func (c *Client) Close() {
	for _, s := range c.writeServers {
		s.close()
	}
	for _, s := range c.readServers {
		s.close()
	}
	if c.discovery != nil {
		c.discovery.close()
	}
}
