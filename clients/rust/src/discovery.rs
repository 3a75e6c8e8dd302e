//! Server-set discovery: follows the members of `<prefix>/write` and
//! `<prefix>/read` in ZooKeeper, where kestrel servers (and Kestrel 2.4's)
//! register themselves, so a [`Client`](crate::Client) built with
//! [`Client::from_zookeeper`](crate::Client::from_zookeeper) puts to the
//! servers that take writes and reads from those that serve reads, and
//! follows them as they come, go or change status, without a restart.
//!
//! The client is blocking; ZooKeeper's client is async. So the watch runs on a
//! thread of its own with a small single-threaded runtime, and publishes each
//! new membership into [`Membership`], which the client looks at (one atomic
//! load) before each call. If ZooKeeper goes away, the last membership seen
//! stays in force; an expired session is replaced by a new one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use zookeeper_client as zk;

use crate::Servers;

/// The member node names servers register under a set (Finagle's).
const MEMBER_PREFIX: &str = "member_";

/// The Thrift endpoint's name among a member's additional endpoints.
const ENDPOINT: &str = "thrift";

/// The first wait before trying ZooKeeper again after a failure; doubles up
/// to [`MAX_RETRY`].
const RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);

/// The latest membership, shared by the watching thread and the client.
#[derive(Default)]
pub(crate) struct Membership {
    /// Bumped at each new membership; the client compares it with the one
    /// it last took, so an unchanged membership costs one atomic load.
    generation: AtomicU64,
    servers: Mutex<Option<Servers>>,
    /// Set when the client is dropped: the thread ends its session.
    stop: tokio::sync::Notify,
}

impl Membership {
    /// The membership if it changed since `seen` (and its generation).
    pub(crate) fn changed_since(&self, seen: u64) -> Option<(u64, Servers)> {
        let now = self.generation.load(Ordering::Acquire);
        if now == seen {
            return None;
        }
        let servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        servers.clone().map(|s| (now, s))
    }

    fn publish(&self, servers: Servers) {
        let mut current = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref() != Some(&servers) {
            *current = Some(servers);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Ends the watch (the client is gone).
    pub(crate) fn stop(&self) {
        self.stop.notify_one();
    }
}

/// Starts watching `prefix` on the ZooKeeper ensemble `hosts`; waits up to
/// `wait` for the first membership, and fails if none could be read by then.
pub(crate) fn watch(
    hosts: &str,
    prefix: &str,
    session_timeout: Duration,
    wait: Duration,
) -> Result<Arc<Membership>, String> {
    let prefix = prefix.trim_end_matches('/').to_string();
    if !prefix.starts_with('/') {
        return Err(format!("{prefix:?}: the prefix must be an absolute path"));
    }
    let membership = Arc::new(Membership::default());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the ZooKeeper thread: {e}"))?;
    let (first_tx, first_rx) = std::sync::mpsc::channel();
    let watcher = Watcher {
        hosts: hosts.to_string(),
        prefix,
        session_timeout,
        membership: membership.clone(),
    };
    std::thread::Builder::new()
        .name("kestrel-zookeeper".into())
        .spawn(move || runtime.block_on(watcher.run(first_tx)))
        .map_err(|e| format!("cannot start the ZooKeeper thread: {e}"))?;
    match first_rx.recv_timeout(wait) {
        Ok(()) => Ok(membership),
        Err(_) => {
            membership.stop();
            Err(format!(
                "no server-set membership read from ZooKeeper {hosts} within {wait:?}"
            ))
        }
    }
}

struct Watcher {
    hosts: String,
    prefix: String,
    session_timeout: Duration,
    membership: Arc<Membership>,
}

impl Watcher {
    /// Keeps a session and the membership current until the client is
    /// dropped; tells `first` once a membership has been published.
    async fn run(self, first: std::sync::mpsc::Sender<()>) {
        let mut retry = RETRY;
        loop {
            let connect = zk::Client::connector()
                .with_session_timeout(self.session_timeout)
                .connect(&self.hosts);
            let client = tokio::select! {
                _ = self.membership.stop.notified() => return,
                client = connect => client,
            };
            let Ok(client) = client else {
                tokio::select! {
                    _ = self.membership.stop.notified() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            };
            retry = RETRY;
            if self.follow(&client, &first).await {
                return;
            }
        }
    }

    /// Follows both sets in one session. Returns `true` when the client was
    /// dropped, `false` when the session ended and a new one is needed.
    async fn follow(&self, client: &zk::Client, first: &std::sync::mpsc::Sender<()>) -> bool {
        let mut state = client.state_watcher();
        let mut retry = RETRY;
        loop {
            let read = self.members(client, "read").await;
            let write = self.members(client, "write").await;
            let watches = match (read, write) {
                (Ok((read, r)), Ok((write, w))) => {
                    self.membership.publish(Servers { write, read });
                    let _ = first.send(());
                    retry = RETRY;
                    Some((r, w))
                }
                _ => None,
            };
            let fired = async {
                match watches {
                    Some((r, w)) => {
                        tokio::select! {
                            _ = r.changed() => {}
                            _ = w.changed() => {}
                        }
                    }
                    // ZooKeeper could not be read: the last membership
                    // stays; look again shortly.
                    None => {
                        tokio::time::sleep(retry).await;
                        retry = (retry * 2).min(MAX_RETRY);
                    }
                }
            };
            tokio::select! {
                _ = self.membership.stop.notified() => return true,
                _ = fired => {}
                _ = terminal(&mut state) => return false,
            }
        }
    }

    /// The Thrift endpoints of the ALIVE members of `<prefix>/<set>`, and a
    /// watch that fires when they change. A set not created yet is empty,
    /// and watched for its creation.
    async fn members(
        &self,
        client: &zk::Client,
        set: &str,
    ) -> Result<(Vec<String>, zk::OneshotWatcher), zk::Error> {
        let dir = format!("{}/{set}", self.prefix);
        let (children, watch) = loop {
            match client.list_and_watch_children(&dir).await {
                Ok(listed) => break listed,
                Err(zk::Error::NoNode) => {
                    // Not created yet: empty, and watched for its creation
                    // (unless it was created in between: list it again).
                    let (stat, watch) = client.check_and_watch_stat(&dir).await?;
                    if stat.is_none() {
                        return Ok((Vec::new(), watch));
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let mut names: Vec<&String> = children
            .iter()
            .filter(|c| c.starts_with(MEMBER_PREFIX))
            .collect();
        names.sort();
        let paths: Vec<String> = names.iter().map(|c| format!("{dir}/{c}")).collect();
        // Requests are ordered when made, so they go out together.
        let reads = paths.iter().map(|p| client.get_data(p)).collect::<Vec<_>>();
        let mut servers: Vec<String> = Vec::new();
        for data in futures_util::future::join_all(reads).await {
            match data {
                Ok((data, _)) => {
                    if let Some(server) = thrift_endpoint(&data)
                        && !servers.contains(&server)
                    {
                        servers.push(server);
                    }
                }
                // The member left between the listing and the read.
                Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        Ok((servers, watch))
    }
}

/// Waits for the session to end for good (expired, closed, refused).
async fn terminal(state: &mut zk::StateWatcher) {
    while !matches!(
        state.changed().await,
        zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
    ) {}
}

/// A member's Thrift endpoint as `host:port`, if it is ALIVE and has one.
/// Member data is the Finagle server-set JSON:
/// `{"serviceEndpoint":{…},"additionalEndpoints":{"thrift":{"host":…,"port":…},…},"status":"ALIVE"}`.
fn thrift_endpoint(data: &[u8]) -> Option<String> {
    let member: serde_json::Value = serde_json::from_slice(data).ok()?;
    if member.get("status")?.as_str()? != "ALIVE" {
        return None;
    }
    let endpoint = member.get("additionalEndpoints")?.get(ENDPOINT)?;
    let host = endpoint.get("host")?.as_str()?;
    let port = endpoint.get("port")?.as_u64()?;
    let port = u16::try_from(port).ok()?;
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_thrift_endpoint_of_alive_members_only() {
        let member = br#"{"serviceEndpoint":{"host":"10.0.0.1","port":22133},
            "additionalEndpoints":{"memcache":{"host":"10.0.0.1","port":22133},
                                   "thrift":{"host":"10.0.0.1","port":2229}},
            "status":"ALIVE"}"#;
        assert_eq!(thrift_endpoint(member).as_deref(), Some("10.0.0.1:2229"));
        let v6 =
            br#"{"additionalEndpoints":{"thrift":{"host":"::1","port":2229}},"status":"ALIVE"}"#;
        assert_eq!(thrift_endpoint(v6).as_deref(), Some("[::1]:2229"));
        for bad in [
            &br#"{"additionalEndpoints":{"thrift":{"host":"h","port":2229}},"status":"DEAD"}"#[..],
            br#"{"additionalEndpoints":{"memcache":{"host":"h","port":1}},"status":"ALIVE"}"#,
            br#"{"additionalEndpoints":{"thrift":{"host":"h","port":70000}},"status":"ALIVE"}"#,
            b"not json",
        ] {
            assert_eq!(
                thrift_endpoint(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
