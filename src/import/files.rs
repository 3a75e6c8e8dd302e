//! Which files of a Kestrel queue directory make up each queue, and in what
//! order they replay. Per queue `q`: rotated files `q.<epoch ms>` by
//! timestamp, then the live file `q`. A pack `q.<ts>.pack` holds everything
//! of the files with timestamps up to `ts`, which it supersedes. Names with
//! `~~` are Kestrel's temporary files (a rewrite or pack in progress) and are
//! never replayed.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

/// One queue's journal files, in replay order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct QueueFiles {
    pub files: Vec<PathBuf>,
    /// Files left out, and why (superseded by a pack, not a journal name).
    pub ignored: Vec<(PathBuf, &'static str)>,
}

/// The queues of a Kestrel queue directory, by name.
pub fn scan(dir: &Path) -> io::Result<BTreeMap<String, QueueFiles>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file()
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_string());
        }
    }
    Ok(plan(dir, names))
}

/// What a file's name makes it.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    Live,
    Rotated(u64),
    Pack(u64),
    Temporary,
    Unknown,
}

/// Splits `name` into its queue and kind. A queue's name is what precedes
/// the first `.` (Kestrel's rule).
fn classify(name: &str) -> (&str, Kind) {
    if let Some((before, _)) = name.split_once("~~") {
        return (before.split('.').next().unwrap_or(before), Kind::Temporary);
    }
    let (queue, rest) = name.split_once('.').unwrap_or((name, ""));
    let kind = match rest.split('.').collect::<Vec<_>>()[..] {
        [""] => Kind::Live,
        [ts] => ts.parse().map_or(Kind::Unknown, Kind::Rotated),
        [ts, "pack"] => ts.parse().map_or(Kind::Unknown, Kind::Pack),
        _ => Kind::Unknown,
    };
    (queue, kind)
}

/// The replay plan for the file `names` of `dir`.
fn plan(dir: &Path, names: Vec<String>) -> BTreeMap<String, QueueFiles> {
    #[derive(Default)]
    struct Found {
        live: bool,
        rotated: Vec<u64>,
        packs: Vec<u64>,
        ignored: Vec<(String, &'static str)>,
    }
    let mut queues: BTreeMap<String, Found> = BTreeMap::new();
    for name in &names {
        let (queue, kind) = classify(name);
        if queue.is_empty() {
            continue;
        }
        let found = queues.entry(queue.to_string()).or_default();
        match kind {
            Kind::Live => found.live = true,
            Kind::Rotated(ts) => found.rotated.push(ts),
            Kind::Pack(ts) => found.packs.push(ts),
            Kind::Temporary => found
                .ignored
                .push((name.clone(), "a temporary file (~~) of a rewrite or pack")),
            Kind::Unknown => found
                .ignored
                .push((name.clone(), "not a journal file name")),
        }
    }
    queues
        .into_iter()
        .filter(|(_, f)| {
            f.live || !f.rotated.is_empty() || !f.packs.is_empty() || !f.ignored.is_empty()
        })
        .map(|(queue, mut found)| {
            let path = |suffix: String| dir.join(format!("{queue}{suffix}"));
            let mut files = QueueFiles::default();
            found.packs.sort_unstable();
            found.rotated.sort_unstable();
            let pack = found.packs.pop();
            for older in found.packs {
                files
                    .ignored
                    .push((path(format!(".{older}.pack")), "superseded by a later pack"));
            }
            if let Some(ts) = pack {
                files.files.push(path(format!(".{ts}.pack")));
            }
            for ts in found.rotated {
                if pack.is_some_and(|p| ts <= p) {
                    files
                        .ignored
                        .push((path(format!(".{ts}")), "superseded by a pack"));
                } else {
                    files.files.push(path(format!(".{ts}")));
                }
            }
            if found.live {
                files.files.push(path(String::new()));
            }
            files
                .ignored
                .extend(found.ignored.into_iter().map(|(n, why)| (dir.join(n), why)));
            (queue, files)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_files_by_timestamp_then_the_live_file_and_packs_supersede() {
        let names = [
            "jobs",
            "jobs.1300000000200",
            "jobs.1300000000100",
            "jobs.1300000000300",
            "jobs.1300000000200.pack",
            "jobs.1300000000100.pack",
            "jobs~~1300000000400",
            "jobs.notes",
            "mail+audit",
            "mail",
            "old.1200000000000",
        ];
        let plan = plan(
            Path::new("/k"),
            names.iter().map(|s| s.to_string()).collect(),
        );
        let jobs = &plan["jobs"];
        let files: Vec<_> = jobs.files.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            files,
            [
                "/k/jobs.1300000000200.pack",
                "/k/jobs.1300000000300",
                "/k/jobs"
            ]
        );
        let mut ignored: Vec<_> = jobs
            .ignored
            .iter()
            .map(|(p, _)| p.to_str().unwrap())
            .collect();
        ignored.sort();
        assert_eq!(
            ignored,
            [
                "/k/jobs.1300000000100",
                "/k/jobs.1300000000100.pack",
                "/k/jobs.1300000000200",
                "/k/jobs.notes",
                "/k/jobs~~1300000000400",
            ]
        );
        assert_eq!(plan["mail+audit"].files, [PathBuf::from("/k/mail+audit")]);
        assert_eq!(plan["old"].files, [PathBuf::from("/k/old.1200000000000")]);
        assert_eq!(plan.len(), 4);
    }
}
