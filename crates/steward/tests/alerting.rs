//! Alerting end to end: `steward serve` with real checks, a real HTTP receiver that
//! fails for a while, restarts, silences, inhibition and service dependencies.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::alerting::{Receiver, alert_named, alerts, file_check, request};
use common::{Server, create_token, wait_for};
use serde_json::{Value, json};

#[test]
fn alert_fires_is_retried_through_an_outage_survives_restart_and_resolves_once() {
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("api-up");
    std::fs::write(&up, "").unwrap();
    let receiver = Receiver::start(2);
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            "services:\n  - name: api\nchecks:\n{}alerts:\n  - name: ApiDown\n    when: check api-health unhealthy\n    severity: critical\n    annotations:\n      summary: '{{{{ $labels.check }}}} is failing'\nreceivers:\n  - name: ops\n    webhook: {{url: '{}'}}\nroute:\n  receiver: ops\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 500ms\n  repeat_interval: 1h\n",
            file_check("api-health", Some("api"), &up),
            receiver.url
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "ops", "operator");
    let mut server = Server::start(&config, &data);

    // Healthy: nothing fires.
    std::thread::sleep(Duration::from_millis(800));
    assert!(receiver.accepted().is_empty());

    std::fs::remove_file(&up).unwrap();
    // The receiver answers 503 twice; backoff (≈1 s then ≈2 s) brings the third attempt.
    let firing = wait_for("the firing notification to be delivered", Duration::from_secs(15), || receiver.accepted().first().cloned());
    assert_eq!(receiver.attempts.load(Ordering::SeqCst), 3, "two refusals, then delivered");
    let (key, payload) = firing;
    assert_eq!(key.len(), 32, "an Idempotency-Key header carries the dedup key");
    assert_eq!(payload["version"], "4");
    assert_eq!(payload["status"], "firing");
    assert_eq!(payload["receiver"], "ops");
    assert_eq!(payload["groupLabels"], json!({"alertname": "ApiDown"}));
    let alert = &payload["alerts"][0];
    assert_eq!(payload["externalURL"], server.base.as_str(), "defaults to the listen address");
    assert_eq!(alert["generatorURL"], format!("{}/console/alerts/{}", server.base, alert["fingerprint"].as_str().unwrap()));
    assert_eq!(alert["labels"]["service"], "api");
    assert_eq!(alert["labels"]["severity"], "critical");
    assert_eq!(alert["annotations"]["summary"], "api-health is failing");
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");

    // The outbox recorded the attempts and the alert's history is visible.
    let fp = alert["fingerprint"].as_str().unwrap().to_string();
    let (status, detail) = request("GET", &format!("{}/api/v1/alerts/{fp}", server.base), &token, None);
    assert_eq!(status, 200);
    assert_eq!(detail["alert"]["state"], "firing");
    let n = &detail["notifications"][0];
    assert_eq!((n["state"].as_str(), n["attempts"].as_u64()), (Some("delivered"), Some(3)));
    assert!(detail["events"].as_array().unwrap().iter().any(|e| e["to"] == "firing"));

    // Restart while firing: the log says the receiver knows, so nothing is re-sent.
    assert_eq!(server.stop(), Some(0));
    let mut server = Server::start(&config, &data);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(receiver.summary(), [("firing".to_string(), vec!["ApiDown".to_string()])], "no duplicate after restart");

    // Recovery: exactly one resolved notification.
    std::fs::write(&up, "").unwrap();
    wait_for("the resolved notification", Duration::from_secs(10), || (receiver.accepted().len() == 2).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    let all = receiver.accepted();
    assert_eq!(all.len(), 2, "{:?}", receiver.summary());
    assert_eq!(all[1].1["status"], "resolved");
    assert_ne!(all[1].1["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_ne!(all[0].0, all[1].0, "each notification has its own dedup key");
    assert_eq!(server.stop(), Some(0));
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn resolved_while_down_is_still_sent_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up");
    let receiver = Receiver::start(0);
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            "checks:\n{}alerts:\n  - name: Down\n    when: check c unhealthy\nreceivers:\n  - name: ops\n    webhook: {{url: '{}'}}\nroute:\n  receiver: ops\n  group_wait: 0s\n  group_interval: 300ms\n",
            file_check("c", None, &up),
            receiver.url
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut server = Server::start(&config, &data);
    wait_for("the firing notification", Duration::from_secs(10), || (!receiver.accepted().is_empty()).then_some(()));
    assert_eq!(server.stop(), Some(0));
    // Recovered while Steward was down.
    std::fs::write(&up, "").unwrap();
    let mut server = Server::start(&config, &data);
    wait_for("the resolved notification after restart", Duration::from_secs(10), || (receiver.accepted().len() == 2).then_some(()));
    let s = receiver.summary();
    assert_eq!(s[0].0, "firing");
    assert_eq!(s[1].0, "resolved");
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn silences_inhibition_and_dependencies_mute_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0);
    let files: Vec<_> = ["db", "api", "x", "y", "z"].iter().map(|n| dir.path().join(n)).collect();
    for f in &files {
        std::fs::write(f, "").unwrap();
    }
    let config = dir.path().join("steward.yaml");
    let checks: String = [("db", Some("db")), ("api", Some("api")), ("x", None), ("y", None), ("z", None)]
        .iter()
        .zip(&files)
        .map(|((n, s), f)| file_check(n, *s, f))
        .collect();
    std::fs::write(
        &config,
        format!(
            r#"services:
  - name: db
  - name: api
    depends_on: [db]
checks:
{checks}alerts:
  - {{name: DbDown, when: check db unhealthy, severity: critical}}
  - {{name: ApiDown, when: check api unhealthy, severity: critical}}
  - {{name: XBroken, when: check x unhealthy, severity: critical, labels: {{team: a}}}}
  - {{name: YSlow, when: check y unhealthy, severity: warning, labels: {{team: a}}}}
  - {{name: ZNoisy, when: check z unhealthy, severity: info}}
receivers:
  - name: ops
    webhook: {{url: '{}'}}
route:
  receiver: ops
  group_by: [alertname]
  # Long enough for causes and their effects to fail together, as in production.
  group_wait: 1s
  group_interval: 300ms
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [team]
"#,
            receiver.url
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let operator = create_token(&data, "alice", "operator");
    let viewer = create_token(&data, "victor", "viewer");
    let server = Server::start(&config, &data);
    let base = &server.base;

    // Silences: viewers cannot create them, bad ones are refused with a reason.
    let body = json!({"matchers": ["alertname=\"ZNoisy\""], "duration": "1h", "comment": "known flappy"});
    let (status, err) = request("POST", &format!("{base}/api/v1/silences"), &viewer, Some(body.clone()));
    assert_eq!((status, err["error"]["code"].as_str()), (403, Some("forbidden")));
    let (status, err) =
        request("POST", &format!("{base}/api/v1/silences"), &operator, Some(json!({"matchers": [], "duration": "1h", "comment": "x"})));
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("bad_request")));
    let (status, created) = request("POST", &format!("{base}/api/v1/silences"), &operator, Some(body));
    assert_eq!(status, 201, "{created}");
    let silence_id = created["silence"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["silence"]["created_by"], "alice");

    for f in &files {
        std::fs::remove_file(f).unwrap();
    }
    let all = wait_for("all five alerts firing", Duration::from_secs(10), || {
        let a = alerts(base, &viewer);
        (a.iter().filter(|a| a["state"] == "firing").count() == 5).then_some(a)
    });
    // Give the dispatcher a few group intervals to (not) send the muted ones.
    std::thread::sleep(Duration::from_secs(2));
    let mut sent: Vec<String> = receiver.summary().into_iter().flat_map(|(_, names)| names).collect();
    sent.sort();
    assert_eq!(sent, ["DbDown", "XBroken"], "only the causes are notified");

    // The CLI shows the same, for people.
    let out = common::steward().args(["alerts", "--server", base, "--token", &viewer]).output().unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("ALERT"), "{table}");
    let api_row = table.lines().find(|l| l.starts_with("ApiDown")).unwrap();
    assert!(api_row.contains("upstream db: alert DbDown is firing"), "{api_row}");
    let out = common::steward().args(["silence", "list", "--output", "json", "--server", base, "--token", &viewer]).output().unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed["silences"][0]["state"], "active");
    // A viewer's CLI cannot create one: the API's refusal comes through, exit 1.
    let out = common::steward()
        .args(["silence", "create", "--server", base, "--token", &viewer, "-m", "alertname=X", "--duration", "1h", "--comment", "c"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"), "{}", String::from_utf8_lossy(&out.stderr));

    let mute = |name: &str| alert_named(&all, name).unwrap()["muted_by"].clone();
    assert_eq!(mute("DbDown"), json!([]));
    assert_eq!(mute("ApiDown")[0]["kind"], "dependency");
    assert_eq!(mute("ApiDown")[0]["service"], "db");
    assert_eq!(mute("ApiDown")[0]["cause"], "alert DbDown is firing");
    assert_eq!(mute("YSlow")[0]["kind"], "inhibition");
    assert_eq!(mute("YSlow")[0]["by_alert"], "XBroken");
    assert_eq!(mute("ZNoisy")[0], json!({"kind": "silence", "id": silence_id, "comment": "known flappy"}));

    // Expiring the silence un-mutes ZNoisy: it is notified at the next group flush.
    let (status, _) = request("DELETE", &format!("{base}/api/v1/silences/{silence_id}"), &operator, None);
    assert_eq!(status, 200);
    wait_for("ZNoisy to be notified once unsilenced", Duration::from_secs(5), || {
        receiver.summary().iter().any(|(_, n)| n == &["ZNoisy"]).then_some(())
    });
    let (_, listed) = request("GET", &format!("{base}/api/v1/silences"), &viewer, None);
    assert_eq!(listed["silences"][0]["state"], "expired");
    // Expiring it twice is a clear 404.
    let (status, err) = request("DELETE", &format!("{base}/api/v1/silences/{silence_id}"), &operator, None);
    assert_eq!((status, err["error"]["code"].as_str()), (404, Some("not_found")));
}

#[test]
fn route_test_explains_where_an_alert_goes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        r#"receivers:
  - {name: default, webhook: {url: "http://127.0.0.1:9/d"}}
  - {name: pager, slack: {url: "http://127.0.0.1:9/p"}}
route:
  receiver: default
  group_by: [alertname, service]
  routes:
    - matchers: ['severity=~"critical|P1"']
      receiver: pager
      group_wait: 0s
"#,
    )
    .unwrap();
    let run = |labels: &[&str]| {
        let out = common::steward().args(["route", "test", "--output", "json", "-c"]).arg(&config).args(labels).output().unwrap();
        (out.status.code(), serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null))
    };
    let (code, v) = run(&["alertname=ApiDown", "severity=P1", "service=api"]);
    assert_eq!(code, Some(0));
    assert_eq!(v["routes"][0]["receiver"], "pager");
    assert_eq!(v["routes"][0]["group_key"], r#"{0.0}:{alertname="ApiDown",service="api"}"#);
    assert_eq!(v["routes"][0]["group_wait_ms"], 0);
    let (_, v) = run(&["alertname=ApiDown", "severity=warning"]);
    assert_eq!(v["routes"][0]["receiver"], "default");
    assert_eq!(v["routes"][0]["group_wait_ms"], 30_000);
    let (code, _) = run(&["not a label"]);
    assert_eq!(code, Some(1));
}

#[test]
fn window_rules_fire_on_failure_ratio_and_latency() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0);
    let config = dir.path().join("steward.yaml");
    // `flaky` fails every run (ratio 1.0); `slow` succeeds but takes ≥ 150 ms a run.
    std::fs::write(
        &config,
        format!(
            r#"checks:
{}  - name: slow
    interval: 300ms
    timeout: 290ms
    command: {{argv: [sleep, "0.15"]}}
  - name: fast
    interval: 300ms
    command: {{argv: ["true"]}}
alerts:
  - {{name: Flaky, when: check flaky failure_ratio > 0.5 over 5s}}
  - {{name: Slow, when: check slow latency p50 > 100ms over 5s, annotations: {{summary: "p50 {{{{ $value | humanize }}}}ms"}}}}
  - {{name: FastIsSlow, when: check fast latency p99 > 100ms over 5s}}
receivers:
  - name: ops
    webhook: {{url: '{}'}}
route:
  receiver: ops
  group_wait: 0s
  group_interval: 300ms
"#,
            file_check("flaky", None, &dir.path().join("never-there")),
            receiver.url
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "v", "viewer");
    let server = Server::start(&config, &data);
    // Window rules are evaluated every 10 s from stored results.
    let firing = wait_for("both window alerts firing", Duration::from_secs(25), || {
        let a = alerts(&server.base, &token);
        (a.iter().filter(|a| a["state"] == "firing").count() >= 2).then_some(a)
    });
    assert_eq!(alert_named(&firing, "Flaky").unwrap()["value"], 1.0);
    let slow = alert_named(&firing, "Slow").unwrap();
    assert!(slow["value"].as_f64().unwrap() >= 150.0, "{slow}");
    assert!(slow["annotations"]["summary"].as_str().unwrap().starts_with("p50 1"), "{slow}");
    assert!(alert_named(&firing, "FastIsSlow").is_none(), "a fast check must not trip a latency rule");
    // Delivery follows the state change; on a loaded machine it may not have happened by
    // the time the API shows the alerts firing.
    let names = wait_for("both window alerts delivered", Duration::from_secs(10), || {
        let mut names: Vec<String> = receiver.summary().into_iter().flat_map(|(_, n)| n).collect();
        names.sort();
        names.dedup();
        (names.len() >= 2).then_some(names)
    });
    assert_eq!(names, ["Flaky", "Slow"]);
}

#[test]
fn maintenance_windows_and_route_time_intervals_mute_but_alerts_are_still_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let ops = Receiver::start(0);
    let night = Receiver::start(0);
    let config = dir.path().join("steward.yaml");
    let missing = dir.path().join("never-there");
    std::fs::write(
        &config,
        format!(
            r#"services:
  - name: cassandra
  - name: api
checks:
{}{}alerts:
  - {{name: CassandraDown, when: check cassandra-health unhealthy}}
  - {{name: ApiDown, when: check api-health unhealthy}}
time_intervals:
  - name: always
    time_intervals: [{{times: [{{start_time: "00:00", end_time: "24:00"}}], location: Europe/Paris}}]
maintenance_windows:
  - name: cassandra-repair
    matchers: ['service="cassandra"']
    schedule: "* * * * *"
    duration: 1h
    location: UTC
    comment: weekly full repair
receivers:
  - {{name: ops, webhook: {{url: '{}'}}}}
  - {{name: night, webhook: {{url: '{}'}}}}
route:
  receiver: ops
  group_wait: 0s
  group_interval: 300ms
  routes:
    - {{matchers: ['alertname="ApiDown"'], receiver: night, mute_time_intervals: [always], continue: true}}
    - {{matchers: ['alertname="ApiDown"'], receiver: ops, active_time_intervals: [always]}}
"#,
            file_check("cassandra-health", Some("cassandra"), &missing),
            file_check("api-health", Some("api"), &missing),
            ops.url,
            night.url
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "v", "viewer");
    let server = Server::start(&config, &data);
    let base = &server.base;
    let all = wait_for("both alerts firing", Duration::from_secs(10), || {
        let all = alerts(base, &token);
        (all.iter().filter(|a| a["state"] == "firing").count() == 2).then_some(all)
    });
    wait_for("ApiDown to reach ops", Duration::from_secs(5), || (!ops.accepted().is_empty()).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(ops.summary(), [("firing".to_string(), vec!["ApiDown".to_string()])], "CassandraDown is in maintenance");
    assert!(night.accepted().is_empty(), "the night route is muted by its time interval");

    let cass = &alert_named(&all, "CassandraDown").unwrap()["muted_by"];
    assert_eq!(cass[0]["kind"], "maintenance");
    assert_eq!(cass[0]["window"], "cassandra-repair");
    assert_eq!(cass[0]["comment"], "weekly full repair");
    assert!(cass[0]["until"].is_string());
    let api = &alert_named(&all, "ApiDown").unwrap()["muted_by"];
    assert_eq!(api, &json!([{"kind": "time_interval", "receiver": "night", "reason": "in mute time interval `always`"}]));

    // One alert's history and notifications, for people.
    let fp = alert_named(&all, "ApiDown").unwrap()["fingerprint"].as_str().unwrap().to_string();
    let out = common::steward().args(["alerts", &fp, "--server", base, "--token", &token]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("ApiDown (firing)"), "{text}");
    assert!(text.contains("muted: night in mute time interval `always`"), "{text}");
    assert!(text.contains("inactive → firing"), "{text}");
    let notification = text.lines().skip_while(|l| !l.starts_with("NOTIFICATIONS")).nth(2).unwrap_or_default();
    assert!(notification.contains("ops") && notification.contains("delivered"), "{text}");
    let out = common::steward().args(["alerts", "0000000000000000", "--server", base, "--token", &token]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "an unknown fingerprint is an error");

    let (status, windows) = request("GET", &format!("{base}/api/v1/maintenance-windows"), &token, None);
    assert_eq!(status, 200);
    assert_eq!(windows["maintenance_windows"][0]["name"], "cassandra-repair");
    assert_eq!(windows["maintenance_windows"][0]["open"], true);
    assert!(windows["maintenance_windows"][0]["next_start"].is_string());
}

/// Ten minutes before the test started, as Alertmanager writes times.
fn started() -> String {
    static AT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    AT.get_or_init(|| (chrono::Utc::now() - chrono::Duration::minutes(10)).format("%Y-%m-%dT%H:%M:00.000Z").to_string()).clone()
}

fn am_alert(status: &str, name: &str, ends_at: &str) -> Value {
    json!({
        "status": status,
        "labels": {"alertname": name, "service": "api", "job": "api", "severity": "warning"},
        "annotations": {"summary": format!("{name} from Prometheus")},
        "startsAt": started(),
        "endsAt": ends_at,
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": "ignored",
    })
}

fn am_payload(alerts: Vec<Value>) -> Value {
    json!({"version": "4", "groupKey": "{}:{alertname=\"X\"}", "status": "firing", "receiver": "steward",
           "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am:9093",
           "truncatedAlerts": 0, "alerts": alerts})
}

#[test]
fn alertmanager_payloads_are_ingested_deduplicated_and_routed() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0);
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            "receivers:\n  - {{name: ops, webhook: {{url: '{}'}}}}\nroute:\n  receiver: ops\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 300ms\n",
            receiver.url
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let operator = create_token(&data, "am", "operator");
    let viewer = create_token(&data, "v", "viewer");
    let mut server = Server::start(&config, &data);
    let url = format!("{}/api/v1/ingest/alertmanager", server.base);
    let zero = "0001-01-01T00:00:00Z";

    let (status, err) = request("POST", &url, &viewer, Some(am_payload(vec![am_alert("firing", "HighErrorRate", zero)])));
    assert_eq!((status, err["error"]["code"].as_str()), (403, Some("forbidden")));
    // One bad alert refuses the whole payload; nothing is recorded.
    let mut bad = am_alert("firing", "Other", zero);
    bad["labels"].as_object_mut().unwrap().remove("alertname");
    let (status, err) = request("POST", &url, &operator, Some(am_payload(vec![am_alert("firing", "HighErrorRate", zero), bad])));
    assert_eq!((status, err["error"]["code"].as_str()), (400, Some("bad_request")));
    assert!(err["error"]["message"].as_str().unwrap().contains("alerts[1]: labels: `alertname` is required"), "{err}");
    assert!(alerts(&server.base, &viewer).is_empty());

    let (status, out) = request("POST", &url, &operator, Some(am_payload(vec![am_alert("firing", "HighErrorRate", zero)])));
    assert_eq!((status, out["fired"].as_u64()), (200, Some(1)), "{out}");
    let (_, p) = wait_for("the ingested alert to be routed", Duration::from_secs(5), || receiver.accepted().first().cloned());
    assert_eq!(p["alerts"][0]["labels"]["job"], "api");
    assert_eq!(p["alerts"][0]["annotations"]["summary"], "HighErrorRate from Prometheus");
    assert_eq!(p["alerts"][0]["startsAt"], started(), "the sender's start time is kept");
    let listed = alerts(&server.base, &viewer);
    assert_eq!((listed[0]["source"].as_str(), listed[0]["state"].as_str()), (Some("alertmanager"), Some("firing")));

    // The same payload again (a retry, or the other member of an HA pair) is not news,
    // not even after a restart.
    let (_, out) = request("POST", &url, &operator, Some(am_payload(vec![am_alert("firing", "HighErrorRate", zero)])));
    assert_eq!((out["fired"].as_u64(), out["unchanged"].as_u64()), (Some(0), Some(1)));
    server.stop();
    let server = Server::start(&config, &data);
    let url = format!("{}/api/v1/ingest/alertmanager", server.base);
    let (_, out) = request("POST", &url, &operator, Some(am_payload(vec![am_alert("firing", "HighErrorRate", zero)])));
    assert_eq!(out["unchanged"].as_u64(), Some(1));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.accepted().len(), 1, "{:?}", receiver.summary());

    let (_, out) = request("POST", &url, &operator, Some(am_payload(vec![am_alert("resolved", "HighErrorRate", &started())])));
    assert_eq!(out["resolved"].as_u64(), Some(1));
    wait_for("the resolved notification", Duration::from_secs(5), || (receiver.accepted().len() == 2).then_some(()));
    assert_eq!(receiver.summary()[1], ("resolved".to_string(), vec!["HighErrorRate".to_string()]));

    // A firing alert with an endsAt resolves by itself when nobody refreshes it.
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let (_, out) = request("POST", &url, &operator, Some(am_payload(vec![am_alert("firing", "DiskFull", &soon)])));
    assert_eq!(out["fired"].as_u64(), Some(1));
    wait_for("DiskFull to resolve at its endsAt", Duration::from_secs(8), || {
        receiver.summary().contains(&("resolved".to_string(), vec!["DiskFull".to_string()])).then_some(())
    });
}

#[test]
fn a_restart_during_group_wait_sends_the_notification_once_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(0);
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            "checks:\n{}alerts:\n  - {{name: Down, when: check c unhealthy}}\nreceivers:\n  - {{name: ops, webhook: {{url: '{}'}}}}\nroute:\n  receiver: ops\n  group_wait: 3s\n  group_interval: 300ms\n",
            file_check("c", None, &dir.path().join("never-there")),
            receiver.url
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "v", "viewer");
    let mut server = Server::start(&config, &data);
    wait_for("the alert to fire", Duration::from_secs(10), || {
        alert_named(&alerts(&server.base, &token), "Down").filter(|a| a["state"] == "firing").map(|_| ())
    });
    let fired = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(server.stop(), Some(0));
    assert!(receiver.accepted().is_empty(), "still inside group_wait when stopped");
    let _server = Server::start(&config, &data);
    wait_for("the notification after restart", Duration::from_secs(10), || receiver.accepted().first().cloned());
    assert!(fired.elapsed() >= Duration::from_secs(3), "group_wait is honoured across the restart");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(receiver.summary(), [("firing".to_string(), vec!["Down".to_string()])], "exactly one notification");
}

/// One RESP command on `conn`; the reply's first line.
fn redis_command(conn: &mut std::net::TcpStream, args: &[&[u8]]) -> String {
    use std::io::{BufRead, Write};
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    conn.write_all(&out).unwrap();
    let mut reader = std::io::BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    if let Some(len) = line.strip_prefix('$').and_then(|n| n.trim().parse::<usize>().ok()) {
        let mut body = vec![0; len + 2];
        std::io::Read::read_exact(&mut reader, &mut body).unwrap();
        return String::from_utf8_lossy(&body).into_owned();
    }
    line
}

fn redis_info(conn: &mut std::net::TcpStream, field: &str) -> u64 {
    let info = redis_command(conn, &[b"INFO", b"memory"]);
    let line = info.lines().find_map(|l| l.strip_prefix(&format!("{field}:"))).unwrap_or_else(|| panic!("no {field} in {info}"));
    line.trim().parse().unwrap()
}

/// A forecast over a check's own observations: a real Redis fills at about 400 KB/s;
/// its check records `info.used_memory` and `info.maxmemory` with each run, and the
/// forecast pages while memory is still short of `maxmemory`, with the fit in its
/// annotation; the recorded values are in the check's history; when writing stops,
/// the crossing moves past the horizon and the alert resolves.
#[test]
fn a_forecast_over_a_checks_observations_pages_before_redis_is_full() {
    let redis = common::PrivateRedis::start();
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    let used0 = redis_info(&mut conn, "used_memory");
    let max = used0 + 36_000_000; // about 90 s of writing
    let reply = redis_command(&mut conn, &[b"CONFIG", b"SET", b"maxmemory", max.to_string().as_bytes()]);
    assert!(reply.starts_with("+OK"), "{reply}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            r#"checks:
  - {{name: cache, interval: 1s, redis: {{url: 'redis://127.0.0.1:{}'}}}}
alerts:
  - name: CacheFullSoon
    forecast: {{check: cache, value: info.used_memory, above: info.maxmemory, over: 1m, within: 1m}}
"#,
            redis.port
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "v", "viewer");
    let server = Server::start(&config, &data);
    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writer = {
        let (writing, port) = (writing.clone(), redis.port);
        std::thread::spawn(move || {
            let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            let value = vec![b'x'; 20_000];
            let mut i = 0u64;
            while writing.load(Ordering::SeqCst) {
                // Refused (OOM) once full: the test has failed by then, the writer goes on.
                redis_command(&mut conn, &[b"SET", format!("k{i}").as_bytes(), &value]);
                i += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let fired = wait_for("the forecast to fire", Duration::from_secs(90), || {
        alert_named(&alerts(&server.base, &token), "CacheFullSoon").filter(|a| a["state"] == "firing").cloned()
    });
    let used = redis_info(&mut conn, "used_memory");
    assert!(used < max, "paged only once full: {used} of {max}");
    assert_eq!(fired["labels"]["check"], "cache", "{fired:#}");
    let eta = fired["value"].as_f64().unwrap();
    assert!(eta > 0.0 && eta <= 60.0, "{fired:#}");
    let fit = fired["annotations"]["forecast"].as_str().unwrap();
    assert!(fit.starts_with("linear fit over 1m (") && fit.contains(" per hour, ") && fit.contains("predicted to rise to "), "{fit}");
    let scientific = fit.as_bytes().windows(2).any(|w| w[0] == b'e' && (w[1] == b'+' || w[1] == b'-' || w[1].is_ascii_digit()));
    assert!(!scientific, "numbers as people read them, not scientific notation: {fit}");
    let (_, history) = request("GET", &format!("{}/api/v1/checks/cache/history?limit=3", server.base), &token, None);
    let newest = &history["results"][0]["values"];
    assert_eq!(newest["info.maxmemory"].as_f64(), Some(max as f64), "{history:#}");
    assert!(newest["info.used_memory"].as_f64().unwrap() > used0 as f64, "{history:#}");

    writing.store(false, Ordering::SeqCst);
    writer.join().unwrap();
    wait_for("the forecast to resolve once writing stops", Duration::from_secs(120), || {
        alert_named(&alerts(&server.base, &token), "CacheFullSoon").filter(|a| a["state"] == "resolved").cloned()
    });
}
