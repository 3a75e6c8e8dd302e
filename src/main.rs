//! The `kestrel` binary: reads the configuration, sets up logging and runs
//! the server until SIGINT or SIGTERM (or a client's `shutdown`). SIGHUP
//! reloads the queue settings from the configuration file.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kestrel::config;
use kestrel::server::Server;
use kestrel::service::QueueService;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A durable message-queue server speaking Kestrel's Thrift, memcache and text protocols.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML); see config/kestrel.toml. Without one, the
    /// embedded defaults serve.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for journals and server state.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: Option<IpAddr>,
    /// Thrift port (0 picks a free one, "off" disables it).
    #[arg(long, value_name = "N", value_parser = port)]
    thrift_port: Option<Port>,
    /// Memcache port (0 picks a free one, "off" disables it).
    #[arg(long, value_name = "N", value_parser = port)]
    memcache_port: Option<Port>,
    /// Text-protocol port (0 picks a free one, "off" disables it).
    #[arg(long, value_name = "N", value_parser = port)]
    text_port: Option<Port>,
    /// Admin HTTP port (0 picks a free one, "off" disables it).
    #[arg(long, value_name = "N", value_parser = port)]
    admin_port: Option<Port>,
}

/// A port, or `None` for "off".
#[derive(Debug, Clone, Copy)]
struct Port(Option<u16>);

fn port(text: &str) -> Result<Port, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(Port(None));
    }
    text.parse()
        .map(|p| Port(Some(p)))
        .map_err(|_| format!("{text:?} is not a port number (or off)"))
}

fn settings(args: Args) -> Result<config::ServerConfig, config::ConfigError> {
    let mut c = config::load(args.config.as_deref(), None)?;
    c.config_file = args.config;
    if let Some(dir) = args.data_dir {
        c.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        c.listen = listen;
    }
    for (flag, port) in [
        (args.thrift_port, &mut c.thrift_port),
        (args.memcache_port, &mut c.memcache_port),
        (args.text_port, &mut c.text_port),
        (args.admin_port, &mut c.admin_port),
    ] {
        if let Some(Port(p)) = flag {
            *port = p;
        }
    }
    Ok(c)
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

fn main() -> ExitCode {
    kestrel::memory::configure();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = match settings(Args::parse()) {
        Ok(config) => config,
        Err(e) => {
            tracing::error!("bad configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
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
        tracing::info!("signal received");
        shutdown.cancel();
    });
    let service = server.service();
    if let Ok(mut hangups) = signal(SignalKind::hangup()) {
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if let Err(e) = service.reload() {
                    tracing::error!("reload refused, running configuration kept: {e}");
                }
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
