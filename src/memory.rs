//! The process heap: glibc's allocator set up so that memory a burst took
//! (a deep queue drained, many large partial requests) goes back to the OS
//! once the burst is over, instead of staying with the process for reuse.
//!
//! Two mechanisms, both glibc's own:
//! - a fixed mmap threshold, so any block of 128 KiB or more (a connection's
//!   buffer for a large frame, a big reply) is a mapping of its own, unmapped
//!   the moment it is freed. Left dynamic, glibc raises the threshold after
//!   the first such free, and every later large buffer comes from the heap,
//!   where freeing it returns nothing;
//! - a periodic check ([`Trimmer`]) that hands free heap pages back
//!   (`malloc_trim`) once more than half the heap is free.
//!
//! Also the machine's memory ([`physical`]), which stats weigh the queues'
//! memory budgets against.

/// Blocks at least this big get a mapping of their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Sets the allocator up; call once, before the runtime starts.
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Decides when a pass over the heap to return free pages is worth it.
#[derive(Default)]
pub struct Trimmer {
    last: Option<std::time::Instant>,
    /// Free heap after the last trim: trimmed pages still count as free, so
    /// only growth beyond this is new.
    trimmed: usize,
}

impl Trimmer {
    /// Free heap under this is not worth a pass.
    const MIN_FREE: usize = 16 * 1024 * 1024;
    /// Looking costs a walk of the allocator's free lists: not more often.
    const EVERY: std::time::Duration = std::time::Duration::from_secs(1);

    /// Returns free heap pages to the OS if more than half the heap is free
    /// and at least [`Self::MIN_FREE`] more than at the last trim. Returns
    /// the bytes of free heap trimmed (0 if it did nothing).
    pub fn check(&mut self) -> usize {
        if self.last.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return 0;
        }
        self.last = Some(std::time::Instant::now());
        let (used, free) = heap();
        self.trimmed = self.trimmed.min(free);
        if free >= self.trimmed + Self::MIN_FREE && free > used {
            trim();
            self.trimmed = free;
            return free;
        }
        0
    }
}

/// Bytes of heap in use and free (not counting blocks mapped on their own).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap() -> (usize, usize) {
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks, info.fordblks)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap() -> (usize, usize) {
    (0, 0)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only returns free heap pages to the OS.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

/// Bytes of physical memory, if the system says (read once: it does not
/// change while the server runs).
pub fn physical() -> Option<u64> {
    static TOTAL: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *TOTAL.get_or_init(|| {
        // SAFETY: sysconf only reads system parameters.
        let (pages, page_size) = unsafe {
            (
                libc::sysconf(libc::_SC_PHYS_PAGES),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        let pages = u64::try_from(pages).ok().filter(|&n| n > 0)?;
        let page_size = u64::try_from(page_size).ok().filter(|&n| n > 0)?;
        pages.checked_mul(page_size)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_freed_burst_is_trimmed() {
        configure();
        // Many small blocks: heap memory, not mappings. One in a hundred
        // stays, so the heap cannot simply shrink from its top.
        let mut burst: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 200]).collect();
        let mut kept = Vec::with_capacity(burst.len() / 100);
        for (i, block) in burst.drain(..).enumerate() {
            if i % 100 == 0 {
                kept.push(block);
            }
        }
        let mut trimmer = Trimmer::default();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(trimmer.check() >= Trimmer::MIN_FREE);
        }
        // Checked at most once a second.
        assert_eq!(trimmer.check(), 0);
        drop(kept);
    }

    #[test]
    fn physical_memory_agrees_with_proc_meminfo() {
        let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else {
            return; // not Linux: nothing to compare with
        };
        let kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .and_then(|v| v.trim().parse().ok())
            .expect("MemTotal in /proc/meminfo");
        assert_eq!(physical(), Some(kib * 1024));
    }
}
