//! The `kestrel` binary: the command line ([`kestrel::cli`]) and the
//! server's life: logging, the async runtime, signals (SIGINT and SIGTERM
//! drain and stop it, SIGHUP reloads the settings), and systemd's readiness
//! and stopping notifications.

use std::process::ExitCode;

use clap::Parser;
use kestrel::cli::{Cli, Command, ServerArgs};
use kestrel::config;
use kestrel::server::Server;
use kestrel::service::QueueService;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => run(&cli.server),
        Some(Command::CheckConfig(args)) => kestrel::cli::check_config(&args),
        Some(Command::Admin(args)) => kestrel::cli::admin::run(args),
        Some(Command::ImportKestrel(args)) => kestrel::cli::import::run(args),
        Some(Command::DumpJournal(args)) => kestrel::cli::dump::run(args),
    }
}

/// Runs the server until it is stopped.
fn run(args: &ServerArgs) -> ExitCode {
    kestrel::memory::configure();
    kestrel::logging::init(args.log_overrides());
    let config = match args.settings() {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("bad configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    kestrel::logging::configure(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers())
        .thread_name("kestrel-worker")
        .enable_all()
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(serve(config)),
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn termination() {
    match signal(SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Runs the server on the runtime until it stops.
async fn serve(config: config::ServerConfig) -> ExitCode {
    tracing::info!(workers = config.workers(), "starting");
    let shutdown = CancellationToken::new();
    let server = match Server::bind(config, shutdown.clone()).await {
        Ok(server) => server,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    tokio::spawn(async move {
        termination().await;
        tracing::info!("signal received: draining, then stopping");
        shutdown.cancel();
    });
    let service = server.service();
    if let Ok(mut hangups) = signal(SignalKind::hangup()) {
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                // A refusal is logged, on one line, by the service.
                let _ = service.reload();
            }
        });
    }
    match server.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
