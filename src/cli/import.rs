//! `kestrel import-kestrel`: the command around [`crate::import`]. It takes
//! the data directory's lock (so it refuses while a server runs there),
//! shows progress on a terminal, prints what it did per queue, and says in
//! its exit status whether anything was left behind.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tokio_util::sync::CancellationToken;

use super::ServerArgs;
use crate::data_dir::DataDir;
use crate::import::{Import, QueueReport, totals};
use crate::service::QueueServer;

/// Exit status when everything readable was imported but something was
/// left behind: a damaged record's file tail, or a queue refused.
pub const SKIPPED: u8 = 3;

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Kestrel's queue directory (its `queuePath`), holding the journal files
    #[arg(long, value_name = "KESTREL_QUEUE_DIR")]
    pub from: PathBuf,
    /// Import only this queue (repeat for several) [default: every queue]
    #[arg(long = "queue", value_name = "NAME")]
    pub queues: Vec<String>,
    /// Replay and report, but write nothing (and take no lock)
    #[arg(long)]
    pub dry_run: bool,
    /// Configuration file: the data directory and the queues' settings
    /// (expire_to_queue, max_age) come from it [default: none, the embedded defaults]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// This server's data directory, to import into [default: kestrel-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// Runs the import; see [`SKIPPED`] for the exit status.
pub fn run(args: ImportArgs) -> ExitCode {
    match import(&args) {
        Ok(reports) => {
            print!("{}", table(&reports, args.dry_run));
            if reports.iter().any(QueueReport::skipped_anything) {
                ExitCode::from(SKIPPED)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("kestrel import-kestrel: {e}");
            ExitCode::FAILURE
        }
    }
}

fn import(args: &ImportArgs) -> Result<Vec<QueueReport>, String> {
    let settings = ServerArgs {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        ..ServerArgs::default()
    };
    let config = settings.settings().map_err(|e| e.to_string())?;
    // What the engine has to say (a damaged queue of this server, a failed
    // write) goes to stderr; progress notes would only be noise.
    crate::logging::init(crate::logging::Overrides {
        format: None,
        level: Some("warn".into()),
    });
    crate::logging::configure(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    // Held to the end: no server may start on the directory meanwhile.
    let (_lock, service) = if args.dry_run {
        (None, None)
    } else {
        let lock = DataDir::open(&config.data_dir).map_err(|e| e.to_string())?;
        let service = QueueServer::new(&config, CancellationToken::new())
            .map_err(|e| format!("{}: {e}", config.data_dir.display()))?;
        (Some(lock), Some(service))
    };
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar
    });
    let progress = |n: u64| {
        if let Some(bar) = &bar {
            bar.inc(n);
        }
    };
    let more_work = |n: u64| {
        if let Some(bar) = &bar {
            bar.inc_length(n);
        }
    };
    let import = Import {
        only: &args.queues,
        service: service.as_ref(),
        queues: &config.queues,
        progress: &progress,
        more_work: &more_work,
    };
    let reports = runtime
        .block_on(import.run(&args.from))
        .map_err(|e| e.to_string())?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(service) = &service
        && !service.checkpoint_all()
    {
        return Err(
            "imported, but not every journal could be made durable (see the log above); \
             re-running appends the items again, so first fix the cause and restore the data \
             directory"
                .into(),
        );
    }
    Ok(reports)
}

/// The report: a line per queue, a total, then what was left behind.
fn table(reports: &[QueueReport], dry_run: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let verb = if dry_run { "would import" } else { "imported" };
    // "skipped": journal bytes not replayed because of damage (listed below).
    let _ = writeln!(
        out,
        "{:<32} {:>5} {:>14} {:>10} {:>14} {:>11} {:>9} {:>8}",
        "queue", "files", "journal bytes", "items", "bytes", "rolled back", "expired", "skipped"
    );
    let total = totals(reports);
    for r in reports.iter().chain(std::iter::once(&total)) {
        let _ = writeln!(
            out,
            "{:<32} {:>5} {:>14} {:>10} {:>14} {:>11} {:>9} {:>8}",
            r.name,
            r.files,
            r.journal_bytes,
            r.items,
            r.bytes,
            r.rolled_back,
            r.expired,
            r.skipped_bytes()
        );
    }
    let _ = writeln!(
        out,
        "{verb} {} items ({} bytes) from {} queues",
        total.items,
        total.bytes,
        reports.len()
    );
    for r in reports {
        if let Some(target) = &r.moved_to {
            let moved = if dry_run { "would move" } else { "moved" };
            let _ = writeln!(
                out,
                "{}: {} expired items {moved} to {target}",
                r.name, r.moved
            );
        }
        if let Some(why) = &r.refused {
            let _ = writeln!(out, "{}: not imported: {why}", r.name);
        }
        for d in &r.damaged {
            let _ = writeln!(
                out,
                "{}: damaged record in {} at offset {} ({}): the last {} bytes of the file were skipped",
                r.name,
                d.file.display(),
                d.offset,
                d.why,
                d.bytes
            );
        }
        for (file, why) in &r.ignored {
            let _ = writeln!(out, "{}: ignored {}: {why}", r.name, file.display());
        }
    }
    out
}
