//! `steward check`: run checks once, concurrently, and report. The seeds'
//! `health-check.sh`, done properly.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Output, exit};

const SKIPPED: &str = "backup and heartbeat checks read a server's records: give its --data directory";
use crate::checks::Prober;
use crate::config::{self, Diagnostic, Diagnostics, Pos};

/// `data`: the data directory of a server, for `backup` and `heartbeat` checks (they
/// read its records);
/// without it they are skipped and say so, rather than reported unhealthy.
pub async fn run(path: &Path, names: &[String], output: Output, data: Option<&Path>) -> u8 {
    let config = match config::load(path) {
        Ok(c) => c,
        Err(d) => {
            super::print_diagnostics(&d);
            return exit::BAD_CONFIG;
        }
    };
    let unknown: Vec<&String> = names.iter().filter(|n| config.check(n).is_none()).collect();
    if !unknown.is_empty() {
        let file: Arc<str> = Arc::from(path.display().to_string());
        let d = Diagnostics(
            unknown
                .iter()
                .map(|n| {
                    Diagnostic::error(Pos::new(&file, 1, 1), format!("no check named `{n}`"))
                        .with_hint("run `steward check -c PATH` without names to see them all")
                })
                .collect(),
        );
        super::print_diagnostics(&d);
        return exit::BAD_CONFIG;
    }
    let selected: Vec<_> = config.checks.iter().filter(|c| names.is_empty() || names.contains(&c.name)).cloned().collect();
    let mut prober = Prober::new(config.redactor.clone()).with_config(Arc::new(config.clone()));
    if let Some(dir) = data {
        match crate::store::SqliteStore::open(dir).await {
            Ok(store) => {
                let store = Arc::new(store);
                prober = prober.with_stores(store.clone(), store);
            }
            Err(e) => {
                eprintln!("error: {e}\n  hint: --data is the directory `steward serve --data` uses");
                return exit::FAILED;
            }
        }
    }
    let (selected, skipped): (Vec<_>, Vec<_>) = selected
        .into_iter()
        .partition(|c| data.is_some() || !matches!(c.probe, crate::config::Probe::Backup(_) | crate::config::Probe::Heartbeat(_)));
    let prober = Arc::new(prober);
    let tasks: Vec<_> = selected
        .into_iter()
        .map(|spec| {
            let prober = prober.clone();
            tokio::spawn(async move {
                let outcome = prober.run(&spec).await;
                (spec, outcome)
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for t in tasks {
        results.push(t.await.expect("probes never panic"));
    }
    let all_healthy = results.iter().all(|(_, o)| o.healthy);
    match output {
        Output::Json => {
            let checks: Vec<_> = results
                .iter()
                .map(|(s, o)| {
                    json!({
                        "name": s.name, "service": s.service, "kind": s.probe.kind(), "target": s.probe.target(),
                        "status": if o.healthy { "healthy" } else { "unhealthy" },
                        "latency_ms": (o.latency.as_secs_f64() * 1e6).round() / 1e3, "reason": o.reason,
                    })
                })
                .collect();
            let skipped: Vec<_> = skipped
                .iter()
                .map(|s| json!({"name": s.name, "service": s.service, "kind": s.probe.kind(), "status": "skipped", "reason": SKIPPED}))
                .collect();
            println!("{}", json!({ "checks": checks, "skipped": skipped, "healthy": all_healthy }));
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|(s, o)| {
                    vec![
                        s.name.clone(),
                        s.service.clone().unwrap_or_else(|| "-".into()),
                        s.probe.kind().into(),
                        if o.healthy { "healthy".into() } else { "UNHEALTHY".into() },
                        format!("{:.1}ms", o.latency.as_secs_f64() * 1000.0),
                        o.reason.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            let rows: Vec<Vec<String>> = rows
                .into_iter()
                .chain(skipped.iter().map(|s| {
                    let service = s.service.clone().unwrap_or_else(|| "-".into());
                    vec![s.name.clone(), service, s.probe.kind().into(), "skipped".into(), "-".into(), SKIPPED.into()]
                }))
                .collect();
            super::print_table(&["CHECK", "SERVICE", "KIND", "STATUS", "LATENCY", "REASON"], &rows);
            let failing = results.iter().filter(|(_, o)| !o.healthy).count();
            let skipped = if skipped.is_empty() { String::new() } else { format!(", {} skipped", skipped.len()) };
            println!("\n{} check(s), {} healthy, {failing} unhealthy{skipped}", results.len(), results.len() - failing);
        }
    }
    if all_healthy { exit::OK } else { exit::FAILED }
}

/// `steward ready`: exit 0 when the server answers `/health/ready` with 200.
pub async fn ready(server: &str) -> u8 {
    let base = match super::server_url(server) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_CONFIG;
        }
    };
    let client = match crate::checks::http::build_client(&Default::default(), false) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    match client.get(format!("{base}/health/ready")).timeout(std::time::Duration::from_secs(5)).send().await {
        Ok(r) if r.status().is_success() => {
            println!("{base}: ready");
            exit::OK
        }
        Ok(r) => {
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            eprintln!("{base}: not ready ({status}): {}", body["reason"].as_str().unwrap_or("no reason given"));
            exit::FAILED
        }
        Err(e) => {
            eprintln!("{base}: unreachable: {e}");
            exit::FAILED
        }
    }
}
