//! The command line: `kestrel` runs the server; `kestrel check-config`
//! checks the settings and prints them with where each came from;
//! `kestrel admin` talks to a running server; `kestrel import-kestrel`
//! imports Kestrel's journals; `kestrel dump-journal` shows what a queue's
//! journal holds. The definition lives in the library so that the man page
//! is generated from the same source ([`command`]).

pub mod admin;
mod check;
pub mod dump;
pub mod import;

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::config::{self, ConfigError, LogFormat, ServerConfig};
use crate::logging::Overrides;

pub use check::check_config;

const AFTER_HELP: &str = "\
Settings come from, weakest first: the embedded defaults, the --config file,
KESTREL_<SETTING> environment variables (KESTREL_DEFAULT_QUEUE__MAX_ITEMS=10
for a nested one), then these flags. `kestrel check-config` prints the result.
RUST_LOG (e.g. RUST_LOG=debug) overrides log_level. SIGHUP reloads the file.";

/// A durable message-queue server speaking Kestrel's Thrift, memcache and text protocols.
#[derive(Debug, Parser)]
#[command(name = "kestrel", version, about, after_help = AFTER_HELP, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the settings and print them, each with where it came from;
    /// exits non-zero with the error if they are not usable.
    CheckConfig(ServerArgs),
    /// Talk to a running server: stats, peek, put, get, flush, delete, status.
    Admin(admin::AdminArgs),
    /// Import the live items of Scala Kestrel 2.x journals into this
    /// server's queues, offline (refuses while a server runs on the data
    /// directory). Exit status 3: imported, but damaged records or queues
    /// were left behind (listed).
    ImportKestrel(import::ImportArgs),
    /// Print what a queue's journal holds: a summary of its checkpoints and
    /// segments, every record, or the live items. Read-only; safe while the
    /// server runs.
    DumpJournal(dump::DumpArgs),
}

/// The settings a command line may give (each also a setting of the file).
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// Configuration file (TOML); see config/kestrel.toml [default: none, the embedded defaults]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for journals and server state [default: kestrel-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address every port listens on [default: 127.0.0.1]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<IpAddr>,
    /// Thrift port; 0 picks a free one, "off" disables it [default: 2229]
    #[arg(long, value_name = "N", value_parser = port)]
    pub thrift_port: Option<Port>,
    /// Memcache port; 0 picks a free one, "off" disables it [default: 22133]
    #[arg(long, value_name = "N", value_parser = port)]
    pub memcache_port: Option<Port>,
    /// Text-protocol port; 0 picks a free one, "off" disables it [default: 2222]
    #[arg(long, value_name = "N", value_parser = port)]
    pub text_port: Option<Port>,
    /// Admin HTTP port; 0 picks a free one, "off" disables it [default: 2223]
    #[arg(long, value_name = "N", value_parser = port)]
    pub admin_port: Option<Port>,
    /// Log format: text or json [default: text]
    #[arg(long, value_name = "FORMAT", value_parser = log_format)]
    pub log_format: Option<LogFormat>,
    /// Log level or filter directives, e.g. info or info,kestrel::journal=debug [default: info]
    #[arg(long, value_name = "LEVEL", value_parser = log_level)]
    pub log_level: Option<String>,
}

/// A port, or `None` for "off".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port(pub Option<u16>);

fn port(text: &str) -> Result<Port, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(Port(None));
    }
    text.parse()
        .map(|p| Port(Some(p)))
        .map_err(|_| format!("{text:?} is not a port number (or off)"))
}

fn log_format(text: &str) -> Result<LogFormat, String> {
    LogFormat::parse(text).ok_or_else(|| format!("{text:?} is not text or json"))
}

fn log_level(text: &str) -> Result<String, String> {
    config::check_log_level(text).map_err(|e| e.to_string())
}

impl ServerArgs {
    /// The settings: the file and the environment, then these flags.
    pub fn settings(&self) -> Result<ServerConfig, ConfigError> {
        let mut c = config::load(self.config.as_deref(), None)?;
        self.apply(&mut c);
        Ok(c)
    }

    /// Puts the flags given over `c`.
    fn apply(&self, c: &mut ServerConfig) {
        c.config_file = self.config.clone();
        if let Some(dir) = &self.data_dir {
            c.data_dir = dir.clone();
        }
        if let Some(listen) = self.listen {
            c.listen = listen;
        }
        for (flag, port) in [
            (self.thrift_port, &mut c.thrift_port),
            (self.memcache_port, &mut c.memcache_port),
            (self.text_port, &mut c.text_port),
            (self.admin_port, &mut c.admin_port),
        ] {
            if let Some(Port(p)) = flag {
                *port = p;
            }
        }
        if let Some(format) = self.log_format {
            c.log_format = format;
        }
        if let Some(level) = &self.log_level {
            c.log_level = level.clone();
        }
    }

    /// The log settings the flags pin (a reload of the file keeps them).
    pub fn log_overrides(&self) -> Overrides {
        Overrides {
            format: self.log_format,
            level: self.log_level.clone(),
        }
    }

    /// The settings keys these flags set, for `check-config`.
    fn keys(&self) -> Vec<&'static str> {
        [
            ("data_dir", self.data_dir.is_some()),
            ("listen", self.listen.is_some()),
            ("thrift_port", self.thrift_port.is_some()),
            ("memcache_port", self.memcache_port.is_some()),
            ("text_port", self.text_port.is_some()),
            ("admin_port", self.admin_port.is_some()),
            ("log_format", self.log_format.is_some()),
            ("log_level", self.log_level.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, given)| given.then_some(key))
        .collect()
    }
}

/// The command line's definition, for the man page.
pub fn command() -> clap::Command {
    Cli::command()
}
