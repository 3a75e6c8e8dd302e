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

mod load;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::name;
use crate::status::ServerStatus;

pub use load::{check_log_level, load};
pub use values::{parse_duration, parse_size};

use values::{Dur, Size, Sync};

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

/// How the log is written: human-readable lines, or one JSON object per
/// line for a log collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(text: &str) -> Option<LogFormat> {
        match text.trim().to_ascii_lowercase().as_str() {
            "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Which key a memcache `VALUE` line names (`memcache_value_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKey {
    /// The bare queue name, without the options (`get jobs/open` answers
    /// `VALUE jobs …`), as Kestrel did.
    Bare,
    /// The key exactly as the client sent it (`VALUE jobs/open …`), which
    /// clients that match the reply's key to the request's (pymemcache) need.
    Full,
}

impl ValueKey {
    pub fn parse(text: &str) -> Option<ValueKey> {
        match text.trim().to_ascii_lowercase().as_str() {
            "bare" => Some(ValueKey::Bare),
            "full" => Some(ValueKey::Full),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ValueKey::Bare => "bare",
            ValueKey::Full => "full",
        }
    }
}

/// A secret setting (the admin port's control token, ZooKeeper
/// credentials). Its `Debug` shows nothing of it, so the settings can be
/// logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A token, unless `text` is blank (which would let anyone in).
    pub fn new(text: &str) -> Option<Secret> {
        let text = text.trim();
        (!text.is_empty()).then(|| Secret(text.to_string()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
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
    /// Admin HTTP port (Kestrel's Ostrich port, 2223).
    pub admin_port: Option<u16>,
    /// What the admin port's control endpoints require as a bearer token;
    /// `None` turns them off.
    pub admin_token: Option<Secret>,
    /// Whether memcache, text and Thrift clients may shut the server down,
    /// reload, flush every queue, delete queues and set the status.
    pub protocol_admin_commands: bool,
    /// Whether requests record their latencies.
    pub record_latencies: bool,
    /// Which key memcache `VALUE` lines name.
    pub memcache_value_key: ValueKey,
    /// How the log is written.
    pub log_format: LogFormat,
    /// What the log lets through: a level (`info`) or `tracing` filter
    /// directives (`info,kestrel::journal=debug`). `RUST_LOG` wins.
    pub log_level: String,
    /// How long a shutdown lets requests in flight finish.
    pub shutdown_timeout: Duration,
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
    /// Registration in ZooKeeper server sets; `None` (no `hosts`) is off.
    pub zookeeper: Option<ZooKeeperConfig>,
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
            admin_port: Some(2223),
            admin_token: None,
            protocol_admin_commands: true,
            record_latencies: true,
            memcache_value_key: ValueKey::Bare,
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_timeout: Duration::from_secs(10),
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
            zookeeper: None,
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

/// Where and how the server registers itself in ZooKeeper server sets
/// (`[zookeeper]`), so clients find the fleet; see `docs/scale-out.md`.
#[derive(Debug, Clone, PartialEq)]
pub struct ZooKeeperConfig {
    /// The connect string: `host:port[,host:port…]`.
    pub hosts: String,
    /// The server sets are `<path_prefix>/read` and `<path_prefix>/write`.
    pub path_prefix: String,
    /// The session timeout asked of ZooKeeper: how long a vanished server
    /// stays a member.
    pub session_timeout: Duration,
    /// Digest credentials, `user:password`.
    pub credentials: Option<Secret>,
    /// Who may change the member nodes.
    pub acl: ZooKeeperAcl,
    /// The host clients are told to connect to; `None` is the listen
    /// address (or, for a wildcard one, the machine's host name).
    pub advertise: Option<String>,
}

/// The ACL of the nodes the server creates (Kestrel 2.4's choices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZooKeeperAcl {
    /// Anyone may do anything (Kestrel's `OpenUnsafe`), the default.
    Open,
    /// Anyone may read; only the server's credentials may change them
    /// (Kestrel's `EveryoneReadCreatorAll`). Needs `credentials`.
    CreatorAll,
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
    /// When an item put at `added_ms`, asking for `expires_ms`, expires:
    /// `max_age` caps every item's lifetime, whatever the client asked.
    pub fn expiry(&self, added_ms: i64, expires_ms: Option<i64>) -> Option<i64> {
        match self.max_age {
            Some(age) => {
                let cap = added_ms.saturating_add(age.as_millis() as i64);
                Some(expires_ms.map_or(cap, |e| e.min(cap)))
            }
            None => expires_ms,
        }
    }

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

/// A configuration that cannot be used; the message names the source, the
/// key and the problem. It shows as one line (a TOML parser's multi-line
/// report joined), so a protocol can answer with it and a log keep it whole.
#[derive(Debug, thiserror::Error)]
#[error("{}", one_line(.0))]
pub struct ConfigError(pub String);

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}
