//! Server-set registration against a real ZooKeeper on loopback: membership
//! follows the status, a stricter status leaves before it is enforced, a
//! clean stop leaves at once, and ZooKeeper being away (at start or mid-run)
//! never stops the server from serving.

mod common;

use std::time::{Duration, Instant};

use common::kestrel_gen::Status;
use common::zookeeper::{ZooKeeper, free_port};
use common::{Server, TKestrelSyncClient, eventually_within};
use zookeeper_client as zk;

/// Long enough for a loaded machine; a member that is due shows up in
/// milliseconds.
const MEMBERSHIP_TIMEOUT: Duration = Duration::from_secs(20);

/// Reads the server sets under one prefix, as a server-set client would.
struct Sets {
    runtime: tokio::runtime::Runtime,
    client: zk::Client,
    prefix: String,
}

impl Sets {
    fn new(zookeeper: &ZooKeeper, prefix: &str) -> Sets {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let client = runtime
            .block_on(zk::Client::connect(&zookeeper.hosts()))
            .expect("connect to ZooKeeper");
        Sets {
            runtime,
            client,
            prefix: prefix.into(),
        }
    }

    /// The member data of `<prefix>/<set>`, parsed.
    fn members(&self, set: &str) -> Vec<serde_json::Value> {
        let dir = format!("{}/{set}", self.prefix);
        self.runtime.block_on(async {
            let children = match self.client.list_children(&dir).await {
                Ok(children) => children,
                Err(zk::Error::NoNode) => return Vec::new(),
                Err(e) => panic!("list {dir}: {e}"),
            };
            let mut members = Vec::new();
            for child in children {
                assert!(child.starts_with("member_"), "{dir}/{child}");
                if let Ok((data, _)) = self.client.get_data(&format!("{dir}/{child}")).await {
                    members.push(serde_json::from_slice(&data).expect("member JSON"));
                }
            }
            members
        })
    }

    /// The Thrift ports of the members of `set`, sorted.
    fn thrift_ports(&self, set: &str) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .members(set)
            .iter()
            .map(|m| m["additionalEndpoints"]["thrift"]["port"].as_u64().unwrap() as u16)
            .collect();
        ports.sort();
        ports
    }

    /// Waits until the Thrift ports in (read, write) are `read` and `write`;
    /// returns how long that took.
    fn wait_for(&self, read: &[u16], write: &[u16]) -> Duration {
        let start = Instant::now();
        eventually_within(
            MEMBERSHIP_TIMEOUT,
            &format!("read members {read:?} and write members {write:?}"),
            || self.thrift_ports("read") == read && self.thrift_ports("write") == write,
        );
        start.elapsed()
    }
}

/// A server registering under `prefix` at `hosts`, with extra settings.
fn server(dir: &std::path::Path, hosts: &str, prefix: &str, env: &[(&str, &str)]) -> Server {
    let mut vars = vec![
        ("KESTREL_ZOOKEEPER__HOSTS", hosts),
        ("KESTREL_ZOOKEEPER__PATH_PREFIX", prefix),
        ("KESTREL_ZOOKEEPER__SESSION_TIMEOUT", "2s"),
    ];
    vars.extend_from_slice(env);
    Server::start_with_env(dir, &[], &vars)
}

#[test]
fn membership_follows_the_status_and_a_stop_leaves_at_once() {
    let zookeeper = ZooKeeper::start();
    let sets = Sets::new(&zookeeper, "/status/kestrel");
    let dir = tempfile::tempdir().unwrap();
    // A session far longer than the test: only an explicit leave can empty
    // the sets in time.
    let s = server(
        dir.path(),
        &zookeeper.hosts(),
        "/status/kestrel",
        &[("KESTREL_ZOOKEEPER__SESSION_TIMEOUT", "60s")],
    );
    let port = s.thrift.port();
    sets.wait_for(&[port], &[port]);

    let member = &sets.members("write")[0];
    let memcache = s.memcache.unwrap().port();
    assert_eq!(member["status"], "ALIVE");
    assert_eq!(member["serviceEndpoint"]["host"], "127.0.0.1");
    assert_eq!(
        member["serviceEndpoint"]["port"], memcache,
        "memcache first, as Kestrel"
    );
    assert_eq!(member["additionalEndpoints"]["memcache"]["port"], memcache);
    assert_eq!(member["additionalEndpoints"]["thrift"]["port"], port);
    assert_eq!(
        member["additionalEndpoints"]["text"]["port"],
        s.text.unwrap().port()
    );

    let mut c = s.client();
    c.set_status(Status::READ_ONLY).unwrap();
    sets.wait_for(&[port], &[]);
    c.set_status(Status::QUIESCENT).unwrap();
    sets.wait_for(&[], &[]);
    c.set_status(Status::UP).unwrap();
    sets.wait_for(&[port], &[port]);
    // One member per set, however often the status moved.
    assert_eq!(sets.members("read").len(), 1);

    assert!(s.stop().success());
    assert_eq!(
        (sets.thrift_ports("read"), sets.thrift_ports("write")),
        (vec![], vec![]),
        "a stopped server has left its sets (without waiting out its session)"
    );
}

#[test]
fn a_stricter_status_leaves_the_sets_before_its_grace_period_ends() {
    let zookeeper = ZooKeeper::start();
    let sets = Sets::new(&zookeeper, "/grace");
    let dir = tempfile::tempdir().unwrap();
    let s = server(
        dir.path(),
        &zookeeper.hosts(),
        "/grace",
        &[("KESTREL_STATUS_CHANGE_GRACE_PERIOD", "1h")],
    );
    let port = s.thrift.port();
    sets.wait_for(&[port], &[port]);
    let mut c = s.client();
    c.set_status(Status::READ_ONLY).unwrap();
    sets.wait_for(&[port], &[]);
    // Clients were steered away, and the server still takes writes from
    // those that have not noticed yet.
    assert_eq!(c.current_status().unwrap(), Status::UP);
    assert_eq!(c.put("q".into(), vec![b"late".to_vec()], 0).unwrap(), 1);
    // A looser status cancels the pending one, and rejoins.
    c.set_status(Status::UP).unwrap();
    sets.wait_for(&[port], &[port]);
}

#[test]
fn zookeeper_away_at_start_or_mid_run_never_stops_serving() {
    let zk_dir = tempfile::tempdir().unwrap();
    let zk_port = free_port();
    let hosts = format!("127.0.0.1:{zk_port}");
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on the ZooKeeper port yet.
    let s = server(dir.path(), &hosts, "/away", &[]);
    let mut c = s.client();
    assert_eq!(c.put("q".into(), vec![b"one".to_vec()], 0).unwrap(), 1);

    let mut zookeeper = ZooKeeper::start_on(zk_dir.path(), zk_port);
    let sets = Sets::new(&zookeeper, "/away");
    let port = s.thrift.port();
    let joined = sets.wait_for(&[port], &[port]);
    println!("registered {joined:?} after ZooKeeper came up");
    drop(sets);

    zookeeper.kill();
    assert_eq!(c.put("q".into(), vec![b"two".to_vec()], 0).unwrap(), 1);
    s.wait_for_log("zookeeper: disconnected", MEMBERSHIP_TIMEOUT);
    assert_eq!(c.put("q".into(), vec![b"three".to_vec()], 0).unwrap(), 1);
    let items = c.get("q".into(), 10, 0, 0).unwrap();
    let items: Vec<_> = items.into_iter().map(|i| i.data.unwrap()).collect();
    assert_eq!(items, [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]);

    // Back on the same data: the server is a member again, in its old
    // session or (once that expired) a new one.
    let zookeeper = ZooKeeper::start_on(zk_dir.path(), zk_port);
    let sets = Sets::new(&zookeeper, "/away");
    sets.wait_for(&[port], &[port]);
    assert_eq!(sets.members("write").len(), 1);
}

#[test]
fn with_credentials_and_creator_all_only_the_server_may_change_its_members() {
    let zookeeper = ZooKeeper::start();
    let sets = Sets::new(&zookeeper, "/secured");
    let dir = tempfile::tempdir().unwrap();
    let s = server(
        dir.path(),
        &zookeeper.hosts(),
        "/secured",
        &[
            ("KESTREL_ZOOKEEPER__CREDENTIALS", "kestrel:s3cret"),
            ("KESTREL_ZOOKEEPER__ACL", "creator_all"),
        ],
    );
    let port = s.thrift.port();
    sets.wait_for(&[port], &[port]);
    sets.runtime.block_on(async {
        let dir = "/secured/write";
        let member = format!("{dir}/{}", sets.client.list_children(dir).await.unwrap()[0]);
        let (acl, _) = sets.client.get_acl(&member).await.unwrap();
        let mut acl: Vec<_> = acl
            .iter()
            .map(|a| {
                (
                    a.scheme().to_string(),
                    a.permission() == zk::Permission::ALL,
                )
            })
            .collect();
        acl.sort();
        assert_eq!(acl, [("digest".into(), true), ("world".into(), false)]);
        // Anyone may read it, nobody else may remove it.
        assert!(sets.client.get_data(&member).await.is_ok());
        assert_eq!(
            sets.client.delete(&member, None).await,
            Err(zk::Error::NoAuth)
        );
    });
    assert!(
        !s.log().iter().any(|l| l.contains("s3cret")),
        "the password is never logged"
    );
}

#[test]
fn members_left_by_an_earlier_session_of_the_same_server_are_removed() {
    // When ZooKeeper is away longer than the session timeout, the server
    // gives its session up and registers again in a new one; ZooKeeper, back
    // on its data, may still hold the old session's members (announcing the
    // old status) until it expires them. Here the test's own session holds
    // such a leftover, which would otherwise stay for as long as the test.
    let zookeeper = ZooKeeper::start();
    let sets = Sets::new(&zookeeper, "/leftover");
    let dir = tempfile::tempdir().unwrap();
    let s = server(dir.path(), &zookeeper.hosts(), "/leftover", &[]);
    let port = s.thrift.port();
    sets.wait_for(&[port], &[port]);
    sets.runtime.block_on(async {
        let write = "/leftover/write";
        let member = format!(
            "{write}/{}",
            sets.client.list_children(write).await.unwrap()[0]
        );
        let (data, _) = sets.client.get_data(&member).await.unwrap();
        let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
        sets.client
            .create(&format!("{write}/member_"), &data, &options)
            .await
            .unwrap();
    });
    assert_eq!(sets.thrift_ports("write"), [port, port]);
    let mut c = s.client();
    c.set_status(Status::READ_ONLY).unwrap();
    sets.wait_for(&[port], &[]);
    c.set_status(Status::UP).unwrap();
    sets.wait_for(&[port], &[port]);
}

#[test]
fn the_status_file_at_start_and_the_admin_port_set_the_membership_too() {
    let zookeeper = ZooKeeper::start();
    let sets = Sets::new(&zookeeper, "/sources");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("status"), "readonly\n").unwrap();
    let s = server(
        dir.path(),
        &zookeeper.hosts(),
        "/sources",
        &[("KESTREL_ADMIN_TOKEN", "t0ken")],
    );
    let port = s.thrift.port();
    sets.wait_for(&[port], &[]);
    // POST /status/up on the admin port, with the token.
    let mut http = std::net::TcpStream::connect(s.admin.unwrap()).unwrap();
    std::io::Write::write_all(
        &mut http,
        b"POST /status/up HTTP/1.1\r\nHost: k\r\nAuthorization: Bearer t0ken\r\n\
          Content-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut reply = String::new();
    std::io::Read::read_to_string(&mut http, &mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    sets.wait_for(&[port], &[port]);
}
