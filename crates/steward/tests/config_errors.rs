//! Bad input through the binary: every error at once, each at file:line:column with a
//! hint, the documented exit codes, and nothing run when the configuration is invalid.

mod common;

use std::path::Path;

use serde_json::Value;

fn validate(path: &Path) -> (i32, Value) {
    let out = common::steward().args(["validate", "--output", "json", "-c"]).arg(path).output().unwrap();
    (out.status.code().unwrap(), serde_json::from_slice(&out.stdout).unwrap())
}

fn errors(v: &Value) -> Vec<(u64, u64, String)> {
    v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["line"].as_u64().unwrap(), e["col"].as_u64().unwrap(), e["message"].as_str().unwrap().to_string()))
        .collect()
}

fn assert_error_at(errs: &[(u64, u64, String)], line: u64, col: u64, needle: &str) {
    assert!(errs.iter().any(|(l, c, m)| *l == line && *c == col && m.contains(needle)), "expected {needle:?} at {line}:{col} in {errs:#?}")
}

#[test]
fn reports_all_errors_with_positions_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "services:
  - name: api
    tier: 9
    depends_on: [db]
  - name: db
    depends_on: [api]
checks:
  - name: api-health
    service: apu
    intervl: 10s
    http: {url: 'http://127.0.0.1:1/', conditions: ['body.ok = true']}
  - name: api-health
    tcp: {address: '127.0.0.1:1'}
    timeout: 1m
    interval: 10s
  - name: db-up
    postgres: {url: 'postgres://u:pw@127.0.0.1/x'}
  - name: cmd
    command: {argv: []}
    failure_threshold: two
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2);
    assert_eq!(v["valid"], false);
    let errs = errors(&v);
    let expect = [
        (3, 11, "tier must be between 1 and 4"),
        (2, 11, "services depend on each other in a cycle: api → db → api"),
        (9, 14, "names service `apu`, which is not defined"),
        (10, 5, "unknown key `intervl`"),
        (11, 62, "invalid condition `body.ok = true`"),
        (12, 11, "check `api-health` is defined twice"),
        (14, 14, "timeout (60s) is longer than its interval (10s)"),
        (17, 21, "inline password"),
        (19, 21, "argv is empty"),
        (20, 24, "failure_threshold must be an integer"),
    ];
    for (line, col, text) in expect {
        assert!(errs.iter().any(|(l, c, m)| *l == line && *c == col && m.contains(text)), "missing {line}:{col} {text:?} in {errs:#?}");
    }
    assert!(
        v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["message"].as_str().unwrap().contains("intervl"))
            .all(|e| e["hint"] == "did you mean `interval`?")
    );
}

#[test]
fn malformed_yaml_and_wrong_shapes_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("checks: [\n  - name: a\n", "invalid YAML"),
        ("checks:\n  name: a\n", "must be a list"),
        ("checks:\n  - just-a-string\n", "must be a mapping"),
        ("- a\n- b\n", "must be a mapping"),
        ("checks:\n  - name: 'bad name!'\n    tcp: {address: 'x:1'}\n", "not a valid check name"),
        ("checks:\n  - name: a\n    tcp: {address: 'x:1'}\n  - name: b\n    tcp: {address: nohost}\n", "has no port"),
        ("checks:\n  - name: a\n    tls: {address: 'x'}\n", "has no port"),
        ("checks:\n  - name: a\n    tls: {address: 'x:443', min_days_left: -1}\n", "min_days_left"),
        ("checks:\n  - name: a\n    tls: {address: 'x:443', ca_file: /surely/not/here.pem}\n", "does not exist"),
        ("checks:\n  - name: a\n    tls: {address: 'x:443', min_days: 3}\n", "min_days"),
        ("checks:\n  - name: a\n    dns: {name: 'bad name.example'}\n", "is not a domain name"),
        ("checks:\n  - name: a\n    dns: {name: a.example, type: AXFR}\n", "record type `AXFR`"),
        ("checks:\n  - name: a\n    dns: {name: a.example, server: ns1.example}\n", "is not an IP address"),
        ("checks:\n  - name: a\n    websocket: {url: 'http://x/ws'}\n", "url"),
        ("checks:\n  - name: a\n    mongodb: {url: 'postgres://x/db'}\n", "has scheme `postgres`"),
        ("checks:\n  - name: a\n    mongodb: {url: 'mongodb://app:inline@x/db'}\n", "inline password"),
        ("checks:\n  - name: a\n    cql: {hosts: []}\n", "hosts is empty"),
        ("checks:\n  - name: a\n    cql: {hosts: [db1]}\n", "has no port"),
        ("checks:\n  - name: a\n    cql: {hosts: ['db1:9042'], username: app, password: hunter2}\n", "password is written inline"),
        ("checks:\n  - name: a\n    heartbeat: {period: 30s, token: '${file:/etc/hostname}'}\n", "period is shorter than a minute"),
        ("checks:\n  - name: a\n    heartbeat: {period: 1h, token: abcdefabcdefabcdefabcdef}\n", "token is written inline"),
        ("checks:\n  - name: a\n    heartbeat: {period: 1h, token: '${file:/proc/sys/kernel/ostype}'}\n", "shorter than 16 characters"),
        ("backups:\n  - name: b\n", "has no source"),
        ("runbooks:\n  - name: r\n    steps: {a: 1}\n", "must be a list"),
        ("runbooks:\n  - name: r\n    steps:\n      - name: s\n        shell: [echo]\n", "must be a mapping"),
        ("a: 1\na: 2\n", "duplicate key `a`"),
    ] {
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, text).unwrap();
        let (code, v) = validate(&f);
        assert_eq!(code, 2, "{text}");
        let msgs: Vec<String> = errors(&v).into_iter().map(|(_, _, m)| m).collect();
        assert!(msgs.iter().any(|m| m.contains(needle)), "{text:?}: expected {needle:?} in {msgs:?}");
    }
}

/// Without the production secrets a configuration still validates: each unset
/// reference is one warning where it is written (file:line:column); what only its value
/// could tell (a URL given whole) waits for it. `--require-secrets` makes them errors,
/// as `steward serve` does, and a real error is still an error beside them.
#[test]
fn unset_secrets_are_warnings_where_they_are_written_unless_required() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("steward.yaml");
    let text = "store:\n  url: '${env:STEWARD_SURELY_UNSET_URL}'\nchecks:\n  - name: a\n    http:\n      url: 'http://app:${env:STEWARD_SURELY_UNSET}@x/'\n      headers: {X-Key: '${file:/surely/not/here}', X-Other: '${env:STEWARD_SURELY_UNSET}'}\n  - name: b\n    heartbeat: {period: 1h, token: '${env:STEWARD_SURELY_UNSET_HB}'}\n";
    std::fs::write(&f, text).unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 0, "{v}");
    let warnings: Vec<(u64, u64, String)> = v["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (w["line"].as_u64().unwrap(), w["col"].as_u64().unwrap(), w["message"].as_str().unwrap().to_string()))
        .collect();
    let expected = [
        (2, 9, "environment variable `STEWARD_SURELY_UNSET_URL` is not set here"),
        (6, 24, "environment variable `STEWARD_SURELY_UNSET` is not set here"),
        (7, 25, "secret file `/surely/not/here` cannot be read here"),
        (7, 62, "environment variable `STEWARD_SURELY_UNSET` is not set here"),
        (9, 37, "environment variable `STEWARD_SURELY_UNSET_HB` is not set here"),
    ];
    assert_eq!(warnings, expected.map(|(l, c, m)| (l, c, m.to_string())), "{v:#}");
    assert!(v["warnings"][0]["hint"].as_str().unwrap().contains("export STEWARD_SURELY_UNSET_URL="), "{v}");
    let table = common::steward().args(["validate", "-c"]).arg(&f).output().unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains(":6:24: warning: environment variable `STEWARD_SURELY_UNSET` is not set here"), "{table}");
    assert!(table.contains("; 5 secret reference(s) not set here"), "{table}");

    let strict = common::steward().args(["validate", "--require-secrets", "-o", "json", "-c"]).arg(&f).output().unwrap();
    let v: Value = serde_json::from_slice(&strict.stdout).unwrap();
    assert_eq!(strict.status.code(), Some(2), "{v}");
    assert_error_at(&errors(&v), 6, 24, "environment variable `STEWARD_SURELY_UNSET` is not set");
    let serve = common::steward().args(["serve", "--data"]).arg(dir.path().join("data")).arg("-c").arg(&f).output().unwrap();
    assert_eq!(serve.status.code(), Some(2), "serve requires the secrets: {}", String::from_utf8_lossy(&serve.stderr));

    // An error is an error with unset references beside it.
    std::fs::write(&f, format!("{text}  - name: c\n    tcp: {{address: nohost}}\n")).unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2, "{v}");
    assert_error_at(&errors(&v), 11, 20, "has no port");
}

#[test]
fn a_directory_is_one_configuration_with_names_unique_across_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("10-services.yaml"), "services:\n  - name: web\n    tier: 1\n").unwrap();
    std::fs::write(dir.path().join("20-checks.yml"), "checks:\n  - name: web-port\n    service: web\n    tcp: {address: '127.0.0.1:1'}\n")
        .unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let (code, v) = validate(dir.path());
    assert_eq!((code, v["checks"].as_u64()), (0, Some(1)), "{v}");

    std::fs::write(dir.path().join("30-more.yaml"), "services:\n  - name: web\n").unwrap();
    let (code, v) = validate(dir.path());
    assert_eq!(code, 2);
    let e = &v["errors"][0];
    assert!(e["file"].as_str().unwrap().ends_with("30-more.yaml"));
    assert!(e["hint"].as_str().unwrap().contains("10-services.yaml:2:11"), "{e}");
}

#[test]
fn check_exit_codes_follow_health_and_validity() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap().port();
    let closed = common::free_port();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        format!(
            "checks:\n  - name: up\n    tcp: {{address: '127.0.0.1:{open}'}}\n  - name: down\n    tcp: {{address: '127.0.0.1:{closed}'}}\n"
        ),
    )
    .unwrap();

    let healthy = common::steward().args(["check", "--output", "json", "-c"]).arg(&f).arg("up").output().unwrap();
    assert_eq!(healthy.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&healthy.stdout).unwrap();
    assert_eq!(v["checks"][0]["status"], "healthy");

    let all = common::steward().args(["check", "-c"]).arg(&f).output().unwrap();
    assert_eq!(all.status.code(), Some(1));
    let table = String::from_utf8_lossy(&all.stdout);
    assert!(table.starts_with("CHECK") && table.contains("UNHEALTHY") && table.contains("cannot connect"), "{table}");

    let unknown = common::steward().args(["check", "-c"]).arg(&f).arg("nope").output().unwrap();
    assert_eq!(unknown.status.code(), Some(2));
    std::fs::write(&f, "checks: nope\n").unwrap();
    assert_eq!(common::steward().args(["check", "-c"]).arg(&f).output().unwrap().status.code(), Some(2));
    drop(listener);
}

#[test]
fn alerting_mistakes_are_found_at_validate_time() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("alerts.yaml");
    std::fs::write(
        &f,
        "checks:
  - name: api-health
    tcp: {address: '127.0.0.1:1'}
alerts:
  - name: ApiDown
    when: check api-helth unhealthy
    severity: urgent
    annotations:
      summary: 'value {{ $vlaue }}'
  - name: Slow
    when: check api-health latency p98 > 1s over 5m
receivers:
  - name: ops
    webhook: {url: 'http://127.0.0.1:9/hook'}
  - name: pager
    slack: {url: 'https://hooks.example/x', channel: '#ops'}
route:
  receiver: ops
  routes:
    - matchers: ['severity=\"critical\"', 'team']
      receiver: pagr
inhibit_rules:
  - source_matchers: ['severity=~\"(\"']
    target_matchers: []
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2);
    let errs = errors(&v);
    let has = |line: u64, col: u64, needle: &str| assert_error_at(&errs, line, col, needle);
    has(6, 11, "watches check `api-helth`, which is not defined");
    has(7, 15, "severity `urgent` is not known");
    has(9, 26, "unknown template variable `$vlaue`");
    has(11, 36, "`p98` is not a quantile");
    has(20, 41, "`team` has no operator");
    has(21, 17, "receiver `pagr`, which is not defined");
    has(23, 23, "invalid regex");
    assert!(!errs.iter().any(|(_, _, m)| m.contains("no `route`")), "a route is present, even if invalid");
    let hint = v["errors"].as_array().unwrap().iter().find(|e| e["message"].as_str().unwrap().contains("api-helth")).unwrap();
    assert_eq!(hint["hint"], "did you mean `api-health`?");

    // Several receivers and no route is ambiguous; one receiver alone needs none.
    std::fs::write(
        &f,
        "receivers:\n  - {name: a, webhook: {url: 'http://127.0.0.1:9/a'}}\n  - {name: b, webhook: {url: 'http://127.0.0.1:9/b'}}\n",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2);
    assert!(errors(&v)[0].2.contains("no `route` says which gets what"));
    std::fs::write(&f, "receivers:\n  - {name: a, webhook: {url: 'http://127.0.0.1:9/a'}}\n").unwrap();
    assert_eq!(validate(&f).0, 0);

    // A second routing tree is refused even when the first one is itself invalid.
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::write(
        dir2.path().join("a.yaml"),
        "receivers:\n  - {name: a, webhook: {url: 'http://127.0.0.1:9/a'}}\nroute: {receiver: nope}\n",
    )
    .unwrap();
    std::fs::write(dir2.path().join("b.yaml"), "route: {receiver: a}\n").unwrap();
    let (code, v) = validate(dir2.path());
    assert_eq!(code, 2);
    let msgs: Vec<String> = errors(&v).into_iter().map(|(_, _, m)| m).collect();
    assert!(msgs.iter().any(|m| m == "`route` is defined twice"), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.contains("receiver `nope`")), "{msgs:?}");
}

#[test]
fn time_interval_and_maintenance_window_mistakes_are_found_at_validate_time() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("windows.yaml");
    std::fs::write(
        &f,
        "receivers:
  - name: ops
    webhook: {url: 'http://127.0.0.1:9/hook'}
route:
  receiver: ops
  mute_time_intervals: [nights]
  routes:
    - receiver: ops
      active_time_intervals: [buisness-hours]
time_intervals:
  - name: business-hours
    time_intervals:
      - times: [{start_time: '9:00', end_time: '17:00'}]
        weekdays: ['saturday:sunday']
        location: Europe/Pariss
maintenance_windows:
  - name: repair
    matchers: ['service=\"cassandra\"']
    schedule: '0 2 * * FUNDAY'
    duration: 2h
  - name: everything
    matchers: []
    schedule: '0 2 * * SUN'
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2);
    let errs = errors(&v);
    let has = |line: u64, col: u64, needle: &str| assert_error_at(&errs, line, col, needle);
    has(6, 24, "the root route cannot have `mute_time_intervals`");
    has(9, 30, "time interval `buisness-hours` is not defined");
    has(13, 30, "`9:00` is not a time of day");
    has(14, 20, "weeks start on sunday");
    has(15, 19, "`Europe/Pariss` is not an IANA time zone");
    has(19, 15, "schedule `0 2 * * FUNDAY`");
    has(22, 15, "has no matchers, so it would mute every alert");
    has(23, 15, "has a schedule but no duration");
    let hint = v["errors"].as_array().unwrap().iter().find(|e| e["message"].as_str().unwrap().contains("buisness")).unwrap();
    assert_eq!(hint["hint"], "did you mean `business-hours`?");
}

#[test]
fn promql_mistakes_are_found_at_validate_time_in_rule_files_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:
  - name: api
    rules:
      - alert: HighErrorRate
        expr: rate(http_requests_total{status=~\"5..\"}[5m] > 0.05
        for: 5m
      - alert: Latency
        expr: http_request_duration_seconds[5m]
        labels: {severity: critical}
        annotation: {summary: x}
",
    )
    .unwrap();
    let f = dir.path().join("steward.yaml");
    std::fs::write(
        &f,
        "rule_files: [rules.yml, missing.yml]
alerts:
  - name: Up
    expr: up == 0
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2);
    let errs: Vec<(String, u64, u64, String)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let file = e["file"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
            (file, e["line"].as_u64().unwrap(), e["col"].as_u64().unwrap(), e["message"].as_str().unwrap().to_string())
        })
        .collect();
    let has = |file: &str, line: u64, col: u64, needle: &str| {
        assert!(
            errs.iter().any(|(f, l, c, m)| f == file && *l == line && *c == col && m.contains(needle)),
            "expected {needle:?} at {file}:{line}:{col} in {errs:#?}"
        )
    };
    has("rules.yml", 5, 15, "alert `HighErrorRate` expr is not valid PromQL");
    has("rules.yml", 8, 15, "evaluates to a range vector, not an instant vector");
    has("rules.yml", 10, 9, "unknown key `annotation`");
    has("steward.yaml", 1, 25, "rule file");
    has("steward.yaml", 4, 11, "PromQL rules need a Prometheus server");
}

#[test]
fn the_seeds_prometheus_rules_load_as_written() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed-rules/spoke.yaml");
    let (code, v) = validate(&path);
    assert_eq!(code, 0, "{v}");
    // 9 Spoke alerts pasted under `alerts:`, 2 + 3 chat-platform rules from rule files.
    assert_eq!(v["alerts"], 14, "{v}");
}

#[test]
fn email_and_pagerduty_receiver_mistakes_are_found_at_validate_time() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("receivers.yaml");
    std::fs::write(
        &f,
        "receivers:
  - name: mail
    email: {to: [oncall-at-example.com], from: steward@example.com, smarthost: smtp.example.com, tls: yes-please}
  - name: pager
    pagerduty: {routing_key: short}
route:
  receiver: mail
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2);
    let errs = errors(&v);
    let has = |line: u64, needle: &str| assert!(errs.iter().any(|(l, _, m)| *l == line && m.contains(needle)), "{needle:?} in {errs:#?}");
    has(3, "`oncall-at-example.com` is not an email address");
    has(3, "smarthost `smtp.example.com` is not HOST:PORT");
    has(3, "tls `yes-please` is not known");
    has(5, "routing_key must be 32 characters");
}

#[test]
fn incident_mistakes_are_found_at_validate_time() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("incidents.yaml");
    std::fs::write(
        &f,
        "receivers:
  - name: ops
    webhook: {url: 'http://127.0.0.1:9/hook'}
incidents:
  policies:
    - name: pages
      matchers: ['severity=\"critical\"']
      escalation: platfrom
      priority: P7
  priorities: {critical: P1, warning: urgent}
  escalation_policies:
    - name: platform
      levels:
        - {notify: [opps], wait: 5m}
        - {wait: 10m}
  schedules:
    - name: primary
      time_zone: Europe/Pariss
      rotation: {people: [alice, erin], shift: fortnightly, handoff: '9am', start: '2026-13-01'}
    - name: secondary
      time_zone: UTC
      rotations: [{people: [erin], start: '2026-11-02', active: [biz-hours]}]
  people:
    - {name: alice, notify: [ops]}
  postmortem_template: missing.md
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2);
    let errs = errors(&v);
    let has = |line: u64, col: u64, needle: &str| assert_error_at(&errs, line, col, needle);
    has(9, 17, "priority `P7` is not a priority");
    has(10, 39, "`urgent` is not a priority");
    has(14, 11, "no receiver is named `opps`");
    has(15, 11, "notifies nobody");
    has(18, 18, "`Europe/Pariss` is not an IANA time zone");
    has(19, 48, "shift `fortnightly` is not a shift length");
    has(19, 70, "handoff `9am` is not a time of day");
    has(19, 84, "start `2026-13-01` is not a date");
    has(20, 7, "no person is named `erin`");
    has(22, 65, "no time interval is named `biz-hours`");
    has(25, 24, "cannot read the postmortem template");
    let hint = v["errors"].as_array().unwrap().iter().find(|e| e["message"].as_str().unwrap().contains("platfrom")).unwrap();
    assert_eq!(hint["hint"], "did you mean `platform`?");

    // A valid incidents section loads and the server-side pieces agree with it.
    let template = dir.path().join("review.md");
    std::fs::write(&template, "# {{ incident.title }}\n").unwrap();
    let ok = dir.path().join("ok.yaml");
    std::fs::write(
        &ok,
        "receivers:\n  - {name: ops, webhook: {url: 'http://127.0.0.1:9/hook'}}\ntime_intervals:\n  - {name: business-hours, time_intervals: [{weekdays: ['monday:friday'], times: [{start_time: '09:00', end_time: '17:00'}]}]}\nincidents:\n  policies:\n    - {name: pages, escalation: platform}\n  escalation_policies:\n    - name: platform\n      repeat: 2\n      levels:\n        - {oncall: [primary], wait: 5m}\n        - {notify: [ops]}\n  schedules:\n    - name: primary\n      time_zone: Europe/Paris\n      rotations:\n        - {people: [alice], shift: weekly, handoff: '09:00', start: '2026-11-02'}\n        - {people: [alice], shift: daily, start: '2026-11-02', active: [business-hours]}\n      overrides:\n        - {person: alice, from: '2026-12-24 09:00', until: '2026-12-27 09:00'}\n  people:\n    - {name: alice, notify: [ops]}\n  postmortem_template: review.md\n",
    )
    .unwrap();
    let (code, v) = validate(&ok);
    assert_eq!(code, 0, "{v}");
    std::fs::write(&template, "# {{ incident.title }\n").unwrap();
    let (code, v) = validate(&ok);
    assert_eq!(code, 2);
    assert_error_at(&errors(&v), 24, 24, "does not compile");
}

#[test]
fn runbook_mistakes_are_found_at_validate_time() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("runbooks.yaml");
    std::fs::write(
        &f,
        r#"checks:
  - {name: api-health, tcp: {address: '127.0.0.1:9'}}
receivers:
  - {name: ops, webhook: {url: 'http://127.0.0.1:9/hook'}}
runbooks:
  - name: repair
    params:
      nodes: {type: list}
      path: string
      mode: {type: enum}
      count: {type: int, default: many}
      pause: {type: durration}
    steps:
      - name: drain
        shel: {script: 'echo'}
      - name: restart
        shell: {script: 'systemctl restart {{ params.nodes }}'}
      - name: wait
        wait_until: {check: api-helth, timeout: 5m}
      - name: tell
        notify: {receivers: [opps], message: "done {{ params.nodez }} {{ steps.later.stdout }}"}
      - name: bad-template
        http: {url: "http://127.0.0.1/{{ params.nodes "}
      - name: call
        runbook: {name: repiar}
      - name: tell
        sleep: 5x
    schedule: {cron: "0 2 * *", timezone: Europe/Pariss}
"#,
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2);
    let errs = errors(&v);
    let has = |line: u64, col: u64, needle: &str| assert_error_at(&errs, line, col, needle);
    has(9, 7, "would reach shell steps as $PATH");
    has(10, 20, "is an enum without values");
    has(11, 35, "default: expected an integer, found `many`");
    has(12, 21, "unknown type `durration`");
    has(14, 9, "says nothing to do");
    has(15, 9, "unknown key `shel`");
    has(17, 25, "scripts are never templated");
    has(19, 29, "check `api-helth` is not defined");
    has(21, 29, "receiver `opps` is not defined");
    has(21, 46, "reads `params.nodez`, which runbook `repair` does not declare");
    has(21, 46, "reads `steps.later`, which is not a step that runs before it");
    has(23, 21, "invalid template");
    has(25, 25, "calls runbook `repiar`, which is not defined");
    has(26, 15, "step `tell` is defined twice");
    has(27, 16, "sleep: unknown unit `x`");
    has(28, 22, "cron `0 2 * *` is invalid");
    has(28, 43, "`Europe/Pariss` is not an IANA time zone");
    let hint = v["errors"].as_array().unwrap().iter().find(|e| e["message"].as_str().unwrap().contains("api-helth")).unwrap();
    assert_eq!(hint["hint"], "did you mean `api-health`?");
    let script = v["errors"].as_array().unwrap().iter().find(|e| e["message"].as_str().unwrap().contains("never templated")).unwrap();
    assert!(script["hint"].as_str().unwrap().contains("\"$NODES\""), "{script}");
}

#[test]
fn backup_policies_are_checked_with_positions_and_hints() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.yaml");
    std::fs::write(
        &f,
        "repositories:
  - name: local
    path: relative/dir
  - name: cloud
    s3: { bucket: b, endpoint: 'http://127.0.0.1:9000', access_key_id: k, secret_access_key: plain }
backups:
  - name: db
    postgres: { url: 'postgres://127.0.0.1/app', format: custom, jobs: 4 }
    schedule: '0 2 * * *'
    repository: locl
    encryption: { key: AGE-SECRET-KEY-1INLINE }
    retention: { keep_last: 0, min_keep: 0 }
  - name: cache
    redis: { url: 'redis://127.0.0.1:6379' }
    schedule: 'every day'
    repository: local
    compression: 25
    verify: { assertions: [ { name: a, query: 'select 1' } ] }
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2);
    let errs = errors(&v);
    assert_error_at(&errs, 3, 11, "is relative");
    assert_error_at(&errs, 5, 9, "secret_access_key is written inline");
    assert_error_at(&errs, 5, 9, "plain http");
    assert_error_at(&errs, 8, 15, "4 jobs with the custom format");
    assert_error_at(&errs, 11, 24, "encryption key is written inline");
    assert_error_at(&errs, 12, 16, "retention keeps nothing");
    assert_error_at(&errs, 15, 15, "`every day` is invalid");
    assert_error_at(&errs, 17, 18, "zstd level from 1 to 19");

    // Checks across policies (also made when a policy has errors of its own, above).
    std::fs::write(
        &f,
        "repositories:
  - name: local
    path: /var/backups
backups:
  - name: db
    postgres: { url: 'postgres://127.0.0.1/app' }
    repository: locl
  - name: cache
    redis: { url: 'redis://127.0.0.1:6379' }
    repository: local
    verify: { assertions: [ { name: a, query: 'select 1' } ] }
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2);
    let errs = errors(&v);
    assert_error_at(&errs, 7, 17, "repository `locl`, which is not defined");
    assert_error_at(&errs, 8, 11, "assertion queries");
    let hints = v["errors"].to_string();
    assert!(hints.contains("did you mean `local`?"), "{hints}");
}

/// One pass reports everything: an entry with an error of its own still has its
/// references checked (a backup with a bad compression level and an unknown
/// repository; a runbook whose steps have errors and read later steps), and an entry
/// that is defined but invalid is not also called "not defined" where it is used.
#[test]
fn every_error_comes_in_one_pass_even_inside_entries_with_other_errors() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        r#"checks:
  - name: bk
    backup: { policy: nightly, max_age: 1d }
alerts:
  - name: Restart
    when: check bk unhealthy
    runbook: restart
repositories:
  - name: local
    path: /tmp/x
    bogus: 1
backups:
  - name: nightly
    postgres: { url: "postgres://127.0.0.1/postgres" }
    repository: locl
    compression: 99
  - name: weekly
    postgres: { url: "postgres://127.0.0.1/postgres" }
    repository: local
runbooks:
  - name: restart
    steps:
      - name: first
        shell: { argv: [echo, "{{ steps.second.stdout }}"] }
        bogus: 2
      - name: second
        sleep: 1x
  - name: caller
    steps:
      - { name: call, runbook: { name: restart } }
"#,
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2);
    let errs = errors(&v);
    assert_error_at(&errs, 11, 5, "unknown key `bogus`");
    assert_error_at(&errs, 15, 17, "uses repository `locl`, which is not defined");
    assert_error_at(&errs, 16, 18, "compression");
    assert_error_at(&errs, 24, 31, "reads `steps.second`, which is not a step that runs before it");
    assert_error_at(&errs, 25, 9, "unknown key `bogus`");
    assert_error_at(&errs, 27, 16, "sleep");
    // Defined, with errors of their own: not also "not defined" where they are used.
    for (l, _, m) in &errs {
        assert!(!m.contains("not defined") || m.contains("locl"), "line {l}: {m}");
    }
    assert_eq!(errs.len(), 6, "{errs:#?}");
}

#[test]
fn slo_mistakes_are_found_at_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("slos.yaml");
    std::fs::write(
        &f,
        "services:
  - name: api
checks:
  - name: api-health
    service: api
    tcp: {address: '127.0.0.1:1'}
slos:
  - name: full
    service: api
    objective: 100
    sli: {check: api-health}
  - name: short
    service: api
    objective: 99.9
    window: 2d
    sli: {check: api-health}
  - name: typo
    service: apii
    objective: 99.9
    sli: {check: api-helth}
  - name: odd
    service: api
    objective: 99.9%
    sli: {prometheus: {good: 'x', total: 'y'}}
    budgeting: {timeslices: 0}
    alerts: [{long: 5m, short: 5m, budget_spent: 2%}]
  - name: promless
    service: api
    objective: 99
    sli: {prometheus: {bad: 'sum(increase(e[{{.window}}]))', total: 'sum(increase(t[{{.window}}]))'}}
  - {name: both, service: api, objective: 99, sli: {prometheus: {good: 'g', bad: 'b', total: 't'}}}
runbooks:
  - name: deploy
    steps:
      - name: gate
        slo: {name: nope, min_budget_remaining: 150}
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2, "{v}");
    let errs = errors(&v);
    assert_error_at(&errs, 10, 16, "objective 100 is not strictly between 0 and 100");
    // The default alerts' longest window is 3d: a 2d window cannot hold it.
    assert_error_at(&errs, 15, 13, "window is shorter than its longest alert window (3d)");
    assert_error_at(&errs, 17, 5, "names service `apii`, which is not defined");
    assert_error_at(&errs, 17, 5, "counts check `api-helth`, which is not defined");
    assert_error_at(&errs, 24, 30, "sli good has no `{{.window}}`");
    assert_error_at(&errs, 24, 42, "sli total has no `{{.window}}`");
    assert_error_at(&errs, 27, 5, "SLO `promless` counts events with PromQL but no Prometheus server is configured");
    assert_error_at(&errs, 31, 65, "needs `total` and exactly one of `good` and `bad`");
    assert_error_at(&errs, 25, 29, "timeslices 0 is not between");
    assert_error_at(&errs, 26, 14, "short window must be shorter than its long one");
    assert_error_at(&errs, 36, 14, "a runbook step gates on SLO `nope`, which is not defined");
    assert_error_at(&errs, 36, 49, "min_budget_remaining 150 is not between 0 and 100");
    assert_eq!(errs.len(), 15, "{errs:#?}");
}

#[test]
fn forecast_mistakes_are_found_at_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("forecast.yaml");
    std::fs::write(
        &f,
        "prometheus: {url: 'http://127.0.0.1:9090'}
alerts:
  - name: both-sides
    forecast: {expr: disk_used, above: 90, below: 10, within: 4h}
  - name: bad-promql
    forecast: {expr: 'rate(x[5m]', above: 90, within: 4h}
  - name: short-history
    forecast: {expr: mem, above: 90, within: 4h, over: 1d, model: {holt_winters: {season: 1d}}}
  - name: too-many-points
    forecast: {expr: mem, above: 90, within: 4h, over: 30d, step: 10s}
  - name: odd-step
    forecast: {expr: mem, above: 90, within: 4h, over: 3d, step: 7m, model: {holt_winters: {season: 1d}}}
  - name: two-conditions
    expr: up == 0
    forecast: {expr: mem, above: 90, within: 4h}
  - name: no-limit-number
    forecast: {expr: mem, above: lots, within: 10y}
  - name: fine
    forecast: {expr: 'node_filesystem_avail_bytes', below: 5e9, within: 4h, model: {holt_winters: {season: 1d}}, over: 3d}
  - name: far-sighted
    forecast: {expr: mem, above: 90, within: 365d, over: 3d, step: 1m, model: {holt_winters: {season: 1d}}}
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2, "{v}");
    let errs = errors(&v);
    assert_error_at(&errs, 4, 15, "needs exactly one of `above` and `below`");
    assert_error_at(&errs, 6, 22, "forecast expr is not valid PromQL");
    assert_error_at(&errs, 8, 15, "over 1d is shorter than two seasons (2d)");
    assert_error_at(&errs, 10, 67, "samples 259200 points of history, more than Prometheus answers (11000)");
    assert_error_at(&errs, 12, 66, "step 7m does not divide the season 1d");
    assert_error_at(&errs, 15, 15, "has more than one of `when`, `expr` and `forecast`");
    assert_error_at(&errs, 17, 34, "forecast above must be a number");
    assert_error_at(&errs, 17, 48, "forecast within: unknown unit `y`");
    assert_error_at(&errs, 21, 68, "looks 525600 steps ahead; Holt-Winters forecasts at most 100000");
    assert_eq!(errs.len(), 9, "`fine` is fine: {errs:#?}");
}

#[test]
fn check_forecast_mistakes_are_found_at_their_position() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("forecast.yaml");
    std::fs::write(
        &f,
        "prometheus: {url: 'http://127.0.0.1:9090'}
checks: [{name: cache, redis: {url: 'redis://127.0.0.1:6379'}}]
alerts:
  - name: no-source
    forecast: {above: 90, within: 4h}
  - name: both-sources
    forecast: {expr: mem, check: cache, above: 9, within: 4h}
  - name: unknown-check
    forecast: {check: cahce, value: info.used_memory, above: 9, within: 4h}
  - name: no-value
    forecast: {check: cache, above: 9, within: 4h}
  - name: bad-value
    forecast: {check: cache, value: 'info.used memory', above: 9, within: 4h}
  - name: field-limit-for-promql
    forecast: {expr: mem, above: info.maxmemory, within: 4h}
  - name: value-for-promql
    forecast: {expr: mem, value: x, above: 9, within: 4h}
  - name: fine
    forecast: {check: cache, value: info.used_memory, above: info.maxmemory, within: 4h}
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2, "{v}");
    let errs = errors(&v);
    assert_error_at(&errs, 5, 15, "needs exactly one of `expr` and `check`");
    assert_error_at(&errs, 7, 15, "needs exactly one of `expr` and `check`");
    assert_error_at(&errs, 9, 23, "the alert watches check `cahce`, which is not defined");
    assert_error_at(&errs, 11, 15, "forecast over a check needs `value`");
    assert_error_at(&errs, 13, 43, "`used memory` is not a field name");
    assert_error_at(&errs, 15, 34, "forecast above must be a number");
    assert_error_at(&errs, 17, 34, "forecast value names a field of a check's observation");
    assert_eq!(errs.len(), 7, "`fine` is fine: {errs:#?}");
    // What the forecasts read, the check records with each run.
    std::fs::write(
        &f,
        "checks: [{name: cache, redis: {url: 'redis://127.0.0.1:6379'}}]
alerts:
  - name: fine
    forecast: {check: cache, value: info.used_memory, above: info.maxmemory, within: 4h}
  - name: again
    forecast: {check: cache, value: info.used_memory, above: 100, within: 1h}
",
    )
    .unwrap();
    let config = steward::config::load(&f).unwrap();
    let recorded: Vec<&str> = config.checks[0].record.iter().map(|f| f.source.as_str()).collect();
    assert_eq!(recorded, ["info.used_memory", "info.maxmemory"]);
    assert!(config.checks[0].reads("info"), "the probe reads INFO for them");
}

#[test]
fn wal_checks_name_a_postgres_policy_that_exists() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("wal.yaml");
    std::fs::write(
        &f,
        "repositories: [{name: local, path: /tmp/steward-wal-test-repo}]
backups:
  - {name: orders, postgres: {url: 'postgres://127.0.0.1/orders'}, repository: local}
  - {name: cache, redis: {url: 'redis://127.0.0.1:6379'}, repository: local}
checks:
  - {name: a, wal: {policy: ordres, max_age: 10m}}
  - {name: b, wal: {policy: cache, max_age: 10m}}
  - {name: c, wal: {policy: orders}}
  - {name: fine, wal: {policy: orders, max_age: 10m}}
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2, "{v}");
    let errs = errors(&v);
    assert_error_at(&errs, 6, 12, "watches the WAL archive of `ordres`, which is not defined");
    assert_error_at(&errs, 7, 12, "watches the WAL archive of `cache`, which does not back up PostgreSQL");
    assert_error_at(&errs, 8, 20, "missing the required key `max_age`");
    assert_eq!(errs.len(), 3, "`fine` is fine: {errs:#?}");
}

#[test]
fn a_physical_postgres_policy_is_told_from_pg_dump_settings() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("physical.yaml");
    std::fs::write(
        &f,
        "repositories: [{name: local, path: /tmp/steward-physical-test-repo}]
backups:
  - {name: a, postgres: {url: 'postgres://127.0.0.1/a', mode: physical, format: directory, jobs: 4}, repository: local}
  - {name: b, postgres: {url: 'postgres://127.0.0.1/b', mode: phisical}, repository: local}
  - {name: fine, postgres: {url: 'postgres://127.0.0.1/c', mode: physical}, repository: local}
  - {name: logical, postgres: {url: 'postgres://127.0.0.1/d', mode: logical, format: directory, jobs: 2}, repository: local}
",
    )
    .unwrap();
    let (code, v) = validate(&f);
    assert_eq!(code, 2, "{v}");
    let errs = errors(&v);
    assert_error_at(&errs, 3, 25, "sets `format` or `jobs` with `mode: physical`");
    assert_error_at(&errs, 4, 63, "mode `phisical` is not a backup mode");
    assert_eq!(errs.len(), 2, "`fine` and `logical` are fine: {errs:#?}");
}
