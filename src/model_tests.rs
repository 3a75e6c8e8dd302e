//! The service, its queues and their journals checked against a model,
//! through restarts, crashes, torn writes and failing disks.
//!
//! proptest drives the real [`QueueServer`](crate::service::QueueServer) service in process, on a temporary
//! directory, with random sequences of puts, plain and reliable reads,
//! confirms, aborts, session ends, flushes, deletes, expiry sweeps,
//! checkpoints and maintenance, clean restarts, process crashes (everything
//! dropped on the floor: no shutdown, no session cleanup), power failures
//! (`sync_journal = always` only: every segment cut back to what was
//! fsynced), torn crashes (the newest segment cut at a random byte and a bit
//! flipped after the last acknowledged record) and disk faults injected
//! through the journal's I/O layer ([`crate::journal::disk::faults`]).
//!
//! The model is what the docs promise (docs/journal.md): an acknowledged
//! item not confirmed, plainly taken, flushed, deleted or expired is
//! delivered, in put order, exactly once; a confirmed or plainly taken item
//! never comes back; open reads are back at the head after a restart; stats
//! agree. What a failure or a crash leaves in doubt (a refused put, the tail
//! of a torn crash, a removal whose record hit a failing disk) may or may not
//! appear, but only whole, only once, and never before what it was put after
//! in a way the rules above forbid.
//!
//! `KESTREL_MODEL_CASES` (default 256) and `KESTREL_MODEL_STEPS` (most steps
//! in a case, default 100) size a run: the defaults take seconds in a debug
//! build; docs/testing.md gives the long settings.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;
use crate::config::SyncMode;
use crate::config::{QueueConfig, QueuesConfig, ServerConfig};
use crate::journal::disk::faults::{self, Fault, Op};
use crate::service::{
    Expiry, GetRequest, QueueServer, QueueService, Read, ServiceError, Session, Transactions,
};

const QUEUES: [&str; 2] = ["a", "b"];
const SESSIONS: usize = 2;

/// When a put's items expire.
#[derive(Debug, Clone, Copy)]
enum Ttl {
    Never,
    /// Already past when put.
    Past,
    /// A millisecond after the put: gone by a later step, or not.
    Soon,
    /// Not within a test.
    Later,
}

#[derive(Debug, Clone)]
enum Step {
    Put {
        queue: usize,
        sizes: Vec<usize>,
        ttl: Ttl,
    },
    Take {
        queue: usize,
        max: usize,
    },
    Open {
        session: usize,
        queue: usize,
        max: usize,
    },
    Confirm {
        session: usize,
        queue: usize,
        n: Option<usize>,
    },
    Abort {
        session: usize,
        queue: usize,
        n: Option<usize>,
    },
    EndSession {
        session: usize,
    },
    Flush {
        queue: usize,
    },
    Delete {
        queue: usize,
    },
    Sweep,
    Checkpoint,
    Maintain,
    Restart,
    /// A process crash; with `power` (and `sync_journal = always`), a power
    /// failure: what was not fsynced is gone too.
    Crash {
        power: bool,
    },
    /// A put whose records are being written when the process dies: the
    /// newest segment is cut at `cut` (a fraction, in 1/256ths, of what the
    /// put wrote) and bit `flip` of what is left of it is flipped.
    TornCrash {
        queue: usize,
        sizes: Vec<usize>,
        cut: u8,
        flip: Option<u16>,
    },
    /// The next `skip + 1`th call of `op` in the data directory fails.
    Fault {
        op: Op,
        fault: Fault,
        skip: u32,
    },
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    // Mostly small items; some larger than the queue's memory budget, so
    // that read-behind and big records are exercised too.
    prop::collection::vec(
        prop_oneof![8 => 9usize..200, 2 => 200usize..1500, 1 => 1500usize..5000],
        1..5,
    )
}

fn step() -> impl Strategy<Value = Step> {
    let queue = 0..QUEUES.len();
    let session = 0..SESSIONS;
    let n = prop_oneof![Just(None), (0usize..3).prop_map(Some)];
    let ttl = prop_oneof![
        6 => Just(Ttl::Never),
        1 => Just(Ttl::Past),
        2 => Just(Ttl::Soon),
        1 => Just(Ttl::Later)
    ];
    let fault = prop_oneof![
        (Just(Op::Write), Just(Fault::Fail(libc::ENOSPC))),
        (Just(Op::Write), (0usize..300).prop_map(Fault::Short)),
        (Just(Op::Sync), Just(Fault::Fail(libc::EIO))),
        (Just(Op::Rename), Just(Fault::Fail(libc::EIO))),
    ];
    prop_oneof![
        12 => (queue.clone(), sizes(), ttl).prop_map(|(queue, sizes, ttl)| Step::Put { queue, sizes, ttl }),
        5 => (queue.clone(), 1usize..4).prop_map(|(queue, max)| Step::Take { queue, max }),
        5 => (session.clone(), queue.clone(), 1usize..4)
            .prop_map(|(session, queue, max)| Step::Open { session, queue, max }),
        3 => (session.clone(), queue.clone(), n.clone())
            .prop_map(|(session, queue, n)| Step::Confirm { session, queue, n }),
        2 => (session.clone(), queue.clone(), n).prop_map(|(session, queue, n)| Step::Abort { session, queue, n }),
        1 => session.prop_map(|session| Step::EndSession { session }),
        1 => queue.clone().prop_map(|queue| Step::Flush { queue }),
        1 => queue.clone().prop_map(|queue| Step::Delete { queue }),
        1 => Just(Step::Sweep),
        2 => Just(Step::Checkpoint),
        3 => Just(Step::Maintain),
        1 => Just(Step::Restart),
        1 => any::<bool>().prop_map(|power| Step::Crash { power }),
        1 => (queue, sizes(), any::<u8>(), prop::option::of(any::<u16>()))
            .prop_map(|(queue, sizes, cut, flip)| Step::TornCrash { queue, sizes, cut, flip }),
        1 => (fault, 0u32..4).prop_map(|((op, fault), skip)| Step::Fault { op, fault, skip }),
    ]
}

fn sync_mode() -> impl Strategy<Value = SyncMode> {
    prop_oneof![
        Just(SyncMode::Always),
        Just(SyncMode::Every(Duration::from_millis(100))),
        Just(SyncMode::Never),
    ]
}

/// An item the model knows of.
#[derive(Debug, Clone)]
struct Entry {
    id: u64,
    size: usize,
    /// Earliest and latest possible expiry time (the service stamps it
    /// between the two clock readings around the put).
    expiry: Option<(i64, i64)>,
    /// Put without an acknowledgement (refused, or cut by a crash): it may
    /// or may not exist.
    doubt: bool,
}

impl Entry {
    /// Surely expired for a read that starts at `t`.
    fn expired_by(&self, t: i64) -> bool {
        self.expiry.is_some_and(|(_, latest)| latest < t)
    }

    /// Surely there (and not expired) for a read that ends at `t`.
    fn certain_at(&self, t: i64) -> bool {
        !self.doubt && self.expiry.is_none_or(|(earliest, _)| earliest > t)
    }
}

/// The payload of item `id`: its id, then a byte pattern derived from it.
fn payload(id: u64, size: usize) -> Bytes {
    let mut data = id.to_le_bytes().to_vec();
    data.resize(size.max(8), (id % 251) as u8);
    Bytes::from(data)
}

#[derive(Default)]
struct Model {
    /// Ready items per queue, by id (put order).
    queues: [BTreeMap<u64, Entry>; 2],
    /// Items taken or confirmed while the disk failed: their removal may be
    /// lost, so they may come back after the next restart.
    revenants: [Vec<Entry>; 2],
    /// Open reads per session and queue, oldest first.
    open: [[Vec<Entry>; 2]; SESSIONS],
    /// Open reads on a queue instance deleted since: confirming or aborting
    /// them changes nothing anyone can see.
    ghosts: [[usize; 2]; SESSIONS],
    next_id: u64,
}

impl Model {
    /// Entries for a put of `sizes`, with ids of their own.
    fn new_ids(&mut self, sizes: &[usize]) -> Vec<Entry> {
        sizes
            .iter()
            .map(|&size| {
                self.next_id += 1;
                Entry {
                    id: self.next_id,
                    size: size.max(8),
                    expiry: None,
                    doubt: false,
                }
            })
            .collect()
    }

    /// Open reads go back to their queues (a session ended or the process
    /// did); after a restart, so do the revenants.
    fn roll_back(&mut self, session: usize) {
        for q in 0..QUEUES.len() {
            for e in std::mem::take(&mut self.open[session][q]) {
                self.queues[q].insert(e.id, e);
            }
            self.ghosts[session][q] = 0;
        }
    }

    fn restarted(&mut self) {
        for s in 0..SESSIONS {
            self.roll_back(s);
        }
        for q in 0..QUEUES.len() {
            for mut e in std::mem::take(&mut self.revenants[q]) {
                e.doubt = true;
                self.queues[q].insert(e.id, e);
            }
        }
    }

    /// Checks the items a read of `queue` returned (asked for at most `max`,
    /// read between `t0` and `t1`) and takes them out of the ready items.
    fn delivered(
        &mut self,
        queue: usize,
        max: usize,
        got: &[Bytes],
        (t0, t1): (i64, i64),
    ) -> Result<Vec<Entry>, String> {
        let ready = &mut self.queues[queue];
        let mut out = Vec::new();
        for data in got {
            let id = u64::from_le_bytes(
                data.get(..8)
                    .ok_or_else(|| format!("an item of {} bytes", data.len()))?
                    .try_into()
                    .expect("8 bytes"),
            );
            let Some(entry) = ready.remove(&id) else {
                return Err(format!(
                    "{}: item {id} delivered, but it was never put there or is already gone",
                    QUEUES[queue]
                ));
            };
            if *data != payload(id, entry.size) {
                return Err(format!("{}: item {id} delivered damaged", QUEUES[queue]));
            }
            if entry.expired_by(t0) {
                return Err(format!(
                    "{}: item {id} delivered after it expired",
                    QUEUES[queue]
                ));
            }
            // Nothing that was surely there may have been passed over. What
            // was passed over stays in the model: an expired item may come
            // back after a crash (its removal is not awaited) and counts in
            // the stats until read past again; a doubtful one may appear.
            if let Some((&k, _)) = ready.range(..id).find(|(_, e)| e.certain_at(t1)) {
                return Err(format!(
                    "{}: item {id} delivered before item {k}, which was put earlier and is still there",
                    QUEUES[queue]
                ));
            }
            out.push(entry);
        }
        if got.len() < max
            && let Some(e) = ready.values().find(|e| e.certain_at(t1))
        {
            return Err(format!(
                "{}: a read of up to {max} got {} items, but item {} is there",
                QUEUES[queue],
                got.len(),
                e.id
            ));
        }
        Ok(out)
    }
}

/// The service of one life of the server, with its sessions.
struct Life {
    service: QueueServer,
    sessions: Vec<Session>,
    restless: Vec<std::sync::Arc<str>>,
}

struct Harness {
    dir: tempfile::TempDir,
    mode: SyncMode,
    rt: tokio::runtime::Runtime,
    life: Option<Life>,
    model: Model,
}

impl Harness {
    fn new(mode: SyncMode) -> Harness {
        let mut h = Harness {
            dir: tempfile::tempdir().expect("temp dir"),
            mode,
            rt: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime"),
            life: None,
            model: Model::default(),
        };
        h.start();
        h
    }

    fn config(&self) -> ServerConfig {
        let default = QueueConfig {
            sync_journal: self.mode,
            // Small segments and memory: every few steps a segment rolls,
            // a checkpoint is due, items live only on disk.
            max_journal_size: 4096,
            max_memory_size: 2048,
            ..QueueConfig::default()
        };
        ServerConfig {
            data_dir: self.dir.path().to_path_buf(),
            max_open_transactions: 1000,
            queues: QueuesConfig {
                default,
                ..QueuesConfig::default()
            },
            ..ServerConfig::default()
        }
    }

    fn start(&mut self) {
        let service = QueueServer::new(&self.config(), CancellationToken::new()).expect("service");
        let sessions = (0..SESSIONS).map(|_| service.session()).collect();
        self.life = Some(Life {
            service,
            sessions,
            restless: Vec::new(),
        });
    }

    fn life(&mut self) -> &mut Life {
        self.life.as_mut().expect("running")
    }

    fn queue_dir(&self, queue: usize) -> PathBuf {
        self.dir.path().join("queues").join(QUEUES[queue])
    }

    /// Segment files of `queue`, oldest first.
    fn segments(&self, queue: usize) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.queue_dir(queue))
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// The process dies: nothing is shut down, nothing more is written.
    /// The service is dropped (so its files are closed) after checking
    /// that dropping it writes nothing: what the sessions abort on their
    /// way out stays in memory, as it would in a killed process.
    fn die(&mut self) -> Result<(), String> {
        faults::disarm(self.dir.path());
        let before = files_under(self.dir.path());
        drop(self.life.take());
        let after = files_under(self.dir.path());
        if before != after {
            return Err(format!(
                "dropping the service wrote to disk: {before:?} -> {after:?}"
            ));
        }
        Ok(())
    }

    fn run(&mut self, step: &Step) -> Result<(), String> {
        self.apply(step)?;
        self.check_stats()
    }

    fn apply(&mut self, step: &Step) -> Result<(), String> {
        let fired_before = faults::fired(self.dir.path());
        let faulted = |h: &Harness| faults::fired(h.dir.path()) > fired_before;
        match *step {
            Step::Put {
                queue,
                ref sizes,
                ttl,
            } => self.put(queue, sizes, ttl).map(drop),
            Step::Take { queue, max } => {
                let mut session = self.life().service.session();
                let (got, t) = self.read(&mut session, queue, max, Read::Take)?;
                let got = got.map_err(|e| format!("take: {e}"))?;
                let taken = self.model.delivered(queue, max, &got, t)?;
                if faulted(self) {
                    self.model.revenants[queue].extend(taken);
                }
                Ok(())
            }
            Step::Open {
                session,
                queue,
                max,
            } => {
                let fresh = self.life().service.session();
                let mut s = std::mem::replace(&mut self.life().sessions[session], fresh);
                let read = self.read(&mut s, queue, max, Read::Open);
                self.life().sessions[session] = s;
                let (got, t) = read?;
                let got = got.map_err(|e| format!("open: {e}"))?;
                let opened = self.model.delivered(queue, max, &got, t)?;
                self.model.open[session][queue].extend(opened);
                // The session now holds reads of the queue's new instance:
                // it let go of those of a deleted one.
                self.model.ghosts[session][queue] = 0;
                Ok(())
            }
            Step::Confirm { session, queue, n } | Step::Abort { session, queue, n } => {
                let confirm = matches!(step, Step::Confirm { .. });
                self.settle(session, queue, n, confirm, &faulted)
            }
            Step::EndSession { session } => {
                let fresh = self.life().service.session();
                drop(std::mem::replace(&mut self.life().sessions[session], fresh));
                self.model.roll_back(session);
                Ok(())
            }
            Step::Flush { queue } => {
                let life = self.life.as_ref().expect("running");
                let result = self.rt.block_on(life.service.flush(QUEUES[queue]));
                let flushed = std::mem::take(&mut self.model.queues[queue]);
                if result.is_err() || faulted(self) {
                    // Out of memory either way; on disk perhaps not.
                    self.model.revenants[queue].extend(flushed.into_values());
                }
                Ok(())
            }
            Step::Delete { queue } => {
                let life = self.life.as_ref().expect("running");
                self.rt
                    .block_on(life.service.delete(QUEUES[queue]))
                    .map_err(|e| format!("delete: {e}"))?;
                self.model.queues[queue].clear();
                self.model.revenants[queue].clear();
                for s in 0..SESSIONS {
                    let open = std::mem::take(&mut self.model.open[s][queue]);
                    self.model.ghosts[s][queue] += open.len();
                }
                Ok(())
            }
            Step::Sweep => {
                // The model keeps expired items: the sweep removes those in
                // memory, those only on disk go when a read reaches them,
                // and either way they count only towards the upper bound
                // of the stats and must never be delivered.
                let queues = self.life().service.queues();
                self.rt.block_on(queues.sweep());
                Ok(())
            }
            Step::Checkpoint => {
                for q in self.life().service.queues().all() {
                    // A failure (an injected fault) is retried by the next pass.
                    let _ = q.maintain_journal(true);
                }
                Ok(())
            }
            Step::Maintain => {
                let life = self.life();
                let queues = life.service.queues();
                queues.sync_journals();
                queues.maintain_journals(&mut life.restless);
                Ok(())
            }
            Step::Restart => {
                faults::disarm(self.dir.path());
                let mut life = self.life.take().expect("running");
                // What the server does on its way out: connections end
                // (their sessions abort what they hold open), then every
                // journal is checkpointed.
                life.sessions.clear();
                for q in life.service.queues().all() {
                    // After a write failed, a journal refuses to checkpoint
                    // until it has written again (a checkpoint never claims
                    // more than the disk holds); the server logs it and
                    // recovery replays the log instead.
                    if let Err(e) = q.maintain_journal(true)
                        && faults::fired(self.dir.path()) == 0
                    {
                        return Err(format!("shutdown checkpoint of {}: {e}", q.name()));
                    }
                }
                drop(life);
                self.model.restarted();
                self.start();
                Ok(())
            }
            Step::Crash { power } => {
                self.die()?;
                if power && self.mode == SyncMode::Always {
                    self.power_failure();
                }
                self.model.restarted();
                self.start();
                Ok(())
            }
            Step::TornCrash {
                queue,
                ref sizes,
                cut,
                flip,
            } => {
                let before: HashMap<PathBuf, u64> = self
                    .segments(queue)
                    .into_iter()
                    .map(|p| {
                        let len = std::fs::metadata(&p).map_or(0, |m| m.len());
                        (p, len)
                    })
                    .collect();
                let entries = self.put(queue, sizes, Ttl::Never)?;
                for e in entries {
                    if let Some(e) = self.model.queues[queue].get_mut(&e.id) {
                        e.doubt = true;
                    }
                }
                self.die()?;
                if let Some(newest) = self.segments(queue).pop() {
                    let start = before.get(&newest).copied().unwrap_or(0);
                    tear(&newest, start, cut, flip).map_err(|e| format!("tearing: {e}"))?;
                }
                self.model.restarted();
                self.start();
                Ok(())
            }
            Step::Fault { op, fault, skip } => {
                faults::arm(self.dir.path(), op, skip, fault);
                Ok(())
            }
        }
    }

    /// Puts `sizes` items; the model learns them, in doubt unless the put
    /// was acknowledged.
    fn put(&mut self, queue: usize, sizes: &[usize], ttl: Ttl) -> Result<Vec<Entry>, String> {
        let t0 = now_ms();
        let after_ms = match ttl {
            Ttl::Soon => 1,
            Ttl::Later => 3_600_000,
            Ttl::Never | Ttl::Past => 0,
        };
        let expiry = match ttl {
            Ttl::Never => Expiry::Never,
            Ttl::Past => Expiry::At(t0 - 1000),
            Ttl::Soon | Ttl::Later => Expiry::After(Duration::from_millis(after_ms as u64)),
        };
        let entries = self.model.new_ids(sizes);
        let items = entries.iter().map(|e| payload(e.id, e.size)).collect();
        let life = self.life.as_ref().expect("running");
        let result = self
            .rt
            .block_on(life.service.put(QUEUES[queue], items, expiry));
        let t1 = now_ms();
        // The service stamps a relative expiry somewhere between t0 and t1.
        let expiry = match ttl {
            Ttl::Never => None,
            Ttl::Past => Some((t0 - 1000, t0 - 1000)),
            Ttl::Soon | Ttl::Later => Some((t0 + after_ms, t1 + after_ms)),
        };
        let doubt = match result {
            Ok(n) if n == entries.len() => false,
            Ok(n) => return Err(format!("put accepted {n} of {} items", entries.len())),
            Err(ServiceError::Journal(_) | ServiceError::Queue(_)) => true,
            Err(e) => return Err(format!("put: {e}")),
        };
        let mut put = Vec::new();
        for mut e in entries {
            e.expiry = expiry;
            e.doubt = doubt;
            self.model.queues[queue].insert(e.id, e.clone());
            put.push(e);
        }
        Ok(put)
    }

    /// A get of up to `max` items, finished; with the clock readings around it.
    #[allow(clippy::type_complexity)]
    fn read(
        &mut self,
        session: &mut Session,
        queue: usize,
        max: usize,
        read: Read,
    ) -> Result<(Result<Vec<Bytes>, ServiceError>, (i64, i64)), String> {
        let t0 = now_ms();
        let life = self.life.as_ref().expect("running");
        let request = GetRequest {
            max_items: max,
            timeout: None,
            read,
        };
        let got = self.rt.block_on(async {
            let reading = life.service.get(session, QUEUES[queue], request).await?;
            Ok(reading.finish().await.into_iter().map(|d| d.data).collect())
        });
        Ok((got, (t0, now_ms())))
    }

    fn settle(
        &mut self,
        session: usize,
        queue: usize,
        n: Option<usize>,
        confirm: bool,
        faulted: &dyn Fn(&Harness) -> bool,
    ) -> Result<(), String> {
        let which = n.map_or(Transactions::All, Transactions::Oldest);
        let fresh = self.life().service.session();
        let mut s = std::mem::replace(&mut self.life().sessions[session], fresh);
        let life = self.life.as_ref().expect("running");
        let result = self.rt.block_on(async {
            if confirm {
                life.service.confirm(&mut s, QUEUES[queue], which).await
            } else {
                life.service.abort(&mut s, QUEUES[queue], which).await
            }
        });
        self.life().sessions[session] = s;
        // Reads held on a deleted instance of the queue (ghosts) are settled
        // there, where nobody sees it; a session holds either those or
        // reads of the current instance, never both.
        let open = self.model.open[session][queue].len();
        let ghosts = self.model.ghosts[session][queue];
        let held = open + ghosts;
        let wanted = n.unwrap_or(held);
        match result {
            Ok(count) if wanted <= held && (count == wanted || (ghosts > 0 && count == 0)) => {}
            Err(ServiceError::NotEnoughOpen { wanted: w, open: o }) if wanted > held => {
                if (w, o) != (wanted, held) {
                    return Err(format!("refusal says {w} of {o}, model {wanted} of {held}"));
                }
                return Ok(());
            }
            other => {
                return Err(format!("settling {wanted} of {held} open reads: {other:?}"));
            }
        }
        if ghosts > 0 {
            self.model.ghosts[session][queue] -= wanted;
            return Ok(());
        }
        let settled: Vec<Entry> = self.model.open[session][queue].drain(..wanted).collect();
        if confirm {
            if faulted(self) {
                self.model.revenants[queue].extend(settled);
            }
        } else {
            for e in settled {
                self.model.queues[queue].insert(e.id, e);
            }
        }
        Ok(())
    }

    /// `items`, `bytes` and `open_transactions` of each queue agree with the
    /// model (within what is in doubt).
    fn check_stats(&mut self) -> Result<(), String> {
        let t = now_ms();
        for (q, name) in QUEUES.iter().enumerate() {
            let snapshot = self.life().service.queues().get(name).map(|q| q.stats());
            let (items, bytes, open) =
                snapshot.map_or((0, 0, 0), |s| (s.items, s.bytes, s.open_transactions));
            let ready = &self.model.queues[q];
            let certain = ready.values().filter(|e| e.certain_at(t + 1000));
            let (lo_items, lo_bytes) = certain.fold((0, 0), |(n, b), e| (n + 1, b + e.size as u64));
            let (hi_items, hi_bytes) = ready
                .values()
                .fold((0, 0), |(n, b), e| (n + 1, b + e.size as u64));
            let model_open: usize = (0..SESSIONS).map(|s| self.model.open[s][q].len()).sum();
            if !(lo_items..=hi_items).contains(&items)
                || !(lo_bytes..=hi_bytes).contains(&bytes)
                || open != model_open as u64
            {
                return Err(format!(
                    "{name}: stats say {items} items, {bytes} bytes, {open} open; \
                     model {lo_items}..={hi_items} items, {lo_bytes}..={hi_bytes} bytes, {model_open} open"
                ));
            }
        }
        Ok(())
    }

    /// Cuts every segment back to its length at its last fsync.
    fn power_failure(&self) {
        for q in 0..QUEUES.len() {
            for path in self.segments(q) {
                if let Some(len) = faults::synced_len(&path) {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .expect("segment");
                    if f.metadata().expect("metadata").len() > len {
                        f.set_len(len).expect("cut");
                    }
                }
            }
        }
    }

    /// A clean restart, then every queue drained: everything certain must
    /// come out, in order.
    fn finish(&mut self) -> Result<(), String> {
        self.run(&Step::Restart)?;
        for q in 0..QUEUES.len() {
            loop {
                let mut session = self.life().service.session();
                let (got, t) = self.read(&mut session, q, 64, Read::Take)?;
                let got = got.map_err(|e| format!("drain: {e}"))?;
                self.model.delivered(q, 64, &got, t)?;
                if got.is_empty() {
                    break;
                }
            }
        }
        self.check_stats()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        faults::disarm(self.dir.path());
    }
}

/// Every file under `dir` with its length, but for directories of deleted
/// and flushed queues, which a background thread removes when it gets to it.
fn files_under(dir: &Path) -> BTreeMap<PathBuf, u64> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.to_string_lossy().contains(".deleted-") {
                continue;
            }
            match entry.metadata() {
                Ok(m) if m.is_dir() => dirs.push(path),
                Ok(m) => {
                    found.insert(path, m.len());
                }
                Err(_) => {}
            }
        }
    }
    found
}

/// Cuts `path` somewhere after `start` (at `cut`/256 of the way to its end)
/// and flips one bit after `start` in what is left.
fn tear(path: &Path, start: u64, cut: u8, flip: Option<u16>) -> std::io::Result<()> {
    let mut bytes = std::fs::read(path)?;
    let start = (start as usize).min(bytes.len());
    let torn = bytes.len() - start;
    bytes.truncate(start + torn * cut as usize / 256);
    if let Some(bit) = flip {
        let tail = bytes.len() - start;
        if tail > 0 {
            let at = start + (bit as usize / 8) % tail;
            bytes[at] ^= 1 << (bit % 8);
        }
    }
    std::fs::write(path, bytes)
}

fn run_case(mode: SyncMode, steps: &[Step]) -> Result<(), String> {
    let mut h = Harness::new(mode);
    for (i, step) in steps.iter().enumerate() {
        h.run(step).map_err(|e| format!("step {i} {step:?}: {e}"))?;
    }
    h.finish().map_err(|e| format!("final drain: {e}"))
}

fn cases() -> u32 {
    std::env::var("KESTREL_MODEL_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

fn max_steps() -> usize {
    std::env::var("KESTREL_MODEL_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_service_keeps_its_promises_through_crashes(
        mode in sync_mode(),
        steps in prop::collection::vec(step(), 1..max_steps()),
    ) {
        if let Err(e) = run_case(mode, &steps) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// Shrunk counterexamples the property test found, kept as plain tests.
mod regressions {
    use super::*;

    fn put(queue: usize, sizes: &[usize]) -> Step {
        Step::Put {
            queue,
            sizes: sizes.to_vec(),
            ttl: Ttl::Never,
        }
    }

    fn open(session: usize, queue: usize, max: usize) -> Step {
        Step::Open {
            session,
            queue,
            max,
        }
    }

    const CRASH: Step = Step::Crash { power: false };

    /// A flush with a read open, after a crash rolled earlier reads back:
    /// the flushed item came back at the next crash.
    #[test]
    fn a_flush_survives_a_crash_after_a_rollback() {
        let steps = [
            put(0, &[9, 9]),
            open(0, 0, 2),
            CRASH,
            open(0, 0, 1),
            Step::Flush { queue: 0 },
            CRASH,
        ];
        run_case(SyncMode::Always, &steps).unwrap();
    }

    /// A flush with a read open whose OPEN record never reached the disk:
    /// the open item was flushed away at the next crash.
    #[test]
    fn a_flush_spares_a_read_whose_open_record_was_lost() {
        let steps = [
            put(0, &[9]),
            put(0, &[9]),
            Step::Fault {
                op: Op::Write,
                fault: Fault::Fail(libc::ENOSPC),
                skip: 2,
            },
            put(0, &[9]),
            put(0, &[9]),
            open(0, 0, 1),
            Step::Flush { queue: 0 },
            CRASH,
        ];
        run_case(SyncMode::Always, &steps).unwrap();
    }

    /// A put whose write failed in one segment, its last item bound for the
    /// next (never created): read-behind stopped at the missing file, and
    /// the acknowledged items of the next put could not be read.
    #[test]
    fn items_put_after_a_failed_write_can_be_read() {
        let steps = [
            put(0, &[94]),
            put(0, &[182, 1356, 105]),
            Step::Take { queue: 0, max: 2 },
            Step::Fault {
                op: Op::Write,
                fault: Fault::Short(98),
                skip: 0,
            },
            put(0, &[2157, 642]),
            put(0, &[191, 3970, 1162, 18]),
            open(0, 0, 3),
        ];
        run_case(SyncMode::Always, &steps).unwrap();
    }
}
