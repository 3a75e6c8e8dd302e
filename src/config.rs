//! Settings: what the server listens on, where it keeps data, the limits of
//! each protocol, and every queue's policy.
//!
//! Sources, weakest first: the embedded defaults, a TOML file (`--config`),
//! `KESTREL_…` environment variables, then the command line. Queue settings
//! inherit: built-in defaults, then `[default_queue]`, then `[queues.<name>]`,
//! then, for a fanout child `parent+child`, `[queues."parent+child"]`. Sizes
//! take units (`16MiB`, `512KB`, or a plain number of bytes); durations take
//! units (`100ms`, `30s`, `5m`, `1h`, `7d`).
//!
//! `docs/configuration.md` documents every setting; `config/kestrel.toml` is
//! a commented example of all of them.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::name;
use crate::status::ServerStatus;

/// When an acknowledged record must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fsync before the acknowledgement (shared by concurrent writers).
    Always,
    /// Acknowledge after the write to the OS; fsync dirty journals this often.
    Every(Duration),
    /// Acknowledge after the write to the OS; the OS decides when to flush.
    Never,
}

/// How a queue's journal is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalConfig {
    pub sync: SyncMode,
    /// A segment is closed, and a new one started, once it reaches this size.
    pub segment_size: u64,
}

/// Server-wide settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address every protocol listens on.
    pub listen: IpAddr,
    /// Thrift port (Kestrel's 2229); `None` disables the listener, 0 picks a free port.
    pub thrift_port: Option<u16>,
    /// Memcache port (Kestrel's 22133).
    pub memcache_port: Option<u16>,
    /// Text-protocol port (Kestrel's 2222).
    pub text_port: Option<u16>,
    /// Directory for journals and server state.
    pub data_dir: PathBuf,
    /// Largest Thrift frame accepted; a longer one closes the connection before
    /// anything of that size is allocated. Also bounds one text-protocol put.
    pub max_frame_size: usize,
    /// Longest memcache or text command line.
    pub max_line_size: usize,
    /// Largest item a memcache `set` or a text `put` line may carry; a larger
    /// `set` is answered `SERVER_ERROR object too large` and skipped unread.
    pub max_item_size: usize,
    /// Most items in one text-protocol `put`.
    pub text_max_put_items: usize,
    /// Most reads one connection may hold open on one queue (memcache/text).
    pub max_open_transactions: usize,
    /// Connections idle (no request) for this long are closed; `None` never.
    pub client_timeout: Option<Duration>,
    /// A request that has begun to arrive and is not complete this long
    /// after closes its connection; `None` never.
    pub request_timeout: Option<Duration>,
    /// Most bytes all connections' partial requests may hold together;
    /// reaching it stops reading until memory is released.
    pub max_buffered_bytes: usize,
    /// Most client connections at once; `None` derives it from the file
    /// descriptor limit.
    pub max_connections: Option<usize>,
    /// Most queues; creating one more is refused.
    pub max_queues: usize,
    /// Most journal files held open at once (a cache shared by every
    /// queue); `None` derives it from the file descriptor limit.
    pub max_open_files: Option<usize>,
    /// How often the background sweep drops expired items and old empty
    /// queues; `None` turns the sweep off.
    pub expiration_timer_frequency: Option<Duration>,
    /// File the server status is kept in (relative paths are under `data_dir`).
    pub status_file: PathBuf,
    /// Status when the status file is missing or unreadable.
    pub default_status: ServerStatus,
    /// Delay before a stricter status takes effect.
    pub status_change_grace_period: Duration,
    /// Threads serving connections; 0 picks one less than the number of
    /// CPUs (at least one), leaving a core to the kernel's network work and
    /// the journal threads.
    pub worker_threads: usize,
    /// Every queue's policy, and the aliases.
    pub queues: QueuesConfig,
    /// The file these settings came from, re-read on reload.
    pub config_file: Option<PathBuf>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            thrift_port: Some(2229),
            memcache_port: Some(22133),
            text_port: Some(2222),
            data_dir: PathBuf::from("kestrel-data"),
            max_frame_size: 16 * 1024 * 1024,
            max_line_size: 8 * 1024,
            max_item_size: 16 * 1024 * 1024,
            text_max_put_items: 10_000,
            max_open_transactions: 100,
            client_timeout: None,
            request_timeout: Some(Duration::from_secs(30)),
            max_buffered_bytes: 256 * 1024 * 1024,
            max_connections: None,
            max_queues: 100_000,
            max_open_files: None,
            expiration_timer_frequency: Some(Duration::from_secs(1)),
            status_file: PathBuf::from("status"),
            default_status: ServerStatus::Up,
            status_change_grace_period: Duration::ZERO,
            worker_threads: 0,
            queues: QueuesConfig::default(),
            config_file: None,
        }
    }
}

impl ServerConfig {
    /// The number of worker threads to run.
    pub fn workers(&self) -> usize {
        match self.worker_threads {
            0 => {
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
            }
            n => n,
        }
    }

    /// The status file's path.
    pub fn status_path(&self) -> PathBuf {
        self.data_dir.join(&self.status_file)
    }
}

/// Per-queue limits and behaviour. The defaults are Kestrel's (no limits),
/// with a journal fsynced every 100 ms.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// A put is refused (or the oldest items discarded) once the queue holds
    /// this many items.
    pub max_items: u64,
    /// The same, for the total payload bytes of the queue.
    pub max_size: u64,
    /// Items larger than this are always refused.
    pub max_item_size: u64,
    /// Upper bound on every item's lifetime, whatever expiry the client asked for.
    pub max_age: Option<Duration>,
    /// When full, discard items from the head instead of refusing the put.
    pub discard_old_when_full: bool,
    /// Journal the queue; `false` keeps it in memory only (lost on restart).
    pub keep_journal: bool,
    /// When an acknowledged change must be on disk.
    pub sync_journal: SyncMode,
    /// Item bytes kept in memory; past it, new items stay on disk only and
    /// are read back as the head drains.
    pub max_memory_size: u64,
    /// Size at which a journal segment is closed and a new one started; space
    /// is reclaimed segment by segment.
    pub max_journal_size: u64,
    /// Expired items move to this queue instead of being dropped.
    pub expire_to_queue: Option<String>,
    /// Most items the background sweep expires per queue per run.
    pub max_expire_sweep: u64,
    /// A fanout parent that stores nothing itself, only feeds its children.
    pub fanout_only: bool,
    /// An empty queue older than this is deleted by the sweep.
    pub max_queue_age: Option<Duration>,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_items: u64::MAX,
            max_size: u64::MAX,
            max_item_size: u64::MAX,
            max_age: None,
            discard_old_when_full: false,
            keep_journal: true,
            sync_journal: SyncMode::Every(Duration::from_millis(100)),
            max_memory_size: 128 * 1024 * 1024,
            max_journal_size: 16 * 1024 * 1024,
            expire_to_queue: None,
            max_expire_sweep: u64::MAX,
            fanout_only: false,
            max_queue_age: None,
        }
    }
}

impl QueueConfig {
    /// How the queue's journal is kept, if it has one.
    pub fn journal(&self) -> Option<JournalConfig> {
        self.keep_journal.then_some(JournalConfig {
            sync: self.sync_journal,
            segment_size: self.max_journal_size,
        })
    }
}

/// Queue settings as written: each unset one is inherited.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    max_items: Option<u64>,
    max_size: Option<Size>,
    max_item_size: Option<Size>,
    max_age: Option<Dur>,
    discard_old_when_full: Option<bool>,
    keep_journal: Option<bool>,
    sync_journal: Option<Sync>,
    max_memory_size: Option<Size>,
    max_journal_size: Option<Size>,
    expire_to_queue: Option<String>,
    max_expire_sweep: Option<u64>,
    fanout_only: Option<bool>,
    max_queue_age: Option<Dur>,
}

impl QueueSettings {
    /// Overrides `base` with what is set here.
    fn apply(&self, base: &mut QueueConfig) {
        let QueueSettings {
            max_items,
            max_size,
            max_item_size,
            max_age,
            discard_old_when_full,
            keep_journal,
            sync_journal,
            max_memory_size,
            max_journal_size,
            expire_to_queue,
            max_expire_sweep,
            fanout_only,
            max_queue_age,
        } = self;
        set(&mut base.max_items, *max_items);
        set(&mut base.max_size, max_size.map(|s| s.0));
        set(&mut base.max_item_size, max_item_size.map(|s| s.0));
        set(&mut base.max_age, max_age.map(|d| Some(d.0)));
        set(&mut base.discard_old_when_full, *discard_old_when_full);
        set(&mut base.keep_journal, *keep_journal);
        set(&mut base.sync_journal, sync_journal.map(|s| s.0));
        set(&mut base.max_memory_size, max_memory_size.map(|s| s.0));
        set(&mut base.max_journal_size, max_journal_size.map(|s| s.0));
        set(
            &mut base.expire_to_queue,
            expire_to_queue
                .clone()
                .map(|q| Some(q).filter(|q| !q.is_empty())),
        );
        set(&mut base.max_expire_sweep, *max_expire_sweep);
        set(&mut base.fanout_only, *fanout_only);
        set(&mut base.max_queue_age, max_queue_age.map(|d| Some(d.0)));
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// The queue policies: defaults, per-queue settings and aliases. Replaced
/// whole on reload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueuesConfig {
    pub default: QueueConfig,
    pub queues: HashMap<String, QueueSettings>,
    /// Alias name -> destination queues.
    pub aliases: BTreeMap<String, Vec<String>>,
}

impl QueuesConfig {
    /// The resolved settings of `queue`: defaults, then the queue's own (for
    /// a fanout child, the parent's, then the child's).
    pub fn for_queue(&self, queue: &str) -> QueueConfig {
        let mut config = self.default.clone();
        if let Some(parent) = name::fanout_parent(queue)
            && let Some(s) = self.queues.get(parent)
        {
            s.apply(&mut config);
        }
        if let Some(s) = self.queues.get(queue) {
            s.apply(&mut config);
        }
        config
    }
}

/// A size in bytes: a number, or a number with a unit (`KB`, `MiB`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Size(u64);

/// A duration with a unit (`ms`, `s`, `m`, `h`, `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dur(Duration);

/// `always`, `never`, or an fsync interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sync(SyncMode);

/// A port number, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Port(Option<u16>);

/// A duration, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OptDur(Option<Duration>);

/// A number or a string, as TOML and environment variables give them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Int(u64),
    Text(String),
    Bool(bool),
}

fn raw<'de, D: Deserializer<'de>>(d: D) -> Result<Raw, D::Error> {
    Raw::deserialize(d)
}

/// Parses a size: `1024`, `16MiB`, `512 KB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad size {text:?}: expected a number with an optional unit"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "bad size {text:?}: unknown unit {other:?} (B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("size {text:?} is too large"))
}

/// Parses a duration: `100ms`, `30s`, `5m`, `1h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("bad duration {text:?}: expected a number and a unit"))?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "ms" => 1,
        "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err(format!("duration {text:?} needs a unit (ms, s, m, h, d)")),
        other => {
            return Err(format!(
                "bad duration {text:?}: unknown unit {other:?} (ms, s, m, h, d)"
            ));
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

fn is_off(text: &str) -> bool {
    matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "off" | "none" | "disabled" | "never"
    )
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match raw(d)? {
            Raw::Int(n) => Ok(Size(n)),
            Raw::Text(t) => parse_size(&t).map(Size).map_err(de::Error::custom),
            Raw::Bool(_) => Err(de::Error::custom("expected a size such as 16MiB")),
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match raw(d)? {
            Raw::Text(t) => parse_duration(&t).map(Dur).map_err(de::Error::custom),
            Raw::Int(n) => Err(de::Error::custom(format!(
                "duration {n} needs a unit, e.g. \"{n}ms\" or \"{n}s\""
            ))),
            Raw::Bool(_) => Err(de::Error::custom("expected a duration such as 100ms")),
        }
    }
}

impl<'de> Deserialize<'de> for OptDur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match raw(d)? {
            Raw::Text(t) if is_off(&t) => Ok(OptDur(None)),
            Raw::Text(t) => parse_duration(&t)
                .map(|d| OptDur(Some(d)))
                .map_err(de::Error::custom),
            Raw::Bool(false) => Ok(OptDur(None)),
            Raw::Int(n) => Err(de::Error::custom(format!(
                "duration {n} needs a unit, e.g. \"{n}s\""
            ))),
            Raw::Bool(true) => Err(de::Error::custom("expected a duration such as 30s, or off")),
        }
    }
}

impl<'de> Deserialize<'de> for Sync {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match raw(d)? {
            Raw::Text(t) if t.trim().eq_ignore_ascii_case("always") => Ok(Sync(SyncMode::Always)),
            Raw::Text(t) if t.trim().eq_ignore_ascii_case("never") => Ok(Sync(SyncMode::Never)),
            Raw::Text(t) => match parse_duration(&t) {
                Ok(d) if d.is_zero() => Ok(Sync(SyncMode::Always)),
                Ok(d) => Ok(Sync(SyncMode::Every(d))),
                Err(e) => Err(de::Error::custom(format!("{e}; or always, or never"))),
            },
            _ => Err(de::Error::custom(
                "expected always, never, or an interval such as 100ms",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match raw(d)? {
            Raw::Int(n) => u16::try_from(n)
                .map(|p| Port(Some(p)))
                .map_err(|_| de::Error::custom(format!("port {n} is out of range"))),
            Raw::Text(t) if is_off(&t) => Ok(Port(None)),
            Raw::Bool(false) => Ok(Port(None)),
            _ => Err(de::Error::custom("expected a port number, or off")),
        }
    }
}

/// The settings file and environment as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    listen: Option<IpAddr>,
    data_dir: Option<PathBuf>,
    thrift_port: Option<Port>,
    memcache_port: Option<Port>,
    text_port: Option<Port>,
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
    default_queue: Option<QueueSettings>,
    queues: Option<HashMap<String, QueueSettings>>,
    aliases: Option<HashMap<String, Vec<String>>>,
}

/// A configuration that cannot be used; the message names the source, the
/// key and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

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
    if let Some(d) = s.default_queue {
        d.apply(&mut c.queues.default);
    }
    c.queues.queues = s.queues.unwrap_or_default();
    c.queues.aliases = s.aliases.unwrap_or_default().into_iter().collect();
    validate_queues(&c.queues)?;
    Ok(c)
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
    fn units() {
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512 KB"), Ok(512_000));
        assert_eq!(parse_size("42"), Ok(42));
        assert!(
            parse_size("12 parsecs")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("30").unwrap_err().contains("needs a unit"));
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
}
