//! A client for kestrel, and for Kestrel 2.4 servers: the Thrift API over
//! framed transport and binary protocol, with what an application needs
//! around the generated stubs.
//!
//! - **Several servers.** Puts go to one server per call, round-robin,
//!   skipping servers that are down or refuse writes; gets poll the servers
//!   in turn, skipping those that are down or refuse reads. Servers never
//!   talk to each other (Kestrel's "loosely ordered" model), so one dead
//!   server never stops the client.
//! - **Reconnects.** A broken connection is dropped, and the server is left
//!   alone for [`Config::retry_after`] before it is tried again.
//! - **Reliable reads.** [`Client::consume`] runs a handler on items opened
//!   with an auto-abort deadline, confirms what it handled and aborts (puts
//!   back) what it failed on.
//! - **Discovery.** [`Client::from_zookeeper`] finds the servers in
//!   ZooKeeper server sets instead of a fixed list: puts go to the `write`
//!   set, gets to the `read` set, and both follow the servers' membership
//!   as it changes (the `zookeeper` feature, on by default).
//!
//! ```no_run
//! let mut client = kestrel_client::Client::new(["127.0.0.1:2229"], Default::default()).unwrap();
//! client.put("jobs", &[b"hello".to_vec()], None).unwrap();
//! let items = client.get("jobs", 1, std::time::Duration::from_secs(1)).unwrap();
//! ```

#[path = "../../../gen/rs/kestrel.rs"]
#[allow(clippy::all, clippy::pedantic, dead_code, missing_docs)]
#[rustfmt::skip]
mod generated;

#[cfg(feature = "zookeeper")]
mod discovery;

use std::collections::BTreeSet;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use thrift::protocol::{TBinaryInputProtocol, TBinaryOutputProtocol};
use thrift::transport::{
    ReadHalf, TFramedReadTransport, TFramedWriteTransport, TIoChannel, TTcpChannel, WriteHalf,
};

pub use generated::{Item, QueueInfo, Status};
use generated::{KestrelSyncClient, TKestrelSyncClient};

/// The servers a client uses, as `host:port` (Thrift endpoints).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Servers {
    /// Where puts go.
    pub write: Vec<String>,
    /// What gets poll.
    pub read: Vec<String>,
}

/// Timeouts and retry behaviour.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// How long to wait for a connection.
    pub connect_timeout: Duration,
    /// How long to wait for a reply (a blocking get adds its own timeout).
    pub timeout: Duration,
    /// How long a server that failed is left alone before it is tried again.
    pub retry_after: Duration,
    /// How long one server is waited on, in turn, while a get polls them all.
    pub poll_slice: Duration,
    /// The ZooKeeper session timeout of [`Client::from_zookeeper`].
    pub zookeeper_session_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
            retry_after: Duration::from_secs(1),
            poll_slice: Duration::from_millis(100),
            zookeeper_session_timeout: Duration::from_secs(10),
        }
    }
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No server could be reached (the last failure is given).
    #[error("no server available: {0}")]
    Unavailable(String),
    /// A server refused the call (bad queue name, read-only server, …).
    #[error("refused by {server}: {message}")]
    Refused { server: String, message: String },
    /// A confirm found fewer of the items open than it named: their
    /// deadline passed, or the server restarted since it handed them out
    /// (its reads opened before are rolled back), or an earlier try whose
    /// reply was lost confirmed them. They may be delivered again.
    #[error("{server} confirmed {confirmed} of {sent} items; the others may be delivered again")]
    NotConfirmed {
        server: String,
        confirmed: usize,
        sent: usize,
    },
}

/// A failed [`Client::consume`]: the client failed, or the handler did (its
/// item and the rest of the batch were put back).
#[derive(Debug, thiserror::Error)]
pub enum ConsumeError<E> {
    #[error(transparent)]
    Client(#[from] Error),
    #[error("handler failed: {0}")]
    Handler(E),
}

type Conn = KestrelSyncClient<
    TBinaryInputProtocol<TFramedReadTransport<ReadHalf<TTcpChannel>>>,
    TBinaryOutputProtocol<TFramedWriteTransport<WriteHalf<TTcpChannel>>>,
>;

struct Server {
    /// `host:port`, resolved at each connect.
    address: String,
    /// The connection, and a handle on its socket to set timeouts.
    conn: Option<(Conn, TcpStream)>,
    down_until: Option<Instant>,
}

/// A client of one or more servers.
pub struct Client {
    /// Every server known: with discovery, the members of either set.
    servers: Vec<Server>,
    /// The servers puts go to, and those gets poll (indexes into `servers`).
    write: Vec<usize>,
    read: Vec<usize>,
    next: usize,
    config: Config,
    /// The server sets followed, and the generation of their membership
    /// that `servers` reflects.
    #[cfg(feature = "zookeeper")]
    discovery: Option<(std::sync::Arc<discovery::Membership>, u64)>,
}

/// Which servers a call may go to.
#[derive(Clone, Copy)]
enum Role {
    Write,
    Read,
}

/// Why one call to one server failed.
enum Failure {
    /// The connection is broken or could not be made: try another server.
    Down(String),
    /// The server answered with an exception: it refuses this call.
    Refused(String),
}

impl Client {
    /// A client of `servers` (`host:port`, Thrift port). Names are resolved,
    /// and connections made, at the first call to each server.
    pub fn new<A: ToString>(
        servers: impl IntoIterator<Item = A>,
        config: Config,
    ) -> Result<Client, Error> {
        let list: Vec<Server> = servers
            .into_iter()
            .map(|s| Server::new(s.to_string()))
            .collect();
        if list.is_empty() {
            return Err(Error::Unavailable("no servers given".into()));
        }
        let all: Vec<usize> = (0..list.len()).collect();
        Ok(Client {
            servers: list,
            write: all.clone(),
            read: all,
            next: 0,
            config,
            #[cfg(feature = "zookeeper")]
            discovery: None,
        })
    }

    /// A client of the servers registered in the ZooKeeper server sets under
    /// `prefix` (`<prefix>/write` for puts, `<prefix>/read` for gets) on the
    /// ensemble `hosts` (`host:port[,host:port…]`). Membership changes take
    /// effect at the next call; if ZooKeeper goes away, the last membership
    /// seen stays in force. Fails if no membership can be read within
    /// [`Config::timeout`]. An empty set is not an error: calls find no
    /// server until one joins.
    #[cfg(feature = "zookeeper")]
    pub fn from_zookeeper(hosts: &str, prefix: &str, config: Config) -> Result<Client, Error> {
        let membership = discovery::watch(
            hosts,
            prefix,
            config.zookeeper_session_timeout,
            config.timeout,
        )
        .map_err(Error::Unavailable)?;
        let mut client = Client {
            servers: Vec::new(),
            write: Vec::new(),
            read: Vec::new(),
            next: 0,
            config,
            discovery: Some((membership, 0)),
        };
        client.refresh();
        Ok(client)
    }

    /// The servers puts go to and those gets poll, as `host:port`: the
    /// servers given, or the current members of the server sets.
    pub fn servers(&mut self) -> Servers {
        self.refresh();
        let names = |set: &[usize]| {
            set.iter()
                .map(|&i| self.servers[i].address.clone())
                .collect()
        };
        Servers {
            write: names(&self.write),
            read: names(&self.read),
        }
    }

    /// Takes up a new server-set membership, if there is one: servers still
    /// members keep their connections; those that left are dropped.
    fn refresh(&mut self) {
        #[cfg(feature = "zookeeper")]
        {
            let Some((membership, seen)) = &mut self.discovery else {
                return;
            };
            let Some((generation, members)) = membership.changed_since(*seen) else {
                return;
            };
            *seen = generation;
            let mut old = std::mem::take(&mut self.servers);
            let mut index = |address: &String| {
                if let Some(i) = self.servers.iter().position(|s| &s.address == address) {
                    return i;
                }
                let server = match old.iter().position(|s| &s.address == address) {
                    Some(i) => old.swap_remove(i),
                    None => Server::new(address.clone()),
                };
                self.servers.push(server);
                self.servers.len() - 1
            };
            self.write = members.write.iter().map(&mut index).collect();
            self.read = members.read.iter().map(&mut index).collect();
        }
    }

    /// Server indexes starting at the next one in turn: those up first, then
    /// those resting after a failure, as a last resort (`Resting::Last`) or
    /// only when every server is resting (`Resting::Skip`).
    fn order(&mut self, role: Role, resting: Resting) -> Vec<usize> {
        let set = match role {
            Role::Write => &self.write,
            Role::Read => &self.read,
        };
        let n = set.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next % n;
        self.next = self.next.wrapping_add(1);
        let now = Instant::now();
        let (mut up, mut down): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|k| set[(start + k) % n])
            .partition(|&i| self.servers[i].down_until.is_none_or(|t| t <= now));
        if up.is_empty() || resting == Resting::Last {
            up.append(&mut down);
        }
        up
    }

    /// Runs `call` on server `i`, connecting first if needed.
    fn on<T>(
        &mut self,
        i: usize,
        wait: Duration,
        call: impl FnOnce(&mut Conn) -> thrift::Result<T>,
    ) -> Result<T, Failure> {
        let config = self.config;
        let server = &mut self.servers[i];
        if server.conn.is_none() {
            match connect(&server.address, &config) {
                Ok(conn) => {
                    server.conn = Some(conn);
                    server.down_until = None;
                }
                Err(e) => {
                    server.down_until = Some(Instant::now() + config.retry_after);
                    return Err(Failure::Down(format!("{}: {e}", server.address)));
                }
            }
        }
        let (conn, socket) = server.conn.as_mut().expect("connected above");
        let _ = socket.set_read_timeout(Some(config.timeout.saturating_add(wait)));
        match call(conn) {
            Ok(v) => Ok(v),
            Err(thrift::Error::Application(e)) => Err(Failure::Refused(e.message)),
            Err(e) => {
                server.conn = None;
                server.down_until = Some(Instant::now() + config.retry_after);
                Err(Failure::Down(format!("{}: {e}", server.address)))
            }
        }
    }

    /// Puts `items` on one server (round-robin, skipping servers that are
    /// down or refuse). `expiry`: the items expire that long after the put.
    /// Returns how many items the server accepted.
    pub fn put(
        &mut self,
        queue: &str,
        items: &[Vec<u8>],
        expiry: Option<Duration>,
    ) -> Result<i32, Error> {
        let expiry = expiry.map_or(0, millis);
        self.refresh();
        let mut last = Error::Unavailable("no server takes writes".into());
        for i in self.order(Role::Write, Resting::Last) {
            match self.on(i, Duration::ZERO, |c| {
                c.put(queue.into(), items.to_vec(), expiry)
            }) {
                Ok(n) => return Ok(n),
                Err(f) => last = self.error(i, f),
            }
        }
        Err(last)
    }

    /// Gets up to `max` items, polling the servers in turn until one has
    /// some or `timeout` has passed.
    pub fn get(&mut self, queue: &str, max: i32, timeout: Duration) -> Result<Vec<Vec<u8>>, Error> {
        let (_, items) = self.poll(queue, max, timeout, 0)?;
        Ok(items
            .into_iter()
            .map(|i| i.data.unwrap_or_default())
            .collect())
    }

    /// Gets up to `max` items opened with an `auto_abort` deadline and runs
    /// `handler` on each: the ones it handles are confirmed; when it fails,
    /// that item and the rest of the batch are aborted (back at the head of
    /// the queue) and the error is returned. Returns how many were handled.
    ///
    /// Confirming and aborting are each tried twice (the second time on a
    /// new connection); items they could not settle come back when their
    /// `auto_abort` deadline passes, so a handler may see an item again.
    pub fn consume<E>(
        &mut self,
        queue: &str,
        max: i32,
        timeout: Duration,
        auto_abort: Duration,
        mut handler: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<usize, ConsumeError<E>> {
        let (server, items) = self.poll(queue, max, timeout, millis(auto_abort).max(1))?;
        let mut done = BTreeSet::new();
        let mut failure = None;
        let mut back = BTreeSet::new();
        for item in &items {
            let id = item.id.unwrap_or(0);
            if failure.is_some() {
                back.insert(id);
                continue;
            }
            match handler(item.data.as_deref().unwrap_or_default()) {
                Ok(()) => {
                    done.insert(id);
                }
                Err(e) => {
                    back.insert(id);
                    failure = Some(e);
                }
            }
        }
        let Some(i) = server else { return Ok(0) };
        let handled = done.len();
        let sent = done.len();
        let confirmed = match self.settle(i, done, |c, ids| c.confirm(queue.into(), ids)) {
            // Only a count of every item says they are all gone for good.
            Ok(n) if n < sent => Err(Error::NotConfirmed {
                server: self.servers[i].address.clone(),
                confirmed: n,
                sent,
            }),
            other => other.map(drop),
        };
        let aborted = self
            .settle(i, back, |c, ids| c.abort(queue.into(), ids))
            .map(drop);
        match failure {
            Some(e) => Err(ConsumeError::Handler(e)),
            None => confirmed.and(aborted).map(|()| handled).map_err(Into::into),
        }
    }

    /// Confirms or aborts `ids` on server `i`; a broken connection is
    /// replaced and the call made once more. Returns how many the server
    /// settled: a second try finds nothing open if the first took effect,
    /// and also if the server restarted in between (its open reads rolled
    /// back), so fewer than `ids` means "not known to be settled".
    fn settle(
        &mut self,
        i: usize,
        ids: BTreeSet<i64>,
        call: impl Fn(&mut Conn, BTreeSet<i64>) -> thrift::Result<i32>,
    ) -> Result<usize, Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        let result = match self.on(i, Duration::ZERO, |c| call(c, ids.clone())) {
            Err(Failure::Down(_)) => self.on(i, Duration::ZERO, |c| call(c, ids)),
            other => other,
        };
        result
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(|f| self.error(i, f))
    }

    /// Polls the servers in turn for items; returns the server they came
    /// from. Servers that are down or refuse are passed over; when no server
    /// answered in a round, a refusal is returned at once (it will not go
    /// away by waiting) and otherwise the round is tried again until the
    /// deadline.
    fn poll(
        &mut self,
        queue: &str,
        max: i32,
        timeout: Duration,
        auto_abort_ms: i32,
    ) -> Result<(Option<usize>, Vec<Item>), Error> {
        let now = Instant::now();
        let deadline = now.checked_add(timeout).unwrap_or(now + MAX_WAIT);
        loop {
            self.refresh();
            let (mut reached, mut refused, mut down) = (false, None, None);
            for i in self.order(Role::Read, Resting::Skip) {
                let left = deadline.saturating_duration_since(Instant::now());
                let wait = left.min(self.config.poll_slice);
                match self.on(i, wait, |c| {
                    c.get(queue.into(), max, millis(wait), auto_abort_ms)
                }) {
                    Ok(items) if !items.is_empty() => return Ok((Some(i), items)),
                    Ok(_) => reached = true,
                    Err(f @ Failure::Refused(_)) => refused = Some(self.error(i, f)),
                    Err(f @ Failure::Down(_)) => down = Some(self.error(i, f)),
                }
            }
            if !reached && let Some(e) = refused {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return match down {
                    Some(e) if !reached => Err(e),
                    _ => Ok((None, Vec::new())),
                };
            }
            if !reached {
                // Every server is down: wait a little before trying again.
                std::thread::sleep(
                    self.config
                        .poll_slice
                        .min(deadline.saturating_duration_since(Instant::now())),
                );
            }
        }
    }

    fn error(&self, i: usize, f: Failure) -> Error {
        match f {
            Failure::Down(m) => Error::Unavailable(m),
            Failure::Refused(message) => Error::Refused {
                server: self.servers[i].address.clone(),
                message,
            },
        }
    }

    /// Runs `call` on every server. Servers that cannot be reached are
    /// passed over unless none can; a refusal from any server is returned
    /// after every server has had the call.
    fn on_all<T>(
        &mut self,
        call: impl Fn(&mut Conn) -> thrift::Result<T>,
    ) -> Result<Vec<T>, Error> {
        self.refresh();
        let mut results = Vec::new();
        let (mut refused, mut down) = (None, None);
        for i in 0..self.servers.len() {
            match self.on(i, Duration::ZERO, &call) {
                Ok(v) => results.push(v),
                Err(f @ Failure::Refused(_)) => refused = Some(self.error(i, f)),
                Err(f @ Failure::Down(_)) => down = Some(self.error(i, f)),
            }
        }
        match (refused, down) {
            (Some(e), _) => Err(e),
            (None, Some(e)) if results.is_empty() => Err(e),
            (None, None) if self.servers.is_empty() => {
                Err(Error::Unavailable("no server known".into()))
            }
            _ => Ok(results),
        }
    }

    /// Removes every item of `queue` on every server.
    pub fn flush(&mut self, queue: &str) -> Result<(), Error> {
        self.on_all(|c| c.flush_queue(queue.into())).map(drop)
    }

    /// Deletes `queue` on every server.
    pub fn delete(&mut self, queue: &str) -> Result<(), Error> {
        self.on_all(|c| c.delete_queue(queue.into())).map(drop)
    }

    /// Sets the status of every server.
    pub fn set_status(&mut self, status: Status) -> Result<(), Error> {
        self.on_all(|c| c.set_status(status)).map(drop)
    }

    /// What every reachable server reports for `queue`, added up (the head
    /// item is the first server's that has one; the age is the largest).
    pub fn peek(&mut self, queue: &str) -> Result<QueueInfo, Error> {
        let mut total = QueueInfo::new(None, 0, 0, 0, 0, 0, 0);
        for info in self.on_all(|c| c.peek(queue.into()))? {
            total.head_item = total.head_item.or(info.head_item);
            for (sum, v) in [
                (&mut total.items, info.items),
                (&mut total.bytes, info.bytes),
                (&mut total.journal_bytes, info.journal_bytes),
            ] {
                *sum = Some(sum.unwrap_or(0) + v.unwrap_or(0));
            }
            total.age = Some(total.age.unwrap_or(0).max(info.age.unwrap_or(0)));
            total.waiters = Some(total.waiters.unwrap_or(0) + info.waiters.unwrap_or(0));
            total.open_transactions =
                Some(total.open_transactions.unwrap_or(0) + info.open_transactions.unwrap_or(0));
        }
        Ok(total)
    }

    /// The version of the next reachable server in turn.
    pub fn version(&mut self) -> Result<String, Error> {
        self.first(|c| c.get_version())
    }

    /// The status of the next reachable server in turn.
    pub fn status(&mut self) -> Result<Status, Error> {
        self.first(|c| c.current_status())
    }

    fn first<T>(&mut self, call: impl Fn(&mut Conn) -> thrift::Result<T>) -> Result<T, Error> {
        self.refresh();
        let mut last = Error::Unavailable("no server serves reads".into());
        for i in self.order(Role::Read, Resting::Last) {
            match self.on(i, Duration::ZERO, &call) {
                Ok(v) => return Ok(v),
                Err(f) => last = self.error(i, f),
            }
        }
        Err(last)
    }
}

impl Server {
    fn new(address: String) -> Server {
        Server {
            address,
            conn: None,
            down_until: None,
        }
    }
}

#[cfg(feature = "zookeeper")]
impl Drop for Client {
    /// Ends the server-set watch and its ZooKeeper session.
    fn drop(&mut self) {
        if let Some((membership, _)) = &self.discovery {
            membership.stop();
        }
    }
}

/// Where resting servers go in [`Client::order`].
#[derive(Clone, Copy, PartialEq)]
enum Resting {
    Last,
    Skip,
}

/// A get's deadline when its timeout is too large to add to the clock.
const MAX_WAIT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Milliseconds for the wire, where they are an `i32`.
fn millis(d: Duration) -> i32 {
    d.as_millis().min(i32::MAX as u128) as i32
}

/// Connects to the first address `address` resolves to that accepts.
fn connect(address: &str, config: &Config) -> io::Result<(Conn, TcpStream)> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    let mut stream = None;
    for addr in address.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, config.connect_timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let stream = stream.ok_or(last)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(config.timeout))?;
    stream.set_write_timeout(Some(config.timeout))?;
    let handle = stream.try_clone()?;
    let (r, w) = TTcpChannel::with_stream(stream)
        .split()
        .map_err(|e| io::Error::other(e.to_string()))?;
    let conn = KestrelSyncClient::new(
        TBinaryInputProtocol::new(TFramedReadTransport::new(r), true),
        TBinaryOutputProtocol::new(TFramedWriteTransport::new(w), true),
    );
    Ok((conn, handle))
}
