//! Reading the sources: the settings file and the `KESTREL_…` environment
//! as written, resolved over the defaults and checked.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::{Dur, OptDur, Port, Size};
use super::{
    ConfigError, LogFormat, QueueSettings, QueuesConfig, Secret, ServerConfig, ValueKey,
    ZooKeeperAcl, ZooKeeperConfig, set,
};
use crate::name;
use crate::status::ServerStatus;

/// The settings file and environment as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<IpAddr>,
    data_dir: Option<PathBuf>,
    thrift_port: Option<Port>,
    memcache_port: Option<Port>,
    text_port: Option<Port>,
    admin_port: Option<Port>,
    admin_token: Option<String>,
    admin_token_file: Option<PathBuf>,
    protocol_admin_commands: Option<bool>,
    record_latencies: Option<bool>,
    memcache_value_key: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    shutdown_timeout: Option<Dur>,
    max_frame_size: Option<Size>,
    max_line_size: Option<Size>,
    max_item_size: Option<Size>,
    text_max_put_items: Option<usize>,
    max_open_transactions: Option<usize>,
    client_timeout: Option<OptDur>,
    request_timeout: Option<OptDur>,
    max_buffered_bytes: Option<Size>,
    max_connections: Option<usize>,
    max_queues: Option<usize>,
    max_open_files: Option<usize>,
    expiration_timer_frequency: Option<OptDur>,
    status_file: Option<PathBuf>,
    default_status: Option<String>,
    status_change_grace_period: Option<Dur>,
    worker_threads: Option<usize>,
    zookeeper: Option<ZooKeeperSettings>,
    default_queue: Option<QueueSettings>,
    queues: Option<HashMap<String, QueueSettings>>,
    aliases: Option<HashMap<String, Vec<String>>>,
}

/// `[zookeeper]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZooKeeperSettings {
    hosts: Option<String>,
    path_prefix: Option<String>,
    session_timeout: Option<Dur>,
    credentials: Option<String>,
    acl: Option<String>,
    advertise: Option<String>,
}

/// The ZooKeeper settings, checked; `None` unless `hosts` is set.
fn zookeeper(s: ZooKeeperSettings) -> Result<Option<ZooKeeperConfig>, ConfigError> {
    let Some(hosts) = s
        .hosts
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
    else {
        return Ok(None);
    };
    let err = |key: &str, msg: String| ConfigError(format!("zookeeper.{key}: {msg}"));
    let prefix = s.path_prefix.unwrap_or_else(|| "/kestrel".into());
    let path_prefix = prefix.trim_end_matches('/').to_string();
    if !path_prefix.starts_with('/') || path_prefix.split('/').skip(1).any(str::is_empty) {
        return Err(err(
            "path_prefix",
            format!("{prefix:?} is not an absolute ZooKeeper path like \"/kestrel\""),
        ));
    }
    let session_timeout = s.session_timeout.map_or(Duration::from_secs(10), |d| d.0);
    if session_timeout < Duration::from_secs(1) {
        return Err(err("session_timeout", "must be at least 1s".into()));
    }
    let credentials = match s.credentials {
        None => None,
        Some(text) => match Secret::new(&text) {
            Some(secret) if text.contains(':') => Some(secret),
            _ => return Err(err("credentials", "must be \"user:password\"".into())),
        },
    };
    let acl = match s.acl.as_deref().map(str::trim) {
        None | Some("open") => ZooKeeperAcl::Open,
        Some("creator_all") if credentials.is_some() => ZooKeeperAcl::CreatorAll,
        Some("creator_all") => {
            return Err(err("acl", "\"creator_all\" needs credentials".into()));
        }
        Some(other) => {
            return Err(err(
                "acl",
                format!("{other:?}: expected \"open\" or \"creator_all\""),
            ));
        }
    };
    let advertise = s.advertise.map(|a| a.trim().to_string());
    if advertise.as_deref() == Some("") {
        return Err(err("advertise", "must not be empty".into()));
    }
    Ok(Some(ZooKeeperConfig {
        hosts,
        path_prefix,
        session_timeout,
        credentials,
        acl,
        advertise,
    }))
}

fn bytes_usize(size: Size, key: &str) -> Result<usize, ConfigError> {
    usize::try_from(size.0).map_err(|_| ConfigError(format!("{key}: {} is too large", size.0)))
}

/// Loads settings from the embedded defaults, `file` (if any) and the
/// environment (`KESTREL_…`; `env` replaces the process environment, for tests).
pub fn load(
    file: Option<&Path>,
    env: Option<HashMap<String, String>>,
) -> Result<ServerConfig, ConfigError> {
    let mut builder = config::Config::builder();
    let source = file
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "the environment".into());
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError(format!(
                "{}: no such configuration file",
                path.display()
            )));
        }
        builder = builder.add_source(config::File::from(path).format(config::FileFormat::Toml));
    }
    builder = builder.add_source(
        config::Environment::with_prefix("KESTREL")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(settings_from_env(env))),
    );
    let settings: FileSettings = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| ConfigError(format!("{source}: {e}")))?;
    resolve(settings).map_err(|e| ConfigError(format!("{source}: {}", e.0)))
}

/// The `KESTREL_…` variables of `env` (the process environment if `None`)
/// that name a setting. Others are left out with one warning: orchestrators
/// set variables of their own under the same prefix (Kubernetes gives a
/// Service named `kestrel` `KESTREL_PORT`, `KESTREL_SERVICE_HOST`,
/// `KESTREL_PORT_2229_TCP…`), and they must not stop the server. A bad value
/// or an unknown key *inside* a setting (`KESTREL_DEFAULT_QUEUE__MAX_ITEMZ`)
/// is still an error.
fn settings_from_env(env: Option<HashMap<String, String>>) -> HashMap<String, String> {
    let settings = serde_aux::serde_introspection::serde_introspect::<FileSettings>();
    let (mut kept, mut ignored) = (HashMap::new(), Vec::new());
    for (key, value) in env.unwrap_or_else(|| std::env::vars().collect()) {
        let Some(rest) = key.strip_prefix("KESTREL_") else {
            continue;
        };
        let top = rest
            .split("__")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if settings.contains(&top.as_str()) {
            kept.insert(key, value);
        } else {
            ignored.push(key);
        }
    }
    if !ignored.is_empty() {
        ignored.sort();
        tracing::warn!(
            "ignoring environment variables that are not settings: {}",
            ignored.join(", ")
        );
    }
    kept
}

fn resolve(s: FileSettings) -> Result<ServerConfig, ConfigError> {
    let mut c = ServerConfig::default();
    set(&mut c.listen, s.listen);
    set(&mut c.data_dir, s.data_dir);
    set(&mut c.thrift_port, s.thrift_port.map(|p| p.0));
    set(&mut c.memcache_port, s.memcache_port.map(|p| p.0));
    set(&mut c.text_port, s.text_port.map(|p| p.0));
    set(&mut c.admin_port, s.admin_port.map(|p| p.0));
    c.admin_token = admin_token(s.admin_token, s.admin_token_file)?;
    set(&mut c.protocol_admin_commands, s.protocol_admin_commands);
    set(&mut c.record_latencies, s.record_latencies);
    if let Some(key) = s.memcache_value_key {
        c.memcache_value_key = ValueKey::parse(&key).ok_or_else(|| {
            ConfigError(format!(
                "memcache_value_key: {key:?} is not \"bare\" or \"full\""
            ))
        })?;
    }
    if let Some(format) = s.log_format {
        c.log_format = LogFormat::parse(&format)
            .ok_or_else(|| ConfigError(format!("log_format: {format:?} is not text or json")))?;
    }
    if let Some(level) = s.log_level {
        c.log_level = check_log_level(&level)?;
    }
    set(&mut c.shutdown_timeout, s.shutdown_timeout.map(|d| d.0));
    if let Some(v) = s.max_frame_size {
        c.max_frame_size = bytes_usize(v, "max_frame_size")?;
    }
    if let Some(v) = s.max_line_size {
        c.max_line_size = bytes_usize(v, "max_line_size")?;
    }
    if let Some(v) = s.max_item_size {
        c.max_item_size = bytes_usize(v, "max_item_size")?;
    }
    set(&mut c.text_max_put_items, s.text_max_put_items);
    set(&mut c.max_open_transactions, s.max_open_transactions);
    set(&mut c.client_timeout, s.client_timeout.map(|d| d.0));
    set(&mut c.request_timeout, s.request_timeout.map(|d| d.0));
    if let Some(v) = s.max_buffered_bytes {
        c.max_buffered_bytes = bytes_usize(v, "max_buffered_bytes")?;
    }
    set(&mut c.max_connections, s.max_connections.map(Some));
    set(&mut c.max_queues, s.max_queues);
    set(&mut c.max_open_files, s.max_open_files.map(Some));
    set(
        &mut c.expiration_timer_frequency,
        s.expiration_timer_frequency.map(|d| d.0),
    );
    set(&mut c.status_file, s.status_file);
    if let Some(status) = s.default_status {
        c.default_status = ServerStatus::parse(&status).ok_or_else(|| {
            ConfigError(format!(
                "default_status: unknown status {status:?} (up, readonly or quiescent)"
            ))
        })?;
    }
    set(
        &mut c.status_change_grace_period,
        s.status_change_grace_period.map(|d| d.0),
    );
    set(&mut c.worker_threads, s.worker_threads);
    if c.max_open_transactions == 0 {
        return Err(ConfigError(
            "max_open_transactions: must be at least 1".into(),
        ));
    }
    for (key, value) in [
        ("max_connections", c.max_connections),
        ("max_open_files", c.max_open_files),
        ("max_queues", Some(c.max_queues)),
    ] {
        if value == Some(0) {
            return Err(ConfigError(format!("{key}: must be at least 1")));
        }
    }
    if c.max_line_size < 64 {
        return Err(ConfigError(
            "max_line_size: must be at least 64 bytes".into(),
        ));
    }
    c.zookeeper = zookeeper(s.zookeeper.unwrap_or_default())?;
    if let Some(d) = s.default_queue {
        d.apply(&mut c.queues.default);
    }
    c.queues.queues = s.queues.unwrap_or_default();
    c.queues.aliases = s.aliases.unwrap_or_default().into_iter().collect();
    validate_queues(&c.queues)?;
    Ok(c)
}

/// A `log_level`, checked as the log will read it.
pub fn check_log_level(level: &str) -> Result<String, ConfigError> {
    let level = level.trim();
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| level.to_string())
        .map_err(|e| ConfigError(format!("log_level: {level:?}: {e}")))
}

/// The admin token, from the setting or the file it names (not both).
fn admin_token(
    token: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<Secret>, ConfigError> {
    let text = match (token, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError(
                "admin_token and admin_token_file: set one, not both".into(),
            ));
        }
        (Some(token), None) => token,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| ConfigError(format!("admin_token_file: {}: {e}", path.display())))?,
        (None, None) => return Ok(None),
    };
    Secret::new(&text)
        .map(Some)
        .ok_or_else(|| ConfigError("admin_token: must not be empty".into()))
}

fn validate_queues(q: &QueuesConfig) -> Result<(), ConfigError> {
    let check = |key: String, queue: &str| {
        name::validate(queue).map_err(|e| ConfigError(format!("{key}: queue name {queue:?}: {e}")))
    };
    for (queue, settings) in &q.queues {
        check(format!("queues.{queue}"), queue)?;
        if let Some(target) = settings
            .expire_to_queue
            .as_deref()
            .filter(|t| !t.is_empty())
        {
            check(format!("queues.{queue}.expire_to_queue"), target)?;
        }
    }
    if let Some(target) = &q.default.expire_to_queue {
        check("default_queue.expire_to_queue".into(), target)?;
    }
    for (alias, targets) in &q.aliases {
        check(format!("aliases.{alias}"), alias)?;
        if targets.is_empty() {
            return Err(ConfigError(format!(
                "aliases.{alias}: an alias needs at least one destination queue"
            )));
        }
        for t in targets {
            check(format!("aliases.{alias}"), t)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{QueueConfig, SyncMode};
    use std::time::Duration;

    fn env(vars: &[(&str, &str)]) -> Option<HashMap<String, String>> {
        Some(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kestrel.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn no_file_gives_the_defaults() {
        let c = load(None, env(&[])).unwrap();
        assert_eq!(
            (c.thrift_port, c.memcache_port, c.text_port),
            (Some(2229), Some(22133), Some(2222))
        );
        assert_eq!(c.queues.for_queue("x"), QueueConfig::default());
    }

    #[test]
    fn queue_settings_inherit_default_then_queue_then_child() {
        let (_d, path) = file(
            r#"
            [default_queue]
            max_items = 100
            max_age = "1h"
            sync_journal = "always"

            [queues.orders]
            max_items = 10
            max_size = "1KiB"

            [queues."orders+audit"]
            max_size = "2KiB"
            sync_journal = "never"
            "#,
        );
        let c = load(Some(&path), env(&[])).unwrap();
        let other = c.queues.for_queue("other");
        assert_eq!(
            (other.max_items, other.max_age, other.sync_journal),
            (100, Some(Duration::from_secs(3600)), SyncMode::Always)
        );
        let orders = c.queues.for_queue("orders");
        assert_eq!((orders.max_items, orders.max_size), (10, 1024));
        let child = c.queues.for_queue("orders+audit");
        assert_eq!(
            (child.max_items, child.max_size, child.sync_journal),
            (10, 2048, SyncMode::Never)
        );
        assert_eq!(child.max_age, Some(Duration::from_secs(3600)));
    }

    #[test]
    fn environment_overrides_the_file() {
        let (_d, path) = file("thrift_port = 3000\n[default_queue]\nmax_items = 5\n");
        let c = load(
            Some(&path),
            env(&[
                ("KESTREL_THRIFT_PORT", "3229"),
                ("KESTREL_TEXT_PORT", "off"),
                ("KESTREL_DEFAULT_QUEUE__MAX_MEMORY_SIZE", "1MiB"),
                ("KESTREL_QUEUES__JOBS__MAX_ITEMS", "3"),
            ]),
        )
        .unwrap();
        assert_eq!((c.thrift_port, c.text_port), (Some(3229), None));
        assert_eq!(c.queues.for_queue("x").max_memory_size, 1 << 20);
        assert_eq!(c.queues.for_queue("x").max_items, 5);
        assert_eq!(c.queues.for_queue("jobs").max_items, 3);
    }

    #[test]
    fn foreign_variables_under_the_prefix_are_ignored() {
        let c = load(
            None,
            env(&[
                ("KESTREL_PORT", "tcp://10.0.0.7:2229"),
                ("KESTREL_SERVICE_HOST", "10.0.0.7"),
                ("KESTREL_PORT_2229_TCP_ADDR", "10.0.0.7"),
                ("KESTREL_MEMCACHE_PORT", "3333"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.memcache_port, Some(3333));
        // A bad key inside a setting is still refused.
        let e = load(None, env(&[("KESTREL_DEFAULT_QUEUE__MAX_ITEMZ", "1")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_itemz"), "{e}");
    }

    #[test]
    fn bad_files_name_the_file_the_key_and_the_problem() {
        let cases = [
            ("thrift_portt = 1", "unknown field `thrift_portt`"),
            ("thrift_port = \"abc\"", "thrift_port"),
            ("[default_queue]\nmax_size = \"12 parsecs\"", "unknown unit"),
            ("[default_queue]\nmax_age = 30", "needs a unit"),
            ("[queues.\"bad/name\"]\nmax_items = 1", "queues.bad/name"),
            ("default_status = \"sideways\"", "default_status"),
            ("[aliases]\nall = []", "aliases.all"),
            ("thrift_port = ", "kestrel.toml"),
        ];
        for (text, wanted) in cases {
            let (_d, path) = file(text);
            let e = load(Some(&path), env(&[])).unwrap_err().to_string();
            assert!(e.contains(wanted), "{text:?}: {e}");
            assert!(e.contains("kestrel.toml"), "{text:?}: {e}");
        }
        let e = load(Some(Path::new("/nonexistent/k.toml")), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/k.toml"), "{e}");
    }

    #[test]
    fn memcache_value_key_is_bare_unless_set_to_full() {
        assert_eq!(
            load(None, env(&[])).unwrap().memcache_value_key,
            ValueKey::Bare
        );
        let (_d, path) = file("memcache_value_key = \"full\"\n");
        assert_eq!(
            load(Some(&path), env(&[])).unwrap().memcache_value_key,
            ValueKey::Full
        );
        // The environment wins over the file; case does not matter.
        let c = load(Some(&path), env(&[("KESTREL_MEMCACHE_VALUE_KEY", "Bare")])).unwrap();
        assert_eq!(c.memcache_value_key, ValueKey::Bare);
        for bad in ["\"whole\"", "\"\"", "1"] {
            let (_d, path) = file(&format!("memcache_value_key = {bad}\n"));
            let e = load(Some(&path), env(&[])).unwrap_err().to_string();
            assert!(e.contains("memcache_value_key"), "{bad}: {e}");
        }
    }

    #[test]
    fn zookeeper_is_off_unless_hosts_is_set_and_its_settings_are_checked() {
        assert_eq!(load(None, env(&[])).unwrap().zookeeper, None);
        let (_d, path) = file("[zookeeper]\npath_prefix = \"/q\"\n");
        assert_eq!(load(Some(&path), env(&[])).unwrap().zookeeper, None);
        let c = load(
            None,
            env(&[
                ("KESTREL_ZOOKEEPER__HOSTS", "127.0.0.1:2181,127.0.0.2:2181"),
                ("KESTREL_ZOOKEEPER__PATH_PREFIX", "/prod/queues/"),
            ]),
        )
        .unwrap();
        let z = c.zookeeper.unwrap();
        assert_eq!(z.hosts, "127.0.0.1:2181,127.0.0.2:2181");
        assert_eq!(z.path_prefix, "/prod/queues", "a trailing slash is dropped");
        assert_eq!(z.session_timeout, Duration::from_secs(10));
        assert_eq!(
            (z.acl, z.credentials, z.advertise),
            (ZooKeeperAcl::Open, None, None)
        );
        let (_d, path) = file(
            "[zookeeper]\nhosts = \"zk:2181\"\nsession_timeout = \"4s\"\n\
             credentials = \"kestrel:pw\"\nacl = \"creator_all\"\nadvertise = \"q1.example\"\n",
        );
        let z = load(Some(&path), env(&[])).unwrap().zookeeper.unwrap();
        assert_eq!(z.session_timeout, Duration::from_secs(4));
        assert_eq!(z.credentials.unwrap().as_bytes(), b"kestrel:pw");
        assert_eq!(z.acl, ZooKeeperAcl::CreatorAll);
        assert_eq!(z.advertise.as_deref(), Some("q1.example"));
        for (text, wanted) in [
            ("path_prefix = \"kestrel\"", "zookeeper.path_prefix"),
            ("path_prefix = \"/a//b\"", "zookeeper.path_prefix"),
            ("session_timeout = \"10ms\"", "zookeeper.session_timeout"),
            ("credentials = \"nopassword\"", "zookeeper.credentials"),
            ("acl = \"creator_all\"", "needs credentials"),
            ("acl = \"custom\"", "zookeeper.acl"),
            ("advertise = \" \"", "zookeeper.advertise"),
            ("hostz = \"x\"", "unknown field `hostz`"),
        ] {
            let (_d, path) = file(&format!("[zookeeper]\nhosts = \"zk:2181\"\n{text}\n"));
            let e = load(Some(&path), env(&[])).unwrap_err().to_string();
            assert!(e.contains(wanted), "{text:?}: {e}");
        }
    }
}
