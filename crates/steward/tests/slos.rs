//! SLOs end to end: a check's runs counted into per-minute buckets in the store, the
//! figures read back through the API and the CLI, a burn-rate alert generated from the
//! SLO firing into an incident when a real HTTP service fails, and the buckets kept
//! across a restart. The arithmetic itself (exact budgets, the minute a page fires, the
//! traffic gate) is tested with a controlled clock in `steward_model::slo`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::alerting::request;
use common::{Server, create_token, steward, wait_for};
use serde_json::Value;

#[test]
fn an_slo_counts_its_check_pages_on_a_fast_burn_and_keeps_its_buckets_across_a_restart() {
    let failing = Arc::new(AtomicBool::new(false));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get({
            let failing = failing.clone();
            move || {
                let down = failing.load(Ordering::SeqCst);
                async move { if down { axum::http::StatusCode::SERVICE_UNAVAILABLE } else { axum::http::StatusCode::OK } }
            }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    // A 1 h window and one fast alert: 2 % of the hour's budget within 2 minutes
    // (burn ≥ 0.6), with the last minute still burning.
    std::fs::write(
        &config,
        format!(
            "services:
  - name: api
checks:
  - name: api-health
    service: api
    interval: 1s
    failure_threshold: 1000
    http: {{url: '{url}'}}
slos:
  - name: api-availability
    service: api
    objective: 99
    window: 1h
    sli: {{check: api-health}}
    min_events: 5
    alerts: [{{long: 2m, short: 1m, budget_spent: 2%, severity: critical}}]
incidents:
  policies:
    - name: all
runbooks:
  - name: deploy
    steps:
      - name: budget
        slo: {{name: api-availability, min_budget_remaining: 50%}}
      - name: ship
        shell: {{script: 'echo shipped'}}
"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "viewer");
    let operator = create_token(&data, "olga", "operator");
    let deploy = |base: &str, want: &str| {
        let (code, v) = request("POST", &format!("{base}/api/v1/runbooks/deploy/runs"), &operator, Some(serde_json::json!({})));
        assert_eq!(code, 201, "{v}");
        let id = v["run"]["id"].as_i64().unwrap();
        wait_for(&format!("deploy run {id} to be {want}"), Duration::from_secs(30), || {
            let (_, d) = request("GET", &format!("{base}/api/v1/runs/{id}"), &operator, None);
            let status = d["run"]["status"].as_str().unwrap_or("");
            (status == want || (status != "running" && status != "pending")).then_some(d)
        })
    };
    let mut server = Server::start(&config, &data);
    let base = server.base.clone();
    let slo = |base: &str| request("GET", &format!("{base}/api/v1/slos/api-availability"), &token, None).1["slo"].clone();

    // Healthy: the runs are counted, the budget is whole, nothing burns.
    let healthy = wait_for("five good events", Duration::from_secs(30), || {
        let s = slo(&base);
        (s["total"].as_f64()? >= 5.0).then_some(s)
    });
    assert_eq!(healthy["sli_percent"], 100.0, "{healthy:#}");
    assert_eq!(healthy["budget_remaining_percent"], 100.0);
    assert_eq!(healthy["burn"][0]["alert"], "api-availability:burn:2m");
    assert_eq!(healthy["burn"][0]["firing_condition"], false);
    assert!((healthy["burn"][0]["factor"].as_f64().unwrap() - 0.6).abs() < 1e-9, "{healthy:#}");
    let out = steward().args(["slo", "--server", &base, "--token", &token]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && table.contains("api-availability") && table.contains("100.0000 %"), "{table}");
    // The budget policy lets a deploy through while the budget is whole.
    let d = deploy(&base, "succeeded");
    assert_eq!(d["run"]["status"], "succeeded", "{d:#}");

    // Failing: every run is bad; the burn alert fires (the check's own health never
    // turns, failure_threshold is out of reach: the SLO alone pages) and opens an incident.
    failing.store(true, Ordering::SeqCst);
    let alert = wait_for("the burn-rate alert to fire", Duration::from_secs(60), || {
        let (_, v) = request("GET", &format!("{base}/api/v1/alerts"), &token, None);
        v["alerts"].as_array()?.iter().find(|a| a["rule"] == "api-availability:burn:2m" && a["state"] == "firing").cloned()
    });
    assert_eq!(alert["labels"]["slo"], "api-availability", "{alert:#}");
    assert_eq!(alert["labels"]["service"], "api");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert!(alert["annotations"]["summary"].as_str().unwrap().contains("burns its error budget"), "{alert:#}");
    let incident = wait_for("an incident for the burn", Duration::from_secs(30), || {
        let (_, v) = request("GET", &format!("{base}/api/v1/incidents"), &token, None);
        v["incidents"].as_array()?.first().cloned()
    });
    assert_eq!(incident["services"], serde_json::json!(["api"]), "{incident:#}");
    let burning = slo(&base);
    assert_eq!(burning["burn"][0]["firing_condition"], true, "{burning:#}");
    assert!(burning["budget_remaining_percent"].as_f64().unwrap() < 100.0, "{burning:#}");
    // Spent below half: the same deploy stops at the gate and says why; nothing shipped.
    wait_for("the budget to fall under half", Duration::from_secs(30), || {
        (slo(&base)["budget_remaining_percent"].as_f64()? < 50.0).then_some(())
    });
    let d = deploy(&base, "failed");
    assert_eq!(d["run"]["status"], "failed", "{d:#}");
    let error = d["run"]["error"].as_str().unwrap_or("");
    assert!(error.contains("budget policy stops here") && error.contains("under this runbook's minimum of 50%"), "{error}");
    let ship = d["steps"].as_array().unwrap().iter().find(|s| s["path"] == "ship");
    assert!(ship.is_none_or(|s| s["status"] != "succeeded"), "nothing shipped: {d:#}");
    let out = steward().args(["slo", "api-availability", "--server", &base, "--token", &token]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && shown.contains("burning") && shown.contains("2m/1m"), "{shown}");

    // A restart keeps the counted events: the window's total does not start again.
    let before: Value = slo(&base)["total"].clone();
    assert_eq!(server.stop(), Some(0));
    let server = Server::start(&config, &data);
    let after = slo(&server.base);
    assert!(after["total"].as_f64().unwrap() >= before.as_f64().unwrap(), "before {before}, after {after:#}");
    let (code, v) = request("GET", &format!("{}/api/v1/slos/nope", server.base), &token, None);
    assert_eq!((code, v["error"]["code"].as_str()), (404, Some("not_found")), "{v}");
}
