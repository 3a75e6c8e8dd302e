//! The command line itself: `--help` says every flag's default and where
//! settings come from; `check-config` prints the effective settings with
//! their sources, or the error and a non-zero exit.

mod common;

use std::process::Command;

use common::binary;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(binary());
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("KESTREL_")) {
        command.env_remove(key);
    }
    let out = command
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_shows_every_default_and_the_environment() {
    let (code, out, _) = run(&["--help"], &[]);
    assert_eq!(code, 0);
    for flag in [
        "--config",
        "--data-dir",
        "--listen",
        "--thrift-port",
        "--memcache-port",
        "--text-port",
        "--admin-port",
        "--log-format",
        "--log-level",
    ] {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(flag))
            .unwrap_or_else(|| panic!("{flag} missing:\n{out}"));
        assert!(line.contains("[default: "), "{line}");
    }
    for needle in ["KESTREL_", "RUST_LOG", "check-config", "admin"] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
}

#[test]
fn check_config_prints_each_setting_with_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kestrel.toml");
    std::fs::write(&file, "max_queues = 7\n[queues.jobs]\nmax_items = 3\n").unwrap();
    let (code, out, err) = run(
        &[
            "check-config",
            "--config",
            file.to_str().unwrap(),
            "--thrift-port",
            "0",
        ],
        &[
            ("KESTREL_MAX_CONNECTIONS", "9"),
            ("KESTREL_MEMCACHE_VALUE_KEY", "full"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let source = |key: &str| {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} missing:\n{out}"));
        let (value, from) = line.split_once("  # ").unwrap();
        (
            value
                .trim()
                .trim_start_matches(&format!("{key} = "))
                .to_string(),
            from.to_string(),
        )
    };
    assert_eq!(source("max_queues"), ("7".into(), "file".into()));
    assert_eq!(source("thrift_port"), ("0".into(), "--thrift-port".into()));
    assert_eq!(
        source("max_connections"),
        ("9".into(), "environment (KESTREL_MAX_CONNECTIONS)".into())
    );
    assert_eq!(source("memcache_port"), ("22133".into(), "default".into()));
    assert_eq!(
        source("memcache_value_key"),
        (
            "full".into(),
            "environment (KESTREL_MEMCACHE_VALUE_KEY)".into()
        )
    );
    assert!(out.contains("queues.\"jobs\" = "), "{out}");
}

#[test]
fn check_config_refuses_a_bad_file_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kestrel.toml");
    std::fs::write(&file, "max_queues = \"many\"\n").unwrap();
    let (code, out, err) = run(&["check-config", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("max_queues") && err.lines().count() == 1,
        "{err}"
    );
    let (code, _, err) = run(&["check-config", "--config", "/nonexistent/k.toml"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no such configuration file"), "{err}");
}
