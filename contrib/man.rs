//! Writes the man pages, generated from the command-line definition
//! ([`kestrel::cli::command`]) with `clap_mangen`, so they never drift from
//! `kestrel --help`. An example rather than part of the server, so that
//! neither the binary nor its build carries it:
//!
//! ```sh
//! cargo run -p kestrel --example man > target/kestrel.1      # kestrel(1) only
//! cargo run -p kestrel --example man -- target/man           # kestrel(1) and one page per subcommand
//! man -l target/man/kestrel.1
//! ```
//!
//! `contrib/deb/build.sh` uses the second form for the Debian package.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cmd = kestrel::cli::command();
    let result = match std::env::args_os().nth(1).map(PathBuf::from) {
        // kestrel.1 refers to kestrel-<subcommand>(1) for each subcommand:
        // write those pages too, recursively.
        Some(dir) => {
            std::fs::create_dir_all(&dir).and_then(|()| clap_mangen::generate_to(cmd, &dir))
        }
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("man: {e}");
            ExitCode::FAILURE
        }
    }
}
