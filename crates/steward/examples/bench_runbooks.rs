//! Runbook engine benchmark (not part of the product; run by bench/runbooks.sh).
//!
//! `steps STEWARD N`: one run of N trivial steps, twice — `sleep: 0s` steps (no process:
//! the engine alone, durable state on) and `shell: {argv: [true]}` steps (a real
//! process each). Reports milliseconds per step beyond the command's own time (the
//! process's spawn-to-exit time the engine records as `command_ms`), steward's CPU per
//! step, and for scale the same N `true` processes started by a bash loop.
//!
//! `concurrent STEWARD R N`: R runs of N `sleep: 0s` steps started at once; per-step
//! overhead against the single-run figure, and CPU per step.
//!
//! `history STEWARD RUNS`: RUNS finished runs written to a store, then the API's list,
//! filter and audit queries timed against it (rundeck#9443: a count over 8M executions
//! took minutes).
//!
//! No runbook engine of the anchors (Rundeck, StackStorm) installs here; the issue
//! thread st2#2974 measured about 2.2 s for a trivial StackStorm action.

use std::path::Path;
use std::time::{Duration, Instant};

use bench_support::{cpu_seconds, operator_token, serve};
use serde_json::{Value, json};

mod bench_support;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("steps") => steps(Path::new(&args[2]), args[3].parse().unwrap()).await,
        Some("concurrent") => concurrent(Path::new(&args[2]), args[3].parse().unwrap(), args[4].parse().unwrap()).await,
        Some("history") => history(Path::new(&args[2]), args[3].parse().unwrap()).await,
        _ => eprintln!("usage: bench_runbooks steps STEWARD N | concurrent STEWARD RUNS N | history STEWARD RUNS"),
    }
}

fn config(n: usize) -> String {
    let mut c = String::from("runbooks:\n  - name: sleeps\n    steps:\n");
    for i in 0..n {
        c.push_str(&format!("      - {{name: s{i}, sleep: 0s}}\n"));
    }
    c.push_str("  - name: trues\n    steps:\n");
    for i in 0..n {
        c.push_str(&format!("      - {{name: t{i}, shell: {{argv: [\"true\"]}}}}\n"));
    }
    c
}

struct Finished {
    wall: Duration,
    command_ms: f64,
    steps: usize,
}

async fn start(client: &reqwest::Client, base: &str, token: &str, runbook: &str) -> i64 {
    let v: Value = client
        .post(format!("{base}/api/v1/runbooks/{runbook}/runs"))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["run"]["id"].as_i64().unwrap_or_else(|| panic!("run not started: {v}"))
}

async fn finished(client: &reqwest::Client, base: &str, token: &str, id: i64) -> Finished {
    loop {
        // Poll the light list (no steps), so the poll does not grow with the run.
        let list: Value = client
            .get(format!("{base}/api/v1/runs?before={}&limit=1", id + 1))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        match list["runs"][0]["status"].as_str() {
            Some("succeeded") => {
                let v: Value =
                    client.get(format!("{base}/api/v1/runs/{id}")).bearer_auth(token).send().await.unwrap().json().await.unwrap();
                let t = |k: &str| chrono::DateTime::parse_from_rfc3339(v["run"][k].as_str().unwrap()).unwrap();
                let wall = (t("finished_at") - t("created_at")).to_std().unwrap();
                let steps = v["steps"].as_array().unwrap();
                let command_ms = steps.iter().filter_map(|s| s["result"]["command_ms"].as_f64()).sum::<f64>() + 0.0;
                return Finished { wall, command_ms, steps: steps.len() };
            }
            Some("running") => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("run {id} ended {other:?}: {list}"),
        }
    }
}

/// A steward serving the two benchmark runbooks of `n` steps, with a token.
struct Bench {
    server: bench_support::Killed,
    base: String,
    token: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Bench {
    async fn start(steward: &Path, n: usize) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("steward.yaml");
        std::fs::write(&cfg, config(n)).unwrap();
        let data = dir.path().join("data");
        let token = operator_token(steward, &data);
        let (server, base) = serve(steward, &cfg, &data).await;
        Bench { server, base, token, client: reqwest::Client::new(), _dir: dir }
    }
}

async fn steps(steward: &Path, n: usize) {
    let bench = Bench::start(steward, n).await;
    let (base, token, pid, client) = (&bench.base, &bench.token, bench.server.0.id(), &bench.client);
    for runbook in ["sleeps", "trues"] {
        let cpu0 = cpu_seconds(pid);
        let id = start(client, base, token, runbook).await;
        let f = finished(client, base, token, id).await;
        let cpu = cpu_seconds(pid) - cpu0;
        let overhead = (f.wall.as_secs_f64() * 1000.0 - f.command_ms) / f.steps as f64;
        println!(
            "{runbook}: {} steps in {:.0} ms wall; commands' own time {:.0} ms; engine overhead {:.3} ms/step; steward CPU {:.3} ms/step",
            f.steps,
            f.wall.as_secs_f64() * 1000.0,
            f.command_ms,
            overhead,
            cpu * 1000.0 / f.steps as f64
        );
    }
    let t = Instant::now();
    let status = std::process::Command::new("bash").args(["-c", &format!("for i in $(seq {n}); do /bin/true; done")]).status().unwrap();
    assert!(status.success());
    println!(
        "baseline: bash starting {n} × /bin/true: {:.0} ms ({:.3} ms per process)",
        t.elapsed().as_secs_f64() * 1000.0,
        t.elapsed().as_secs_f64() * 1000.0 / n as f64
    );
}

async fn concurrent(steward: &Path, runs: usize, n: usize) {
    let bench = Bench::start(steward, n).await;
    let (base, token, pid, client) = (&bench.base, &bench.token, bench.server.0.id(), &bench.client);
    // One alone first, for the reference per-step figure.
    let id = start(client, base, token, "sleeps").await;
    let alone = finished(client, base, token, id).await;
    let alone_ms = alone.wall.as_secs_f64() * 1000.0 / alone.steps as f64;
    let cpu0 = cpu_seconds(pid);
    let t = Instant::now();
    let ids = futures::future::join_all((0..runs).map(|_| start(client, base, token, "sleeps"))).await;
    let mut total_steps = 0;
    for id in ids {
        total_steps += finished(client, base, token, id).await.steps;
    }
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    let cpu = cpu_seconds(pid) - cpu0;
    println!(
        "{runs} concurrent runs × {n} steps: {total_steps} steps in {wall:.0} ms wall = {:.3} ms of wall per step ({:.0} steps/s); alone: {alone_ms:.3} ms/step; steward CPU {:.3} ms/step",
        wall / total_steps as f64,
        total_steps as f64 / (wall / 1000.0),
        cpu * 1000.0 / total_steps as f64
    );
}

async fn history(steward: &Path, runs: usize) {
    use steward::runbooks::{NewEvent, NewRun, RunStatus};
    use steward::store::{RunStore, SqliteStore};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let store = SqliteStore::open(&data).await.unwrap();
    let t = Instant::now();
    for i in 0..runs {
        let run = NewRun {
            runbook: format!("runbook-{}", i % 20),
            params: Default::default(),
            trigger: "manual".into(),
            started_by: format!("person-{}", i % 7),
            parent_run: None,
            alert_fingerprint: None,
            incident_id: None,
            lock: None,
            trigger_key: None,
            owner: "bench".into(),
        };
        let r = store.create_run(&run, NewEvent::new(0, "run_started", "started").by(&run.started_by)).await.unwrap();
        let status = if i % 10 == 0 { RunStatus::Failed } else { RunStatus::Succeeded };
        store.set_run_status(r.id, status, None, None, &[NewEvent::new(r.id, "run_succeeded", "done")]).await.unwrap();
    }
    println!("wrote {runs} finished runs in {:.1} s", t.elapsed().as_secs_f64());
    drop(store);
    let cfg = dir.path().join("steward.yaml");
    std::fs::write(&cfg, "runbooks:\n  - {name: runbook-0, steps: [{name: a, sleep: 0s}]}\n").unwrap();
    let token = operator_token(steward, &data);
    let (_server, base) = serve(steward, &cfg, &data).await;
    let client = reqwest::Client::new();
    for path in [
        "/runs?limit=50",
        "/runs?limit=50&before=1000",
        "/runs?runbook=runbook-7&limit=50",
        "/runs?status=failed&limit=50",
        "/runs?runbook=runbook-7&status=failed&limit=50",
        "/runs?status=cancelled&limit=50",
        "/audit?limit=100",
        "/audit?actor=person-3&limit=100",
        "/audit?actor=nobody&limit=100",
    ] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let resp = client.get(format!("{base}/api/v1{path}")).bearer_auth(&token).send().await.unwrap();
            assert!(resp.status().is_success(), "{path}: {}", resp.status());
            let _: Value = resp.json().await.unwrap();
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!("GET /api/v1{path}: median {:.1} ms (of 5)", times[2]);
    }
}
