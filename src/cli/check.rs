//! `kestrel check-config`: loads the settings as the server would (defaults,
//! file, environment, flags) and prints every one with where its value came
//! from, or the error and a non-zero exit.

use std::collections::HashSet;
use std::fmt::{Debug, Write as _};
use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;

use ::config::Source;

use super::ServerArgs;
use crate::config::ServerConfig;

/// Where a setting's value came from.
fn source(key: &str, flags: &[&str], env: &HashSet<String>, file: &HashSet<String>) -> String {
    let var = format!("KESTREL_{}", key.to_ascii_uppercase());
    if flags.contains(&key) {
        format!("--{}", key.replace('_', "-"))
    } else if env.contains(&var) {
        format!("environment ({var})")
    } else if file.contains(key) {
        "file".into()
    } else {
        "default".into()
    }
}

/// The top-level keys of the settings file.
fn file_keys(path: Option<&Path>) -> HashSet<String> {
    let Some(path) = path else {
        return HashSet::new();
    };
    ::config::Config::builder()
        .add_source(::config::File::from(path).format(::config::FileFormat::Toml))
        .build()
        .and_then(|c| c.collect())
        .map(|map| map.into_keys().collect())
        .unwrap_or_default()
}

/// The top-level settings the environment sets (`KESTREL_X` or `KESTREL_X__…`).
fn env_keys() -> HashSet<String> {
    std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("KESTREL_").map(str::to_string))
        .map(|rest| format!("KESTREL_{}", rest.split("__").next().unwrap_or_default()))
        .collect()
}

fn show<T: Debug>(value: &Option<T>) -> String {
    value.as_ref().map_or("off".into(), |v| {
        format!("{v:?}").trim_matches('"').to_string()
    })
}

/// Every setting, as `key = value`, in the order of docs/configuration.md.
fn entries(c: &ServerConfig) -> Vec<(&'static str, String)> {
    let port = |p: Option<u16>| p.map_or("off".to_string(), |p| p.to_string());
    let secs = |d: std::time::Duration| format!("{d:?}");
    vec![
        ("listen", c.listen.to_string()),
        ("data_dir", c.data_dir.display().to_string()),
        ("thrift_port", port(c.thrift_port)),
        ("memcache_port", port(c.memcache_port)),
        ("text_port", port(c.text_port)),
        ("admin_port", port(c.admin_port)),
        (
            "admin_token",
            if c.admin_token.is_some() {
                "(set)"
            } else {
                "(none: control off)"
            }
            .into(),
        ),
        (
            "protocol_admin_commands",
            c.protocol_admin_commands.to_string(),
        ),
        ("record_latencies", c.record_latencies.to_string()),
        ("memcache_value_key", c.memcache_value_key.name().into()),
        ("log_format", c.log_format.name().into()),
        ("log_level", c.log_level.clone()),
        ("shutdown_timeout", secs(c.shutdown_timeout)),
        ("max_frame_size", c.max_frame_size.to_string()),
        ("max_line_size", c.max_line_size.to_string()),
        ("max_item_size", c.max_item_size.to_string()),
        ("text_max_put_items", c.text_max_put_items.to_string()),
        ("max_open_transactions", c.max_open_transactions.to_string()),
        ("client_timeout", show(&c.client_timeout)),
        ("request_timeout", show(&c.request_timeout)),
        ("max_buffered_bytes", c.max_buffered_bytes.to_string()),
        (
            "max_connections",
            c.max_connections
                .map_or("(from the file descriptor limit)".into(), |n| n.to_string()),
        ),
        ("max_queues", c.max_queues.to_string()),
        (
            "max_open_files",
            c.max_open_files
                .map_or("(from the file descriptor limit)".into(), |n| n.to_string()),
        ),
        (
            "expiration_timer_frequency",
            show(&c.expiration_timer_frequency),
        ),
        ("status_file", c.status_file.display().to_string()),
        ("default_status", c.default_status.word().to_lowercase()),
        (
            "status_change_grace_period",
            secs(c.status_change_grace_period),
        ),
        (
            "worker_threads",
            format!("{} ({} in use)", c.worker_threads, c.workers()),
        ),
        (
            "zookeeper",
            c.zookeeper.as_ref().map_or("off".into(), |z| {
                format!(
                    "{{ hosts = {:?}, path_prefix = {:?}, session_timeout = {:?}, credentials = {}, acl = {:?}, advertise = {} }}",
                    z.hosts,
                    z.path_prefix,
                    z.session_timeout,
                    if z.credentials.is_some() { "(set)" } else { "off" },
                    z.acl,
                    z.advertise.as_deref().unwrap_or("(the listen address)"),
                )
            }),
        ),
        ("default_queue", format!("{:?}", c.queues.default)),
    ]
}

/// Runs `check-config`: prints the effective settings (exit 0) or the error
/// (exit 1).
pub fn check_config(args: &ServerArgs) -> ExitCode {
    let config = match args.settings() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("kestrel: bad configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    let flags = args.keys();
    let env = env_keys();
    let mut file = file_keys(args.config.as_deref());
    if file.contains("admin_token_file") {
        file.insert("admin_token".into());
    }
    let mut out = String::new();
    let _ = match &args.config {
        Some(path) => writeln!(out, "# settings from {} (valid)", path.display()),
        None => writeln!(out, "# settings from the embedded defaults (valid)"),
    };
    let rows = entries(&config);
    // Align the sources of the short lines; a long one just runs on.
    let width = rows
        .iter()
        .map(|(k, v)| k.len() + v.len() + 3)
        .filter(|&n| n <= 48)
        .max()
        .unwrap_or(0);
    for (key, value) in rows {
        let line = format!("{key} = {value}");
        let from = source(key, &flags, &env, &file);
        let _ = writeln!(out, "{line:width$}  # {from}");
    }
    let mut queues: Vec<_> = config.queues.queues.keys().collect();
    queues.sort();
    for queue in queues {
        let resolved = config.queues.for_queue(queue);
        let _ = writeln!(out, "queues.{queue:?} = {resolved:?}  # file");
    }
    for (alias, targets) in &config.queues.aliases {
        let _ = writeln!(out, "aliases.{alias:?} = {targets:?}  # file");
    }
    // A closed stdout (`| head`) is not an error worth a panic.
    let _ = std::io::stdout().write_all(out.as_bytes());
    ExitCode::SUCCESS
}
