//! Incidents end to end: a real component's outage opens one incident, escalation
//! pages until someone acknowledges, recovery resolves it, and the record (timeline,
//! postmortem, MTTA/MTTR) is complete. Restarts mid-escalation; roles and bad input.

mod common;

use std::time::{Duration, Instant};

use common::alerting::{Receiver, file_check, request};
use common::{PrivateRedis, Server, create_token, steward, wait_for};
use serde_json::{Value, json};

fn incidents(base: &str, token: &str, status: &str) -> Vec<Value> {
    let (code, v) = request("GET", &format!("{base}/api/v1/incidents?status={status}"), token, None);
    assert_eq!(code, 200, "{v}");
    v["incidents"].as_array().cloned().unwrap_or_default()
}

fn show(base: &str, token: &str, id: i64) -> Value {
    let (code, v) = request("GET", &format!("{base}/api/v1/incidents/{id}"), token, None);
    assert_eq!(code, 200, "{v}");
    v
}

fn kinds(detail: &Value) -> Vec<String> {
    detail["timeline"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_string()).collect()
}

fn count(list: &[String], kind: &str) -> usize {
    list.iter().filter(|k| *k == kind).count()
}

fn get_text(url: &str, token: &str) -> (u16, String) {
    text_request("GET", url, token)
}

fn text_request(method: &str, url: &str, token: &str) -> (u16, String) {
    common::install_crypto();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new().request(method.parse().unwrap(), url).bearer_auth(token).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    })
}

#[test]
fn a_real_outage_opens_one_incident_escalates_until_acknowledged_and_resolves_on_recovery() {
    let mut redis = PrivateRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let alerts_hook = Receiver::start(0);
    let alice = Receiver::start(0);
    let lead = Receiver::start(0);
    let config = dir.path().join("steward.yaml");
    let today = chrono::Utc::now().date_naive() - chrono::Duration::days(1);
    std::fs::write(
        &config,
        format!(
            r#"services:
  - {{name: cache, tier: 1}}
  - {{name: api, tier: 2, depends_on: [cache]}}
checks:
  - name: cache-ping
    service: cache
    interval: 200ms
    timeout: 150ms
    failure_threshold: 1
    redis: {{url: 'redis://127.0.0.1:{port}'}}
  - name: api-cache
    service: api
    interval: 200ms
    timeout: 190ms
    failure_threshold: 1
    command: {{argv: [redis-cli, -p, '{port}', ping]}}
alerts:
  # An alert storm on one service: three rules fire together.
  - {{name: CacheDown, when: check cache-ping unhealthy, severity: critical}}
  - {{name: CacheUnreachable, when: check cache-ping unhealthy, severity: warning}}
  - {{name: CacheErrors, when: check cache-ping failure_ratio > 0.1 over 3s, severity: warning}}
  - {{name: ApiDegraded, when: check api-cache unhealthy, severity: critical}}
receivers:
  - {{name: ops, webhook: {{url: '{ops}'}}}}
  - {{name: alice-pager, webhook: {{url: '{alice}'}}}}
  - {{name: lead-pager, webhook: {{url: '{lead}'}}}}
route:
  receiver: ops
  group_by: [service]
  group_wait: 0s
  group_interval: 500ms
incidents:
  policies:
    - name: pages
      matchers: ['severity=~"critical|warning"']
      group_by: [service]
      escalation: platform
  escalation_policies:
    - name: platform
      repeat: 5
      levels:
        - {{oncall: [primary], wait: 2s}}
        - {{notify: [lead-pager], wait: 2s}}
  schedules:
    - name: primary
      time_zone: Europe/Berlin
      rotation: {{people: [alice], shift: daily, handoff: "09:00", start: "{today}"}}
  people:
    - {{name: alice, notify: [alice-pager]}}
"#,
            port = redis.port,
            ops = alerts_hook.url,
            alice = alice.url,
            lead = lead.url,
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let operator = create_token(&data, "alice", "operator");
    let viewer = create_token(&data, "watcher", "viewer");
    let mut server = Server::start(&config, &data);
    let base = server.base.clone();

    // Healthy: no incident.
    std::thread::sleep(Duration::from_secs(1));
    assert!(incidents(&base, &viewer, "all").is_empty());

    // The outage: stop the real Redis.
    redis.stop();
    let down_at = Instant::now();
    let opened = wait_for("an incident to open", Duration::from_secs(10), || incidents(&base, &viewer, "open").first().cloned());
    let id = opened["id"].as_i64().unwrap();
    // Every alert of the storm, and the dependent service's alert, join that incident.
    let detail = wait_for("the storm's four alerts to attach", Duration::from_secs(15), || {
        let d = show(&base, &viewer, id);
        (d["alerts"].as_array().unwrap().len() == 4).then_some(d)
    });
    assert_eq!(incidents(&base, &viewer, "all").len(), 1, "one incident for the storm, not one per alert");
    let inc = &detail["incident"];
    assert_eq!(inc["priority"], "P1", "critical on a tier-1 service");
    assert_eq!(inc["status"], "triggered");
    assert_eq!(inc["services"], json!(["cache", "api"]));

    // Level 1 pages whoever is on call (alice), level 2 the lead after 2 s, then level 1 again.
    wait_for("alice to be paged", Duration::from_secs(5), || (!alice.accepted().is_empty()).then_some(()));
    let page = alice.accepted()[0].1.clone();
    assert_eq!(page["status"], "firing");
    assert_eq!(page["incident"]["id"], id);
    assert_eq!(page["incident"]["escalation"]["level"], 1);
    assert!(page["incident"]["escalation"]["people"][0].as_str().unwrap().starts_with("alice (on call for primary)"));
    assert_eq!(page["alerts"][0]["labels"]["severity"], "P1");
    wait_for("the lead to be paged at level 2", Duration::from_secs(6), || (!lead.accepted().is_empty()).then_some(()));
    let level2_after = down_at.elapsed();
    assert!(level2_after >= Duration::from_secs(2), "level 2 waited for level 1's 2 s ({level2_after:?})");
    wait_for("level 1 again (second pass)", Duration::from_secs(6), || (alice.accepted().len() >= 2).then_some(()));

    // A viewer cannot acknowledge; the operator can, and escalation stops.
    let (code, err) = request("POST", &format!("{base}/api/v1/incidents/{id}/acknowledge"), &viewer, Some(json!({})));
    assert_eq!((code, err["error"]["code"].as_str()), (403, Some("forbidden")));
    let (code, acked) = request("POST", &format!("{base}/api/v1/incidents/{id}/acknowledge"), &operator, Some(json!({"note": "on it"})));
    assert_eq!(code, 200, "{acked}");
    let ack_elapsed = down_at.elapsed();
    assert_eq!(acked["incident"]["status"], "acknowledged");
    let (pages_alice, pages_lead) = (alice.accepted().len(), lead.accepted().len());
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!((alice.accepted().len(), lead.accepted().len()), (pages_alice, pages_lead), "no page after the acknowledgement");

    // People work the incident.
    for (path, body) in [
        ("roles", json!({"role": "commander", "person": "alice"})),
        ("notes", json!({"text": "Cache is down; API degraded.", "public": true})),
        ("notes", json!({"text": "redis process gone; restarting"})),
        ("action-items", json!({"text": "Alert on redis memory before OOM", "owner": "bob"})),
    ] {
        let (code, v) = request("POST", &format!("{base}/api/v1/incidents/{id}/{path}"), &operator, Some(body));
        assert!(code == 200 || code == 201, "{path}: {v}");
    }

    // Recovery: Redis comes back, every alert resolves, the incident resolves itself.
    redis.restart();
    let resolved = wait_for("the incident to resolve", Duration::from_secs(15), || {
        let d = show(&base, &viewer, id);
        (d["incident"]["status"] == "resolved").then_some(d)
    });
    wait_for("the paged receivers to hear the resolution", Duration::from_secs(10), || {
        let done = |r: &Receiver| r.accepted().iter().any(|(_, p)| p["status"] == "resolved");
        (done(&alice) && done(&lead)).then_some(())
    });
    let k = kinds(&resolved);
    assert_eq!(count(&k, "opened"), 1);
    assert_eq!(count(&k, "alert_firing"), 4, "{k:?}");
    assert_eq!(count(&k, "alert_resolved"), 4, "{k:?}");
    assert!(count(&k, "escalated") >= 3, "{k:?}");
    assert_eq!(count(&k, "acknowledged"), 1);
    assert_eq!(count(&k, "role_assigned"), 1);
    assert_eq!(count(&k, "status_update"), 1);
    assert_eq!(count(&k, "note"), 1);
    assert_eq!(count(&k, "action_item"), 1);
    assert_eq!(count(&k, "resolved"), 1);
    assert!(count(&k, "notification") >= 4, "pages and alert notifications are in the timeline: {k:?}");
    // Compared as times, not as text: RFC 3339 drops a zero fraction, and "…:01Z" sorts
    // after "…:01.5Z" as text.
    let times: Vec<chrono::DateTime<chrono::Utc>> =
        resolved["timeline"].as_array().unwrap().iter().map(|e| e["at"].as_str().unwrap().parse().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "the timeline is in time order: {times:?}");

    // MTTA as measured from outside, within the pass interval.
    let tta = resolved["times"]["time_to_acknowledge_seconds"].as_i64().unwrap();
    assert!(tta >= 3 && (tta as f64) <= ack_elapsed.as_secs_f64() + 1.0, "tta {tta}s, ack after {ack_elapsed:?}");
    let ttr = resolved["times"]["time_to_resolve_seconds"].as_i64().unwrap();
    assert!(ttr >= tta, "resolved after acknowledged");
    let (code, stats) = request("GET", &format!("{base}/api/v1/incidents/stats?by=service"), &viewer, None);
    assert_eq!(code, 200);
    let cache = stats["rows"].as_array().unwrap().iter().find(|r| r["group"] == "cache").unwrap();
    assert_eq!(cache["incidents"], 1);
    assert_eq!(cache["mtta_seconds"].as_f64().unwrap() as i64, tta, "whole seconds in `times`, exact in stats");
    let metrics = get_text(&format!("{base}/metrics"), "").1;
    assert!(metrics.contains("steward_incident_time_to_acknowledge_seconds_count{priority=\"P1\"} 1"), "{metrics}");
    assert!(metrics.contains("steward_incident_time_to_resolve_seconds_count{priority=\"P1\"} 1"));

    // The postmortem draft and the public status page.
    let (code, md) = get_text(&format!("{base}/api/v1/incidents/{id}/postmortem"), &viewer);
    assert_eq!(code, 200);
    for needle in [
        "# Post-Incident Review",
        "Services Affected: cache, api",
        "Acknowledged by alice: on it",
        "- [ ] Alert on redis memory before OOM (owner: bob)",
        "commander alice",
        "## Root Cause",
        "redis process gone",
    ] {
        assert!(md.contains(needle), "missing {needle:?} in\n{md}");
    }
    let (code, status) = get_text(&format!("{base}/status.json"), "");
    assert_eq!(code, 200);
    let status: Value = serde_json::from_str(&status).unwrap();
    let public = &status["incidents"][0];
    assert_eq!(public["updates"][0]["text"], "Cache is down; API degraded.");
    assert_eq!(public["status"], "resolved");
    assert!(!status.to_string().contains("redis process gone"), "private notes stay private");
    let (code, page) = get_text(&format!("{base}/"), "");
    assert_eq!(code, 200);
    assert!(page.contains(&format!("data-incident=\"{id}\"")) && page.contains("Cache is down; API degraded."), "{page}");
    assert!(!page.contains("redis process gone"));

    // Closing records the review; the incident can then not be resolved again.
    let (code, _) = request("POST", &format!("{base}/api/v1/incidents/{id}/close"), &operator, Some(json!({"note": "review held"})));
    assert_eq!(code, 200);
    let (code, err) = request("POST", &format!("{base}/api/v1/incidents/{id}/resolve"), &operator, None);
    assert_eq!((code, err["error"]["code"].as_str()), (409, Some("conflict")));

    assert_eq!(server.stop(), Some(0));
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn a_kill_mid_escalation_neither_skips_nor_repeats_a_level() {
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up");
    std::fs::write(&up, "").unwrap();
    let (a, b, c) = (Receiver::start(0), Receiver::start(0), Receiver::start(0));
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            "services:\n  - name: api\nchecks:\n{}alerts:\n  - {{name: ApiDown, when: check api-health unhealthy, severity: critical}}\nreceivers:\n  - {{name: a, webhook: {{url: '{}'}}}}\n  - {{name: b, webhook: {{url: '{}'}}}}\n  - {{name: c, webhook: {{url: '{}'}}}}\nroute:\n  receiver: a\n  routes:\n    - {{receiver: a, matchers: ['nothing=\"matches\"']}}\nincidents:\n  policies:\n    - {{name: all, escalation: steps}}\n  escalation_policies:\n    - name: steps\n      levels:\n        - {{notify: [a], wait: 3s}}\n        - {{notify: [b], wait: 3s}}\n        - {{notify: [c], wait: 3s}}\n",
            file_check("api-health", Some("api"), &up),
            a.url,
            b.url,
            c.url
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "ops", "operator");
    let mut server = Server::start(&config, &data);
    std::fs::remove_file(&up).unwrap();
    let pages = |r: &Receiver| r.accepted().iter().filter(|(_, p)| p["incident"]["escalation"].is_object()).count();
    wait_for("level 1", Duration::from_secs(10), || (pages(&a) == 1).then_some(()));

    // kill -9 while level 2 is pending, and stay down past its due time.
    server.signal(libc::SIGKILL);
    server.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let mut server = Server::start(&config, &data);
    wait_for("level 2 after the restart", Duration::from_secs(10), || (pages(&b) == 1).then_some(()));
    wait_for("level 3, one wait later", Duration::from_secs(10), || (pages(&c) == 1).then_some(()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!((pages(&a), pages(&b), pages(&c)), (1, 1, 1), "each level exactly once");

    let id = incidents(&server.base, &token, "open")[0]["id"].as_i64().unwrap();
    let d = show(&server.base, &token, id);
    let levels: Vec<i64> = d["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "escalated")
        .map(|e| e["data"]["level"].as_i64().unwrap())
        .collect();
    assert_eq!(levels, [1, 2, 3]);
    // After the last level's wait, with repeat 0, escalation stops and says so.
    wait_for("escalation to report it is exhausted", Duration::from_secs(10), || {
        kinds(&show(&server.base, &token, id)).contains(&"escalation_exhausted".to_string()).then_some(())
    });
    assert_eq!(incidents(&server.base, &token, "all").len(), 1, "the restart did not open a second incident");

    // Each page carries a link that acknowledges from the message itself. Opening it
    // only shows a button (link previews fetch URLs); the button acknowledges.
    let page = b.accepted().into_iter().find(|(_, p)| p["incident"]["escalation"].is_object()).unwrap().1;
    let link = page["incident"]["acknowledge_url"].as_str().unwrap().to_string();
    // The incident's own link opens its console page; scripts get the API's.
    assert_eq!(page["incident"]["url"], format!("{}/console/incidents/{id}", server.base));
    assert_eq!(page["alerts"][0]["generatorURL"], format!("{}/console/incidents/{id}", server.base));
    assert_eq!(page["incident"]["api_url"], format!("{}/api/v1/incidents/{id}", server.base));
    assert!(link.starts_with(&format!("{}/ack/{id}.", server.base)), "{link}");
    assert_eq!(page["alerts"][0]["annotations"]["acknowledge"], link.as_str(), "email and chat bodies show it too");
    let tampered = link.replacen(&format!("/ack/{id}."), &format!("/ack/{}.", id + 1), 1);
    assert_eq!(text_request("POST", &tampered, "").0, 404);
    let (code, html) = text_request("GET", &link, "");
    assert_eq!(code, 200);
    assert!(html.contains("Acknowledge as b") && html.contains("<form method=\"post\">"), "{html}");
    assert_eq!(show(&server.base, &token, id)["incident"]["status"], "triggered", "opening the link acknowledges nothing");
    let (code, html) = text_request("POST", &link, "");
    assert_eq!(code, 200, "{html}");
    let d = show(&server.base, &token, id);
    assert_eq!(d["incident"]["status"], "acknowledged");
    let ack = d["timeline"].as_array().unwrap().iter().find(|e| e["kind"] == "acknowledged").unwrap().clone();
    assert_eq!(ack["actor"], "b (page link)");
    assert_eq!(text_request("POST", &link, "").0, 409, "a second click says it is already acknowledged");
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn resolving_by_hand_while_the_alert_fires_opens_nothing_new_until_it_fires_again() {
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up");
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            "services:\n  - name: api\nchecks:\n{}alerts:\n  - {{name: ApiDown, when: check api-health unhealthy, severity: critical}}\nincidents:\n  policies:\n    - {{name: all}}\n",
            file_check("api-health", Some("api"), &up),
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "ops", "operator");
    let mut server = Server::start(&config, &data);
    let base = server.base.clone();
    let first = wait_for("the first incident", Duration::from_secs(10), || incidents(&base, &token, "open").first().cloned());
    let id = first["id"].as_i64().unwrap();
    let (code, _) =
        request("POST", &format!("{base}/api/v1/incidents/{id}/resolve"), &token, Some(json!({"note": "known; fix deploying"})));
    assert_eq!(code, 200);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(incidents(&base, &token, "all").len(), 1, "the same firing does not open a second incident");

    // Once it resolves and fires again, that is a new incident.
    std::fs::write(&up, "").unwrap();
    wait_for("the alert to resolve", Duration::from_secs(10), || {
        common::alerting::alerts(&base, &token).iter().all(|a| a["state"] != "firing").then_some(())
    });
    std::fs::remove_file(&up).unwrap();
    let second = wait_for("a second incident", Duration::from_secs(10), || incidents(&base, &token, "open").first().cloned());
    assert_ne!(second["id"], first["id"]);
    assert_eq!(incidents(&base, &token, "all").len(), 2);
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn declared_incidents_follow_the_lifecycle_and_refuse_what_does_not_apply() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(&config, "services:\n  - name: api\n").unwrap();
    let data = dir.path().join("data");
    let operator = create_token(&data, "bob", "operator");
    let viewer = create_token(&data, "watcher", "viewer");
    let mut server = Server::start(&config, &data);
    let base = server.base.clone();
    let url = |p: &str| format!("{base}/api/v1{p}");

    let declare = json!({"title": "Checkout errors reported by customers", "priority": "P2", "services": ["api"]});
    assert_eq!(request("POST", &url("/incidents"), &viewer, Some(declare.clone())).0, 403, "a viewer cannot declare");
    for (body, code) in [
        (json!({"title": "x", "priority": "P9"}), 400),
        (json!({"title": "x", "services": ["nope"]}), 400),
        (json!({"title": "  "}), 400),
        (json!({"titel": "typo"}), 400),
    ] {
        let (got, v) = request("POST", &url("/incidents"), &operator, Some(body.clone()));
        assert_eq!(got, code, "{body} → {v}");
        assert!(v["error"]["message"].as_str().is_some());
    }
    assert!(incidents(&base, &viewer, "all").is_empty(), "refused requests changed nothing");

    // Through the CLI, as a person would.
    let cli = |args: &[&str]| {
        let out = steward().args(args).args(["--server", &base, "--token", &operator]).output().unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, out, err) =
        cli(&["incident", "declare", "--title", "Checkout errors reported by customers", "--priority", "P2", "--service", "api"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("declared"), "{out}");
    let id = incidents(&base, &viewer, "open")[0]["id"].as_i64().unwrap();
    let id_s = id.to_string();
    assert_eq!(cli(&["incident", "ack", &id_s, "--note", "looking"]).0, Some(0));
    let (code, _, err) = cli(&["incident", "ack", &id_s]);
    assert_eq!(code, Some(1), "a second acknowledgement is refused");
    assert!(err.contains("only a triggered incident can be acknowledged"), "{err}");
    assert_eq!(cli(&["incident", "close", &id_s]).0, Some(1), "close needs resolved first");
    assert_eq!(cli(&["incident", "priority", &id_s, "P1", "--reason", "payments affected too"]).0, Some(0));
    assert_eq!(cli(&["incident", "assign-role", &id_s, "dictator", "bob"]).0, Some(1));
    assert_eq!(cli(&["incident", "assign-role", &id_s, "scribe", "carol"]).0, Some(0));
    assert_eq!(cli(&["incident", "mitigate", &id_s, "--note", "feature flag off"]).0, Some(0));
    assert_eq!(cli(&["incident", "action-item", &id_s, "Load test checkout", "--owner", "dan"]).0, Some(0));
    assert_eq!(cli(&["incident", "resolve", &id_s]).0, Some(0));
    let items = request("GET", &url("/action-items?state=open"), &viewer, None).1;
    let item = items["action_items"][0]["id"].as_i64().unwrap();
    assert_eq!(cli(&["incident", "action-done", &id_s, &item.to_string()]).0, Some(0));
    assert_eq!(cli(&["incident", "close", &id_s, "--note", "review held"]).0, Some(0));

    let (code, table, _) = cli(&["incident", "show", &id_s]);
    assert_eq!(code, Some(0));
    for needle in [
        "TIMELINE (UTC)",
        "Declared by bob",
        "Priority P2 → P1 by bob: payments affected too",
        "carol is scribe",
        "Mitigated by bob: feature flag off",
        "Closed by bob",
    ] {
        assert!(table.contains(needle), "missing {needle:?} in\n{table}");
    }
    let d = show(&base, &viewer, id);
    assert_eq!(d["incident"]["status"], "closed");
    assert_eq!(d["incident"]["priority"], "P1");
    assert_eq!(d["action_items"][0]["state"], "done");
    assert_eq!(
        kinds(&d),
        ["opened", "acknowledged", "priority_changed", "role_assigned", "mitigated", "action_item", "resolved", "action_item", "closed"],
        "refused actions left no trace"
    );
    let (code, out, _) = cli(&["incident", "list", "--status", "all", "--output", "json"]);
    assert_eq!(code, Some(0));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["incidents"][0]["id"], id);
    let (code, md, _) = cli(&["incident", "postmortem", &id_s]);
    assert_eq!(code, Some(0));
    assert!(md.contains("- [x] Load test checkout (owner: dan)"), "{md}");
    assert!(md.contains("Detected: ") && md.contains("declared by bob"), "{md}");
    assert_eq!(server.stop(), Some(0));
}

#[test]
fn oncall_answers_for_now_and_for_a_time_across_dst_with_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        "receivers:\n  - {name: pager, webhook: {url: 'http://127.0.0.1:9/'}}\nincidents:\n  schedules:\n    - name: primary\n      time_zone: America/New_York\n      rotation: {people: [alice, bob, carol], shift: daily, handoff: '09:00', start: '2026-03-01'}\n  people:\n    - {name: alice, notify: [pager]}\n    - {name: bob, notify: [pager]}\n    - {name: carol, notify: [pager]}\n    - {name: dave, notify: [pager]}\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let operator = create_token(&data, "ops", "operator");
    let mut server = Server::start(&config, &data);
    let at = |t: &str| request("GET", &format!("{}/api/v1/oncall?at={t}", server.base), &operator, None).1;
    // The day after New York springs forward, 09:00 EDT is 13:00 UTC.
    assert_eq!(at("2026-03-09T12:59:00Z")["schedules"][0]["on_call"]["person"], "bob");
    assert_eq!(at("2026-03-09T13:00:00Z")["schedules"][0]["on_call"]["person"], "carol");
    let out = steward()
        .args(["oncall", "--schedule", "primary", "--override", "dave", "--from", "2026-03-09 10:00", "--until", "2026-03-09 12:00"])
        .args(["--server", &server.base, "--token", &operator])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // 10:00–12:00 EDT = 14:00–16:00 UTC.
    let v = at("2026-03-09T14:30:00Z");
    assert_eq!(v["schedules"][0]["on_call"]["person"], "dave");
    assert_eq!(v["schedules"][0]["on_call"]["is_override"], true);
    assert_eq!(at("2026-03-09T16:00:00Z")["schedules"][0]["on_call"]["person"], "carol");
    let (code, err) = request(
        "POST",
        &format!("{}/api/v1/schedules/primary/overrides", server.base),
        &operator,
        Some(json!({"person": "mallory", "from": "2026-03-09 10:00", "until": "2026-03-09 12:00"})),
    );
    assert_eq!(code, 400, "{err}");
    let out = steward().args(["oncall", "--at", "2026-03-09T13:30:00Z", "--server", &server.base, "--token", &operator]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("primary") && table.contains("carol") && table.contains("America/New_York"), "{table}");
    assert_eq!(server.stop(), Some(0));
}
