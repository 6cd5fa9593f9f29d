//! Alerting benchmarks (not part of the product; run by bench/alerts.sh).
//!
//! `latency STEWARD N`: N checks, each with an alert rule; one check after another
//! starts failing. For each, the time from the target serving the failing response (the
//! probe that crosses `failure_threshold: 1`) to the webhook receiving the firing
//! notification, with `group_wait: 0s`. Prints p50 / p99 / max in ms.
//!
//! `ingest STEWARD ALERTMANAGER N BATCH`: N distinct alerts posted in batches of BATCH to
//! steward's Alertmanager ingest endpoint, then the same to Alertmanager's
//! `/api/v2/alerts`; both route them (grouped by `instance`, 100 groups) to the same
//! kind of webhook receiver. Measures each server's CPU time (utime+stime from /proc)
//! from the first post until the receiver has seen every alert. Prints alerts routed per
//! CPU-second for both.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use bench_support::{Killed, cpu_seconds, free_port, operator_token, serve, wait_ready};
use serde_json::{Value, json};

mod bench_support;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("latency") => latency(Path::new(&args[2]), args[3].parse().unwrap()).await,
        Some("ingest") => {
            let (n, batch) = (args[4].parse().unwrap(), args[5].parse().unwrap());
            ingest(Path::new(&args[2]), Path::new(&args[3]), n, batch).await
        }
        _ => eprintln!("usage: bench_alerts latency STEWARD N | bench_alerts ingest STEWARD ALERTMANAGER N BATCH"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[rank]
}

/// A webhook receiver: calls `on_alert` with each alert of each payload it accepts.
async fn receiver(on_alert: impl Fn(&Value) + Send + Sync + 'static) -> u16 {
    let on_alert = Arc::new(on_alert);
    let app = Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let on_alert = on_alert.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                for a in v["alerts"].as_array().into_iter().flatten() {
                    on_alert(a);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

#[derive(Default)]
struct Flip {
    failing: HashSet<usize>,
    first_failure_served: HashMap<usize, Instant>,
}

async fn latency(steward: &Path, n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let flip = Arc::new(Mutex::new(Flip::default()));
    let target = Router::new()
        .route(
            "/c/{i}",
            axum::routing::get(|State(flip): State<Arc<Mutex<Flip>>>, UrlPath(i): UrlPath<usize>| async move {
                let mut f = flip.lock().unwrap();
                if f.failing.contains(&i) {
                    f.first_failure_served.entry(i).or_insert_with(Instant::now);
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    axum::http::StatusCode::OK
                }
            }),
        )
        .with_state(flip.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, target).await.unwrap() });
    let arrived: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let a = arrived.clone();
    let hook = receiver(move |alert| {
        let name = alert["labels"]["alertname"].as_str().unwrap_or("");
        if alert["status"] == "firing"
            && let Some(i) = name.strip_prefix("Down").and_then(|i| i.parse().ok())
        {
            a.lock().unwrap().entry(i).or_insert_with(Instant::now);
        }
    })
    .await;

    let mut config = String::from("checks:\n");
    for i in 0..n {
        config.push_str(&format!(
            "  - {{name: c{i}, interval: 1s, timeout: 900ms, failure_threshold: 1, http: {{url: 'http://127.0.0.1:{target_port}/c/{i}'}}}}\n"
        ));
    }
    config.push_str("alerts:\n");
    for i in 0..n {
        config.push_str(&format!("  - {{name: Down{i}, when: check c{i} unhealthy}}\n"));
    }
    config.push_str(&format!(
        "receivers:\n  - {{name: bench, webhook: {{url: 'http://127.0.0.1:{hook}/hook'}}}}\nroute:\n  receiver: bench\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 10s\n  repeat_interval: 1h\n"
    ));
    std::fs::write(dir.path().join("steward.yaml"), config).unwrap();
    let port = free_port();
    let _server = Killed(
        Command::new(steward)
            .args(["serve", "-c"])
            .arg(dir.path().join("steward.yaml"))
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("STEWARD_LOG", std::env::var("BENCH_STEWARD_LOG").unwrap_or("error".into()))
            .stderr(std::env::var("BENCH_STEWARD_LOG_FILE").map_or(Stdio::null(), |f| std::fs::File::create(f).unwrap().into()))
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("http://127.0.0.1:{port}/health")).await;
    tokio::time::sleep(Duration::from_secs(2)).await; // every check healthy once
    for i in 0..n {
        flip.lock().unwrap().failing.insert(i);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while arrived.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let arrived = arrived.lock().unwrap();
    let served = &flip.lock().unwrap().first_failure_served;
    let mut ms: Vec<f64> = (0..n).filter_map(|i| Some(arrived.get(&i)?.duration_since(*served.get(&i)?).as_secs_f64() * 1000.0)).collect();
    ms.sort_by(f64::total_cmp);
    if ms.is_empty() {
        println!("latency: no alert arrived");
        return;
    }
    println!(
        "latency: {} of {n} alerts; failing response served → webhook received: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms[ms.len() - 1]
    );
}

fn alert(k: usize) -> Value {
    json!({
        "labels": {"alertname": "BenchAlert", "instance": format!("host-{}", k % 100), "id": k.to_string(), "severity": "warning"},
        "annotations": {"summary": format!("bench alert {k}")},
        "startsAt": chrono::Utc::now().to_rfc3339(),
        "generatorURL": "http://prometheus.invalid/graph",
    })
}

/// Posts N alerts in batches and waits until the receiver has seen them all; returns
/// (CPU-seconds of `pid`, wall seconds).
async fn drive(
    pid: u32,
    seen: &Arc<Mutex<HashSet<String>>>,
    n: usize,
    batch: usize,
    post: impl Fn(Vec<Value>) -> reqwest::RequestBuilder,
) -> (f64, f64) {
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(batch) {
        let resp = post(chunk.iter().map(|k| alert(*k)).collect()).send().await.unwrap();
        assert!(resp.status().is_success(), "post refused: {} {}", resp.status(), resp.text().await.unwrap_or_default());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.lock().unwrap().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.lock().unwrap().len(), n, "not every alert reached the receiver");
    (cpu_seconds(pid) - cpu0, start.elapsed().as_secs_f64())
}

/// Both servers' `group_wait` and `group_interval` for the ingest run:
/// `BENCH_GROUP_INTERVAL` (default 1s). A value longer than the posting takes (15s)
/// measures ingest alone, one flush per group.
fn group_interval() -> String {
    std::env::var("BENCH_GROUP_INTERVAL").unwrap_or_else(|_| "1s".into())
}

async fn ingest(steward: &Path, alertmanager: &Path, n: usize, batch: usize) {
    let client = reqwest::Client::new();
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let s = seen.clone();
    let hook = receiver(move |a| {
        if a["status"] == "firing"
            && let Some(id) = a["labels"]["id"].as_str()
        {
            s.lock().unwrap().insert(id.to_string());
        }
    })
    .await;

    // ---- steward
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("steward.yaml"),
        format!("receivers:\n  - {{name: bench, webhook: {{url: 'http://127.0.0.1:{hook}/hook'}}}}\nroute:\n  receiver: bench\n  group_by: [instance]\n  group_wait: {gw}\n  group_interval: {gw}\n", gw = group_interval()),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = operator_token(steward, &data);
    let (server, base) = serve(steward, &dir.path().join("steward.yaml"), &data).await;
    let url = format!("{base}/api/v1/ingest/alertmanager");
    let (s_cpu, s_wall) = drive(server.0.id(), &seen, n, batch, |alerts| {
        let body = json!({"version": "4", "status": "firing", "receiver": "steward", "alerts":
            alerts.into_iter().map(|mut a| { a["status"] = json!("firing"); a }).collect::<Vec<_>>()});
        client.post(&url).bearer_auth(&token).json(&body)
    })
    .await;
    drop(server);
    seen.lock().unwrap().clear();

    // ---- Alertmanager
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("alertmanager.yml"),
        format!("route:\n  receiver: bench\n  group_by: [instance]\n  group_wait: {gw}\n  group_interval: {gw}\nreceivers:\n  - name: bench\n    webhook_configs: [{{url: 'http://127.0.0.1:{hook}/hook', send_resolved: false}}]\n", gw = group_interval()),
    )
    .unwrap();
    let port = free_port();
    let am = Killed(
        Command::new(alertmanager)
            .arg(format!("--config.file={}", dir.path().join("alertmanager.yml").display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_ready(&format!("http://127.0.0.1:{port}/-/ready")).await;
    let url = format!("http://127.0.0.1:{port}/api/v2/alerts");
    let (a_cpu, a_wall) = drive(am.0.id(), &seen, n, batch, |alerts| client.post(&url).json(&alerts)).await;
    drop(am);

    println!(
        "ingest: {n} alerts in batches of {batch}, 100 groups → one webhook\n  steward:      {s_cpu:.2} CPU-s, {s_wall:.1} s wall: {:.0} alerts per CPU-second\n  alertmanager: {a_cpu:.2} CPU-s, {a_wall:.1} s wall: {:.0} alerts per CPU-second",
        n as f64 / s_cpu.max(0.01),
        n as f64 / a_cpu.max(0.01)
    );
}
