//! Discovery through ZooKeeper server sets: three real servers registering
//! themselves in a real ZooKeeper on loopback, a producer and a consumer
//! that know only the connect string and the prefix, while the fleet
//! changes under them: a server goes READ_ONLY, one goes QUIESCENT, one is
//! killed with SIGKILL and restarted on its data, and ZooKeeper itself is
//! killed and restarted. Nothing acknowledged is lost, nothing confirmed is
//! delivered again.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::zookeeper::ZooKeeper;
use common::{Raw, Server, TKestrelSyncClient, eventually_within, kestrel_gen::Status};
use kestrel_client::{Client, Config, ConsumeError};

const PREFIX: &str = "/fleet/kestrel";
const QUEUE: &str = "jobs";
/// Long enough for a loaded machine; a change is usually seen in
/// milliseconds (a vanished server: after its 2 s session timeout).
const SEE_TIMEOUT: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config {
        retry_after: Duration::from_millis(200),
        zookeeper_session_timeout: Duration::from_secs(4),
        ..Config::default()
    }
}

fn start(dir: &Path, zookeeper: &ZooKeeper) -> Server {
    Server::start_with_env(
        dir,
        &[],
        &[
            ("KESTREL_ZOOKEEPER__HOSTS", &zookeeper.hosts()),
            ("KESTREL_ZOOKEEPER__PATH_PREFIX", PREFIX),
            ("KESTREL_ZOOKEEPER__SESSION_TIMEOUT", "2s"),
        ],
    )
}

/// Waits until `client` sees `write` and `read` (sorted `host:port`s);
/// returns how long that took.
fn sees(client: &Mutex<Client>, what: &str, write: &[String], read: &[String]) -> Duration {
    let start = Instant::now();
    eventually_within(SEE_TIMEOUT, what, || {
        let mut servers = client.lock().unwrap().servers();
        servers.write.sort();
        servers.read.sort();
        servers.write == write && servers.read == read
    });
    let took = start.elapsed();
    println!("client saw: {what} after {took:?}");
    took
}

fn addrs(servers: &[&Server]) -> Vec<String> {
    let mut a: Vec<String> = servers.iter().map(|s| s.thrift.to_string()).collect();
    a.sort();
    a
}

/// How many items `server` has taken in (memcache `total_items`).
fn total_items(server: &Server) -> u64 {
    let mut mc = Raw::connect(server.memcache.unwrap());
    common::stat(&mut mc, "total_items").unwrap()
}

fn set_status(server: &Server, status: Status) {
    server.client().set_status(status).unwrap();
}

/// What the producer and the consumer have seen.
#[derive(Default)]
struct Ledger {
    /// Items whose put was acknowledged.
    acked: HashSet<String>,
    /// Items handed to the consumer's handler, confirmed or not.
    handled: HashSet<String>,
    /// Items in a batch whose confirmation succeeded: the server said it
    /// confirmed every one.
    confirmed: HashSet<String>,
    /// Items in a batch whose confirmation is not known to have taken
    /// effect (the server was killed around it, or restarted since the
    /// read): they may or may not be delivered again.
    uncertain: HashSet<String>,
    /// Items handed to the handler after they had been confirmed.
    duplicates: Vec<String>,
    deliveries: usize,
    put_failures: usize,
    consume_failures: usize,
}

#[test]
fn three_servers_through_discovery_lose_nothing_while_the_fleet_changes() {
    let zk_dir = tempfile::tempdir().unwrap();
    let zk_port = common::zookeeper::free_port();
    let mut zookeeper = ZooKeeper::start_on(zk_dir.path(), zk_port);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = start(dirs[0].path(), &zookeeper);
    let b = start(dirs[1].path(), &zookeeper);
    let mut c = start(dirs[2].path(), &zookeeper);

    let producer = Arc::new(Mutex::new(
        Client::from_zookeeper(&zookeeper.hosts(), PREFIX, config()).unwrap(),
    ));
    let consumer = Arc::new(Mutex::new(
        Client::from_zookeeper(&zookeeper.hosts(), PREFIX, config()).unwrap(),
    ));
    let all = addrs(&[&a, &b, &c]);
    sees(&producer, "all three servers", &all, &all);
    sees(&consumer, "all three servers", &all, &all);

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let producing = Arc::new(AtomicBool::new(true));
    let produce = {
        let (producer, ledger, producing) = (producer.clone(), ledger.clone(), producing.clone());
        thread::spawn(move || {
            let mut n = 0u64;
            while producing.load(Ordering::Acquire) {
                let item = format!("item-{n}");
                n += 1;
                match producer
                    .lock()
                    .unwrap()
                    .put(QUEUE, &[item.clone().into_bytes()], None)
                {
                    Ok(1) => {
                        ledger.lock().unwrap().acked.insert(item);
                    }
                    _ => {
                        ledger.lock().unwrap().put_failures += 1;
                        thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        })
    };
    let consume = {
        let (consumer, ledger, stop) = (consumer.clone(), ledger.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let mut batch = Vec::new();
                let result = consumer.lock().unwrap().consume(
                    QUEUE,
                    10,
                    Duration::from_millis(100),
                    Duration::from_secs(3),
                    |data| -> Result<(), ()> {
                        batch.push(String::from_utf8(data.to_vec()).unwrap());
                        Ok(())
                    },
                );
                let mut l = ledger.lock().unwrap();
                for item in &batch {
                    l.deliveries += 1;
                    if l.confirmed.contains(item) {
                        l.duplicates.push(item.clone());
                    }
                    l.handled.insert(item.clone());
                }
                match result {
                    Ok(_) => l.confirmed.extend(batch),
                    // Not confirmed: the items come back (auto-abort, or
                    // the server's recovery) and are delivered again.
                    Err(ConsumeError::Client(_)) => {
                        l.consume_failures += 1;
                        l.uncertain.extend(batch);
                    }
                    Err(ConsumeError::Handler(())) => unreachable!(),
                }
            }
        })
    };
    let acked = || ledger.lock().unwrap().acked.len();
    let wait_for_acks = |more: usize| {
        let target = acked() + more;
        eventually_within(SEE_TIMEOUT, &format!("{target} acknowledged puts"), || {
            acked() >= target
        });
    };
    let mut seen = HashMap::new();
    wait_for_acks(200);

    // READ_ONLY: puts stop going there; gets still drain it.
    set_status(&a, Status::READ_ONLY);
    seen.insert(
        "a READ_ONLY server leaves the write set",
        sees(&producer, "a out of the write set", &addrs(&[&b, &c]), &all),
    );
    let a_total = total_items(&a);
    wait_for_acks(200);
    assert_eq!(
        total_items(&a),
        a_total,
        "no put reached the READ_ONLY server"
    );
    set_status(&a, Status::UP);
    sees(&producer, "a back in the write set", &all, &all);

    // QUIESCENT: out of both sets.
    set_status(&b, Status::QUIESCENT);
    seen.insert(
        "a QUIESCENT server leaves both sets",
        sees(
            &consumer,
            "b out of both sets",
            &addrs(&[&a, &c]),
            &addrs(&[&a, &c]),
        ),
    );
    wait_for_acks(100);
    set_status(&b, Status::UP);
    sees(&consumer, "b back in both sets", &all, &all);

    // SIGKILL: the member goes when its session expires; a restart on the
    // same data comes back (on new ports).
    wait_for_acks(100);
    c.signal("KILL");
    c.wait();
    seen.insert(
        "a killed server's members expire",
        sees(&consumer, "c gone", &addrs(&[&a, &b]), &addrs(&[&a, &b])),
    );
    wait_for_acks(100);
    c = start(dirs[2].path(), &zookeeper);
    let all = addrs(&[&a, &b, &c]);
    seen.insert(
        "a restarted server rejoins",
        sees(&consumer, "c back", &all, &all),
    );
    sees(&producer, "c back", &all, &all);

    // ZooKeeper away: the clients go on with the servers they know.
    zookeeper.kill();
    wait_for_acks(200);
    let during = ledger.lock().unwrap().confirmed.len();
    eventually_within(SEE_TIMEOUT, "deliveries while ZooKeeper is down", || {
        ledger.lock().unwrap().confirmed.len() >= during + 100
    });
    let mut known = producer.lock().unwrap().servers().write;
    known.sort();
    assert_eq!(known, all, "the last membership stays in force");
    zookeeper = ZooKeeper::start_on(zk_dir.path(), zk_port);
    wait_for_acks(100);
    // The watch is back: a change after the restart is seen.
    set_status(&a, Status::READ_ONLY);
    seen.insert(
        "a change after ZooKeeper's restart",
        sees(
            &producer,
            "a out of the write set again",
            &addrs(&[&b, &c]),
            &all,
        ),
    );
    set_status(&a, Status::UP);
    sees(&producer, "a back after ZooKeeper's restart", &all, &all);
    wait_for_acks(100);

    // Drain: every acknowledged item is delivered.
    producing.store(false, Ordering::Release);
    produce.join().unwrap();
    let acked_items = ledger.lock().unwrap().acked.clone();
    // Confirmed, or handled under a confirmation that may have taken
    // effect (then it need not come back; if it does, it is confirmed then).
    eventually_within(
        Duration::from_secs(60),
        "every acknowledged item delivered",
        || {
            let l = ledger.lock().unwrap();
            acked_items
                .iter()
                .all(|i| l.confirmed.contains(i) || l.uncertain.contains(i))
        },
    );
    stop.store(true, Ordering::Release);
    consume.join().unwrap();

    let l = ledger.lock().unwrap();
    let lost: Vec<_> = l.acked.difference(&l.handled).collect();
    let unacked_delivered = l.confirmed.difference(&l.acked).count();
    println!(
        "put {} acknowledged {} (put failures {}), delivered {} ({} deliveries, {} of items whose put was not acknowledged), \
         duplicates {}, lost {}, consume calls that could not settle {} ({} items uncertain)",
        l.acked.len() + l.put_failures,
        l.acked.len(),
        l.put_failures,
        l.confirmed.len(),
        l.deliveries,
        unacked_delivered,
        l.duplicates.len(),
        lost.len(),
        l.consume_failures,
        l.uncertain.len(),
    );
    let mut seen: Vec<_> = seen.into_iter().collect();
    seen.sort();
    for (change, took) in seen {
        println!("{change}: seen after {took:?}");
    }
    assert!(lost.is_empty(), "lost: {lost:?}");
    assert!(
        l.duplicates.is_empty(),
        "delivered after confirmation: {:?}",
        l.duplicates
    );
    drop(zookeeper);
}
