//! The `kestrel` binary: parses the command line, sets up logging and runs
//! the server until SIGINT or SIGTERM.

use std::io::IsTerminal;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use kestrel::config::ServerConfig;
use kestrel::server::Server;
use tokio_util::sync::CancellationToken;

/// A durable message-queue server speaking Kestrel's Thrift, memcache and text protocols.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for journals and server state.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: Option<IpAddr>,
    /// Thrift port (0 picks a free one).
    #[arg(long, value_name = "N")]
    thrift_port: Option<u16>,
    /// Memcache port (0 picks a free one).
    #[arg(long, value_name = "N")]
    memcache_port: Option<u16>,
    /// Text-protocol port (0 picks a free one).
    #[arg(long, value_name = "N")]
    text_port: Option<u16>,
}

fn config(args: Args) -> ServerConfig {
    let mut config = ServerConfig::default();
    if let Some(path) = args.config {
        tracing::warn!(file = %path.display(), "configuration files are not supported yet; using defaults");
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.thrift_port = args.thrift_port.or(config.thrift_port);
    config.memcache_port = args.memcache_port.or(config.memcache_port);
    config.text_port = args.text_port.or(config.text_port);
    config
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        },
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let config = config(Args::parse());
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
    match server.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
