//! Incident benchmark (not part of the product; run by bench/incidents.sh).
//!
//! `storm STEWARD N SERVICES`: N distinct firing alerts spread over SERVICES services
//! are posted (batches of 100) to the Alertmanager ingest endpoint of a steward whose
//! incident policy groups by service and pages a webhook at level 1. Reports:
//! - time from the first post to the first page;
//! - time until every alert is attached, and that there is exactly one incident per
//!   service;
//! - steward's CPU time for the storm;
//! - the steady cost of the once-a-second incident pass with all N alerts held
//!   (CPU-seconds per wall-second over 20 s, nothing changing).
//!
//! No incident tool runs on this machine to compare with (Grafana OnCall and GoAlert
//! are not Debian packages); the figures stand alone.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use bench_support::{cpu_seconds, operator_token, serve};
use serde_json::{Value, json};

mod bench_support;

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("storm") => storm(Path::new(&args[2]), args[3].parse().unwrap(), args[4].parse().unwrap()).await,
        _ => eprintln!("usage: bench_incidents storm STEWARD N SERVICES"),
    }
}

async fn storm(steward: &Path, n: usize, services: usize) {
    let pages: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let p = pages.clone();
    let app = Router::new().route(
        "/page",
        axum::routing::post(move |body: axum::body::Bytes| {
            let p = p.clone();
            async move {
                let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if v["incident"]["escalation"].is_object() {
                    p.lock().unwrap().push(Instant::now());
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  - {{name: pager, webhook: {{url: 'http://127.0.0.1:{hook}/page'}}}}\nroute:\n  receiver: pager\n  routes:\n    - {{receiver: pager, matchers: ['never=\"matches\"']}}\n  group_wait: 1h\nincidents:\n  policies:\n    - {{name: storm, group_by: [service], escalation: page}}\n  escalation_policies:\n    - name: page\n      levels:\n        - {{notify: [pager], wait: 10m}}\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = operator_token(steward, &data);
    let (server, base) = serve(steward, &config, &data).await;
    let client = reqwest::Client::new();
    let pid = server.0.id();
    let cpu0 = cpu_seconds(pid);
    let start = Instant::now();
    let alerts: Vec<Value> = (0..n)
        .map(|k| {
            json!({"status": "firing", "labels": {"alertname": format!("Storm{}", k / services), "service": format!("svc-{}", k % services), "severity": "critical"},
                   "annotations": {"summary": format!("storm alert {k}")}, "startsAt": chrono::Utc::now().to_rfc3339()})
        })
        .collect();
    for chunk in alerts.chunks(100) {
        let body = json!({"version": "4", "status": "firing", "receiver": "steward", "alerts": chunk});
        let resp = client.post(format!("{base}/api/v1/ingest/alertmanager")).bearer_auth(&token).json(&body).send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap_or_default());
    }
    let posted = start.elapsed();
    // Poll until every alert is attached (polling every 200 ms; its cost is included).
    let deadline = Instant::now() + Duration::from_secs(120);
    let (incidents, attached) = loop {
        let list: Value = client
            .get(format!("{base}/api/v1/incidents?status=all&limit=10000"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<i64> = list["incidents"].as_array().unwrap().iter().map(|i| i["id"].as_i64().unwrap()).collect();
        let mut attached = 0;
        for id in &ids {
            let d: Value =
                client.get(format!("{base}/api/v1/incidents/{id}")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
            attached += d["alerts"].as_array().map_or(0, Vec::len);
        }
        if attached >= n || Instant::now() > deadline {
            break (ids.len(), attached);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let all_attached = start.elapsed();
    let storm_cpu = cpu_seconds(pid) - cpu0;
    let first_page = pages.lock().unwrap().first().map(|t| t.duration_since(start));
    let deadline = Instant::now() + Duration::from_secs(30);
    while pages.lock().unwrap().len() < services && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_paged = pages.lock().unwrap().last().map(|t| t.duration_since(start));
    println!("storm: {n} alerts over {services} services, posted in {:.2} s", posted.as_secs_f64());
    println!("  incidents opened: {incidents} (one per service expected: {services}); alerts attached: {attached}/{n}");
    println!(
        "  first page after {:.0} ms; every service paged after {:.0} ms ({} pages)",
        first_page.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
        all_paged.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0),
        pages.lock().unwrap().len()
    );
    println!("  every alert attached after {:.2} s; steward CPU for the storm {:.2} s", all_attached.as_secs_f64(), storm_cpu);
    let cpu1 = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(20)).await;
    println!("  steady state with {n} alerts held: {:.1} % of one core", (cpu_seconds(pid) - cpu1) / 20.0 * 100.0);
    assert_eq!(incidents, services, "one incident per service");
    assert_eq!(attached, n, "every alert attached");
}
