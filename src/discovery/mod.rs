//! Fleet discovery: keeps this server's membership in its ZooKeeper server
//! sets (`<prefix>/read`, `<prefix>/write`) in step with the status it
//! announces, so clients find the servers and follow them as they come, go
//! or change status.
//!
//! ZooKeeper is never in the way of serving: it being down at start, a lost
//! connection or an expired session are logged, and the task keeps trying
//! (re-registering in a new session) while the server serves on. Members are
//! ephemeral: a server that dies leaves its sets when its session expires.

mod member;

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use zookeeper_client as zk;

use crate::config::{ZooKeeperAcl, ZooKeeperConfig};
use crate::status::ServerStatus;

pub use member::{Endpoints, MEMBER_PREFIX, Set};

/// The first wait before trying ZooKeeper again; it doubles up to
/// [`MAX_RETRY`] while ZooKeeper stays away.
const RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// How long a shutdown waits for ZooKeeper to close the session (which
/// removes the members at once rather than after the session timeout).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Registers the server at `endpoints` until `shutdown`, following `status`.
pub async fn register(
    config: ZooKeeperConfig,
    endpoints: Endpoints,
    mut status: watch::Receiver<ServerStatus>,
    shutdown: CancellationToken,
) {
    let Some(data) = endpoints.member_data() else {
        tracing::warn!("zookeeper: no protocol listens, so there is nothing to announce");
        return;
    };
    let registrar = Registrar {
        acl: config.acl,
        prefix: config.path_prefix.clone(),
        data,
    };
    tracing::info!(
        hosts = %config.hosts,
        prefix = %config.path_prefix,
        host = %endpoints.host,
        "zookeeper: announcing this server in its server sets"
    );
    let mut retry = RETRY;
    let mut reachable = true;
    loop {
        let connect = connector(&config).connect(&config.hosts);
        let client = tokio::select! {
            _ = shutdown.cancelled() => return,
            client = connect => client,
        };
        let client = match client {
            Ok(client) => client,
            Err(e) => {
                if reachable {
                    tracing::warn!(hosts = %config.hosts, error = %e, "zookeeper: cannot open a session; serving on without server-set membership, and retrying");
                } else {
                    tracing::debug!(hosts = %config.hosts, error = %e, "zookeeper: still unreachable");
                }
                reachable = false;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry) => {}
                }
                retry = (retry * 2).min(MAX_RETRY);
                continue;
            }
        };
        reachable = true;
        retry = RETRY;
        tracing::info!(session = %client.session_id(), timeout = ?client.session_timeout(), "zookeeper: session open");
        match registrar.serve(&client, &mut status, &shutdown).await {
            End::Shutdown => {
                close(client).await;
                return;
            }
            End::SessionLost(state) => {
                tracing::warn!(
                    ?state,
                    "zookeeper: session lost; this server is out of its server sets until a new session registers it again"
                );
            }
        }
    }
}

/// A session's options: timeout and credentials.
fn connector(config: &ZooKeeperConfig) -> zk::Connector {
    let connector = zk::Client::connector().with_session_timeout(config.session_timeout);
    match &config.credentials {
        Some(secret) => connector.with_auth("digest", secret.as_bytes()),
        None => connector,
    }
}

/// Ends the session, which removes its members at once.
async fn close(client: zk::Client) {
    let mut state = client.state_watcher();
    drop(client);
    let closed = async {
        while !matches!(
            state.changed().await,
            zk::SessionState::Closed | zk::SessionState::Expired | zk::SessionState::AuthFailed
        ) {}
    };
    match tokio::time::timeout(CLOSE_TIMEOUT, closed).await {
        Ok(()) => tracing::info!("zookeeper: session closed; left the server sets"),
        Err(_) => tracing::warn!(
            "zookeeper: session not closed within {CLOSE_TIMEOUT:?}; the members go when it expires"
        ),
    }
}

/// Why a session's registration ended.
enum End {
    Shutdown,
    SessionLost(zk::SessionState),
}

/// This server's member nodes in one set.
#[derive(Default)]
struct Members {
    /// Of the current session, oldest first.
    own: Vec<String>,
    /// Of an earlier session of this server.
    stale: Vec<String>,
}

/// What is registered, and where.
struct Registrar {
    acl: ZooKeeperAcl,
    prefix: String,
    data: Vec<u8>,
}

impl Registrar {
    /// Keeps the membership of one session in step with `status` until the
    /// session ends or the server shuts down.
    async fn serve(
        &self,
        client: &zk::Client,
        status: &mut watch::Receiver<ServerStatus>,
        shutdown: &CancellationToken,
    ) -> End {
        let mut state = client.state_watcher();
        let mut stale = true;
        let mut retry = RETRY;
        loop {
            if stale {
                let want = *status.borrow_and_update();
                match self.reconcile(client, want).await {
                    Ok(()) => {
                        if retry > RETRY {
                            tracing::info!(%want, "zookeeper: membership updated after all");
                        }
                        stale = false;
                        retry = RETRY;
                    }
                    // Told once, then quietly retried until it works.
                    Err(e) if retry == RETRY => {
                        tracing::warn!(error = %e, %want, "zookeeper: membership not updated; retrying");
                        retry = (retry * 2).min(MAX_RETRY);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, %want, "zookeeper: membership still not updated");
                        retry = (retry * 2).min(MAX_RETRY);
                    }
                }
                // A terminal state seen while reconciling ends the session here.
                if let s @ (zk::SessionState::Expired
                | zk::SessionState::Closed
                | zk::SessionState::AuthFailed) = state.peek_state()
                {
                    return End::SessionLost(s);
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return End::Shutdown,
                changed = status.changed() => match changed {
                    Ok(()) => stale = true,
                    // The service is gone: so is the server.
                    Err(_) => return End::Shutdown,
                },
                s = state.changed() => match s {
                    zk::SessionState::Expired
                    | zk::SessionState::Closed
                    | zk::SessionState::AuthFailed => return End::SessionLost(s),
                    zk::SessionState::Disconnected => tracing::warn!(
                        "zookeeper: disconnected; serving on, and reconnecting within the session timeout"
                    ),
                    s => tracing::info!(state = ?s, "zookeeper: reconnected"),
                },
                _ = tokio::time::sleep(retry), if stale => {}
            }
        }
    }

    /// Makes this session a member of exactly the sets `status` admits, one
    /// node per set: it leaves sets first (`write` before `read`, so clients
    /// stop writing before they stop reading) and joins after (`read` before
    /// `write`). Idempotent, and it works from what ZooKeeper holds rather
    /// than from memory: a create whose reply was lost with the connection
    /// may have happened, and a second member must not linger.
    async fn reconcile(&self, client: &zk::Client, status: ServerStatus) -> Result<(), zk::Error> {
        for set in [Set::Write, Set::Read] {
            let dir = self.dir(set);
            let members = self.members(client, &dir).await?;
            let keep = usize::from(set.admits(status));
            let extra = members.own.iter().skip(keep);
            for path in members.stale.iter().chain(extra) {
                match client.delete(path, None).await {
                    Ok(()) | Err(zk::Error::NoNode) => {
                        tracing::info!(%status, member = %path, "zookeeper: left {dir}")
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        for set in [Set::Read, Set::Write] {
            let dir = self.dir(set);
            if set.admits(status) && self.members(client, &dir).await?.own.is_empty() {
                let acls = self.acls();
                client
                    .mkdir(&dir, &zk::CreateMode::Persistent.with_acls(acls))
                    .await?;
                let path = format!("{dir}/{MEMBER_PREFIX}");
                let options = zk::CreateMode::EphemeralSequential.with_acls(acls);
                let (_, sequence) = client.create(&path, &self.data, &options).await?;
                tracing::info!(%status, member = %format!("{path}{sequence}"), "zookeeper: joined {dir}");
            }
        }
        Ok(())
    }

    fn dir(&self, set: Set) -> String {
        format!("{}/{}", self.prefix, set.name())
    }

    /// The members of `dir` that are this server's: those of this session
    /// (oldest first), and those of an earlier session of this server that
    /// ZooKeeper still holds. The latter happens when the client gave a
    /// session up as expired while ZooKeeper was away, and ZooKeeper, back
    /// on its data, keeps the old session's nodes until it expires them
    /// itself; meanwhile they would announce a status that may be stale.
    /// Nodes with this server's exact data are its own: no other server
    /// listens on its address and ports.
    async fn members(&self, client: &zk::Client, dir: &str) -> Result<Members, zk::Error> {
        let mut members = Members::default();
        let mut children = match client.list_children(dir).await {
            Ok(children) => children,
            Err(zk::Error::NoNode) => return Ok(members),
            Err(e) => return Err(e),
        };
        children.retain(|c| c.starts_with(MEMBER_PREFIX));
        children.sort();
        let session = client.session_id().0;
        let paths: Vec<String> = children.iter().map(|c| format!("{dir}/{c}")).collect();
        // Requests are ordered when made, so they go out together.
        let reads = paths.iter().map(|p| client.get_data(p)).collect::<Vec<_>>();
        for (path, read) in paths
            .into_iter()
            .zip(futures_util::future::join_all(reads).await)
        {
            match read {
                Ok((_, stat)) if stat.ephemeral_owner == session => members.own.push(path),
                Ok((data, _)) if data == self.data => members.stale.push(path),
                Ok(_) | Err(zk::Error::NoNode) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(members)
    }

    fn acls(&self) -> zk::Acls<'static> {
        static CREATOR_ALL_ANYONE_READ: [zk::Acl; 2] = [
            zk::Acl::new_const(zk::Permission::ALL, "auth", ""),
            zk::Acl::new_const(zk::Permission::READ, "world", "anyone"),
        ];
        match self.acl {
            ZooKeeperAcl::Open => zk::Acls::anyone_all(),
            ZooKeeperAcl::CreatorAll => zk::Acls::new(&CREATOR_ALL_ANYONE_READ),
        }
    }
}
