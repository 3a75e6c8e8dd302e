//! The store on its own: no lock, no runtime, and time passed in, so expiry
//! is tested at exact instants.

use super::*;
use crate::config::SyncMode;
use crate::journal::Journals;

fn store(config: QueueConfig) -> Store {
    Store::new(Arc::new(config), Arc::new(XidSource::new()), None, None)
}

/// A journaled store on an empty directory, keeping at most
/// `max_memory_size` bytes of items (overhead included) in memory.
fn journaled(dir: &std::path::Path, max_memory_size: u64) -> Store {
    let config = QueueConfig {
        max_memory_size,
        sync_journal: SyncMode::Never,
        max_journal_size: 4096,
        ..QueueConfig::default()
    };
    let (journal, recovery) =
        Journal::recover(dir, config.journal().unwrap(), "q", &Journals::new(16)).unwrap();
    Store::new(
        Arc::new(config),
        Arc::new(XidSource::new()),
        Some(journal),
        Some(recovery),
    )
}

fn put(store: &mut Store, items: &[&str], expires_ms: Option<i64>, now_ms: i64) -> PutOutcome {
    let items = items.iter().map(|s| Bytes::copy_from_slice(s.as_bytes()));
    store.put(items, expires_ms, now_ms)
}

fn take(store: &mut Store, max: usize, mode: ReadMode, now_ms: i64) -> Vec<Taken> {
    let mut out = Vec::new();
    store.take_into(&mut Want::new(max), mode, now_ms, &mut out);
    out
}

fn data(items: impl IntoIterator<Item = impl std::borrow::Borrow<Item>>) -> Vec<String> {
    items
        .into_iter()
        .map(|i| String::from_utf8(i.borrow().data.to_vec()).unwrap())
        .collect()
}

fn taken_data(taken: &[Taken]) -> Vec<String> {
    data(taken.iter().map(|t| &t.item))
}

#[test]
fn the_sweep_expires_what_is_due_anywhere_up_to_its_limit() {
    let mut s = store(QueueConfig::default());
    put(&mut s, &["a"], Some(100), 0);
    put(&mut s, &["b"], None, 0);
    put(&mut s, &["c"], Some(100), 0);
    put(&mut s, &["d"], Some(200), 0);
    assert_eq!(s.expire(99, u64::MAX).count, 0);
    // Due at the instant they expire; one at a time with a limit of one.
    assert_eq!(s.expire(100, 1).count, 1);
    assert_eq!(s.expire(150, u64::MAX).count, 1);
    assert_eq!(s.stats(150, 0).items, 2);
    assert_eq!(s.expire(200, u64::MAX).count, 1);
    assert_eq!(taken_data(&take(&mut s, 10, ReadMode::Take, 200)), ["b"]);
    assert_eq!(s.stats(200, 0).counters.expired_items, 3);
}

#[test]
fn max_age_caps_every_expiry() {
    let mut s = store(QueueConfig {
        max_age: Some(std::time::Duration::from_millis(1000)),
        ..QueueConfig::default()
    });
    put(&mut s, &["never"], None, 5000);
    put(&mut s, &["late"], Some(9000), 5000);
    put(&mut s, &["early"], Some(5500), 5000);
    assert_eq!(s.expire(5499, u64::MAX).count, 0);
    assert_eq!(s.expire(5500, u64::MAX).count, 1);
    assert_eq!(s.expire(5999, u64::MAX).count, 0);
    assert_eq!(s.expire(6000, u64::MAX).count, 2);
    assert!(s.is_empty());
}

#[test]
fn items_expiring_to_another_queue_are_held_until_moved() {
    let mut s = store(QueueConfig {
        expire_to_queue: Some("dead".into()),
        ..QueueConfig::default()
    });
    put(&mut s, &["x", "y"], Some(10), 0);
    let expired = s.expire(10, u64::MAX);
    assert_eq!(
        (expired.count, expired.target.as_deref()),
        (2, Some("dead"))
    );
    assert_eq!(data(&expired.moving), ["x", "y"]);
    // The move failed: they are handed out again on the next pass.
    s.unmoved(expired.moving);
    assert!(!s.is_empty());
    let again = s.expire(10, u64::MAX);
    assert_eq!(
        (again.count, data(&again.moving)),
        (0, vec!["x".into(), "y".into()])
    );
    s.moved(&again.moving);
    assert!(s.is_empty());

    // A reader that finds an expired head sets it aside the same way.
    put(&mut s, &["v"], Some(10), 0);
    assert!(take(&mut s, 1, ReadMode::Take, 10).is_empty());
    let expired = s.expire(10, u64::MAX);
    assert_eq!(
        (expired.count, data(&expired.moving)),
        (0, vec!["v".into()])
    );

    // Without a destination any more, what waits to move is simply gone.
    s.unmoved(expired.moving);
    s.set_config(Arc::new(QueueConfig::default()));
    let expired = s.expire(10, u64::MAX);
    assert!(expired.moving.is_empty() && expired.target.is_none());
    assert!(s.is_empty());
}

#[test]
fn open_items_go_back_in_put_order_and_only_aborts_count() {
    let mut s = store(QueueConfig::default());
    put(&mut s, &["a", "b", "c"], None, 0);
    let opened = take(&mut s, 2, ReadMode::Open, 0);
    assert_eq!(taken_data(&opened), ["a", "b"]);
    let [a, b] = [0, 1].map(|i| opened[i].xid.expect("opened"));
    // A take that may wait holds its item open, unknown to the stats.
    let held = take(&mut s, 1, ReadMode::HeldTake, 0);
    let c = held[0].xid.expect("held open");
    assert_eq!(s.stats(0, 0).counters.transactions, 2);

    assert!(s.abort(b));
    assert!(s.put_back(c));
    assert!(s.put_back(a));
    assert!(!s.abort(a), "no longer open");
    assert_eq!(s.stats(0, 0).counters.canceled_transactions, 1);
    let taken = take(&mut s, 10, ReadMode::Take, 0);
    assert_eq!(taken_data(&taken), ["a", "b", "c"]);
    assert!(taken.iter().all(|t| t.xid.is_none()));
}

#[test]
fn a_peek_copies_the_live_head_once_per_read() {
    let mut s = store(QueueConfig::default());
    put(&mut s, &["old"], Some(5), 0);
    put(&mut s, &["a", "b"], None, 0);
    let mut out = Vec::new();
    let mut want = Want::new(2);
    s.take_into(&mut want, ReadMode::Peek, 10, &mut out);
    s.take_into(&mut want, ReadMode::Peek, 10, &mut out);
    assert_eq!(taken_data(&out), ["a"]);
    assert_eq!(s.stats(10, 0).items, 2);
}

#[test]
fn items_past_the_memory_budget_wait_on_disk_and_a_revoke_counts_them_out() {
    let dir = tempfile::tempdir().unwrap();
    // Two one-byte items (81 bytes each with their overhead) fit in memory.
    let mut s = journaled(dir.path(), 200);
    put(&mut s, &["a", "b", "c", "d"], None, 0);
    let failed = put(&mut s, &["e", "f"], None, 0);
    let stats = s.stats(0, 0);
    assert_eq!((stats.items, stats.mem_items), (6, 2));
    // The second put's journal write "failed": both of its items, on disk
    // only, are taken back.
    assert_eq!(s.revoke(failed.first_seq, failed.accepted), 2);
    assert_eq!(s.stats(0, 0).items, 4);
    let mut got = Vec::new();
    loop {
        let taken = take(&mut s, 1, ReadMode::Take, 0);
        if taken.is_empty() {
            break;
        }
        assert!(s.stats(0, 0).mem_items <= 2);
        got.extend(taken_data(&taken));
    }
    assert_eq!(got, ["a", "b", "c", "d"]);
    // Once the disk is drained, new items are kept in memory again.
    let g = put(&mut s, &["g"], None, 0);
    assert_eq!(s.stats(0, 0).mem_items, 1);
    assert_eq!(s.revoke(g.first_seq, g.accepted), 1);
    assert!(s.is_empty());
}
