//! `steward validate`: report every problem in a configuration, or say it is valid.
//! Unset secret references are warnings here (see [`config::load_deferring_secrets`]):
//! a configuration is reviewed and tested where its production secrets are not.

use std::path::Path;

use serde_json::json;

use super::{Output, exit};
use crate::config;

pub fn run(path: &Path, output: Output, require_secrets: bool) -> u8 {
    let loaded = if require_secrets { config::load(path).map(|c| (c, Vec::new())) } else { config::load_deferring_secrets(path) };
    match loaded {
        Ok((c, warnings)) => {
            match output {
                Output::Json => println!(
                    "{}",
                    json!({"valid": true, "services": c.services.len(), "checks": c.checks.len(), "alerts": c.alerts.len(),
                           "runbooks": c.runbooks.len(), "files": c.files, "notes": c.notes, "warnings": warnings})
                ),
                Output::Table => {
                    for note in &c.notes {
                        println!("{}: note: {}", note.pos, note.message);
                    }
                    for w in &warnings {
                        println!("{}: warning: {}", w.pos, w.message);
                        if let Some(hint) = &w.hint {
                            println!("  hint: {hint}");
                        }
                    }
                    println!(
                        "configuration is valid: {} service(s), {} check(s), {} alert rule(s), {} runbook(s) in {} file(s){}",
                        c.services.len(),
                        c.checks.len(),
                        c.alerts.len(),
                        c.runbooks.len(),
                        c.files.len(),
                        match warnings.len() {
                            0 => String::new(),
                            n => format!("; {n} secret reference(s) not set here"),
                        }
                    )
                }
            }
            exit::OK
        }
        Err(d) => {
            match output {
                Output::Json => println!("{}", json!({"valid": false, "errors": d.0})),
                Output::Table => super::print_diagnostics(&d),
            }
            exit::BAD_CONFIG
        }
    }
}
