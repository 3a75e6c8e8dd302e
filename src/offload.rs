//! Long synchronous work (an fsync, a frame of a million items) run from
//! async code without stalling the other connections served by the same
//! worker thread.

/// Requests and replies of at least this many items, or frames of at least
/// this many bytes, are decoded, encoded and executed as [`long`] work: below
/// it the work takes well under a millisecond, and handing the worker over
/// would cost more than it saves.
pub const LONG_ITEMS: usize = 4096;
pub const LONG_BYTES: usize = 256 * 1024;

/// Runs `f`, which may take long, where it stalls nobody: the worker thread
/// hands its other tasks to another thread first (in a multi-threaded
/// runtime; elsewhere `f` simply runs).
pub fn long<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Runs `f` as [`long`] work when `is_long`, and directly otherwise.
pub fn long_if<T>(is_long: bool, f: impl FnOnce() -> T) -> T {
    if is_long { long(f) } else { f() }
}
