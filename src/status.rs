//! The server's status: what it lets clients do. Kept in a file so it
//! survives restarts; a change to a stricter status takes effect only after
//! the configured grace period (so load balancers can move clients away
//! first), while a looser one applies at once. The status being moved to is
//! announced at once (see [`StatusKeeper::announced`]): that is what server
//! sets follow, so clients leave before the stricter status refuses them.

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// What the server lets clients do, from least to most strict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ServerStatus {
    /// Everything allowed.
    Up,
    /// Writes (put, flush, delete) refused.
    ReadOnly,
    /// Reads and writes refused; confirm and abort of open items still work.
    Quiescent,
}

impl ServerStatus {
    /// The status word memcache and text report (`UP`, `READONLY`, `QUIESCENT`).
    pub fn word(self) -> &'static str {
        match self {
            ServerStatus::Up => "UP",
            ServerStatus::ReadOnly => "READONLY",
            ServerStatus::Quiescent => "QUIESCENT",
        }
    }

    /// Parses a status name, case-insensitively (`up`, `readonly`, `quiescent`).
    pub fn parse(name: &str) -> Option<ServerStatus> {
        [
            ServerStatus::Up,
            ServerStatus::ReadOnly,
            ServerStatus::Quiescent,
        ]
        .into_iter()
        .find(|s| s.word().eq_ignore_ascii_case(name.trim()))
    }

    fn from_u8(n: u8) -> ServerStatus {
        match n {
            1 => ServerStatus::ReadOnly,
            2 => ServerStatus::Quiescent,
            _ => ServerStatus::Up,
        }
    }
}

impl std::fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.word())
    }
}

/// A stricter status is already on its way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a change to {0} is already pending")]
pub struct ChangePending(pub ServerStatus);

/// The current status, a pending stricter one, and the file they live in.
pub struct StatusKeeper {
    path: PathBuf,
    grace: Duration,
    current: AtomicU8,
    /// Set while a stricter status waits out the grace period.
    has_pending: AtomicBool,
    pending: Mutex<Option<(ServerStatus, Instant)>>,
    /// The status in force, or the stricter one pending.
    announced: watch::Sender<ServerStatus>,
}

impl StatusKeeper {
    /// The status stored in `path`, or `default` if there is none (or it is
    /// unreadable, which is logged).
    pub fn load(path: PathBuf, default: ServerStatus, grace: Duration) -> StatusKeeper {
        let status = match std::fs::read_to_string(&path) {
            Ok(text) => ServerStatus::parse(&text).unwrap_or_else(|| {
                tracing::warn!(file = %path.display(), "unreadable server status; using the default, {default}");
                default
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => default,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the server status; using the default, {default}");
                default
            }
        };
        tracing::info!(%status, "server status");
        StatusKeeper {
            path,
            grace,
            current: AtomicU8::new(status as u8),
            has_pending: AtomicBool::new(false),
            pending: Mutex::new(None),
            announced: watch::Sender::new(status),
        }
    }

    /// The status in force (applying a pending change whose time has come).
    pub fn current(&self) -> ServerStatus {
        if self.has_pending.load(Ordering::Acquire) {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((status, at)) = *pending
                && Instant::now() >= at
            {
                *pending = None;
                self.has_pending.store(false, Ordering::Release);
                self.apply(status);
            }
        }
        ServerStatus::from_u8(self.current.load(Ordering::Acquire))
    }

    /// Changes the status: at once if it is no stricter (or there is no grace
    /// period), else after the grace period. A second stricter change while
    /// one is pending is refused.
    pub fn set(&self, status: ServerStatus) -> Result<(), ChangePending> {
        let current = self.current();
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if status <= current || self.grace.is_zero() {
            *pending = None;
            self.has_pending.store(false, Ordering::Release);
            self.apply(status);
            return Ok(());
        }
        if let Some((waiting, _)) = *pending {
            if waiting != status {
                return Err(ChangePending(waiting));
            }
            return Ok(());
        }
        tracing::info!(from = %current, to = %status, after = ?self.grace, "server status change scheduled");
        *pending = Some((status, Instant::now() + self.grace));
        self.has_pending.store(true, Ordering::Release);
        self.announced.send_replace(status);
        Ok(())
    }

    /// The status clients should be steered by: the one in force or, while a
    /// stricter one waits out the grace period, that one. It changes before
    /// a stricter status is enforced and as a looser one is.
    pub fn announced(&self) -> watch::Receiver<ServerStatus> {
        self.announced.subscribe()
    }

    fn apply(&self, status: ServerStatus) {
        self.announced.send_replace(status);
        let old = ServerStatus::from_u8(self.current.swap(status as u8, Ordering::AcqRel));
        if old != status {
            tracing::info!(from = %old, to = %status, "server status changed");
        }
        let tmp = self.path.with_extension("tmp");
        let written = std::fs::write(&tmp, format!("{}\n", status.word().to_lowercase()))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::warn!(file = %self.path.display(), error = %e, "server status not saved; it will not survive a restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for s in [
            ServerStatus::Up,
            ServerStatus::ReadOnly,
            ServerStatus::Quiescent,
        ] {
            assert_eq!(ServerStatus::parse(&s.word().to_lowercase()), Some(s));
        }
        assert_eq!(ServerStatus::parse("down"), None);
    }

    #[test]
    fn persists_and_waits_out_the_grace_period_for_stricter_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status");
        // While a change waits (a grace period no test run outlasts)...
        let waiting = StatusKeeper::load(path.clone(), ServerStatus::Up, Duration::from_secs(3600));
        waiting.set(ServerStatus::ReadOnly).unwrap();
        assert_eq!(waiting.current(), ServerStatus::Up);
        assert_eq!(
            waiting.set(ServerStatus::Quiescent),
            Err(ChangePending(ServerStatus::ReadOnly))
        );
        assert!(!path.exists(), "a pending change is not stored");
        // ...and once its grace period is over, however late we look.
        let keeper = StatusKeeper::load(path.clone(), ServerStatus::Up, Duration::from_millis(20));
        keeper.set(ServerStatus::ReadOnly).unwrap();
        std::thread::sleep(Duration::from_millis(30)); // the grace period itself is under test
        assert_eq!(keeper.current(), ServerStatus::ReadOnly);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "readonly\n");
        // Looser changes apply at once.
        keeper.set(ServerStatus::Up).unwrap();
        assert_eq!(keeper.current(), ServerStatus::Up);
        let reloaded = StatusKeeper::load(path, ServerStatus::Quiescent, Duration::ZERO);
        assert_eq!(reloaded.current(), ServerStatus::Up);
    }

    #[test]
    fn announces_a_stricter_status_before_enforcing_it_and_a_looser_one_as_it_applies() {
        let dir = tempfile::tempdir().unwrap();
        let keeper = StatusKeeper::load(
            dir.path().join("status"),
            ServerStatus::Up,
            Duration::from_secs(3600),
        );
        let mut announced = keeper.announced();
        assert_eq!(*announced.borrow_and_update(), ServerStatus::Up);
        keeper.set(ServerStatus::ReadOnly).unwrap();
        assert!(announced.has_changed().unwrap());
        assert_eq!(*announced.borrow_and_update(), ServerStatus::ReadOnly);
        assert_eq!(
            keeper.current(),
            ServerStatus::Up,
            "still in its grace period"
        );
        // A looser change cancels the pending one, and is announced as it applies.
        keeper.set(ServerStatus::Up).unwrap();
        assert_eq!(*announced.borrow_and_update(), ServerStatus::Up);
        assert_eq!(keeper.current(), ServerStatus::Up);
    }
}
