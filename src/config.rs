//! Settings: what the server listens on, where it keeps data, and the limits
//! every queue enforces. The values here are the embedded defaults; the binary
//! overrides them from its command line.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::journal::{JournalConfig, SyncMode};

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
    /// Limits of every queue.
    pub queue: QueueConfig,
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
            queue: QueueConfig::default(),
        }
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
