//! `steward validate`: report every problem in a configuration, or say it is valid.

use std::path::Path;

use serde_json::json;

use super::{Output, exit};
use crate::config;

pub fn run(path: &Path, output: Output) -> u8 {
    match config::load(path) {
        Ok(c) => {
            match output {
                Output::Json => println!(
                    "{}",
                    json!({"valid": true, "services": c.services.len(), "checks": c.checks.len(), "alerts": c.alerts.len(),
                           "runbooks": c.runbooks.len(), "files": c.files, "notes": c.notes})
                ),
                Output::Table => {
                    for note in &c.notes {
                        println!("{}: note: {}", note.pos, note.message);
                    }
                    println!(
                        "configuration is valid: {} service(s), {} check(s), {} alert rule(s), {} runbook(s) in {} file(s)",
                        c.services.len(),
                        c.checks.len(),
                        c.alerts.len(),
                        c.runbooks.len(),
                        c.files.len()
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
