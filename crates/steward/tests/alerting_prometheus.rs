//! PromQL rules against a real Prometheus (Debian's `prometheus`, a private instance on
//! a free port) scraping a real target: a Prometheus rule file loaded as written,
//! one alert per series, `for`, templated annotations, resolution, and a Prometheus
//! outage that changes no alert.

mod common;

use std::time::Duration;

use common::alerting::{MetricsTarget, Receiver, alert_named, alerts, request};
use common::{PrivatePrometheus, Server, create_token, wait_for};
use serde_json::Value;

fn disks(a_used: u32) -> String {
    format!(
        "# TYPE disk_used_bytes gauge\ndisk_used_bytes{{disk=\"a\"}} {a_used}\ndisk_used_bytes{{disk=\"b\"}} 10\n\
         # TYPE disk_total_bytes gauge\ndisk_total_bytes{{disk=\"a\"}} 100\ndisk_total_bytes{{disk=\"b\"}} 100\n"
    )
}

#[test]
fn prometheus_rule_files_fire_per_series_and_survive_a_prometheus_outage() {
    let target = MetricsTarget::start(&disks(80));
    let mut prometheus = PrivatePrometheus::start(std::slice::from_ref(&target.address));
    let receiver = Receiver::start(0);
    let dir = tempfile::tempdir().unwrap();
    // The seeds' shape, as a team would have it next to Prometheus.
    std::fs::write(
        dir.path().join("capacity.rules.yml"),
        r#"groups:
  - name: capacity
    interval: 1s
    rules:
      - alert: DiskNearFull
        expr: (disk_used_bytes / disk_total_bytes) > 0.7
        for: 2s
        labels:
          severity: warning
        annotations:
          summary: "Disk {{ $labels.disk }} on {{ $labels.instance }} at {{ $value | humanizePercentage }}"
      - record: disk:used:ratio
        expr: disk_used_bytes / disk_total_bytes
"#,
    )
    .unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            r#"prometheus:
  url: {}
  evaluation_interval: 1s
  timeout: 2s
rule_files: [capacity.rules.yml]
alerts:
  - name: TargetDown
    expr: 'up{{job="app"}} == 0'
    severity: critical
receivers:
  - {{name: ops, webhook: {{url: '{}'}}}}
route:
  receiver: ops
  group_by: [alertname, disk]
  group_wait: 0s
  group_interval: 300ms
"#,
            prometheus.url(),
            receiver.url
        ),
    )
    .unwrap();

    // validate reads the rule file and says what it skipped.
    let out = common::steward().args(["validate", "--output", "json", "-c"]).arg(&config).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.code(), v["alerts"].as_u64()), (Some(0), Some(2)), "{v}");
    assert!(v["notes"][0]["message"].as_str().unwrap().contains("recording rule `disk:used:ratio` skipped"), "{v}");

    let data = dir.path().join("data");
    let token = create_token(&data, "v", "viewer");
    let server = Server::start(&config, &data);
    let base = &server.base;

    // Pending for 2s, then firing: only disk a crosses 70%.
    let (_, payload) = wait_for("DiskNearFull to be notified", Duration::from_secs(30), || receiver.accepted().first().cloned());
    let fired = &payload["alerts"][0];
    assert_eq!(payload["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(fired["labels"]["alertname"], "DiskNearFull");
    assert_eq!(fired["labels"]["disk"], "a");
    assert_eq!(fired["labels"]["job"], "app", "the series' labels are the alert's");
    assert!(fired["labels"].get("__name__").is_none());
    assert_eq!(fired["annotations"]["summary"], format!("Disk a on {} at 80%", target.address));
    let all = alerts(base, &token);
    let disk = alert_named(&all, "DiskNearFull").unwrap();
    assert_eq!(disk["value"], 0.8);
    assert!(alert_named(&all, "TargetDown").is_none(), "the target is up");
    let started = chrono::DateTime::parse_from_rfc3339(fired["startsAt"].as_str().unwrap()).unwrap();
    let (_, detail) = request("GET", &format!("{base}/api/v1/alerts/{}", disk["fingerprint"].as_str().unwrap()), &token, None);
    let pending = detail["events"].as_array().unwrap().iter().find(|e| e["to"] == "pending").expect("went through pending");
    let pending_at = chrono::DateTime::parse_from_rfc3339(pending["at"].as_str().unwrap()).unwrap();
    assert!(started - pending_at >= chrono::Duration::seconds(2), "`for: 2s` held: pending {pending_at}, firing {started}");

    // Prometheus goes away: the alert stays firing and the rule says why it is stale.
    prometheus.stop();
    let rules = wait_for("the rule to report the outage", Duration::from_secs(10), || {
        let (_, r) = request("GET", &format!("{base}/api/v1/rules"), &token, None);
        let rule = r["rules"].as_array()?.iter().find(|r| r["name"] == "DiskNearFull")?.clone();
        rule["health"]["error"].is_string().then_some(rule)
    });
    assert!(rules["health"]["error"].as_str().unwrap().contains("cannot reach Prometheus"), "{rules}");
    assert_eq!(rules["kind"], "promql");
    assert!(rules["defined_at"].as_str().unwrap().contains("capacity.rules.yml:5:9"), "{rules}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(alert_named(&alerts(base, &token), "DiskNearFull").unwrap()["state"], "firing");
    assert_eq!(receiver.accepted().len(), 1, "no resolved notification for an outage of Prometheus");
    let metrics = reqwest_text(&format!("{base}/metrics"));
    assert!(metrics.contains("steward_rule_evaluation_failures_total{rule=\"DiskNearFull\"}"), "{metrics}");

    // Back, with disk a cleaned up: the alert resolves and receivers hear it once.
    target.set(&disks(20));
    prometheus.restart();
    wait_for("the resolved notification", Duration::from_secs(30), || (receiver.accepted().len() == 2).then_some(()));
    assert_eq!(receiver.summary()[1], ("resolved".to_string(), vec!["DiskNearFull".to_string()]));
}

fn reqwest_text(url: &str) -> String {
    common::install_crypto();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { reqwest::get(url).await.unwrap().text().await.unwrap() })
}

/// A `forecast` rule over a real Prometheus range query: a disk filling at 1 % a second
/// is paged while it is still far from full (the line reaches 90 % within the minute),
/// the fit is in the annotation, a flat disk never alerts, and the alert resolves once
/// the growth stops.
#[test]
fn a_forecast_pages_before_the_limit_is_reached_and_resolves_when_growth_stops() {
    let used =
        |a: f64| format!("# TYPE disk_used_percent gauge\ndisk_used_percent{{disk=\"a\"}} {a}\ndisk_used_percent{{disk=\"b\"}} 50\n");
    let target = std::sync::Arc::new(MetricsTarget::start(&used(20.0)));
    let growing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let level = std::sync::Arc::new(std::sync::Mutex::new(20.0_f64));
    let feeder = {
        let (target, growing, level) = (target.clone(), growing.clone(), level.clone());
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let mut last = 20.0;
            while std::sync::Arc::strong_count(&target) > 1 {
                if growing.load(std::sync::atomic::Ordering::SeqCst) {
                    last = 20.0 + started.elapsed().as_secs_f64();
                }
                *level.lock().unwrap() = last;
                target.set(&used(last));
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let prometheus = PrivatePrometheus::start(std::slice::from_ref(&target.address));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            r#"prometheus:
  url: {}
  evaluation_interval: 1s
alerts:
  - name: DiskFullSoon
    forecast:
      expr: disk_used_percent
      over: 1m
      step: 1s
      above: 90
      within: 1m
    severity: warning
    annotations:
      summary: "Disk {{{{ $labels.disk }}}} reaches 90% in {{{{ $value }}}}s"
"#,
            prometheus.url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "v", "viewer");
    let server = Server::start(&config, &data);
    let base = &server.base;

    // Evaluated while the line is more than a minute from 90 %: no alert.
    let early = wait_for("an evaluation that found no crossing", Duration::from_secs(30), || {
        let (_, r) = request("GET", &format!("{base}/api/v1/rules"), &token, None);
        let rule = r["rules"].as_array()?.iter().find(|r| r["name"] == "DiskFullSoon")?.clone();
        (rule["health"]["error"].is_null() && rule["health"]["last_evaluation"].is_string()).then_some(rule)
    });
    assert_eq!(early["kind"], "forecast", "{early}");
    if *level.lock().unwrap() < 28.0 {
        assert!(alert_named(&alerts(base, &token), "DiskFullSoon").is_none(), "paged at a level that is 62 s from the limit");
    }

    let fired = wait_for("the forecast to fire", Duration::from_secs(60), || {
        alert_named(&alerts(base, &token), "DiskFullSoon").filter(|a| a["state"] == "firing").cloned()
    });
    let at = *level.lock().unwrap();
    assert!(at < 50.0, "paged at {at} %, well before 90 %");
    assert_eq!(fired["labels"]["disk"], "a", "{fired:#}");
    let eta = fired["value"].as_f64().unwrap();
    assert!(eta > 0.0 && eta <= 60.0, "{fired:#}");
    let fit = fired["annotations"]["forecast"].as_str().unwrap();
    assert!(fit.contains("linear fit over 1m") && fit.contains("predicted to rise to 90"), "{fit}");
    assert!(fired["annotations"]["summary"].as_str().unwrap().starts_with("Disk a reaches 90% in "), "{fired:#}");
    let all = alerts(base, &token);
    assert_eq!(all.iter().filter(|a| a["rule"] == "DiskFullSoon").count(), 1, "disk b is flat: {all:#?}");

    // Growth stops: the fitted slope falls and the crossing moves past the horizon.
    growing.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for("the forecast to resolve", Duration::from_secs(90), || {
        alert_named(&alerts(base, &token), "DiskFullSoon").filter(|a| a["state"] == "resolved").map(|_| ())
    });
    drop(target);
    feeder.join().unwrap();
}
