//! kestrel-bench checks itself: its reliable and leaky runs verify that every
//! item was confirmed exactly once, against the real server, in each protocol.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::process::Command;

use common::Server;

/// Runs kestrel-bench; returns the rows it wrote as JSON.
fn bench(args: &[&str]) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("rows.json");
    let out = Command::new(env!("CARGO_BIN_EXE_kestrel-bench"))
        .args(["--quiet", "--json", json.to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kestrel-bench {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap()
}

fn verified(rows: &[serde_json::Value]) -> &str {
    rows[0]["verified"].as_str().unwrap()
}

#[test]
fn reliable_and_leaky_runs_verify_exactly_once_delivery_in_every_protocol() {
    let server = Server::start();
    let targets = [
        ("memcache", server.memcache.unwrap().to_string()),
        ("thrift", server.thrift.to_string()),
        ("text", server.text.unwrap().to_string()),
    ];
    for (protocol, addr) in &targets {
        let common = [
            "--protocol",
            protocol,
            "--target",
            addr,
            "--auto-abort-ms",
            "300",
        ];
        let rows = bench(
            &[
                &common[..],
                &[
                    "reliable",
                    "--producers",
                    "2",
                    "--consumers",
                    "3",
                    "--items",
                    "300",
                ],
            ]
            .concat(),
        );
        assert_eq!(verified(&rows), "ok", "{protocol} reliable");
        assert_eq!(rows[0]["items"], 600, "{protocol}");
        let leaky = [
            "leaky",
            "--producers",
            "2",
            "--consumers",
            "3",
            "--items",
            "200",
            "--drop-percent",
            "20",
        ];
        let rows = bench(&[&common[..], &leaky[..]].concat());
        assert_eq!(verified(&rows), "ok", "{protocol} leaky");
    }
}

#[test]
fn flood_and_batch_report_what_they_did() {
    let server = Server::start();
    let addr = server.memcache.unwrap().to_string();
    let pid = server.pid().to_string();
    let rows = bench(&[
        "--target",
        &addr,
        "--server-pid",
        &pid,
        "--client-threads",
        "2",
        "flood",
        "--connections",
        "3",
        "--items",
        "3000",
        "--prefill",
        "5",
    ]);
    assert_eq!(
        (rows[0]["items"].as_u64(), rows[0]["ops"].as_u64()),
        (Some(3000), Some(6000))
    );
    // Both sides' CPU time is measured: the server's per request (in clock
    // ticks: 6000 requests take well over one), the client's as a share of
    // its threads.
    let per_op = rows[0]["server_cpu_us_per_op"].as_f64().unwrap();
    let busy = rows[0]["client_busy"].as_f64().unwrap();
    assert!(per_op > 0.0 && busy > 0.0, "{:?}", rows[0]);
    let thrift = server.thrift.to_string();
    let rows = bench(&[
        "--protocol",
        "thrift",
        "--target",
        &thrift,
        "batch",
        "--clients",
        "2",
        "--items",
        "1000",
        "--batch",
        "50",
    ]);
    assert_eq!(rows.len(), 2);
    assert_eq!(
        (rows[0]["items"].as_u64(), rows[1]["items"].as_u64()),
        (Some(1000), Some(1000))
    );
}
