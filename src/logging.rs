//! The server's log: where it goes (stderr, as text or one JSON object per
//! line), what it lets through (`log_level`, or `RUST_LOG`, which wins), both
//! changeable while the server runs (a reload applies them); and how it stays
//! readable under a flood: a line that a misbehaving client (or a full disk)
//! can trigger thousands of times a second is let through at most once a
//! second, saying how many like it were held back ([`throttled!`]).

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, reload};

use crate::config::{LogFormat, ServerConfig};

type FormatLayer = Box<dyn Layer<Registry> + Send + Sync>;
type WithFormat = Layered<reload::Layer<FormatLayer, Registry>, Registry>;

/// Settings given on the command line: they win over the file and the
/// environment, on every reload too.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

struct Handles {
    format: reload::Handle<FormatLayer, Registry>,
    filter: reload::Handle<EnvFilter, WithFormat>,
    overrides: Overrides,
    /// What is in force, so a reload changes only what changed.
    current: Mutex<(LogFormat, String)>,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();

fn format_layer(format: LogFormat) -> FormatLayer {
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => layer.with_ansi(std::io::stderr().is_terminal()).boxed(),
        LogFormat::Json => layer.json().with_ansi(false).boxed(),
    }
}

/// The filter for `level`, unless `RUST_LOG` is set (it wins).
fn filter(level: &str) -> EnvFilter {
    match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => EnvFilter::new(env),
        _ => EnvFilter::new(level),
    }
}

/// Starts logging as text at `info` (or `RUST_LOG`), before the settings
/// are read, so that a bad setting can be reported; [`configure`] then
/// applies the settings. Does nothing if called again.
pub fn init(overrides: Overrides) {
    let (format, format_handle) = reload::Layer::new(format_layer(LogFormat::Text));
    let (filter_layer, filter_handle) = reload::Layer::new(filter("info"));
    if tracing_subscriber::registry()
        .with(format)
        .with(filter_layer)
        .try_init()
        .is_ok()
    {
        let _ = HANDLES.set(Handles {
            format: format_handle,
            filter: filter_handle,
            overrides,
            current: Mutex::new((LogFormat::Text, "info".into())),
        });
    }
}

/// Applies the log settings of `config` (at start, and on every reload),
/// the command line's overrides winning.
pub fn configure(config: &ServerConfig) {
    let Some(h) = HANDLES.get() else { return };
    let format = h.overrides.format.unwrap_or(config.log_format);
    let level = h
        .overrides
        .level
        .clone()
        .unwrap_or_else(|| config.log_level.clone());
    let mut current = h.current.lock().unwrap_or_else(|e| e.into_inner());
    if current.0 != format && h.format.reload(format_layer(format)).is_ok() {
        current.0 = format;
    }
    if current.1 != level && h.filter.reload(filter(&level)).is_ok() {
        current.1 = level;
    }
}

/// How often a throttled line may be logged.
pub const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Admits one event per [`LOG_INTERVAL`] and counts the rest.
#[derive(Debug)]
pub struct Throttle {
    /// Milliseconds after [`epoch`] before which nothing is admitted.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if this event may be logged, `n` being how many were held
    /// back since the last one that was; `None` if it is to be held back.
    pub fn admit(&self) -> Option<u64> {
        let now = epoch().elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + LOG_INTERVAL.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

/// Logs like `tracing::<level>!`, at most once per second per call site,
/// with a `suppressed` field counting the lines held back since the last one.
///
/// ```ignore
/// throttled!(warn, peer = %peer, "too many connections");
/// ```
#[macro_export]
macro_rules! throttled {
    ($level:ident, $($rest:tt)+) => {{
        static THROTTLE: $crate::logging::Throttle = $crate::logging::Throttle::new();
        if let Some(suppressed) = THROTTLE.admit() {
            ::tracing::$level!(suppressed, $($rest)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_one_per_interval_and_counts_the_rest() {
        let t = Throttle::new();
        assert_eq!(t.admit(), Some(0));
        for _ in 0..5 {
            assert_eq!(t.admit(), None);
        }
        // Pretend the interval has passed.
        t.next_ms.store(0, Ordering::Relaxed);
        assert_eq!(t.admit(), Some(5));
        assert_eq!(t.admit(), None);
    }
}
