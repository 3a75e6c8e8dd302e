//! The journal against real files: recovery, damage, read-behind and
//! reclamation.

use super::*;
use crate::config::SyncMode;
use std::fs;
use std::time::Duration;

fn config(segment_size: u64) -> JournalConfig {
    JournalConfig {
        sync: SyncMode::Never,
        segment_size,
    }
}

fn files() -> Arc<Journals> {
    Journals::new(16)
}

fn add(seq: u64, len: usize) -> Record {
    Record::Add {
        seq,
        added_ms: 1,
        expires_ms: None,
        data: Bytes::from(vec![b'a' + (seq % 26) as u8; len]),
    }
}

async fn append_all(j: &mut Journal, records: impl IntoIterator<Item = Record>) {
    let mut last = None;
    for r in records {
        last = Some(j.append(r));
    }
    if let Some(ack) = last {
        ack.wait().await.unwrap();
    }
}

fn journal_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// The sequence numbers of every live item, read back from disk.
fn live_seqs(j: &mut Journal) -> Vec<u64> {
    let read = j.read_items(0, u64::MAX, 0).unwrap();
    read.items.iter().map(|i| i.seq).collect()
}

/// Runs maintenance until nothing is left to reclaim, checkpointing first.
fn maintain(j: &mut Journal) {
    if let Some(job) = j.checkpoint_job(true) {
        job.run().unwrap();
        j.checkpoint_done(&job);
    }
    while let Some(job) = j.reclaim_job() {
        let done = job.run().unwrap();
        j.reclaim_done(done);
    }
}

#[tokio::test]
async fn recovery_replays_after_the_checkpoint_and_rolls_back_open_items() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(dir.path(), config(1 << 20), "q", &files(), 5);
    append_all(&mut j, (1..=5).map(|s| add(s, 10))).await;
    append_all(
        &mut j,
        [
            Record::Remove { seq: 1, size: 10 },
            Record::Open { seq: 2, size: 10 },
        ],
    )
    .await;
    let job = j.checkpoint_job(true).unwrap();
    job.run().unwrap();
    j.checkpoint_done(&job);
    append_all(
        &mut j,
        [
            add(6, 10),
            Record::Open { seq: 3, size: 10 },
            Record::Remove { seq: 3, size: 10 },
        ],
    )
    .await;
    drop(j);

    let (mut j, r) = Journal::recover(dir.path(), config(1 << 20), "q", &files()).unwrap();
    assert_eq!(
        r,
        Recovery {
            next_seq: 7,
            items: 4,
            bytes: 40,
            first_live: Some(2),
            created_ms: 5,
            rolled_back: 1
        }
    );
    let got = live_seqs(&mut j);
    assert_eq!(got, [2, 4, 5, 6]);
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_appends_continue_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(dir.path(), config(1 << 20), "q", &files(), 0);
    append_all(&mut j, (1..=3).map(|s| add(s, 100))).await;
    drop(j);
    let seg = segment::path(dir.path(), 1);
    let full = fs::metadata(&seg).unwrap().len();
    // Tear the third record and add garbage after it.
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(full - 10).unwrap();
    drop(f);
    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(b"\x13\x37garbage");
    fs::write(&seg, bytes).unwrap();

    let (mut j, r) = Journal::recover(dir.path(), config(1 << 20), "q", &files()).unwrap();
    assert_eq!((r.items, r.next_seq), (2, 3));
    assert_eq!(fs::metadata(&seg).unwrap().len(), full - (ADD_LEN + 100));
    append_all(&mut j, [add(3, 100)]).await;
    drop(j);
    let (mut j, r) = Journal::recover(dir.path(), config(1 << 20), "q", &files()).unwrap();
    assert_eq!(r.items, 3);
    let got = live_seqs(&mut j);
    assert_eq!(got, [1, 2, 3]);
}

const ADD_LEN: u64 = record::ADD_OVERHEAD as u64;

/// Ten 50-byte items in one segment, then `damage` applied to the file's
/// bytes, given the offset of the fifth record. Returns the segment's path.
async fn ten_items_damaged(dir: &Path, damage: impl FnOnce(&mut [u8], usize)) -> PathBuf {
    let mut j = Journal::create(dir, config(1 << 20), "q", &files(), 0);
    append_all(&mut j, (1..=10).map(|s| add(s, 50))).await;
    drop(j);
    let seg = segment::path(dir, 1);
    let mut bytes = fs::read(&seg).unwrap();
    damage(&mut bytes, 4 * (ADD_LEN as usize + 50));
    fs::write(&seg, bytes).unwrap();
    seg
}

#[tokio::test]
async fn a_damaged_record_loses_only_itself() {
    let dir = tempfile::tempdir().unwrap();
    ten_items_damaged(dir.path(), |bytes, fifth| bytes[fifth + 40] ^= 0x01).await;
    let (mut j, r) = Journal::recover(dir.path(), config(1 << 20), "q", &files()).unwrap();
    assert_eq!(r.items, 9);
    let got = live_seqs(&mut j);
    assert_eq!(got, [1, 2, 3, 4, 6, 7, 8, 9, 10]);
}

#[tokio::test]
async fn a_damaged_length_loses_only_its_record_and_appends_go_after_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    // The fifth record now claims to run far past the end of the file.
    let seg = ten_items_damaged(dir.path(), |bytes, fifth| bytes[fifth + 2] = 0x10).await;
    let size = fs::metadata(&seg).unwrap().len();
    let (mut j, r) = Journal::recover(dir.path(), config(1 << 20), "q", &files()).unwrap();
    assert_eq!(r.items, 9);
    assert_eq!(fs::metadata(&seg).unwrap().len(), size, "nothing cut");
    // New records go after everything the file holds, and survive a restart.
    append_all(&mut j, [add(11, 50)]).await;
    drop(j);
    let (mut j, r) = Journal::recover(dir.path(), config(1 << 20), "q", &files()).unwrap();
    assert_eq!(r.items, 10);
    assert_eq!(live_seqs(&mut j), [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]);
}

#[tokio::test]
async fn the_older_checkpoint_takes_over_from_a_damaged_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(dir.path(), config(1 << 20), "q", &files(), 0);
    append_all(&mut j, (1..=4).map(|s| add(s, 10))).await;
    maintain(&mut j);
    append_all(&mut j, [Record::Remove { seq: 1, size: 10 }, add(5, 10)]).await;
    maintain(&mut j);
    drop(j);
    let newest = checkpoint::load(dir.path(), &checkpoint::FILES.map(String::from))[0].generation;
    fs::write(
        dir.path().join(format!("checkpoint.{}", newest % 2)),
        b"damaged",
    )
    .unwrap();
    let (mut j, r) = Journal::recover(dir.path(), config(1 << 20), "q", &files()).unwrap();
    assert_eq!((r.items, r.next_seq), (4, 6));
    let got = live_seqs(&mut j);
    assert_eq!(got, [2, 3, 4, 5]);
}

#[tokio::test]
async fn read_behind_follows_a_segment_that_grew_after_it_was_read() {
    // The reader reaches the end of the active segment; more items land in it
    // until it fills and the journal moves on. Reading on must find them.
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(dir.path(), config(1000), "q", &files(), 0);
    append_all(&mut j, (1..=2).map(|s| add(s, 100))).await;
    let first = j.read_items(1, u64::MAX, 0).unwrap();
    assert_eq!(first.items.len(), 2);
    append_all(&mut j, (3..=30).map(|s| add(s, 100))).await;
    assert!(segment::list_dir(dir.path()).unwrap().segments.len() > 2);
    let rest = j.read_items(3, u64::MAX, 0).unwrap();
    assert_eq!(rest.lost, 0);
    let seqs: Vec<u64> = rest.items.iter().map(|i| i.seq).collect();
    assert_eq!(seqs, (3..=30).collect::<Vec<_>>());
}

#[tokio::test]
async fn read_behind_crosses_segments_and_respects_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(dir.path(), config(1000), "q", &files(), 0);
    append_all(&mut j, (1..=50).map(|s| add(s, 100))).await;
    assert!(segment::list_dir(dir.path()).unwrap().segments.len() > 5);
    let mut from = 1;
    let mut seen = Vec::new();
    loop {
        let batch = j.read_items(from, 350, 0).unwrap();
        if batch.items.is_empty() {
            break;
        }
        assert!(
            batch.items.len() <= 3,
            "{} items over a 350-byte budget",
            batch.items.len()
        );
        from = batch.items.last().unwrap().seq + 1;
        seen.extend(batch.items.iter().map(|i| i.seq));
    }
    assert_eq!(seen, (1..=50).collect::<Vec<_>>());
}

#[tokio::test]
async fn consumed_segments_are_deleted_and_sparse_ones_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(dir.path(), config(4096), "q", &files(), 0);
    // 200 items of 100 bytes: about 27 KB over seven segments.
    append_all(&mut j, (1..=200).map(|s| add(s, 100))).await;
    // Consume all but one item in ten, as with a few long-held open reads.
    let removes: Vec<Record> = (1..=200)
        .filter(|s| s % 10 != 0)
        .map(|seq| Record::Remove { seq, size: 100 })
        .collect();
    append_all(&mut j, removes).await;
    let before = journal_bytes(dir.path());
    maintain(&mut j);
    maintain(&mut j);
    let after = journal_bytes(dir.path());
    let live = 20 * (ADD_LEN + 100);
    assert!(after < before / 2, "{before} -> {after}");
    // Within twice the live data, plus the active segment and checkpoints.
    assert!(
        after <= 2 * live + 4096 + 1024,
        "{after} bytes for {live} live"
    );
    let got = live_seqs(&mut j);
    assert_eq!(got, (1..=20).map(|k| k * 10).collect::<Vec<_>>());
    drop(j);
    let (mut j, r) = Journal::recover(dir.path(), config(4096), "q", &files()).unwrap();
    assert_eq!(r.items, 20);
    let got = live_seqs(&mut j);
    assert_eq!(got.len(), 20);
    // A flush makes everything reclaimable.
    append_all(
        &mut j,
        [Record::Flush {
            below: 201,
            keep: Some(Vec::new()),
        }],
    )
    .await;
    maintain(&mut j);
    maintain(&mut j);
    assert!(
        journal_bytes(dir.path()) < 4096 + 1024,
        "{}",
        journal_bytes(dir.path())
    );
}

#[tokio::test]
async fn a_checkpoint_waits_for_the_log_it_describes() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(
        dir.path(),
        JournalConfig {
            sync: SyncMode::Every(Duration::from_secs(3600)),
            segment_size: 1 << 20,
        },
        "q",
        &files(),
        0,
    );
    // Appended, never awaited: the checkpoint must still find it on disk.
    let _ = j.append(add(1, 10));
    maintain(&mut j);
    drop(j);
    let (_, r) = Journal::recover(dir.path(), config(1 << 20), "q", &files()).unwrap();
    assert_eq!(r.items, 1);
}

#[tokio::test]
async fn turnover_counts_segments_started_and_reclaimed() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(dir.path(), config(4096), "q", &files(), 0);
    let turnover = |j: &Journal| (j.turnover().rotations, j.turnover().rewrites);
    // A small item, then four of 1000 bytes: segment 1 is full after them.
    append_all(&mut j, [add(1, 10)]).await;
    append_all(&mut j, (2..=5).map(|s| add(s, 1000))).await;
    assert_eq!(turnover(&j), (0, 0));
    // Their removals start segment 2.
    let removes = (2..=5).map(|seq| Record::Remove { seq, size: 1000 });
    append_all(&mut j, removes).await;
    assert_eq!(turnover(&j), (1, 0));
    // Segment 1 is rewritten down to the small item, once.
    maintain(&mut j);
    maintain(&mut j);
    assert_eq!(turnover(&j), (1, 1));
    assert_eq!(
        fs::metadata(segment::path(dir.path(), 1)).unwrap().len(),
        ADD_LEN + 10
    );
    maintain(&mut j);
    assert_eq!(turnover(&j), (1, 1));
    // Consumed, it is deleted: a second reclamation.
    append_all(&mut j, [Record::Remove { seq: 1, size: 10 }]).await;
    maintain(&mut j);
    maintain(&mut j);
    assert_eq!(turnover(&j), (1, 2));
    assert!(!segment::path(dir.path(), 1).exists());
    // Recovery starts counting afresh, as Kestrel's counters did.
    drop(j);
    let (j, _) = Journal::recover(dir.path(), config(4096), "q", &files()).unwrap();
    assert_eq!(turnover(&j), (0, 0));
}

/// Every file of `dir` with its bytes, to show that nothing changed.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

/// What [`inspect::Records`] yields for segment `id`, as short words.
fn entries(look: &inspect::Inspection, id: u64) -> Vec<String> {
    let mut records = look.records(id).unwrap().unwrap();
    let mut out = Vec::new();
    loop {
        match records.next_entry().unwrap() {
            inspect::Entry::Record { offset, record, .. } => {
                out.push(format!("{offset}:{}", record.seq()))
            }
            inspect::Entry::Damaged(d) => out.push(format!("damaged {}+{}", d.offset, d.len)),
            inspect::Entry::End { valid_len, tail } => {
                out.push(format!("end {valid_len}"));
                out.extend(tail.map(|t| {
                    format!(
                        "tail {}+{} cut short {}",
                        t.damage.offset, t.damage.len, t.cut_short
                    )
                }));
                return out;
            }
        }
    }
}

#[tokio::test]
async fn an_inspection_finds_what_recovery_finds_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut j = Journal::create(dir.path(), config(1 << 20), "q", &files(), 5);
    append_all(&mut j, (1..=5).map(|s| add(s, 10))).await;
    append_all(
        &mut j,
        [
            Record::Remove { seq: 1, size: 10 },
            Record::Open { seq: 2, size: 10 },
        ],
    )
    .await;
    maintain(&mut j);
    append_all(&mut j, [add(6, 10), Record::Open { seq: 3, size: 10 }]).await;
    drop(j);
    // A record torn at the end of the segment, as a crash leaves it.
    let seg = segment::path(dir.path(), 1);
    let mut bytes = fs::read(&seg).unwrap();
    let whole = bytes.len() as u64;
    let mut torn = bytes::BytesMut::new();
    add(7, 10).encode(&mut torn);
    bytes.extend_from_slice(&torn[..20]);
    fs::write(&seg, bytes).unwrap();

    let before = snapshot(dir.path());
    let look = inspect::Inspection::open(dir.path()).unwrap();
    assert_eq!(snapshot(dir.path()), before, "an inspection writes nothing");
    assert_eq!(look.segments, [1]);
    assert_eq!(look.generation, Some(1));
    assert_eq!(
        look.open.iter().map(|(&s, &z)| (s, z)).collect::<Vec<_>>(),
        [(2, 10), (3, 10)]
    );
    let seen = entries(&look, 1);
    assert_eq!(seen[..3], ["0:1", "43:2", "86:3"]);
    assert_eq!(
        seen[seen.len() - 2..],
        [
            format!("end {whole}"),
            format!("tail {whole}+20 cut short true")
        ]
    );
    let live: Vec<u64> = (1..=7).filter(|&s| look.is_live(s)).collect();

    let (mut j, r) = Journal::recover(dir.path(), config(1 << 20), "q", &files()).unwrap();
    assert_eq!(look.recovery, r);
    assert_eq!(r.rolled_back, 2);
    assert_eq!(live, live_seqs(&mut j));
    assert_eq!(fs::metadata(&seg).unwrap().len(), whole, "recovery cut it");
}

#[tokio::test]
async fn an_inspection_shows_damage_recovery_steps_over() {
    let dir = tempfile::tempdir().unwrap();
    ten_items_damaged(dir.path(), |bytes, fifth| bytes[fifth + 40] ^= 0x01).await;
    let look = inspect::Inspection::open(dir.path()).unwrap();
    assert_eq!((look.recovery.items, look.generation), (9, None));
    let record = ADD_LEN + 50;
    let seen = entries(&look, 1);
    assert_eq!(seen[4], format!("damaged {}+{record}", 4 * record));
    assert_eq!(seen[5], format!("{}:6", 5 * record));
    assert_eq!(seen.last().unwrap(), &format!("end {}", 10 * record));
    assert!(look.records(2).unwrap().is_none(), "no such segment");
}
