use super::*;
use crate::config::{JournalConfig, SyncMode};
use crate::journal::Journals;
use crate::queue::read::MAX_READ_BYTES;
use crate::queue::report::Refusal;
use std::time::Duration;

fn queue() -> Arc<Queue> {
    Arc::new(Queue::new(
        "q".into(),
        Arc::new(QueueConfig::default()),
        Arc::new(XidSource::new()),
        None,
        None,
    ))
}

fn put(q: &Queue, items: &[&str]) -> PutOutcome {
    q.put(
        items.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())),
        None,
    )
    .unwrap()
    .0
}

fn data(taken: &[Taken]) -> Vec<String> {
    taken
        .iter()
        .map(|t| String::from_utf8(t.item.data.to_vec()).unwrap())
        .collect()
}

async fn get(q: &Arc<Queue>, max: usize, read: ReadKind) -> Vec<Taken> {
    q.get(max, None, read).await.0
}

#[tokio::test]
async fn fifo_take() {
    let q = queue();
    assert_eq!(put(&q, &["a", "b", "c"]).accepted, 3);
    assert_eq!(data(&get(&q, 2, ReadKind::Take).await), ["a", "b"]);
    assert_eq!(data(&get(&q, 5, ReadKind::Take).await), ["c"]);
    assert!(get(&q, 5, ReadKind::Take).await.is_empty());
}

#[tokio::test]
async fn abort_returns_items_to_head_in_order() {
    let q = queue();
    put(&q, &["a", "b", "c"]);
    let opened = get(&q, 2, ReadKind::Open).await;
    let xids: Vec<u64> = opened.iter().map(|t| t.xid.unwrap()).collect();
    assert_ne!(xids[0], xids[1]);
    assert_eq!(q.stats().open_transactions, 2);
    // Abort in reverse: put order is kept anyway.
    assert_eq!(q.abort(&[xids[1]]).0, 1);
    assert_eq!(q.abort(&[xids[0], 12345]).0, 1);
    assert_eq!(data(&get(&q, 3, ReadKind::Take).await), ["a", "b", "c"]);
    assert_eq!(q.stats().counters.canceled_transactions, 2);
}

#[tokio::test]
async fn confirm_removes_for_good() {
    let q = queue();
    put(&q, &["a"]);
    let opened = get(&q, 1, ReadKind::Open).await;
    let xid = opened[0].xid.unwrap();
    assert_eq!(q.confirm(&[xid]).0, 1);
    assert_eq!(q.confirm(&[xid]).0, 0);
    assert_eq!(q.abort(&[xid]).0, 0);
    assert!(get(&q, 1, ReadKind::Take).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn parked_readers_are_served_in_arrival_order() {
    let q = queue();
    let deadline = Some(Instant::now() + Duration::from_secs(10));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let q2 = q.clone();
        readers.push(tokio::spawn(async move {
            q2.get(1, deadline, ReadKind::Take).await.0
        }));
        // Let the reader park before the next one arrives.
        while q.stats().waiters < readers.len() as u64 {
            tokio::task::yield_now().await;
        }
    }
    put(&q, &["a", "b", "c"]);
    let mut got = Vec::new();
    for r in readers {
        let taken = r.await.unwrap();
        assert!(taken.iter().all(|t| t.xid.is_none()));
        got.extend(data(&taken));
    }
    assert_eq!(got, ["a", "b", "c"]);
    let snap = q.stats();
    assert_eq!(
        (snap.waiters, snap.open_transactions, snap.items),
        (0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_get_waits_until_deadline_for_the_whole_batch() {
    let q = queue();
    put(&q, &["a"]);
    let start = Instant::now();
    let (got, _) = q
        .get(3, Some(start + Duration::from_millis(500)), ReadKind::Take)
        .await;
    assert_eq!(data(&got), ["a"]);
    assert!(Instant::now() >= start + Duration::from_millis(500));
    assert_eq!(q.stats().waiters, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_reader_leaves_no_ghost_and_loses_nothing() {
    let q = queue();
    put(&q, &["a"]);
    let deadline = Some(Instant::now() + Duration::from_secs(10));
    let q2 = q.clone();
    // Takes "a", then parks for a second item.
    let reader = tokio::spawn(async move { q2.get(2, deadline, ReadKind::Take).await.0 });
    while q.stats().waiters == 0 {
        tokio::task::yield_now().await;
    }
    reader.abort();
    assert!(reader.await.unwrap_err().is_cancelled());
    let snap = q.stats();
    assert_eq!(
        (snap.waiters, snap.items, snap.open_transactions),
        (0, 1, 0)
    );
    put(&q, &["b"]);
    assert_eq!(data(&get(&q, 2, ReadKind::Take).await), ["a", "b"]);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_reader_aborts_items_handed_to_it() {
    let q = queue();
    let deadline = Some(Instant::now() + Duration::from_secs(10));
    let q2 = q.clone();
    let reader = tokio::spawn(async move { q2.get(1, deadline, ReadKind::Open).await.0 });
    while q.stats().waiters == 0 {
        tokio::task::yield_now().await;
    }
    // The put hands "a" to the parked reader, which is cancelled before it
    // picks it up: "a" must come back.
    reader.abort();
    put(&q, &["a"]);
    let _ = reader.await;
    let snap = q.stats();
    assert_eq!((snap.items, snap.open_transactions), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn peek_waiters_see_the_item_and_leave_it() {
    let q = queue();
    let deadline = Some(Instant::now() + Duration::from_secs(10));
    let q2 = q.clone();
    let peeker = tokio::spawn(async move { q2.get(1, deadline, ReadKind::Peek).await.0 });
    let q3 = q.clone();
    while q.stats().waiters == 0 {
        tokio::task::yield_now().await;
    }
    let taker = tokio::spawn(async move { q3.get(1, deadline, ReadKind::Take).await.0 });
    while q.stats().waiters < 2 {
        tokio::task::yield_now().await;
    }
    put(&q, &["a"]);
    assert_eq!(data(&peeker.await.unwrap()), ["a"]);
    assert_eq!(data(&taker.await.unwrap()), ["a"]);
    assert_eq!(q.stats().items, 0);
}

#[tokio::test]
async fn expired_items_are_never_returned() {
    let q = queue();
    let past = now_ms() - 1;
    q.put([Bytes::from_static(b"old")], Some(past)).unwrap();
    put(&q, &["new"]);
    q.put([Bytes::from_static(b"old2")], Some(past)).unwrap();
    put(&q, &["newer"]);
    assert_eq!(data(&get(&q, 5, ReadKind::Take).await), ["new", "newer"]);
    assert_eq!(q.stats().counters.expired_items, 2);
}

#[tokio::test]
async fn flush_expired_looks_past_the_head() {
    let q = queue();
    put(&q, &["live"]);
    q.put([Bytes::from_static(b"old")], Some(now_ms() - 1))
        .unwrap();
    put(&q, &["live2"]);
    assert_eq!(q.expire(u64::MAX).count, 1);
    let snap = q.stats();
    assert_eq!((snap.items, snap.bytes), (2, 9));
}

#[tokio::test]
async fn limits_refuse_or_discard() {
    let config = QueueConfig {
        max_items: 2,
        max_item_size: 3,
        ..QueueConfig::default()
    };
    let q = Queue::new(
        "q".into(),
        Arc::new(config.clone()),
        Arc::new(XidSource::new()),
        None,
        None,
    );
    let outcome = put(&q, &["a", "b", "c"]);
    assert_eq!(
        (outcome.accepted, outcome.refused),
        (2, Some(Refusal::Full))
    );
    assert_eq!(put(&q, &["long"]).refused, Some(Refusal::TooLarge));
    q.set_config(Arc::new(QueueConfig {
        discard_old_when_full: true,
        ..config
    }));
    assert_eq!(put(&q, &["c"]).accepted, 1);
    let snap = q.stats();
    assert_eq!((snap.items, snap.counters.discarded), (2, 1));
    assert_eq!(snap.head.as_deref(), Some(&b"b"[..]));
}

#[tokio::test]
async fn deleted_queue_refuses_puts() {
    let q = queue();
    put(&q, &["a"]);
    q.delete();
    assert!(q.put([Bytes::from_static(b"x")], None).is_err());
    assert!(get(&q, 1, ReadKind::Take).await.is_empty());
}

fn journaled(dir: &std::path::Path, max_memory_size: u64) -> (QueueConfig, JournalConfig) {
    let config = QueueConfig {
        max_memory_size,
        sync_journal: SyncMode::Never,
        max_journal_size: 4096,
        ..QueueConfig::default()
    };
    let journal = config.journal().unwrap();
    let _ = dir;
    (config, journal)
}

fn open_journaled(dir: &std::path::Path, max_memory_size: u64) -> Arc<Queue> {
    let (config, jc) = journaled(dir, max_memory_size);
    // An empty directory recovers as an empty queue.
    let (journal, recovery) = Journal::recover(dir, jc, "q", &Journals::new(16)).unwrap();
    Arc::new(Queue::new(
        "q".into(),
        Arc::new(config),
        Arc::new(XidSource::new()),
        Some(journal),
        Some(recovery),
    ))
}

async fn put_acked(q: &Queue, item: &str) {
    let (outcome, ack) = q
        .put([Bytes::copy_from_slice(item.as_bytes())], None)
        .unwrap();
    assert_eq!(outcome.accepted, 1);
    ack.unwrap().wait().await.unwrap();
}

#[tokio::test]
async fn read_behind_keeps_memory_bounded_and_order_intact() {
    let dir = tempfile::tempdir().unwrap();
    let q = open_journaled(dir.path(), 100);
    for i in 0..200 {
        put_acked(&q, &format!("item-{i:04}")).await;
    }
    let snap = q.stats();
    assert_eq!(snap.items, 200);
    assert!(snap.mem_bytes <= 100, "{}", snap.mem_bytes);
    let mut got = Vec::new();
    loop {
        let taken = get(&q, 3, ReadKind::Take).await;
        if taken.is_empty() {
            break;
        }
        assert!(q.stats().mem_bytes <= 100);
        got.extend(data(&taken));
    }
    let want: Vec<String> = (0..200).map(|i| format!("item-{i:04}")).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn recovery_restores_items_and_rolls_back_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q = open_journaled(dir.path(), 1 << 20);
        for item in ["a", "b", "c", "d"] {
            put_acked(&q, item).await;
        }
        let (taken, ack) = q.get(1, None, ReadKind::Take).await;
        assert_eq!(data(&taken), ["a"]);
        ack.unwrap().wait().await.unwrap();
        let (opened, ack) = q.get(2, None, ReadKind::Open).await;
        assert_eq!(data(&opened), ["b", "c"]);
        ack.unwrap().wait().await.unwrap();
        let (n, ack) = q.confirm(&[opened[1].xid.unwrap()]);
        assert_eq!(n, 1);
        ack.unwrap().wait().await.unwrap();
        // "b" is still open when the process "dies".
    }
    let q = open_journaled(dir.path(), 1 << 20);
    assert_eq!(q.stats().items, 2);
    assert_eq!(data(&get(&q, 10, ReadKind::Take).await), ["b", "d"]);
}

#[tokio::test]
async fn one_read_takes_at_most_its_byte_budget_and_at_least_one_item() {
    let q = queue();
    let mib = Bytes::from(vec![b'x'; 1 << 20]);
    q.put((0..20).map(|_| mib.clone()), None).unwrap();
    let got = get(&q, usize::MAX, ReadKind::Take).await;
    assert_eq!(got.len() as u64, MAX_READ_BYTES >> 20);
    assert_eq!(get(&q, usize::MAX, ReadKind::Take).await.len(), 4);
    // An item bigger than the budget still comes out, alone.
    let huge = Bytes::from(vec![b'y'; MAX_READ_BYTES as usize + 1]);
    q.put([huge.clone(), mib.clone()], None).unwrap();
    let got = get(&q, 10, ReadKind::Take).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].item.data, huge);
}

#[test]
fn a_flush_keeps_the_directory_while_a_maintenance_job_works_on_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let q = open_journaled(dir.path(), 1 << 20);
    put(&q, &["a"]);
    let asked = std::cell::Cell::new(0);
    let fresh = |_| {
        asked.set(asked.get() + 1);
        None
    };
    // A job in flight (it holds the files outside the state lock): the
    // directory must not be swapped under it, so the flush is journaled.
    let job = q.files.lock().unwrap();
    q.flush(fresh);
    assert_eq!(
        asked.get(),
        0,
        "no fresh journal while a job works on the files"
    );
    drop(job);
    put(&q, &["b"]);
    q.flush(fresh);
    assert_eq!(asked.get(), 1);
    // Moving the directory away waits for the job in flight.
    let job = q.files.lock().unwrap();
    use std::sync::atomic::{AtomicBool, Ordering};
    let moved = AtomicBool::new(false);
    std::thread::scope(|s| {
        let mover = s.spawn(|| q.with_files_still(|| moved.store(true, Ordering::SeqCst)));
        std::thread::sleep(Duration::from_millis(50)); // the wait itself is under test
        assert!(!moved.load(Ordering::SeqCst), "moved while the job ran");
        drop(job);
        mover.join().unwrap();
    });
    assert!(moved.load(Ordering::SeqCst));
}
