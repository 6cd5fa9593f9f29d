//! Configuration: YAML files → a validated [`Config`], or every problem at once.
//!
//! # Layout
//! - `yaml`: YAML text → [`yaml::Node`] tree with positions.
//! - `decode`: typed readers over nodes that record diagnostics instead of failing.
//! - `sections`: one decoder per top-level section (`services`, `checks`).
//! - `alerting`: `alerts`, `route`, `inhibit_rules`; `receivers`: where notifications go.
//! - `time_intervals`: `time_intervals`, `maintenance_windows`.
//! - `prometheus`: the `prometheus` server and `rule_files` (Prometheus' format).
//! - `model`: the validated types the rest of Steward uses.
//! - `backups`: `repositories` and `backups` (policies, retention, verification).
//! - `secret`: `${env:…}` / `${file:…}` references and the redactor.
//! - `slos`: service level objectives and the burn-rate alert rules they generate.
//!
//! Start-up and reload both go through [`load`], so a reload can never accept what a
//! fresh start would reject.

pub mod alerting;
pub mod backups;
pub mod decode;
pub mod diagnostics;
pub mod duration;
pub mod forecast;
mod incidents;
pub mod model;
pub mod openslo;
mod prometheus;
mod receivers;
pub mod runbooks;
pub mod secret;
mod sections;
pub mod slos;
mod time_intervals;
mod view;
pub mod yaml;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use diagnostics::{Diagnostic, Diagnostics, Pos};
pub use model::*;
pub use view::ConfigView;

/// Reads a file, or every `*.yaml` / `*.yml` in a directory (sorted, not recursive),
/// and validates the whole as one configuration.
pub fn load(path: &Path) -> Result<Config, Diagnostics> {
    let files = config_files(path)?;
    let mut docs = Vec::new();
    let mut d = Diagnostics::default();
    for file in &files {
        let name: Arc<str> = Arc::from(file.display().to_string());
        // Refused before reading: a multi-gigabyte "configuration" must not fill memory.
        if let Ok(meta) = std::fs::metadata(file)
            && meta.len() > yaml::MAX_FILE_BYTES as u64
        {
            d.push(
                Diagnostic::error(
                    Pos::new(&name, 1, 1),
                    format!("the file is {} bytes; a configuration file is at most {} bytes (8 MiB)", meta.len(), yaml::MAX_FILE_BYTES),
                )
                .with_hint("split it into several files in a config directory"),
            );
            continue;
        }
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                d.push(Diagnostic::error(Pos::new(&name, 1, 1), format!("cannot read configuration: {e}")));
                continue;
            }
        };
        match yaml::parse(&name, &text) {
            Ok(node) => docs.push(node),
            Err(diag) => d.push(diag),
        }
    }
    let mut config = sections::decode(&docs, &mut d);
    config.files = files;
    if d.is_empty() { Ok(config) } else { Err(d.sorted()) }
}

/// [`load`] on a machine without the production secrets (`steward validate`): an unset
/// reference reads as a placeholder instead of failing, and comes back as one warning
/// at each place it is written. What only its value could tell — a URL given whole by
/// reference — is not checked; `steward serve` loads with [`load`] and requires them.
pub fn load_deferring_secrets(path: &Path) -> Result<(Config, Vec<Diagnostic>), Diagnostics> {
    let (loaded, mut unset) = secret::deferring_unset(|| load(path));
    let config = loaded?;
    unset.sort();
    unset.dedup();
    let mut warnings = Vec::new();
    for file in &config.files {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        let name: Arc<str> = Arc::from(file.display().to_string());
        for (line_no, line) in text.lines().enumerate() {
            for reference in &unset {
                for (byte, _) in line.match_indices(reference.as_str()) {
                    let pos = Pos::new(&name, line_no + 1, line[..byte].chars().count() + 1);
                    warnings.push(unset_warning(pos, reference));
                }
            }
        }
    }
    warnings.sort_by(|a, b| (&a.pos.file, a.pos.line, a.pos.col).cmp(&(&b.pos.file, b.pos.line, b.pos.col)));
    Ok((config, warnings))
}

fn unset_warning(pos: Pos, reference: &str) -> Diagnostic {
    let inner = reference.trim_start_matches("${").trim_end_matches('}');
    match inner.split_once(':') {
        Some(("file", path)) => Diagnostic::error(pos, format!("secret file `{path}` cannot be read here"))
            .with_hint("`steward serve` reads it at start: make it readable there"),
        Some((_, name)) => Diagnostic::error(pos, format!("environment variable `{name}` is not set here"))
            .with_hint(format!("`steward serve` needs it: export {name}=... where it runs")),
        None => Diagnostic::error(pos, format!("`{reference}` is not set here")),
    }
}

/// Parses configuration text directly (tests and the demo).
pub fn load_str(name: &str, text: &str) -> Result<Config, Diagnostics> {
    let name: Arc<str> = Arc::from(name);
    let mut d = Diagnostics::default();
    let docs = match yaml::parse(&name, text) {
        Ok(n) => vec![n],
        Err(diag) => {
            d.push(diag);
            return Err(d);
        }
    };
    let config = sections::decode(&docs, &mut d);
    if d.is_empty() { Ok(config) } else { Err(d.sorted()) }
}

fn config_files(path: &Path) -> Result<Vec<PathBuf>, Diagnostics> {
    let at = |msg: String, hint: &str| {
        let name: Arc<str> = Arc::from(path.display().to_string());
        Diagnostics(vec![Diagnostic::error(Pos::new(&name, 1, 1), msg).with_hint(hint)])
    };
    let meta = std::fs::metadata(path)
        .map_err(|e| at(format!("cannot read configuration: {e}"), "pass -c with a YAML file or a directory of them"))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|e| at(format!("cannot list configuration directory: {e}"), "check permissions"))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(at("the configuration directory holds no .yaml or .yml files".into(), "add a file such as steward.yaml"));
    }
    Ok(files)
}
