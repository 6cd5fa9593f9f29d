//! Hostile input through the binary (issue: "safe by construction against every
//! input"). Each test holds one finding of the outside probe: what it did to the
//! previous build is said above it, and the test fails on that build.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::{Server, create_token, steward, wait_for};
use serde_json::{Value, json};

/// One HTTP exchange: status, content type and body text (blocking, for linear tests).
fn raw(method: &str, url: &str, token: Option<&str>, body: Option<&[u8]>) -> (u16, String, String) {
    common::install_crypto();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut r = reqwest::Client::new().request(method.parse().unwrap(), url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_vec());
        }
        let resp = r.send().await.unwrap_or_else(|e| panic!("{method} {url}: the connection failed ({e}): a handler panicked?"));
        let status = resp.status().as_u16();
        let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        (status, ct, resp.text().await.unwrap())
    })
}

/// A JSON request; the answer parsed (a non-JSON answer fails the test).
fn call(method: &str, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let bytes = body.map(|b| b.to_string().into_bytes());
    let (status, ct, text) = raw(method, url, Some(token), bytes.as_deref());
    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {url} answered {status} with non-JSON ({ct}): {text}"));
    (status, v)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn metric(base: &str, name: &str) -> f64 {
    let (_, _, text) = raw("GET", &format!("{base}/metrics"), None, None);
    text.lines().filter(|l| l.starts_with(name) && !l.starts_with('#')).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// A configuration with one of everything the API can act on.
fn everything(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/a.txt"), "alpha").unwrap();
    let d = dir.display();
    write(
        dir,
        "steward.yaml",
        &format!(
            r#"services:
  - {{name: api, tier: 1}}
checks:
  - name: api-port
    service: api
    interval: 1h
    tcp: {{address: '127.0.0.1:1'}}
receivers:
  - {{name: pager, webhook: {{url: 'http://127.0.0.1:9/'}}}}
incidents:
  schedules:
    - name: primary
      time_zone: UTC
      rotation: {{people: [alice], shift: daily, handoff: "09:00", start: "2026-01-01"}}
  people:
    - {{name: alice, notify: [pager]}}
runbooks:
  - name: touch
    params:
      target: string
      wait: {{type: duration, default: 1s}}
    steps:
      - name: touch
        shell: {{argv: [touch, "{{{{ params.target }}}}"]}}
repositories:
  - {{name: local, path: {d}/repo}}
backups:
  - name: files
    directory: {{path: {d}/src}}
    repository: local
    retention: {{keep_last: 1}}
"#
        ),
    )
}

/// Everything a request could have changed, as the API reports it.
fn state(base: &str, token: &str) -> Value {
    let get = |path: &str| call("GET", &format!("{base}/api/v1/{path}"), token, None).1;
    let backups: Vec<Value> =
        get("backups")["backups"].as_array().unwrap().iter().map(|b| json!([b["id"], b["status"], b["verified_at"]])).collect();
    json!({
        "runs": get("runs")["runs"].as_array().unwrap().iter().map(|r| json!([r["id"], r["status"]])).collect::<Vec<_>>(),
        "incidents": get("incidents?status=all")["incidents"].as_array().unwrap().iter().map(|i| json!([i["id"], i["status"], i["priority"]])).collect::<Vec<_>>(),
        "timeline": get("incidents/1")["timeline"].as_array().map(Vec::len),
        "silences": get("silences")["silences"].as_array().map(Vec::len),
        "backups": backups,
        "audit": get("audit")["events"].as_array().map(Vec::len),
        "tokens": get("tokens")["tokens"].as_array().map(Vec::len),
        "history": get("checks/api-port/history")["results"].as_array().map(Vec::len),
        "overrides": get("oncall")["schedules"][0]["overrides"].as_array().map(Vec::len),
        "reloads": metric(base, "steward_config_reloads_total"),
    })
}

/// Was: runbook runs, backup run/verify/restore/prune and `runs/*` ignored unknown JSON
/// fields — `{"policy":"files","dryRun":true}` pruned for real, a restore with
/// `dryRun` wrote the files, a run with `dryRun`/`dry-run`/`dryrun` started. Now every
/// operation of the OpenAPI document refuses an unknown query parameter, an unknown
/// body field, and a body sent to an operation that takes none — and nothing changes.
#[test]
fn every_documented_operation_refuses_unknown_fields_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = everything(dir.path());
    let data = dir.path().join("data");
    let admin = create_token(&data, "root", "admin");
    // Two backups, so a prune would delete one.
    for _ in 0..2 {
        let out = steward().args(["backup", "run", "files", "-c"]).arg(&config).arg("-d").arg(&data).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let server = Server::start(&config, &data);
    let base = server.base.clone();
    let api = |p: &str| format!("{base}/api/v1/{p}");
    // One of each resource, so every path names something that exists.
    let touched = dir.path().join("touched");
    let (code, run) = call("POST", &api("runbooks/touch/runs"), &admin, Some(json!({"params": {"target": touched}})));
    assert_eq!(code, 201, "{run}");
    wait_for("the run to finish", Duration::from_secs(10), || {
        (call("GET", &api("runs/1"), &admin, None).1["run"]["status"] == "succeeded").then_some(())
    });
    std::fs::remove_file(&touched).unwrap();
    let (code, v) = call("POST", &api("incidents"), &admin, Some(json!({"title": "walk", "priority": "P3"})));
    assert_eq!(code, 201, "{v}");
    let (code, v) = call("POST", &api("incidents/1/action-items"), &admin, Some(json!({"text": "fix it"})));
    assert_eq!(code, 201, "{v}");
    let (code, v) =
        call("POST", &api("silences"), &admin, Some(json!({"matchers": ["alertname=\"X\""], "duration": "1h", "comment": "walk"})));
    assert_eq!(code, 201, "{v}");
    let silence = v["silence"]["id"].as_str().unwrap().to_string();
    let backups = call("GET", &api("backups"), &admin, None).1;
    let backup = backups["backups"][0]["id"].as_str().unwrap().to_string();
    let restore_target = dir.path().join("restored");

    let before = state(&base, &admin);
    let doc: Value = serde_json::from_str(&raw("GET", &api("openapi.json"), Some(&admin), None).2).unwrap();
    let mut walked = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = template
            .replace(
                "{name}",
                if template.contains("/checks/") {
                    "api-port"
                } else if template.contains("/runbooks/") {
                    "touch"
                } else if template.contains("/schedules/") {
                    "primary"
                } else {
                    "api"
                },
            )
            .replace(
                "{id}",
                if template.contains("/backups/") {
                    &backup
                } else if template.contains("/silences/") {
                    &silence
                } else {
                    "1"
                },
            )
            .replace("{item}", "1")
            .replace("{fingerprint}", "0000")
            .replace("{token}", "1.61.99.00");
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let method = method.to_uppercase();
            let url = format!("{base}{path}");
            walked += 1;
            // An unknown query parameter, on every API operation.
            if path.starts_with("/api/v1/") {
                let (status, ct, text) = raw(&method, &format!("{url}?dryRun=true"), Some(&admin), None);
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                assert_eq!(
                    (status, v["error"]["code"].as_str()),
                    (400, Some("unknown_field")),
                    "{method} {path}?dryRun=true answered {status} {ct}: {text}"
                );
                assert!(v["error"]["message"].as_str().unwrap().contains("dryRun"), "{v}");
            }
            if method == "GET" {
                continue;
            }
            if op["requestBody"].is_null() {
                // A body sent to an operation that takes none.
                let (status, ct, text) = raw(&method, &url, Some(&admin), Some(br#"{"dry_run": true}"#));
                assert_eq!(status, 400, "{method} {path} with a body answered {status} {ct}: {text}");
                assert!(ct.starts_with("application/json"), "{method} {path}: {ct} {text}");
                assert!(text.contains("takes no request body"), "{method} {path}: {text}");
            } else {
                let schema = &op["requestBody"]["content"]["application/json"]["schema"];
                if !path.ends_with("/ingest/alertmanager") {
                    assert_eq!(schema["additionalProperties"], false, "{method} {path}: the document must say unknown fields are refused");
                }
                for field in ["dryRun", "dry-run", "dryrun", "DRY_RUN"] {
                    let body = format!(r#"{{"{field}": true}}"#);
                    let (status, ct, text) = raw(&method, &url, Some(&admin), Some(body.as_bytes()));
                    assert_eq!(status, 400, "{method} {path} with {body} answered {status} {ct}: {text}");
                    let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
                    assert!(v["error"]["message"].as_str().unwrap().contains(&format!("`{field}`")), "{method} {path}: {v}");
                    let documented: Vec<&str> = op["requestBody"]["content"]["application/json"]["schema"]["properties"]
                        .as_object()
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    if documented.contains(&"dry_run") {
                        assert_eq!(v["error"]["code"], "unknown_field", "{v}");
                        assert_eq!(v["error"]["details"]["did_you_mean"], "dry_run", "{method} {path} {field}: {v}");
                    }
                }
            }
        }
    }
    assert!(walked >= 60, "walked only {walked} operations");
    let after = state(&base, &admin);
    assert_eq!(before, after, "a refused request changed something");
    assert!(!touched.exists(), "a refused run request ran the runbook");
    assert!(!restore_target.exists());
    assert_eq!(metric(&base, "steward_panics_total"), 0.0, "{}", server.log());

    // The same requests spelled right do what they say (so the refusals above mean something).
    let (code, v) = call("POST", &api("backups/prune"), &admin, Some(json!({"policy": "files", "dry_run": true})));
    assert_eq!(code, 200, "{v}");
    let to_delete = v["plan"]["items"].as_array().unwrap().iter().filter(|i| i["keep"] == false).count();
    assert_eq!(to_delete, 1, "the plan would delete the older backup: {v}");
    let (code, v) = call("POST", &api(&format!("backups/{backup}/restore")), &admin, Some(json!({"to": restore_target, "dry_run": true})));
    assert_eq!(code, 200, "{v}");
    let (code, v) = call("POST", &api("runbooks/touch/runs"), &admin, Some(json!({"params": {"target": touched}, "dry_run": true})));
    assert_eq!(code, 200, "{v}");
    assert!(v["plan"].is_object(), "{v}");
    assert_eq!(state(&base, &admin), after, "dry runs change nothing");
    assert!(!restore_target.exists() && !touched.exists());
}

/// Was: ten requests made their handler panic (the connection dropped with no answer):
/// silence durations of `99999999999999999999d`, `200000000d`, `1e19s1e19s`, start
/// times at year 9999/0000 plus a long duration, `stats?since=` with the same, runbook
/// `duration` parameters, `oncall?at=-262143-01-01 00:00`; an override from year −262143
/// was accepted, and `stats?since=99999999999999d` answered 200 with since = now.
#[test]
fn hostile_durations_and_times_get_a_json_400_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = everything(dir.path());
    let data = dir.path().join("data");
    let admin = create_token(&data, "root", "admin");
    let server = Server::start(&config, &data);
    let api = |p: &str| format!("{}/api/v1/{p}", server.base);
    let huge = ["99999999999999999999d", "200000000d", "10000000000000000000s10000000000000000000s", "36501d"];
    let mut refused = 0;
    let expect_400 = |what: &str, (code, v): (u16, Value)| {
        assert_eq!(code, 400, "{what}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
    };
    for d in huge {
        let silence = json!({"matchers": ["alertname=\"X\""], "duration": d, "comment": "x"});
        expect_400(&format!("silence {d}"), call("POST", &api("silences"), &admin, Some(silence)));
        expect_400(&format!("stats {d}"), call("GET", &api(&format!("incidents/stats?since={d}")), &admin, None));
        let run = json!({"params": {"target": "/nonexistent/x", "wait": d}});
        expect_400(&format!("runbook duration {d}"), call("POST", &api("runbooks/touch/runs"), &admin, Some(run)));
        refused += 3;
    }
    for start in ["9999-12-31T00:00:00Z", "0000-01-01T00:00:00Z"] {
        let silence = json!({"matchers": ["alertname=\"X\""], "starts_at": start, "duration": "36500d", "comment": "x"});
        expect_400(&format!("silence at {start}"), call("POST", &api("silences"), &admin, Some(silence)));
        expect_400(&format!("stats since {start}"), call("GET", &api(&format!("incidents/stats?since={start}")), &admin, None));
        refused += 2;
    }
    expect_400("oncall at -262143", call("GET", &api("oncall?at=-262143-01-01%2000:00"), &admin, None));
    expect_400("oncall at +262142", call("GET", &api("oncall?at=%2B262142-01-01T00:00:00Z"), &admin, None));
    let far = json!({"person": "alice", "from": "-262143-01-01 00:00", "until": "2026-01-01 00:00"});
    expect_400("override from -262143", call("POST", &api("schedules/primary/overrides"), &admin, Some(far)));
    refused += 3;
    assert!(refused >= 19);
    // Nothing was created, the server answers, and nothing panicked.
    assert_eq!(call("GET", &api("silences"), &admin, None).1["silences"].as_array().map(Vec::len), Some(0));
    assert_eq!(call("GET", &api("runs"), &admin, None).1["runs"].as_array().map(Vec::len), Some(0));
    assert_eq!(call("GET", &api("oncall"), &admin, None).1["schedules"][0]["overrides"].as_array().map(Vec::len), Some(0));
    assert_eq!(metric(&server.base, "steward_panics_total"), 0.0, "{}", server.log());
    // Sensible values still work.
    let (code, v) = call("GET", &api("incidents/stats?since=30d"), &admin, None);
    assert_eq!(code, 200, "{v}");
}

/// Was: `interval: 99999999999999999999d` + SIGHUP panicked in the reload task, and
/// SIGHUP did nothing from then on (no log line), even after the config was fixed;
/// `POST /config/reload` with the bad config dropped the connection.
#[test]
fn a_bad_reload_is_a_diagnostic_and_sighup_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let good = "checks:\n  - name: first\n    interval: 1h\n    tcp: {address: '127.0.0.1:1'}\n";
    let config = write(dir.path(), "steward.yaml", good);
    let data = dir.path().join("data");
    let admin = create_token(&data, "root", "admin");
    let server = Server::start(&config, &data);
    let api = |p: &str| format!("{}/api/v1/{p}", server.base);
    std::fs::write(&config, good.replace("interval: 1h", "interval: 99999999999999999999d")).unwrap();
    server.signal(libc::SIGHUP);
    wait_for("the rejected reload in the log", Duration::from_secs(10), || {
        server.log().contains("configuration reload rejected").then_some(())
    });
    assert!(server.log().contains("steward.yaml:3:15"), "the log names file:line:column: {}", server.log());
    let (code, v) = call("POST", &api("config/reload"), &admin, None);
    assert_eq!((code, v["error"]["code"].as_str()), (422, Some("invalid_config")), "{v}");
    assert!(v["error"]["details"][0]["message"].as_str().unwrap().contains("maximum of 36500d"), "{v}");
    // Fixed, with a second check: SIGHUP still works.
    std::fs::write(&config, format!("{good}  - name: second\n    interval: 1h\n    tcp: {{address: '127.0.0.1:1'}}\n")).unwrap();
    server.signal(libc::SIGHUP);
    wait_for("the fixed configuration to load on SIGHUP", Duration::from_secs(10), || {
        (call("GET", &api("checks/second"), &admin, None).0 == 200).then_some(())
    });
    assert_eq!(metric(&server.base, "steward_panics_total"), 0.0, "{}", server.log());
}

/// Was: eight duration fields crashed `validate` and `serve` (exit 101, a backtrace),
/// and a 364-byte alias bomb made `validate` take 14.8 s and 3.3 GB.
#[test]
fn huge_durations_and_alias_bombs_are_configuration_errors_at_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let h = "99999999999999999999d";
    let config = write(
        dir.path(),
        "steward.yaml",
        &format!(
            r#"checks:
  - name: c
    interval: {h}
    timeout: {h}
    tcp: {{address: '127.0.0.1:1'}}
  - name: fresh
    backup: {{policy: files, max_age: {h}}}
alerts:
  - name: A
    when: check c unhealthy
    for: {h}
    keep_firing_for: {h}
route:
  receiver: pager
  group_wait: {h}
receivers:
  - {{name: pager, webhook: {{url: 'http://127.0.0.1:9/'}}}}
maintenance_windows:
  - name: m
    matchers: ['service="api"']
    schedule: "0 2 * * *"
    duration: {h}
runbooks:
  - name: r
    timeout: {h}
    steps: [{{name: s, sleep: 1s}}]
repositories:
  - {{name: local, path: {d}/repo}}
backups:
  - {{name: files, directory: {{path: {d}}}, repository: local}}
"#,
            d = dir.path().display()
        ),
    );
    // Where each of the eight huge durations was written (1-based line and column).
    let text = std::fs::read_to_string(&config).unwrap();
    let written: Vec<(u64, u64)> = text.lines().enumerate().filter_map(|(i, l)| l.find(h).map(|c| (i as u64 + 1, c as u64 + 1))).collect();
    assert_eq!(written.len(), 8, "{text}");
    let out = steward().args(["validate", "--output", "json", "-c"]).arg(&config).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let at: Vec<(u64, u64)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["message"].as_str().unwrap().contains("maximum of 36500d"))
        .map(|e| (e["line"].as_u64().unwrap(), e["col"].as_u64().unwrap()))
        .collect();
    for (line, col) in &written {
        assert!(at.contains(&(*line, *col)), "no duration error at {line}:{col}: {v:#}");
    }
    // `serve` refuses the same file the same way, instead of crashing.
    let out = steward()
        .args(["serve", "--listen", "127.0.0.1:0", "-c"])
        .arg(&config)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("steward.yaml:3:15"));

    // Nine levels of ten aliases: a billion values if expanded.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = format!("*a{}", i - 1);
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", [p.as_str(); 10].join(", ")));
    }
    let bomb = write(dir.path(), "bomb.yaml", &bomb);
    let started = std::time::Instant::now();
    let out = steward().args(["validate", "-c"]).arg(&bomb).output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5), "validate took {:?}", started.elapsed());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than 1000000 values"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Was: 85 of 969 4xx answers were plain text (413 body limit, path and query extractor
/// errors), and error messages echoed up to 1 MB of input back.
#[test]
fn every_error_is_the_documented_json_with_a_stable_code_and_echoes_little() {
    let dir = tempfile::tempdir().unwrap();
    let config = everything(dir.path());
    let data = dir.path().join("data");
    let admin = create_token(&data, "root", "admin");
    let server = Server::start(&config, &data);
    let base = &server.base;
    let big = vec![b' '; 3 * 1024 * 1024];
    let long_name = "n".repeat(6000);
    type Case<'a> = (&'a str, String, Option<&'a [u8]>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("POST", format!("{base}/api/v1/incidents"), Some(&big), 413, "payload_too_large"),
        ("PUT", format!("{base}/api/v1/incidents"), None, 405, "method_not_allowed"),
        ("GET", format!("{base}/api/v1/runs/abc"), None, 400, "bad_request"),
        ("GET", format!("{base}/api/v1/runs?limit=lots"), None, 400, "bad_request"),
        ("POST", format!("{base}/api/v1/incidents"), Some(b"{not json"), 400, "bad_request"),
        ("GET", format!("{base}/api/v1/nope"), None, 404, "not_found"),
        ("GET", format!("{base}/api/v1/checks/{}", "x".repeat(9000)), None, 414, "uri_too_long"),
        ("GET", format!("{base}/api/v1/checks/{long_name}"), None, 404, "not_found"),
        ("GET", format!("{base}/api/v1/runs?status={long_name}"), None, 400, "bad_request"),
    ];
    for (method, url, body, status, code) in cases {
        let (got, ct, text) = raw(method, &url, Some(&admin), body);
        let short = &url[..url.len().min(80)];
        assert_eq!(got, status, "{method} {short}: {text}");
        assert!(ct.starts_with("application/json"), "{method} {short} answered {ct}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["code"], code, "{method} {short}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(!message.is_empty() && message.chars().count() <= 1001, "{method} {short}: a message of {} chars", message.len());
    }
    // A body on a GET-only route's sibling, an unknown method on a known path: still JSON.
    let (status, ct, _) = raw("DELETE", &format!("{base}/api/v1/runs"), Some(&admin), None);
    assert_eq!((status, ct.starts_with("application/json")), (405, true));
    // Log lines are capped too: the long name above was logged at most once, cut.
    let log = server.log();
    assert!(log.lines().all(|l| l.len() <= 16 * 1024 + 64), "a log line longer than 16 KiB");
}

/// Was: an SQL `query` with `{{ params.x }}` passed validate and sent the literal text;
/// `argv: [sh, -c, "echo {{ params.msg }}"]` passed validate and 6 of 9 payloads ran.
#[test]
fn templates_in_code_positions_are_refused_by_validate_with_the_env_var_way_shown() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        r#"[sh, -c, "echo {{ params.m }}"]"#,
        r#"[/bin/bash, -ec, "echo {{ params.m }}"]"#,
        r#"[dash, -c, "{{ params.m }}"]"#,
        r#"[zsh, -c, "echo {{ params.m }}"]"#,
        r#"[ksh, -c, "echo {{ params.m }}"]"#,
        r#"[ash, -c, "echo {{ params.m }}"]"#,
        r#"[python3, -c, "print('{{ params.m }}')"]"#,
        r#"[perl, -e, "print '{{ params.m }}'"]"#,
        r#"[ruby, -e, "puts '{{ params.m }}'"]"#,
        r#"[node, -e, "console.log('{{ params.m }}')"]"#,
        r#"[ssh, -p, "2222", db-1, "echo {{ params.m }}"]"#,
        r#"[kubectl, exec, -n, prod, pod-0, --, sh, -c, "echo {{ params.m }}"]"#,
        r#"[docker, exec, -u, root, web, bash, -c, "echo {{ params.m }}"]"#,
        r#"[sudo, -u, postgres, psql, -c, "select '{{ params.m }}'"]"#,
        r#"[env, A=1, sh, -c, "echo {{ params.m }}"]"#,
        r#"[timeout, 5s, awk, "BEGIN { print \"{{ params.m }}\" }"]"#,
    ];
    for argv in cases {
        let config = write(
            dir.path(),
            "steward.yaml",
            &format!("runbooks:\n  - name: r\n    params: {{m: string}}\n    steps:\n      - name: s\n        shell: {{argv: {argv}}}\n"),
        );
        let out = steward().args(["validate", "--output", "json", "-c"]).arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{argv} passed validate");
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let e = &v["errors"][0];
        assert!(e["message"].as_str().unwrap().contains("is code that"), "{argv}: {e}");
        assert!(e["hint"].as_str().unwrap().contains("environment variable"), "{argv}: {e}");
        assert_eq!(e["line"], 6, "{argv}: {e}");
    }
    // Data positions stay allowed: positional arguments after the code, plain programs.
    for argv in [
        r#"[sh, -c, 'echo "$1"', sh, "{{ params.m }}"]"#,
        r#"[echo, "{{ params.m }}"]"#,
        r#"[python3, /opt/tool.py, "{{ params.m }}"]"#,
        r#"[kubectl, get, pod, "{{ params.m }}"]"#,
    ] {
        let config = write(
            dir.path(),
            "steward.yaml",
            &format!("runbooks:\n  - name: r\n    params: {{m: string}}\n    steps:\n      - name: s\n        shell: {{argv: {argv}}}\n"),
        );
        let out = steward().args(["validate", "-c"]).arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{argv}: {}", String::from_utf8_lossy(&out.stderr));
    }
    for (step, needle) in [
        (r#"sql: {url: 'postgres://postgres@127.0.0.1/postgres', query: "select '{{ params.m }}'"}"#, "SQL text is never templated"),
        (r#"redis: {url: 'redis://127.0.0.1:6379', command: [EVAL, "return '{{ params.m }}'", "0"]}"#, "runs Lua code"),
    ] {
        let config = write(
            dir.path(),
            "steward.yaml",
            &format!("runbooks:\n  - name: r\n    params: {{m: string}}\n    steps:\n      - name: s\n        {step}\n"),
        );
        let out = steward().args(["validate", "-c"]).arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{step}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(needle), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A tiny HTTP server that records each request's target and answers 200.
fn recording_server() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap_or(0);
            let mut header = String::new();
            while reader.read_line(&mut header).unwrap_or(0) > 2 {
                header.clear();
            }
            let target = line.split(' ').nth(1).unwrap_or("").to_string();
            record.lock().unwrap().push(target);
            let mut s = stream;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (url, seen)
}

/// Every payload class through every step kind that takes parameters: none executes,
/// each step sees the exact text, and URLs carry it percent-encoded as one component.
/// Was: HTTP step URLs pasted parameters unencoded (`x&admin=1` added a query
/// parameter, `x#frag` cut the URL).
#[test]
fn payloads_reach_every_step_kind_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let out = dir.path().join("out");
    let (http, seen) = recording_server();
    let config = write(
        dir.path(),
        "steward.yaml",
        &format!(
            r#"runbooks:
  - name: all-kinds
    params: {{ p: string }}
    steps:
      - name: script
        shell: {{ script: 'printf "%s\n" "$P" >> {out}' }}
      - name: positional
        shell: {{ argv: [sh, -c, 'printf "%s\n" "$1" >> {out}', sh, "{{{{ params.p }}}}"] }}
      - name: python
        shell: {{ argv: [python3, -c, "import os; open('{out}', 'a').write(os.environ['P'] + '\\n')"] }}
      - name: pg
        sql: {{ url: postgres://postgres@127.0.0.1:5432/postgres, query: select $1::text as v, args: ["{{{{ params.p }}}}"] }}
      - name: maria
        sql: {{ url: mysql://root@127.0.0.1:3306/mysql, query: select ? as v, args: ["{{{{ params.p }}}}"] }}
      - name: redis
        redis: {{ url: "redis://127.0.0.1:6379", command: [ECHO, "{{{{ params.p }}}}"] }}
      # Last, and allowed to fail: a header cannot hold a line break (no header injection).
      - name: http
        continue_on_error: true
        http: {{ url: "{http}/items/{{{{ params.p }}}}?q={{{{ params.p }}}}&fixed=1", headers: {{ X-Value: "{{{{ params.p }}}}" }} }}
"#,
            out = out.display()
        ),
    );
    let data = dir.path().join("data");
    let operator = create_token(&data, "op", "operator");
    let server = Server::start(&config, &data);
    let m = marker.display();
    let payloads = [
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("x; touch {m}"),
        format!("x && touch {m}"),
        format!("x | touch {m}"),
        format!("x\ntouch {m}"),
        format!("' ; touch {m}; echo '"),
        format!("\" ; touch {m}; echo \""),
        "x&admin=1#frag/../../etc?y=2 %2F".to_string(),
    ];
    for p in &payloads {
        let _ = std::fs::remove_file(&out);
        let (code, v) =
            call("POST", &format!("{}/api/v1/runbooks/all-kinds/runs", server.base), &operator, Some(json!({"params": {"p": p}})));
        assert_eq!(code, 201, "{v}");
        let id = v["run"]["id"].as_i64().unwrap();
        let run = wait_for("the run", Duration::from_secs(20), || {
            let d = call("GET", &format!("{}/api/v1/runs/{id}", server.base), &operator, None).1;
            matches!(d["run"]["status"].as_str(), Some("succeeded" | "failed")).then_some(d)
        });
        assert_eq!(run["run"]["status"], "succeeded", "{p:?}: {run}");
        assert!(!marker.exists(), "payload {p:?} executed");
        let lines = std::fs::read_to_string(&out).unwrap();
        // Shell and Python steps each wrote the exact text (payloads with a newline span two lines).
        assert_eq!(lines, format!("{p}\n{p}\n{p}\n"), "{p:?}");
        let result = |name: &str| run["steps"].as_array().unwrap().iter().find(|s| s["name"] == name).unwrap()["result"].clone();
        assert_eq!(result("pg")["row"]["v"], p.as_str(), "{p:?}");
        assert_eq!(result("maria")["row"]["v"], p.as_str(), "{p:?}");
        assert_eq!(result("redis")["reply"], p.as_str(), "{p:?}");
        let http = run["steps"].as_array().unwrap().iter().find(|s| s["name"] == "http").unwrap();
        if p.contains('\n') {
            assert!(http["error"].as_str().unwrap().contains("header value"), "{http}");
            continue;
        }
        assert_eq!(http["status"], "succeeded", "{http}");
        let target = seen.lock().unwrap().last().cloned().unwrap();
        let encoded: String = url::form_urlencoded::byte_serialize(p.as_bytes()).collect::<String>().replace('+', "%20");
        let (path, query) = target.split_once('?').unwrap();
        assert_eq!(path, format!("/items/{encoded}"), "{p:?}: {target}");
        assert_eq!(query, format!("q={encoded}&fixed=1"), "{p:?}: one query value, the fixed one kept: {target}");
    }
}

/// Was: `http://user:${env:S}@…`, `postgres://…`, `redis://…` and the README's own
/// `mysql://backup:${env:MYSQL_BACKUP_PASSWORD}@…` failed with "url contains an inline
/// password"; `${env:URL}` for a whole URL failed; Redis and MySQL could not be given a
/// password at all. Now they connect, against servers that demand the password.
#[test]
fn passwords_by_reference_in_urls_reach_servers_that_demand_them_and_stay_redacted() {
    let password = "p@ss/w:rd#1";
    // MariaDB: a user with a password.
    let user = format!("steward_pw_{}", std::process::id());
    let sql = format!(
        "CREATE USER IF NOT EXISTS '{user}'@'%' IDENTIFIED BY '{password}'; CREATE USER IF NOT EXISTS '{user}'@'localhost' IDENTIFIED BY '{password}';"
    );
    let ok = std::process::Command::new("mariadb").args(["-h", "127.0.0.1", "-u", "root", "-e", &sql]).status().unwrap();
    assert!(ok.success());
    // Redis: a private server with requirepass.
    let redis_port = common::free_port();
    let mut redis = std::process::Command::new("redis-server")
        .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1", "--save", "", "--requirepass", password])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("redis", Duration::from_secs(10), || common::port_open(redis_port).then_some(()));
    // NATS: a private server with a user and password.
    let nats_port = common::free_port();
    let mut nats = std::process::Command::new("nats-server")
        .args(["-a", "127.0.0.1", "-p", &nats_port.to_string(), "--user", "steward", "--pass", password])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("nats", Duration::from_secs(10), || common::port_open(nats_port).then_some(()));
    // HTTP: a server that answers 200 only to the right Basic credentials.
    let http = basic_auth_server("steward", password);
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "steward.yaml",
        &format!(
            r#"checks:
  - name: maria
    mysql: {{url: "mysql://{user}:${{env:T_PW}}@127.0.0.1:3306/information_schema"}}
  - name: redis
    redis: {{url: "redis://:${{env:T_PW}}@127.0.0.1:{redis_port}"}}
  - name: pg-whole
    postgres: {{url: "${{env:T_PG_URL}}"}}
  - name: nats
    nats: {{url: "nats://steward:${{env:T_PW}}@127.0.0.1:{nats_port}"}}
  - name: http
    http: {{url: "http://steward:${{env:T_PW}}@{http}/health"}}
"#
        ),
    );
    let out = steward()
        .args(["check", "--output", "json", "-c"])
        .arg(&config)
        .env("T_PW", password)
        .env("T_PG_URL", "postgres://postgres:unused-secret@127.0.0.1:5432/postgres")
        .output()
        .unwrap();
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = nats.kill();
    let _ = nats.wait();
    let _ = std::process::Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-u", "root", "-e", &format!("DROP USER '{user}'@'%'; DROP USER '{user}'@'localhost'")])
        .status();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["checks"].as_array().unwrap().len(), 5);
    for c in v["checks"].as_array().unwrap() {
        assert_eq!(c["status"], "healthy", "{c}");
    }
    assert!(!stdout.contains(password) && !stderr.contains(password) && !stdout.contains("unused-secret"), "{stdout}{stderr}");
    // A wrong password is a failing check whose reason does not quote it.
    let out = steward()
        .args(["check", "--output", "json", "-c"])
        .arg(&config)
        .env("T_PW", "wrong-pass-word")
        .env("T_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("wrong-pass-word"), "{stdout}");
    // Literal passwords are still refused.
    let literal = write(dir.path(), "literal.yaml", "checks:\n  - name: m\n    mysql: {url: 'mysql://u:hunter2@127.0.0.1/db'}\n");
    let out = steward().args(["validate", "-c"]).arg(&literal).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("inline password"));
}

/// A server on loopback answering 200 to `Authorization: Basic` with exactly these
/// credentials and 401 to anything else; returns its `host:port`.
fn basic_auth_server(user: &str, password: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let expected = format!("authorization: basic {}", base64(&format!("{user}:{password}")));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut ok = false;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                let header = line.trim_end();
                ok |= header.to_ascii_lowercase().starts_with("authorization: basic ")
                    && header.len() == expected.len()
                    && header[21..] == expected[21..];
                line.clear();
            }
            let status = if ok { "200 OK" } else { "401 Unauthorized" };
            let mut s = stream;
            let _ = s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes());
        }
    });
    addr
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Was: `steward.db` (holding the acknowledge-link key) was 0644 under umask 022, and a
/// link signed with the key read from it and an expiry of 2^63−1 acknowledged an
/// incident as "mallory"; unencrypted backup objects were 0644 too.
#[test]
fn data_and_repository_files_are_owner_only_and_the_link_key_rotates() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = everything(dir.path());
    let data = dir.path().join("data");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // The backup command runs under a permissive umask, as a careless shell would.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask 022; exec {} backup run files -c {} -d {}", env!("CARGO_BIN_EXE_steward"), config.display(), data.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("steward.db")), 0o600);
    let repo = dir.path().join("repo");
    let mut files = 0;
    let mut stack = vec![repo.clone()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            let path = e.path();
            if path.is_dir() {
                assert_eq!(mode(&path), 0o700, "{}", path.display());
                stack.push(path);
            } else {
                assert_eq!(mode(&path), 0o600, "{}", path.display());
                files += 1;
            }
        }
    }
    assert!(files >= 2, "the repository holds the object and the manifest");

    // A link signed with the stored key works until the key is rotated.
    let admin = create_token(&data, "root", "admin");
    let server = Server::start(&config, &data);
    let (code, _) = call("POST", &format!("{}/api/v1/incidents", server.base), &admin, Some(json!({"title": "t", "priority": "P3"})));
    assert_eq!(code, 201);
    let key = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        use steward::store::KeyStore;
        steward::store::SqliteStore::open(&data).await.unwrap().server_key(steward::incidents::ack_link::KEY_NAME).await.unwrap()
    });
    let now = chrono::Utc::now();
    let link = steward::incidents::ack_link::sign(&key, 1, "mallory", now + chrono::Duration::hours(1));
    let forever = steward::incidents::ack_link::sign(&key, 1, "mallory", chrono::DateTime::<chrono::Utc>::MAX_UTC);
    let (status, _, page) = raw("GET", &format!("{}/ack/{forever}", server.base), None, None);
    assert_eq!(status, 404, "a link past the server's cap is refused even when signed: {page}");
    let (status, _, page) = raw("GET", &format!("{}/ack/{link}", server.base), None, None);
    assert_eq!(status, 200, "{page}");
    let out = steward().args(["keys", "rotate", "acknowledge-links", "--data"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (status, _, page) = raw("POST", &format!("{}/ack/{link}", server.base), None, None);
    assert_eq!(status, 404, "a link signed with the old key must not work after rotation: {page}");
    let incident = call("GET", &format!("{}/api/v1/incidents/1", server.base), &admin, None).1;
    assert_eq!(incident["incident"]["status"], "triggered", "{incident}");
}

/// Was: the public status page showed check targets, command argv, failure reasons and
/// output to anyone, and NUL and ESC in public notes reached the HTML.
#[test]
fn public_notes_reach_the_public_without_control_characters() {
    let dir = tempfile::tempdir().unwrap();
    let config = everything(dir.path());
    let data = dir.path().join("data");
    let admin = create_token(&data, "root", "admin");
    let server = Server::start(&config, &data);
    let (code, _) = call(
        "POST",
        &format!("{}/api/v1/incidents", server.base),
        &admin,
        Some(json!({"title": "Login\u{1b}[31m slow", "priority": "P2", "services": ["api"]})),
    );
    assert_eq!(code, 201);
    let (code, v) = call(
        "POST",
        &format!("{}/api/v1/incidents/1/notes", server.base),
        &admin,
        Some(json!({"text": "We are\u{0} investigating\u{1b}[2J\u{7}.", "public": true})),
    );
    assert_eq!(code, 200, "{v}");
    // Mail and chat tools append query strings to links: the public page ignores them.
    let (status, _, page) = raw("GET", &format!("{}/?utm_source=mail", server.base), None, None);
    assert_eq!(status, 200, "{page}");
    let (_, _, status) = raw("GET", &format!("{}/status.json", server.base), None, None);
    for text in [&page, &status] {
        assert!(text.contains("investigating"), "{text}");
        assert!(!text.chars().any(|c| c.is_control() && c != '\n'), "control characters reached the public: {text:?}");
        assert!(!text.contains("\\u0000") && !text.contains("\\u001b"), "{text}");
        assert!(!text.contains("api-port") && !text.contains("127.0.0.1:1"), "internal names: {text}");
    }
}
