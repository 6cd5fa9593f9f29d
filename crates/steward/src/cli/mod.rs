//! Command-line front end. Each subcommand lives in its own module and returns an
//! exit code; formatting for people (tables) and scripts (JSON) happens only here.

pub mod alerts;
pub mod backups;
pub mod check;
pub mod demo;
pub mod incidents;
pub mod runs;
pub mod serve;
pub mod token;
pub mod validate;

use std::io::IsTerminal;

use clap::ValueEnum;

/// Exit codes shared by every subcommand.
pub mod exit {
    /// Everything as hoped: config valid, checks healthy, command done.
    pub const OK: u8 = 0;
    /// The command ran and found a problem (an unhealthy check, a failed verification) or failed at run time.
    pub const FAILED: u8 = 1;
    /// The input or configuration is invalid (`validate` included), so nothing was run.
    pub const BAD_CONFIG: u8 = 2;
    /// Someone else holds the lock (another backup of the same policy); try again later.
    pub const BUSY: u8 = 3;
    /// Refused to act destructively: the target holds data without `--force`, or the
    /// action was not confirmed.
    pub const REFUSED: u8 = 4;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns for people.
    Table,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// Prints rows as aligned columns; the last column is never padded.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// Whether to decorate output (only on a terminal, never in pipes or CI logs).
pub fn fancy() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

pub fn print_diagnostics(d: &crate::config::Diagnostics) {
    eprintln!("{d}");
}

/// A running server and a token for it.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080", env = "STEWARD_SERVER")]
    pub server: String,
    /// An API token (viewer to read, operator to act: silences, incidents).
    #[arg(long, env = "STEWARD_TOKEN", hide_env_values = true)]
    pub token: String,
}

impl RemoteArgs {
    pub fn remote(self) -> alerts::Remote {
        alerts::Remote { server: self.server, token: self.token }
    }
}
