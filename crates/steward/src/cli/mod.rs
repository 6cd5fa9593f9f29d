//! Command-line front end. Each subcommand lives in its own module and returns an
//! exit code; formatting for people (tables) and scripts (JSON) happens only here.

pub mod alerts;
pub mod backups;
pub mod check;
pub mod demo;
pub mod incidents;
pub mod runbook;
pub mod runs;
pub mod serve;
pub mod store;
pub mod tls;
pub mod token;
pub mod validate;
pub mod wal;

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

/// A running server and a token for it. Each comes from, in order: the flag, its
/// environment variable, the client profile (`~/.config/steward/client.yaml`, or
/// `$STEWARD_CLIENT_CONFIG`), and for the server `http://127.0.0.1:8080`.
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// The server's base URL (`host:port` means http://host:port).
    #[arg(long, env = "STEWARD_SERVER")]
    pub server: Option<String>,
    /// An API token. Prefer --token-file: a token given here shows in `ps` and in the
    /// shell's history.
    #[arg(long, env = "STEWARD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// A file holding the API token (its first line), readable by you only.
    #[arg(long, env = "STEWARD_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
}

/// The client profile: where `steward` finds a server and its token when no flag or
/// environment variable says.
///
/// ```yaml
/// server: https://steward.example.com
/// token_file: ~/.config/steward/token
/// ```
#[derive(Debug, Default, PartialEq)]
pub struct ClientProfile {
    pub server: Option<String>,
    pub token_file: Option<std::path::PathBuf>,
}

impl ClientProfile {
    /// `$STEWARD_CLIENT_CONFIG`, else `$XDG_CONFIG_HOME/steward/client.yaml`, else
    /// `~/.config/steward/client.yaml`.
    pub fn path() -> Option<std::path::PathBuf> {
        if let Some(p) = std::env::var_os("STEWARD_CLIENT_CONFIG") {
            return Some(p.into());
        }
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(std::path::PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".config")))?;
        Some(base.join("steward/client.yaml"))
    }

    /// Reads the profile; a missing file is an empty profile, a wrong one an error
    /// naming file:line:column.
    pub fn load(path: &std::path::Path) -> Result<ClientProfile, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ClientProfile::default()),
            Err(e) => return Err(format!("cannot read the client profile {}: {e}", path.display())),
        };
        let name: std::sync::Arc<str> = std::sync::Arc::from(path.display().to_string());
        let root = crate::config::yaml::parse(&name, &text).map_err(|d| d.to_string())?;
        let mut d = crate::config::Diagnostics::default();
        let mut profile = ClientProfile::default();
        if let Some(mut f) = crate::config::decode::Fields::of(&root, "the client profile", &mut d) {
            profile.server = f.take("server").and_then(|n| crate::config::decode::string(n, "server", &mut d));
            profile.token_file =
                f.take("token_file").and_then(|n| crate::config::decode::string(n, "token_file", &mut d)).map(|p| {
                    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
                        (Some(rest), Some(home)) => std::path::PathBuf::from(home).join(rest),
                        _ => std::path::PathBuf::from(p),
                    }
                });
            f.finish(&["server", "token_file"], &mut d);
        }
        if d.is_empty() { Ok(profile) } else { Err(d.to_string()) }
    }
}

/// `host:port` → `http://host:port`; anything else must be an http(s) URL.
pub fn server_url(text: &str) -> Result<String, String> {
    let with_scheme = if text.contains("://") { text.to_string() } else { format!("http://{text}") };
    match url::Url::parse(&with_scheme) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(with_scheme.trim_end_matches('/').to_string()),
        Ok(u) => Err(format!("--server `{text}`: use http:// or https:// and a host, not `{}`", u.scheme())),
        Err(e) => Err(format!("--server `{text}` is not a URL ({e}); write e.g. http://127.0.0.1:8080")),
    }
}

/// The token in `path`: its first line, trimmed. Warns when others may read the file.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        eprintln!("warning: {} is readable by others; chmod 600 it", path.display());
    }
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!("the token file {} is empty", path.display()));
    }
    Ok(token)
}

impl RemoteArgs {
    /// The server and token to use, from flags, environment and the client profile.
    pub fn resolve(self) -> Result<alerts::Remote, String> {
        let profile = match ClientProfile::path() {
            Some(p) if self.server.is_none() || (self.token.is_none() && self.token_file.is_none()) => ClientProfile::load(&p)?,
            _ => ClientProfile::default(),
        };
        let server = server_url(self.server.as_deref().or(profile.server.as_deref()).unwrap_or("http://127.0.0.1:8080"))?;
        let token = match (self.token, self.token_file.or(profile.token_file)) {
            (Some(t), _) => t,
            (None, Some(file)) => read_token_file(&file)?,
            (None, None) => {
                return Err(format!(
                    "no API token for {server}: pass --token-file FILE, set STEWARD_TOKEN, or put `token_file:` in {}",
                    ClientProfile::path().map_or("~/.config/steward/client.yaml".into(), |p| p.display().to_string())
                ));
            }
        };
        Ok(alerts::Remote { server, token })
    }

    /// [`RemoteArgs::resolve`], or the error and exit code 2 (invalid input).
    pub fn remote(self) -> alerts::Remote {
        self.resolve().unwrap_or_else(|e| {
            eprintln!("error: {e}");
            std::process::exit(i32::from(exit::BAD_CONFIG))
        })
    }
}
