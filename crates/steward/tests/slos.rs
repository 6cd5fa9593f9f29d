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
    let (url, _rt) = health_endpoint(failing.clone());

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
    let out = steward().args(["slo", "list", "--server", &base, "--token", &token]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && table.contains("api-availability") && table.contains("100.0000 %"), "{table}");
    // The public page and its JSON: promised and delivered, never the budget's slack.
    wait_for("the status page to show the SLO", Duration::from_secs(20), || {
        let page = reqwest_text(&format!("{base}/"));
        page.contains(r#"data-slo="api-availability">api-availability: 100% delivered of 99% promised over 1h"#).then_some(())
    });
    let public: Value = serde_json::from_str(&reqwest_text(&format!("{base}/status.json"))).unwrap();
    let figure = &public["services"][0]["slos"][0];
    assert_eq!(
        (figure["name"].as_str(), figure["objective_percent"].as_f64(), figure["sli_percent"].as_f64()),
        (Some("api-availability"), Some(99.0), Some(100.0)),
        "{public:#}"
    );
    assert!(figure.get("budget_remaining_percent").is_none(), "{figure}");
    // The metrics: counters that moved, the objective, and the gauges once published.
    let metrics = wait_for("the SLO gauges", Duration::from_secs(30), || {
        let m = reqwest_text(&format!("{base}/metrics"));
        m.contains(r#"steward_slo_error_budget_remaining_ratio{slo="api-availability"} 1.0"#).then_some(m)
    });
    for line in [
        r#"steward_slo_objective_ratio{slo="api-availability"} 0.99"#,
        r#"steward_slo_sli_ratio{slo="api-availability"} 1.0"#,
        r#"steward_slo_burn_rate{slo="api-availability",window="2m"} 0.0"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    let counted =
        |name: &str| metrics.lines().find_map(|l| l.strip_prefix(&format!("{name}{{slo=\"api-availability\"}} "))?.parse::<f64>().ok());
    assert!(counted("steward_slo_events_total").is_some_and(|n| n >= 5.0), "{metrics}");
    assert_eq!(counted("steward_slo_events_total"), counted("steward_slo_good_events_total"), "all good so far");
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
    let out = steward().args(["slo", "show", "api-availability", "--server", &base, "--token", &token]).output().unwrap();
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

/// Prometheus' instant query `expr`: each series' labels and value.
fn prometheus_query(prometheus: &str, expr: &str) -> Vec<(Value, f64)> {
    let url = format!("{prometheus}/api/v1/query?query={}", percent_encode(expr));
    let (_, v) = request("GET", &url, "", None);
    v["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["metric"].clone(), r["value"][1].as_str()?.parse::<f64>().ok()?)))
        .collect()
}

fn percent_encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// `steward slo export --prometheus-rules` loaded into a real Prometheus scraping the
/// real server: on the same events, Prometheus' budget and burn are Steward's, and the
/// same alert fires on both sides (and the same one does not).
///
/// Deterministic despite two clocks: the check runs once a day (its next slot, known
/// from the scheduler's own arithmetic, is hours away) while Prometheus reads the
/// counters' zero; a reload makes it run every second for a while, and another makes
/// it daily again, so the counters stop and both sides hold exactly the same events.
#[test]
fn exported_rules_in_a_real_prometheus_agree_with_steward() {
    let failing = Arc::new(AtomicBool::new(false));
    let (url, _rt) = health_endpoint(failing.clone());

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    // Objective 50 %: a quarter of bad events spends half the budget. Two alerts: over
    // 1h/5m at 0.05 % of the 30-day budget (burn ≥ 0.36: fires at a 25 % error ratio,
    // a burn of 0.5), over 6h/30m at 0.5 % (burn ≥ 0.6: does not).
    let write_config = |interval: &str| {
        std::fs::write(
            &config,
            format!(
                "services: [{{name: api}}]
checks:
  - name: api-health
    service: api
    interval: {interval}
    timeout: 1s
    failure_threshold: 1000
    http: {{url: '{url}'}}
slos:
  - name: api-availability
    service: api
    objective: 50
    sli: {{check: api-health}}
    min_events: 10
    alerts:
      - {{long: 1h, short: 5m, budget_spent: 0.05%, severity: critical}}
      - {{long: 6h, short: 30m, budget_spent: 0.5%, severity: warning}}
"
            ),
        )
        .unwrap();
    };
    // A daily check whose slot is at least two minutes away: no run meanwhile.
    let daily = || {
        let day = Duration::from_secs(86_400);
        let next = steward::checks::scheduler::next_run_in("api-health", day, chrono::Utc::now().timestamp_millis());
        if next < Duration::from_secs(120) {
            std::thread::sleep(next + Duration::from_secs(2));
        }
        write_config("1d");
    };
    daily();
    let out = steward().args(["slo", "export", "--prometheus-rules", "-c"]).arg(&config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rules = String::from_utf8(out.stdout).unwrap();
    let rule_file = dir.path().join("slo.rules.yml");
    std::fs::write(&rule_file, &rules).unwrap();
    let checked = std::process::Command::new("promtool").arg("check").arg("rules").arg(&rule_file).output().unwrap();
    assert!(checked.status.success(), "promtool: {}{}", String::from_utf8_lossy(&checked.stdout), String::from_utf8_lossy(&checked.stderr));

    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "viewer");
    let admin = create_token(&data, "root", "admin");
    let server = Server::start(&config, &data);
    let base = server.base.clone();
    let prometheus = common::PrivatePrometheus::start_with_rules(&[base.trim_start_matches("http://").to_string()], Some(&rules));
    let prom = prometheus.url();
    let counters = |name: &str| prometheus_query(&prom, &format!("sum({name}{{slo=\"api-availability\"}})")).first().map(|s| s.1);
    wait_for("Prometheus to read the counters at zero", Duration::from_secs(30), || {
        (counters("steward_slo_events_total") == Some(0.0) && counters("steward_slo_good_events_total") == Some(0.0)).then_some(())
    });
    let reload = || {
        let (code, v) = request("POST", &format!("{base}/api/v1/config/reload"), &admin, None);
        assert_eq!(code, 200, "{v}");
    };

    let slo = || request("GET", &format!("{base}/api/v1/slos/api-availability"), &token, None).1["slo"].clone();
    let total = || slo()["total"].as_f64().unwrap_or(0.0);
    write_config("1s");
    reload();
    for (down, until) in [(false, 10.0), (true, 15.0), (false, 20.0)] {
        failing.store(down, Ordering::SeqCst);
        wait_for(&format!("{until} events"), Duration::from_secs(60), || (total() >= until).then_some(()));
    }
    daily();
    reload();
    // The reload stops the check between runs; a run under way is written first.
    std::thread::sleep(Duration::from_secs(2));
    let steward_side = slo();
    let (good, all) = (steward_side["good"].as_f64().unwrap(), steward_side["total"].as_f64().unwrap());
    assert!(all >= 20.0 && all - good >= 5.0, "{steward_side:#}");
    let budget_left = steward_side["budget_remaining_percent"].as_f64().unwrap() / 100.0;
    assert!((budget_left - (1.0 - ((all - good) / all) / 0.5)).abs() < 1e-9, "{steward_side:#}");
    let burn_1h = steward_side["burn"][0]["long_burn"].as_f64().unwrap();

    let label = r#"{sloth_slo="api-availability"}"#;
    let prometheus_side = wait_for("Prometheus' rules to see the same events", Duration::from_secs(30), || {
        if counters("steward_slo_events_total") != Some(all) || counters("steward_slo_good_events_total") != Some(good) {
            return None;
        }
        let left = prometheus_query(&prom, &format!("slo:period_error_budget_remaining:ratio{label}")).first()?.1;
        let burn = prometheus_query(&prom, &format!("slo:sli_error:ratio_rate1h{label}")).first()?.1 / 0.5;
        ((left - budget_left).abs() < 1e-9 && (burn - burn_1h).abs() < 1e-9).then_some((left, burn))
    });
    assert!(prometheus_side.0 > 0.0 && prometheus_side.0 < 1.0, "a budget partly spent: {prometheus_side:?}");
    assert_eq!(slo()["total"].as_f64(), Some(all), "no run since: the comparison was on the same events");

    // The same alert fires on both sides, and only that one.
    assert_eq!(steward_side["burn"][0]["firing_condition"], true, "{steward_side:#}");
    assert_eq!(steward_side["burn"][1]["firing_condition"], false, "{steward_side:#}");
    let firing = wait_for("Prometheus' alert to fire", Duration::from_secs(30), || {
        let firing: Vec<String> = prometheus_query(&prom, r#"ALERTS{alertstate="firing"}"#)
            .into_iter()
            .filter_map(|(m, _)| m["alertname"].as_str().map(str::to_string))
            .collect();
        (!firing.is_empty()).then_some(firing)
    });
    assert_eq!(firing, ["api-availability:burn:1h"]);
    let (_, rules_state) = request("GET", &format!("{prom}/api/v1/rules"), "", None);
    let groups = rules_state["data"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{rules_state:#}");
    for r in groups[0]["rules"].as_array().unwrap() {
        assert_eq!(r["health"], "ok", "{r:#}");
    }
}

fn reqwest_text(url: &str) -> String {
    common::install_crypto();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

/// A real HTTP service answering `/health` with 200, or 503 while `failing`; its URL,
/// and the runtime serving it (dropped with the test).
fn health_endpoint(failing: Arc<AtomicBool>) -> (String, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/health",
        axum::routing::get(move || {
            let down = failing.load(Ordering::SeqCst);
            async move { if down { axum::http::StatusCode::SERVICE_UNAVAILABLE } else { axum::http::StatusCode::OK } }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rt)
}

/// An SLI counted by a real Prometheus: two hours of request counters written into its
/// store (90 whole minutes: 40 good requests a minute, and 4 failed ones in each of the
/// first 30), read back minute by minute into the SLO's buckets — exactly 3,600 good of
/// 3,720 — and not counted again after a restart.
#[test]
fn a_prometheus_sli_counts_each_minute_once() {
    let now_minute = chrono::Utc::now().timestamp().div_euclid(60);
    let (t0, t1) = ((now_minute - 120) * 60, (now_minute - 30) * 60);
    let mut history = String::from("# TYPE http_requests counter\n");
    for (code, value) in [("200", &(|k: i64| 10 * k) as &dyn Fn(i64) -> i64), ("500", &|k: i64| k.min(120))] {
        for k in 0..=(t1 - t0) / 15 {
            history.push_str(&format!("http_requests_total{{code=\"{code}\"}} {} {}\n", value(k), t0 + 15 * k));
        }
    }
    history.push_str("# EOF\n");
    let prometheus = common::PrivatePrometheus::start_with_history(&[], None, Some(&history));

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            r#"prometheus: {{url: '{}'}}
services: [{{name: api}}]
slos:
  - name: requests
    service: api
    objective: 99.9
    sli:
      prometheus:
        good: 'sum(increase(http_requests_total{{code!~"5.."}}[{{{{.window}}}}]))'
        total: 'sum(increase(http_requests_total[{{{{.window}}}}]))'
"#,
            prometheus.url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "viewer");
    let slo = |base: &str| request("GET", &format!("{base}/api/v1/slos/requests"), &token, None).1["slo"].clone();
    let mut server = Server::start(&config, &data);
    let counted = wait_for("the 90 minutes to be counted", Duration::from_secs(60), || {
        let s = slo(&server.base);
        (s["total"].as_f64()? >= 3720.0).then_some(s)
    });
    assert_eq!((counted["good"].as_f64(), counted["total"].as_f64()), (Some(3600.0), Some(3720.0)), "{counted:#}");
    assert_eq!(counted["counts"], "prometheus");
    let left = counted["budget_remaining_percent"].as_f64().unwrap();
    assert!((left - (1.0 - (120.0 / 3720.0) / 0.001) * 100.0).abs() < 1e-6, "{counted:#}");

    // A restart reads on from the newest stored minute: nothing is counted twice.
    assert_eq!(server.stop(), Some(0));
    let server = Server::start(&config, &data);
    std::thread::sleep(Duration::from_secs(3));
    let again = slo(&server.base);
    assert_eq!((again["good"].as_f64(), again["total"].as_f64()), (Some(3600.0), Some(3720.0)), "{again:#}");
    let metrics = reqwest_text(&format!("{}/metrics", server.base));
    assert!(metrics.contains("steward_slo_events_total{slo=\"requests\"} 0"), "{metrics}");
}

/// OpenSLO in, Steward out: an SLO whose SLI and alert policy are separate documents
/// (one by reference, one condition by reference too), imported into a configuration
/// that `steward validate` accepts and that exports the same burn factors; and what
/// Steward cannot honour refused at its position, exit 2, nothing written.
#[test]
fn openslo_documents_import_into_a_valid_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let openslo = dir.path().join("openslo.yaml");
    std::fs::write(
        &openslo,
        r#"apiVersion: openslo/v1
kind: SLI
metadata: {name: api-errors}
spec:
  ratioMetric:
    counter: true
    bad:
      metricSource: {type: Prometheus, spec: {query: 'sum(http_requests_total{job="api",code=~"5.."})'}}
    total:
      metricSource: {type: Prometheus, spec: {query: 'http_requests_total{job="api"}'}}
---
apiVersion: openslo/v1
kind: AlertCondition
metadata: {name: slow-burn}
spec:
  severity: ticket
  condition: {kind: burnrate, op: gte, threshold: 1, lookbackWindow: 3d, alertAfter: 5m}
---
apiVersion: openslo/v1
kind: AlertPolicy
metadata: {name: api-burn}
spec:
  conditions:
    - kind: AlertCondition
      metadata: {name: fast-burn}
      spec:
        severity: page
        condition: {kind: burnrate, op: gte, threshold: 14.4, lookbackWindow: 1h, alertAfter: 1m}
    - conditionRef: slow-burn
---
apiVersion: openslo/v1
kind: SLO
metadata: {name: api-availability}
spec:
  service: api
  indicatorRef: api-errors
  timeWindow: [{duration: 4w, isRolling: true}]
  budgetingMethod: Occurrences
  objectives: [{displayName: good, target: 0.999}]
  alertPolicies: [api-burn]
"#,
    )
    .unwrap();
    let out = steward().args(["slo", "import"]).arg(&openslo).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let imported = String::from_utf8(out.stdout).unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::write(config.join("base.yaml"), "prometheus: {url: 'http://127.0.0.1:9090'}\nservices: [{name: api}]\n").unwrap();
    std::fs::write(config.join("slos.yaml"), &imported).unwrap();
    let validated = steward().args(["validate", "-o", "json", "-c"]).arg(&config).output().unwrap();
    assert!(validated.status.success(), "{}\n{imported}", String::from_utf8_lossy(&validated.stdout));
    // Budget shares of the 28-day window: burn × long window ÷ window.
    let share = |factor: f64, long_hours: f64| format!("{}%", factor * (long_hours * 3600.0) / (28.0 * 86_400.0) * 100.0);
    for line in [
        r#"window: "28d""#.to_string(),
        "objective: 99.9".to_string(),
        r#"good: "(sum(increase(http_requests_total{job=\"api\"}[{{.window}}]))) - (sum(increase(http_requests_total{code=~\"5..\",job=\"api\"}[{{.window}}])))""#.to_string(),
        format!(r#"- {{long: "1h", short: "5m", budget_spent: "{}", severity: "critical"}}"#, share(14.4, 1.0)),
        format!(r#"- {{long: "3d", short: "6h", budget_spent: "{}", severity: "warning"}}"#, share(1.0, 72.0)),
    ] {
        assert!(imported.contains(&line), "{line} in\n{imported}");
    }
    // The burn factors survive the round trip: 14.4 over 1h/5m and 1 over 3d/6h.
    let rules = steward().args(["slo", "export", "--prometheus-rules", "-c"]).arg(&config).output().unwrap();
    let rules = String::from_utf8(rules.stdout).unwrap();
    assert!(rules.contains(">= (14.4 * 0.001)") && rules.contains(">= (1 * 0.001)"), "{rules}");

    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        r#"apiVersion: openslo/v1
kind: SLO
metadata: {name: latency}
spec:
  service: api
  indicator:
    metadata: {name: p99}
    spec:
      thresholdMetric: {metricSource: {type: Prometheus, spec: {query: x}}}
  timeWindow: [{duration: 1M, calendar: {startTime: "2024-01-01 00:00:00", timeZone: Europe/Berlin}}]
  budgetingMethod: RatioTimeslices
  objectives: [{target: 0.99}, {target: 0.999}]
---
apiVersion: openslo/v1
kind: SLO
metadata: {name: datadog}
spec:
  service: api
  indicator:
    spec:
      ratioMetric:
        counter: true
        good: {metricSource: {type: Datadog, spec: {query: 'sum:requests.ok'}}}
        total: {metricSource: {type: Prometheus, spec: {query: 'rate(x[5m]) * 2'}}}
  timeWindow: [{duration: 7d}]
  objectives: [{targetPercent: 99}]
"#,
    )
    .unwrap();
    let out = steward().args(["slo", "import"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty(), "nothing written: {}", String::from_utf8_lossy(&out.stdout));
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    for (at, message) in [
        ("bad.yaml:9:24", "a threshold metric SLI"),
        ("bad.yaml:10:41", "a calendar window of 1M in Europe/Berlin"),
        ("bad.yaml:11:20", "budgeting method `RatioTimeslices`"),
        ("bad.yaml:12:15", "2 objectives: Steward's SLO has one"),
        ("bad.yaml:23:30", "metric source type `Datadog`"),
        ("bad.yaml:24:64", "cannot count the events of `rate(x[5m]) * 2` per window"),
    ] {
        assert!(said.lines().any(|l| l.contains(at) && l.contains(message)), "{at} {message} in\n{said}");
    }
}
