//! `kestrel dump-journal`: what a queue's journal holds, for operators and
//! bug reports. By default a summary: what each checkpoint says, each
//! segment (size, records by kind, the items it adds, damage) and the queue
//! a start would recover; `--records` prints every record, one a line, as
//! Kestrel's `qdump` did; `--items` the live items in queue order.
//!
//! Safe beside a running server: it takes no lock, opens files for reading
//! only and writes nothing. The reading, and the arithmetic of recovery, are
//! the journal's own ([`crate::journal::inspect`]); this module presents
//! them.

use std::fmt::Write as _;
use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use serde_json::{Value, json};

use super::admin::item_json;
use crate::journal::Record;
use crate::journal::checkpoint::{Checkpoint, Stored};
use crate::journal::inspect::{Damage, Entry, Inspection, Tail, file_name};
use crate::queue::dirs;

const EXIT_CODES: &str = "\
Exit codes:
  0  read, and no damage found (a record still being written at the end of
     the newest segment, while the server runs, is not damage)
  1  cannot read it: not a queue's directory, or an I/O error
  2  usage error: bad arguments
  3  damage found, and printed where it is (with --items, on stderr): bytes
     that hold no intact record, which a start steps over or cuts off; a
     damaged checkpoint file; live items whose record is missing. All else
     is printed as a start reads it.

Read-only: no lock is taken, files are opened for reading only and nothing
is written, so it is safe while the server runs (records it appends
meanwhile may or may not be seen). With --json the summary is one JSON
object; --records and --items print one JSON object per line.";

/// Characters of an item's data that `--items` shows without `--full`.
const DATA_WIDTH: usize = 64;

/// Runs of live items, and open reads, that a checkpoint's summary lists.
const LISTED: usize = 8;

/// The exit status that says damage was found.
const DAMAGE_FOUND: u8 = 3;

/// Record kinds, in the order the summary counts them.
const KINDS: [&str; 5] = ["ADD", "REMOVE", "OPEN", "ABORT", "FLUSH"];

/// Print what a queue's journal holds: checkpoints, segments, records or
/// live items. Read-only; safe while the server runs.
#[derive(Args, Debug)]
#[command(after_help = EXIT_CODES)]
pub struct DumpArgs {
    /// The queue's directory: DATA_DIR/queues/NAME.
    #[arg(value_name = "QUEUE_DIR")]
    pub dir: PathBuf,
    /// Print every record of every segment, one a line, instead of the
    /// summary.
    #[arg(long, conflicts_with = "items")]
    pub records: bool,
    /// Print the live items in queue order, as a start would serve them,
    /// instead of the summary.
    #[arg(long)]
    pub items: bool,
    /// With --items, print items whole (the first 64 characters otherwise).
    #[arg(long, requires = "items")]
    pub full: bool,
    /// Print JSON for scripts (items always whole).
    #[arg(long)]
    pub json: bool,
}

/// Why a dump failed.
#[derive(Debug, thiserror::Error)]
enum DumpError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "{} is not a directory: give a queue's directory, DATA_DIR/queues/NAME",
        path.display()
    )]
    NotADirectory { path: PathBuf },
    #[error(
        "{} is not a queue's directory ({why}): give a queue's directory, DATA_DIR/queues/NAME",
        path.display()
    )]
    NotAQueue { path: PathBuf, why: String },
    #[error("cannot write the output: {0}")]
    Output(io::Error),
}

/// Runs `dump-journal` and tells how it ended (see [`EXIT_CODES`]).
pub fn run(args: DumpArgs) -> ExitCode {
    let mut out = BufWriter::new(io::stdout().lock());
    let result = dump(&args, &mut out).and_then(|damaged| {
        out.flush().map_err(DumpError::Output)?;
        Ok(damaged)
    });
    match result {
        Ok(false) => ExitCode::SUCCESS,
        Ok(true) => ExitCode::from(DAMAGE_FOUND),
        // The reader stopped reading (`| head`): nothing to report.
        Err(DumpError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            if args.json {
                eprintln!("{}", json!({"error": e.to_string(), "exit_code": 1}));
            } else {
                eprintln!("kestrel dump-journal: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

type Out<'a> = BufWriter<io::StdoutLock<'a>>;

/// Prints what the mode asks; returns whether damage was found.
fn dump(args: &DumpArgs, out: &mut Out) -> Result<bool, DumpError> {
    let (dir, queue, look) = open(&args.dir)?;
    if args.records {
        records(&dir, &look, args.json, out)
    } else if args.items {
        items(&dir, &look, args.full, args.json, out)
    } else {
        summary(&dir, queue.as_deref(), &look, args.json, out)
    }
}

/// Looks at `given`, or says why it is not a queue's directory: one holds
/// nothing but journal files and a `NAME`, and its name (or `NAME`, or a
/// checkpoint) names its queue; one moved aside as unidentifiable still
/// holds journal files.
fn open(given: &Path) -> Result<(PathBuf, Option<String>, Inspection), DumpError> {
    let read = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DumpError::Read { path, source }
    };
    let dir = fs::canonicalize(given).map_err(read(given))?;
    if !fs::metadata(&dir).map_err(read(&dir))?.is_dir() {
        return Err(DumpError::NotADirectory { path: dir });
    }
    let look = Inspection::open(&dir).map_err(read(&dir))?;
    let foreign: Vec<&String> = look
        .others
        .iter()
        .filter(|name| *name != dirs::NAME_FILE)
        .collect();
    if let Some(first) = foreign.first() {
        let more = match foreign.len() {
            1 => String::new(),
            2 => " and 1 other entry".into(),
            n => format!(" and {} other entries", n - 1),
        };
        return Err(DumpError::NotAQueue {
            path: dir,
            why: format!("it holds {first:?}{more}, which no journal writes"),
        });
    }
    let queue = dirs::queue_in(&dir);
    if queue.is_none() && look.segments.is_empty() && look.checkpoints.is_empty() {
        return Err(DumpError::NotAQueue {
            path: dir,
            why: "its name is not a queue's and it holds no journal file".into(),
        });
    }
    Ok((dir, queue, look))
}

/// One segment as the walk read it.
#[derive(Debug, Default)]
struct SegmentFacts {
    id: u64,
    /// Its size, or `None` if it was gone by the time it was read.
    size: Option<u64>,
    /// Records of each of [`KINDS`].
    kinds: [u64; 5],
    /// The lowest and highest sequence numbers of its ADD records.
    adds: Option<(u64, u64)>,
    /// Live items whose ADD it holds.
    live: u64,
    damage: Vec<Damage>,
    tail: Option<Tail>,
    /// The newest segment: a record cut short at its end is being written.
    newest: bool,
}

impl SegmentFacts {
    /// A tail that is a record being written, not damage.
    fn in_progress(&self) -> bool {
        self.newest && self.tail.is_some_and(|t| t.cut_short)
    }
}

/// What walking every segment found.
struct Walk {
    segments: Vec<SegmentFacts>,
    /// Bytes without intact records, but for a record being written.
    damaged: bool,
    /// Live items whose record was not found, and still live: lost to
    /// damage.
    lost: u64,
    /// Live items whose record was not found, served since and their
    /// records reclaimed by the server while the walk ran.
    served: u64,
}

/// What the walk shows as it reads it.
enum Seen<'a> {
    /// A record; `item` when it is the ADD of an item a start would serve.
    Record {
        facts: &'a SegmentFacts,
        offset: u64,
        record: &'a Record,
        item: bool,
    },
    Damaged {
        facts: &'a SegmentFacts,
        damage: Damage,
    },
    Tail {
        facts: &'a SegmentFacts,
        tail: Tail,
    },
    Gone {
        facts: &'a SegmentFacts,
    },
}

fn kind(record: &Record) -> usize {
    match record {
        Record::Add { .. } => 0,
        Record::Remove { .. } => 1,
        Record::Open { .. } => 2,
        Record::Abort { .. } => 3,
        Record::Flush { .. } => 4,
    }
}

/// Reads every segment in order, telling `show` what it finds.
fn walk(
    look: &Inspection,
    dir: &Path,
    mut show: impl FnMut(Seen) -> Result<(), DumpError>,
) -> Result<Walk, DumpError> {
    let mut segments = Vec::with_capacity(look.segments.len());
    let mut damaged = false;
    // ADDs are in sequence order: a live item's first ADD is the one served.
    let mut next_item = 0u64;
    // Live items whose ADD was not found, as runs `[start, end)`.
    let mut missing = Vec::new();
    for &id in &look.segments {
        let mut facts = SegmentFacts {
            id,
            newest: look.segments.last() == Some(&id),
            ..SegmentFacts::default()
        };
        let read = |source| DumpError::Read {
            path: dir.join(file_name(id)),
            source,
        };
        let Some(mut records) = look.records(id).map_err(read)? else {
            show(Seen::Gone { facts: &facts })?;
            segments.push(facts);
            continue;
        };
        facts.size = Some(records.file_len());
        loop {
            match records.next_entry().map_err(read)? {
                Entry::Record { offset, record, .. } => {
                    facts.kinds[kind(&record)] += 1;
                    let seq = record.seq();
                    let item = matches!(record, Record::Add { .. })
                        && seq >= next_item
                        && look.is_live(seq);
                    if let Record::Add { .. } = record {
                        facts.adds =
                            Some(facts.adds.map_or((seq, seq), |(first, last)| {
                                (first.min(seq), last.max(seq))
                            }));
                    }
                    if item {
                        note_missing(look, next_item, seq, &mut missing);
                        facts.live += 1;
                        next_item = seq + 1;
                    }
                    show(Seen::Record {
                        facts: &facts,
                        offset,
                        record: &record,
                        item,
                    })?;
                }
                Entry::Damaged(damage) => {
                    damaged = true;
                    facts.damage.push(damage);
                    show(Seen::Damaged {
                        facts: &facts,
                        damage,
                    })?;
                }
                Entry::End { tail, .. } => {
                    if let Some(tail) = tail {
                        facts.tail = Some(tail);
                        damaged |= !facts.in_progress();
                        show(Seen::Tail {
                            facts: &facts,
                            tail,
                        })?;
                    }
                    break;
                }
            }
        }
        segments.push(facts);
    }
    note_missing(look, next_item, u64::MAX, &mut missing);
    let (lost, served) = confirm(dir, &missing)?;
    Ok(Walk {
        segments,
        damaged,
        lost,
        served,
    })
}

/// Adds the live items in `[from, to)` to the runs `missing`.
fn note_missing(look: &Inspection, from: u64, to: u64, missing: &mut Vec<(u64, u64)>) {
    for (start, end) in look.live_within(from, to) {
        match missing.last_mut() {
            Some((_, last)) if *last == start => *last = end,
            _ => missing.push((start, end)),
        }
    }
}

/// Splits the live items whose ADD the walk did not find into those lost
/// to damage and those the server served, and reclaimed the records of,
/// while the walk ran: by a fresh look. An item still live in it was live
/// all along, so the server never reclaimed its ADD, and the walk missed
/// it only because it is damaged or gone.
fn confirm(dir: &Path, missing: &[(u64, u64)]) -> Result<(u64, u64), DumpError> {
    if missing.is_empty() {
        return Ok((0, 0));
    }
    let now = Inspection::open(dir).map_err(|source| DumpError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let (mut lost, mut served) = (0, 0);
    for &(start, end) in missing {
        let still: u64 = now.live_within(start, end).map(|(s, e)| e - s).sum();
        lost += still;
        served += end - start - still;
    }
    Ok((lost, served))
}

impl Walk {
    /// Whether anything was found damaged: bytes, a checkpoint file, or
    /// items lost.
    fn damage(&self, look: &Inspection) -> bool {
        self.damaged || look.checkpoints.iter().any(|c| c.contents.is_none()) || self.lost > 0
    }

    /// What went missing, in words: the lost items, then those served
    /// meanwhile.
    fn missing_text(&self) -> Vec<String> {
        let items = |n: u64| if n == 1 { "item has" } else { "items have" };
        let mut text = Vec::new();
        if self.lost > 0 {
            let n = self.lost;
            text.push(format!(
                "{n} live {} no intact record: lost to damage",
                items(n)
            ));
        }
        if self.served > 0 {
            let n = self.served;
            text.push(format!(
                "{n} live {} no record left: served, and the records reclaimed, while this ran",
                items(n)
            ));
        }
        text
    }
}

/// Says on stderr what `--records` and `--items` do not show on stdout:
/// damaged checkpoint files and missing items.
fn notes(look: &Inspection, walk: &Walk) {
    for c in look.checkpoints.iter().filter(|c| c.contents.is_none()) {
        eprintln!("kestrel dump-journal: {}", checkpoint_damage(c));
    }
    for text in walk.missing_text() {
        eprintln!("kestrel dump-journal: {text}");
    }
}

fn checkpoint_damage(c: &Stored) -> String {
    match &c.size {
        Ok(size) => format!(
            "{} is DAMAGED: not an intact checkpoint ({size} bytes); a start ignores it",
            c.file
        ),
        Err(e) => format!("{} cannot be read: {e}; a start ignores it", c.file),
    }
}

// --- --records ----------------------------------------------------------------

/// What a damaged stretch or tail is, for `--records` and `--items`.
fn damage_text(facts: &SegmentFacts, tail: Option<Tail>) -> (&'static str, &'static str) {
    match tail {
        None => (
            "DAMAGED",
            "no intact record; a start steps over these bytes",
        ),
        Some(_) if facts.in_progress() => (
            "TORN",
            "a record cut short at the end of the newest segment: being written, or torn by a \
             crash; a start cuts it off",
        ),
        Some(t) if t.cut_short => ("TORN", "a record cut short; a start cuts it off"),
        Some(_) => (
            "DAMAGED",
            "no intact record to the end of the file; a start cuts it off",
        ),
    }
}

/// The text fields of a record, after its kind.
fn record_fields(record: &Record) -> String {
    match record {
        Record::Add {
            seq,
            added_ms,
            expires_ms,
            data,
        } => format!(
            "seq={seq} size={} added={} expires={}",
            data.len(),
            utc(*added_ms),
            expires_ms.map_or("never".into(), utc)
        ),
        Record::Remove { seq, size } | Record::Open { seq, size } => {
            format!("seq={seq} size={size}")
        }
        Record::Abort { seq } => format!("seq={seq}"),
        Record::Flush { below, keep: None } => {
            format!("below={below} (an older FLUSH: the reads open then stay)")
        }
        Record::Flush {
            below,
            keep: Some(keep),
        } => {
            let kept: Vec<String> = keep.iter().map(|(s, z)| format!("{s}:{z}")).collect();
            format!("below={below} keep={}", kept.join(","))
        }
    }
}

/// A record as JSON.
fn record_json(file: &str, offset: u64, record: &Record) -> Value {
    let mut v = json!({"segment": file, "offset": offset, "kind": KINDS[kind(record)]});
    let fields = match record {
        Record::Add {
            seq,
            added_ms,
            expires_ms,
            data,
        } => {
            json!({"seq": seq, "size": data.len(), "added_ms": added_ms, "expires_ms": expires_ms})
        }
        Record::Remove { seq, size } | Record::Open { seq, size } => {
            json!({"seq": seq, "size": size})
        }
        Record::Abort { seq } => json!({"seq": seq}),
        Record::Flush { below, keep } => json!({
            "below": below,
            "keep": keep.as_ref().map(|k| k.iter().map(|(s, z)| json!({"seq": s, "size": z})).collect::<Vec<_>>()),
        }),
    };
    if let (Some(v), Value::Object(fields)) = (v.as_object_mut(), fields) {
        v.extend(fields);
    }
    v
}

fn records(dir: &Path, look: &Inspection, json: bool, out: &mut Out) -> Result<bool, DumpError> {
    let walk = walk(look, dir, |seen| {
        let line = match seen {
            Seen::Record {
                facts,
                offset,
                record,
                ..
            } => {
                let file = file_name(facts.id);
                if json {
                    record_json(&file, offset, record).to_string()
                } else {
                    format!(
                        "{file} {offset:>10} {:<7} {}",
                        KINDS[kind(record)],
                        record_fields(record)
                    )
                }
            }
            Seen::Damaged { facts, damage } => damage_line(facts, damage, None, json),
            Seen::Tail { facts, tail } => damage_line(facts, tail.damage, Some(tail), json),
            Seen::Gone { facts } => {
                let file = file_name(facts.id);
                if json {
                    json!({"segment": file, "kind": "GONE"}).to_string()
                } else {
                    format!(
                        "{file} {:>10} GONE    (reclaimed by the server since it was listed)",
                        "-"
                    )
                }
            }
        };
        writeln!(out, "{line}").map_err(DumpError::Output)
    })?;
    notes(look, &walk);
    Ok(walk.damage(look))
}

fn damage_line(facts: &SegmentFacts, damage: Damage, tail: Option<Tail>, json: bool) -> String {
    let (word, why) = damage_text(facts, tail);
    let file = file_name(facts.id);
    if json {
        json!({"segment": file, "offset": damage.offset, "kind": word, "bytes": damage.len, "why": why})
            .to_string()
    } else {
        format!(
            "{file} {:>10} {word:<7} bytes={} ({why})",
            damage.offset, damage.len
        )
    }
}

// --- --items ------------------------------------------------------------------

fn items(
    dir: &Path,
    look: &Inspection,
    full: bool,
    json: bool,
    out: &mut Out,
) -> Result<bool, DumpError> {
    let now = crate::clock::now_ms();
    let walk = walk(look, dir, |seen| match seen {
        Seen::Record {
            record:
                Record::Add {
                    seq,
                    added_ms,
                    expires_ms,
                    data,
                },
            item: true,
            ..
        } => {
            let open = look.open.contains_key(seq);
            let expired = expires_ms.is_some_and(|at| at <= now);
            let line = if json {
                json!({
                    "seq": seq,
                    "size": data.len(),
                    "added_ms": added_ms,
                    "expires_ms": expires_ms,
                    "open": open,
                    "expired": expired,
                    "data": item_json(data),
                })
                .to_string()
            } else {
                let state = match (open, expired) {
                    (false, false) => "ready",
                    (true, false) => "open",
                    (false, true) => "expired",
                    (true, true) => "open,expired",
                };
                format!(
                    "seq={seq} size={} added={} expires={} state={state} data={}",
                    data.len(),
                    utc(*added_ms),
                    expires_ms.map_or("never".into(), utc),
                    printable(data, (!full).then_some(DATA_WIDTH))
                )
            };
            writeln!(out, "{line}").map_err(DumpError::Output)
        }
        Seen::Record { .. } => Ok(()),
        Seen::Damaged { facts, damage } => {
            eprintln!(
                "kestrel dump-journal: {}",
                damage_line(facts, damage, None, false)
            );
            Ok(())
        }
        Seen::Tail { facts, tail } => {
            if !facts.in_progress() {
                eprintln!(
                    "kestrel dump-journal: {}",
                    damage_line(facts, tail.damage, Some(tail), false)
                );
            }
            Ok(())
        }
        Seen::Gone { .. } => Ok(()),
    })?;
    notes(look, &walk);
    Ok(walk.damage(look))
}

/// An item's bytes for a terminal, unambiguously: UTF-8 text as it is, but a
/// backslash written `\\`, misleading characters ([`crate::name::misleading`]:
/// control, format and separator characters) `\n`, `\r`, `\t` or `\u{…}`,
/// and bytes that are not UTF-8 `\xNN`. With a `limit`, cut after that many
/// characters, with `…`.
fn printable(data: &[u8], limit: Option<usize>) -> String {
    let mut out = String::new();
    let mut shown = 0;
    let mut push = |piece: &str, out: &mut String| {
        let n = piece.chars().count();
        if limit.is_some_and(|limit| shown + n > limit) {
            return false;
        }
        shown += n;
        out.push_str(piece);
        true
    };
    for chunk in data.utf8_chunks() {
        for c in chunk.valid().chars() {
            let piece = match c {
                '\\' => "\\\\".to_string(),
                '\n' => "\\n".to_string(),
                '\r' => "\\r".to_string(),
                '\t' => "\\t".to_string(),
                c if crate::name::misleading(c) => format!("\\u{{{:x}}}", u32::from(c)),
                c => c.to_string(),
            };
            if !push(&piece, &mut out) {
                out.push('…');
                return out;
            }
        }
        for b in chunk.invalid() {
            if !push(&format!("\\x{b:02x}"), &mut out) {
                out.push('…');
                return out;
            }
        }
    }
    out
}

/// A time in milliseconds since the Unix epoch, in UTC:
/// `2025-06-01T12:00:00.000Z`. Any value, however far off, is a date.
fn utc(ms: i64) -> String {
    let (secs, millis) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, secs) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // The proleptic Gregorian date of a day count, by 400-year eras of
    // 146,097 days counted from 0000-03-01 (so leap days end a year).
    let from_march_0000 = days + 719_468;
    let era = from_march_0000.div_euclid(146_097);
    let day_of_era = from_march_0000.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

// --- the summary --------------------------------------------------------------

fn summary(
    dir: &Path,
    queue: Option<&str>,
    look: &Inspection,
    json: bool,
    out: &mut Out,
) -> Result<bool, DumpError> {
    let walk = walk(look, dir, |_| Ok(()))?;
    let damage = walk.damage(look);
    let text = if json {
        summary_json(dir, queue, look, &walk, damage).to_string()
    } else {
        summary_text(dir, queue, look, &walk, damage)
    };
    writeln!(out, "{}", text.trim_end()).map_err(DumpError::Output)?;
    Ok(damage)
}

/// `first-last`, or `first` alone.
fn range(first: u64, last: u64) -> String {
    if first == last {
        first.to_string()
    } else {
        format!("{first}-{last}")
    }
}

/// Sequence-number runs `[start, end)` as text, the first [`LISTED`] of
/// them.
fn runs_text(runs: impl Iterator<Item = (u64, u64)>, count: usize) -> String {
    let mut listed: Vec<String> = runs.take(LISTED).map(|(s, e)| range(s, e - 1)).collect();
    if count > LISTED {
        listed.push(format!("… ({count} runs)"));
    }
    listed.join(", ")
}

fn checkpoint_text(s: &mut String, c: &Checkpoint) {
    let name = match c.name.as_str() {
        "" => "(none: a version 1 checkpoint)".into(),
        // From the disk: shown safely, whatever it holds.
        name => printable(name.as_bytes(), None),
    };
    let _ = writeln!(s, "  queue name    {name}");
    let from = &c.replay_from;
    let _ = writeln!(
        s,
        "  replay from   {}, offset {}",
        file_name(from.segment),
        from.offset
    );
    let _ = writeln!(s, "  next seq      {}", c.next_seq);
    let _ = writeln!(s, "  created       {}", utc(c.created_ms));
    let _ = write!(
        s,
        "  live items    {} ({} bytes)",
        c.live.len(),
        c.live_bytes
    );
    if c.live.len() > 0 {
        let _ = write!(s, ": {}", runs_text(c.live.runs(), c.live.run_count()));
    }
    let _ = writeln!(s);
    let mut open: Vec<String> = c
        .open
        .iter()
        .take(LISTED)
        .map(|(seq, size)| format!("{seq} ({size} bytes)"))
        .collect();
    if c.open.len() > LISTED {
        open.push("…".into());
    }
    let _ = writeln!(
        s,
        "  open reads    {}{}",
        c.open.len(),
        if open.is_empty() {
            String::new()
        } else {
            format!(": {}", open.join(", "))
        }
    );
    for (i, (&id, info)) in c.segments.iter().enumerate() {
        let label = if i == 0 { "segments" } else { "" };
        let adds = info
            .adds
            .map_or("no adds".into(), |(f, l)| format!("adds {}", range(f, l)));
        let _ = writeln!(
            s,
            "  {label:<13} {}: {} bytes, {adds}, live {} bytes",
            file_name(id),
            info.size,
            info.live_bytes
        );
    }
}

fn summary_text(
    dir: &Path,
    queue: Option<&str>,
    look: &Inspection,
    walk: &Walk,
    damage: bool,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "queue         {}",
        queue.unwrap_or("(unknown: the directory's name, NAME file and checkpoints name none)")
    );
    let _ = writeln!(s, "directory     {}", dir.display());
    let _ = writeln!(s);
    if look.checkpoints.is_empty() {
        let _ = writeln!(s, "checkpoints   none: a start replays every segment");
    }
    for c in &look.checkpoints {
        match (&c.contents, &c.size) {
            (Some(cp), Ok(size)) => {
                let newest = if Some(cp.generation) == look.generation {
                    ": a start replays after it"
                } else {
                    ""
                };
                let _ = writeln!(
                    s,
                    "{:<13} {size} bytes, generation {}{newest}",
                    c.file, cp.generation
                );
                checkpoint_text(&mut s, cp);
            }
            _ => {
                let _ = writeln!(s, "{}", checkpoint_damage(c));
            }
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<20} {:>10} {:>7} {:>6} {:>6} {:>6} {:>6} {:>6}  {:<13} {:>6}",
        "segment", "bytes", "records", "ADD", "REMOVE", "OPEN", "ABORT", "FLUSH", "adds", "live"
    );
    if walk.segments.is_empty() {
        let _ = writeln!(s, "(none)");
    }
    for f in &walk.segments {
        let file = file_name(f.id);
        let Some(size) = f.size else {
            let _ = writeln!(
                s,
                "{file:<20} gone: reclaimed by the server since it was listed"
            );
            continue;
        };
        let [add, remove, open, abort, flush] = f.kinds;
        let adds = f.adds.map_or("-".into(), |(a, b)| range(a, b));
        let _ = writeln!(
            s,
            "{file:<20} {size:>10} {:>7} {add:>6} {remove:>6} {open:>6} {abort:>6} {flush:>6}  {adds:<13} {:>6}",
            f.kinds.iter().sum::<u64>(),
            f.live
        );
        for d in &f.damage {
            let (word, why) = damage_text(f, None);
            let _ = writeln!(s, "  offset {}: {word}, {} bytes: {why}", d.offset, d.len);
        }
        if let Some(t) = f.tail {
            let (word, why) = damage_text(f, Some(t));
            let _ = writeln!(
                s,
                "  offset {}: {word}, {} bytes: {why}",
                t.damage.offset, t.damage.len
            );
        }
    }
    let r = &look.recovery;
    let _ = writeln!(s);
    let _ = writeln!(s, "a start would serve");
    let rolled_back = match r.rolled_back {
        0 => String::new(),
        1 => ", 1 open read rolled back among them".into(),
        n => format!(", {n} open reads rolled back among them"),
    };
    let _ = writeln!(
        s,
        "  items       {} ({} bytes){rolled_back}",
        r.items, r.bytes
    );
    let first = r.first_live.map_or("none".into(), |f| format!("from {f}"));
    let _ = writeln!(s, "  seqs        {first}, next {}", r.next_seq);
    let after = look
        .generation
        .map_or("no checkpoint: every segment".into(), |g| {
            format!("after checkpoint generation {g}")
        });
    let _ = writeln!(
        s,
        "  replaying   {} bytes from {}, offset {} ({after})",
        look.replayed,
        file_name(look.replay_from.segment),
        look.replay_from.offset
    );
    for text in walk.missing_text() {
        let _ = writeln!(s, "  missing     {text}");
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "damage        {}",
        if damage { "FOUND (above)" } else { "none" }
    );
    s
}

fn summary_json(
    dir: &Path,
    queue: Option<&str>,
    look: &Inspection,
    walk: &Walk,
    damage: bool,
) -> Value {
    let checkpoints: Vec<Value> = look
        .checkpoints
        .iter()
        .map(|c| {
            let mut v = json!({
                "file": c.file,
                "size": c.size.as_ref().ok(),
                "intact": c.contents.is_some(),
            });
            if let Err(e) = &c.size {
                v["error"] = json!(e);
            }
            if let Some(cp) = &c.contents {
                v["name"] = json!(cp.name);
                v["generation"] = json!(cp.generation);
                v["replay_from"] = json!({
                    "segment": file_name(cp.replay_from.segment),
                    "offset": cp.replay_from.offset,
                });
                v["next_seq"] = json!(cp.next_seq);
                v["created_ms"] = json!(cp.created_ms);
                v["live_items"] = json!(cp.live.len());
                v["live_bytes"] = json!(cp.live_bytes);
                v["live_runs"] = json!(cp.live.runs().map(|(s, e)| [s, e - 1]).collect::<Vec<_>>());
                v["open"] = json!(
                    cp.open
                        .iter()
                        .map(|(s, z)| json!({"seq": s, "size": z}))
                        .collect::<Vec<_>>()
                );
                v["segments"] = json!(
                    cp.segments
                        .iter()
                        .map(|(&id, info)| json!({
                            "segment": file_name(id),
                            "size": info.size,
                            "adds": info.adds.map(|(f, l)| [f, l]),
                            "live_bytes": info.live_bytes,
                        }))
                        .collect::<Vec<_>>()
                );
            }
            v
        })
        .collect();
    let segments: Vec<Value> = walk
        .segments
        .iter()
        .map(|f| {
            let kinds: serde_json::Map<String, Value> = KINDS
                .iter()
                .zip(f.kinds)
                .map(|(k, n)| (k.to_string(), json!(n)))
                .collect();
            json!({
                "segment": file_name(f.id),
                "size": f.size,
                "gone": f.size.is_none(),
                "records": f.kinds.iter().sum::<u64>(),
                "kinds": kinds,
                "adds": f.adds.map(|(a, b)| [a, b]),
                "live_items": f.live,
                "damaged": f.damage.iter().map(|d| json!({"offset": d.offset, "bytes": d.len})).collect::<Vec<_>>(),
                "tail": f.tail.map(|t| json!({
                    "offset": t.damage.offset,
                    "bytes": t.damage.len,
                    "cut_short": t.cut_short,
                    "in_progress": f.in_progress(),
                })),
            })
        })
        .collect();
    let r = &look.recovery;
    json!({
        "queue": queue,
        "directory": dir.display().to_string(),
        "checkpoints": checkpoints,
        "segments": segments,
        "recovered": {
            "items": r.items,
            "bytes": r.bytes,
            "rolled_back": r.rolled_back,
            "first_seq": r.first_live,
            "next_seq": r.next_seq,
            "from_generation": look.generation,
            "replay_from": {
                "segment": file_name(look.replay_from.segment),
                "offset": look.replay_from.offset,
            },
            "replayed_bytes": look.replayed,
            "lost_items": walk.lost,
            "served_meanwhile": walk.served,
        },
        "damage": damage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc_dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc(-1), "1969-12-31T23:59:59.999Z");
        // Nonsense from a damaged journal is still a date, never a panic.
        for ms in [i64::MIN, i64::MAX] {
            assert!(utc(ms).ends_with('Z'));
        }
    }

    #[test]
    fn items_print_safely_and_unambiguously() {
        assert_eq!(printable(b"hello world", None), "hello world");
        assert_eq!(printable("café".as_bytes(), None), "café");
        assert_eq!(
            printable(b"a\\b\n\x1b[31m\xff\x00", None),
            "a\\\\b\\n\\u{1b}[31m\\xff\\u{0}"
        );
        assert_eq!(printable("\u{202e}x".as_bytes(), None), "\\u{202e}x");
        assert_eq!(printable(b"abcdef", Some(4)), "abcd…");
        assert_eq!(printable(b"abcd", Some(4)), "abcd");
        // An escape is never cut in half.
        assert_eq!(printable(b"abc\xff", Some(4)), "abc…");
    }

    #[test]
    fn a_checkpoint_claiming_countless_items_is_read_at_once() {
        // Intact, but for no segment: every item it claims is lost.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("jobs");
        fs::create_dir(&dir).unwrap();
        let mut c = Checkpoint {
            name: "jobs".into(),
            generation: 1,
            next_seq: 1 << 61,
            ..Checkpoint::default()
        };
        c.live.insert_range(1, 1 << 61);
        crate::journal::checkpoint::store(&dir, &c).unwrap();
        let (_, queue, look) = open(&dir).unwrap();
        assert_eq!(queue.as_deref(), Some("jobs"));
        let walk = walk(&look, &dir, |_| Ok(())).unwrap();
        assert_eq!((walk.lost, walk.served), ((1 << 61) - 1, 0));
        assert!(walk.damage(&look));
    }

    #[test]
    fn runs_are_listed_up_to_a_limit() {
        assert_eq!(runs_text([(3, 11)].into_iter(), 1), "3-10");
        assert_eq!(runs_text([(3, 4), (6, 8)].into_iter(), 2), "3, 6-7");
        let many = (0..20).map(|i| (i * 10, i * 10 + 2));
        assert!(runs_text(many, 20).ends_with("… (20 runs)"));
    }
}
