//! `steward wal push|fetch`: PostgreSQL's `archive_command` and `restore_command`. They
//! need only the configuration and the repository (no data directory, no server), run
//! as the PostgreSQL user, say nothing when all is well — PostgreSQL logs what they
//! print — and answer in exit codes PostgreSQL understands: 0 archived (or restored),
//! anything else not, and PostgreSQL keeps the segment and tries again.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{Output, exit};
use crate::backups::wal::{Pushed, WalArchive, WalError};
use crate::config;

#[derive(Subcommand, Debug)]
pub enum WalAction {
    /// Archive one WAL file: `archive_command = 'steward wal push %p --policy NAME -c CONFIG'`.
    ///
    /// Exit codes: 0 archived (also when the same bytes were archived before), 1 the
    /// repository failed (PostgreSQL keeps the file and retries), 2 bad configuration or
    /// not a WAL file, 4 refused: different bytes are archived under this name, or the
    /// segment belongs to another cluster than the policy's.
    Push {
        /// The file, as PostgreSQL's %p gives it (relative to the data directory).
        path: PathBuf,
        /// Also push up to N of the files PostgreSQL has marked ready after this one, in
        /// parallel: its next calls find them archived and return at once. For a busy
        /// cluster or a distant repository (S3), where one push at a time falls behind.
        /// Success is still reported only for the file asked for, once it is stored.
        #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=32))]
        ahead: u16,
        #[command(flatten)]
        target: Target,
    },
    /// Restore one archived WAL file: `restore_command = 'steward wal fetch %f %p --policy NAME -c CONFIG'`.
    ///
    /// Exit codes: 0 restored (checksum verified), 1 not in the archive or unreadable
    /// (PostgreSQL then ends recovery or tries streaming), 2 bad configuration.
    Fetch {
        /// The file's name, as %f gives it.
        file: String,
        /// Where to write it, as %p gives it.
        dest: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Check the archive's continuity: every segment from the oldest archived to the
    /// newest, each on the timeline the newest timeline's history says holds it; and
    /// for each physical base backup in the repository, whether its recovery reaches
    /// the newest segment or stops at a hole.
    ///
    /// Exit codes: 0 continuous, 1 segments missing (listed) or the repository failed,
    /// 2 bad configuration.
    Verify {
        #[command(flatten)]
        target: Target,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(clap::Args, Debug)]
pub struct Target {
    /// The backup policy whose repository holds the archive (a `postgres:` policy).
    #[arg(long)]
    pub policy: String,
    /// The configuration (its `backups:` and `repositories:` sections).
    #[arg(short, long, env = "STEWARD_CONFIG")]
    pub config: PathBuf,
}

pub async fn run(action: WalAction) -> u8 {
    match action {
        WalAction::Push { path, ahead, target } => push(&path, usize::from(ahead), &target).await,
        WalAction::Fetch { file, dest, target } => fetch(&file, &dest, &target).await,
        WalAction::Verify { target, output } => verify(&target, output).await,
    }
}

fn open(target: &Target) -> Result<WalArchive, u8> {
    let config = config::load(&target.config).map_err(|d| {
        super::print_diagnostics(&d);
        exit::BAD_CONFIG
    })?;
    WalArchive::open(&config, &target.policy).map_err(|e| fail(&e))
}

/// Prints `e` and gives its exit code.
fn fail(e: &WalError) -> u8 {
    eprintln!("error: {e}");
    match e {
        WalError::Invalid(_) => exit::BAD_CONFIG,
        WalError::Refused(_) => exit::REFUSED,
        WalError::NotArchived(_) | WalError::Failed(_) => exit::FAILED,
    }
}

async fn push(path: &Path, ahead: usize, target: &Target) -> u8 {
    let archive = match open(target) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match archive.push_ahead(path, ahead).await {
        Ok(Pushed::Stored(_)) => exit::OK,
        Ok(Pushed::AlreadyArchived(a)) => {
            eprintln!("steward: {} was already archived with the same content; nothing written", a.file);
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

async fn fetch(file: &str, dest: &Path, target: &Target) -> u8 {
    let archive = match open(target) {
        Ok(a) => a,
        Err(code) => return code,
    };
    match archive.fetch(file, dest).await {
        Ok(_) => exit::OK,
        Err(e) => fail(&e),
    }
}

async fn verify(target: &Target, output: Output) -> u8 {
    let archive = match open(target) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let c = match archive.verify().await {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let bases = match archive.base_backups(&c).await {
        Ok(b) => b,
        Err(e) => return fail(&e),
    };
    match output {
        Output::Json => {
            let mut v = serde_json::to_value(&c).expect("serializes");
            v["base_backups"] = serde_json::to_value(&bases).expect("serializes");
            println!("{}", serde_json::to_string_pretty(&v).expect("serializes"));
        }
        Output::Table => {
            let ancestors: Vec<String> = c.ancestors.iter().map(|a| format!("{} until {}", a.timeline, a.ended_at)).collect();
            let path = if ancestors.is_empty() { String::new() } else { format!(" (after {})", ancestors.join(", ")) };
            println!("timeline  {}{path}", c.timeline);
            match (&c.first, &c.last) {
                (Some(first), Some(last)) => {
                    let state = if c.continuous { "all archived".to_string() } else { format!("{} missing", c.missing_count) };
                    println!("segments  {first} … {last}: {}, {state}", c.expected);
                }
                _ => println!("segments  none archived yet"),
            }
            for name in c.missing.iter().take(20) {
                println!("missing   {name}");
            }
            if c.missing_count > 20 {
                println!("missing   … and {} more (-o json lists the first 1000)", c.missing_count - 20);
            }
            if bases.is_empty() {
                println!("backups   no physical base backup in the repository: nothing restores to a point yet");
            }
            for b in &bases {
                let reach = match &b.first_missing {
                    None if b.restorable_to_newest => "restores to any point up to the newest segment".to_string(),
                    None => "no WAL archived after it".to_string(),
                    Some(m) => format!("stops at the hole at {m}"),
                };
                println!("backup    {} (ended {}, from {}): {reach}", b.id, b.ended_at.format("%Y-%m-%d %H:%M:%S UTC"), b.from);
            }
        }
    }
    if c.continuous { exit::OK } else { exit::FAILED }
}
