//! The seeds' procedures under examples/runbooks, run for real where they touch local
//! components (PostgreSQL backup and restore, a primary/standby failover, Redis
//! maintenance and backup) and planned with --dry-run where they need kubectl,
//! nodetool or aws.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::alerting::request;
use common::{PrivatePostgres, PrivateRedis, Server, create_token, steward, wait_for};
use serde_json::{Value, json};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/runbooks").join(name)
}

/// The examples read the token for Steward's own API from this variable.
fn set_runbook_token(token: &str) {
    // SAFETY: every test in this binary sets the same variable before starting a server;
    // the servers read it once, at start.
    unsafe { std::env::set_var("STEWARD_RUNBOOK_TOKEN", token) };
}

fn run(base: &str, token: &str, runbook: &str, params: Value) -> i64 {
    let (code, v) = request("POST", &format!("{base}/api/v1/runbooks/{runbook}/runs"), token, Some(json!({ "params": params })));
    assert_eq!(code, 201, "{v}");
    v["run"]["id"].as_i64().unwrap()
}

fn wait_status(base: &str, token: &str, id: i64, status: &str, within: Duration) -> Value {
    wait_for(&format!("run {id} to be {status}"), within, || {
        let (_, v) = request("GET", &format!("{base}/api/v1/runs/{id}"), token, None);
        if v["run"]["status"] == status {
            return Some(v);
        }
        let s = v["run"]["status"].as_str().unwrap_or("");
        assert!(!["failed", "cancelled", "interrupted", "succeeded"].contains(&s) || s == status, "run {id} ended {s}: {v:#}");
        None
    })
}

fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql").args(["-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-Atc", sql, db]).output().unwrap();
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn every_example_validates() {
    set_runbook_token("unused");
    for name in ["cassandra-chat", "chat-rooms", "nexus-failover", "spoke", "tchat"] {
        let out = steward().args(["validate", "-o", "json", "-c"]).arg(example(name)).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(out.status.success(), "{name}: {v:#}");
        assert!(v["runbooks"].as_u64().unwrap() >= 1, "{name}: {v}");
    }
}

#[test]
fn spoke_backup_is_verified_by_a_restore_and_the_restore_runs_with_a_window_and_a_second_person() {
    let dir = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let (source, target) = (format!("spoke_ex_{pid}"), format!("spoke_ex_restored_{pid}"));
    for db in [&source, &target] {
        psql("postgres", &format!("drop database if exists {db}"));
    }
    psql("postgres", &format!("create database {source}"));
    psql(
        &source,
        "create table modules (id int primary key, name text); insert into modules select g, 'm' || g from generate_series(1, 42) g;",
    );
    psql(
        &source,
        "create table versions (id int primary key, module int references modules); insert into versions select g, 1 + g % 42 from generate_series(1, 100) g;",
    );
    let data = dir.path().join("data");
    let alice = create_token(&data, "alice", "operator");
    let bob = create_token(&data, "bob", "operator");
    set_runbook_token(&create_token(&data, "runbooks", "operator"));
    let server = Server::start(&example("spoke"), &data);
    let base = &server.base;
    let archives = dir.path().join("archives");

    let id = run(base, &alice, "postgres-backup", json!({"database": source, "dir": archives.display().to_string()}));
    let d = wait_status(base, &alice, id, "succeeded", Duration::from_secs(60));
    let archive = d["run"]["outputs"]["archive"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&archive).is_file(), "{archive}");
    assert_eq!(d["run"]["outputs"]["row_counts"], json!({"modules": 42, "versions": 100}));
    assert_eq!(
        psql("postgres", &format!("select count(*) from pg_database where datname like '{source}_verify_%'")),
        "0",
        "the scratch database is gone"
    );

    // A dump that cannot be taken fails the run, and the rollback leaves nothing behind.
    let failed = run(base, &alice, "postgres-backup", json!({"database": "no_such_db_x", "dir": archives.display().to_string()}));
    let d = wait_status(base, &alice, failed, "failed", Duration::from_secs(60));
    assert!(d["run"]["error"].as_str().unwrap().contains("source_counts"), "{}", d["run"]["error"]);
    assert!(d["run"]["error"].as_str().unwrap().contains("rolled back"), "{}", d["run"]["error"]);

    // Restore into a new database: waits for a second person, silences the service.
    let id = run(base, &alice, "postgres-restore", json!({"archive": archive, "database": target, "steward": base}));
    wait_status(base, &alice, id, "waiting", Duration::from_secs(30));
    let (code, v) = request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &alice, Some(json!({})));
    assert_eq!(code, 403, "the person who started the restore cannot approve it: {v}");
    let (code, v) =
        request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &bob, Some(json!({"comment": "backup from this morning, agreed"})));
    assert_eq!(code, 200, "{v}");
    let d = wait_status(base, &alice, id, "succeeded", Duration::from_secs(60));
    assert_eq!(d["run"]["outputs"]["tables"], 2);
    assert_eq!(psql(&target, "select count(*) from modules"), "42");
    assert_eq!(psql(&target, "select count(*) from versions"), "100");
    let (_, silences) = request("GET", &format!("{base}/api/v1/silences"), &alice, None);
    let window = silences["silences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["comment"].as_str().unwrap_or("").contains(&format!("by run {id}")))
        .cloned();
    let window = window.unwrap_or_else(|| panic!("no maintenance silence: {silences:#}"));
    assert_eq!(window["state"], "expired", "the window was ended after the restore: {window}");
    for db in [&source, &target] {
        psql("postgres", &format!("drop database if exists {db}"));
    }
}

#[test]
fn tchat_redis_maintenance_and_a_verified_rdb_backup_run_against_a_real_redis() {
    let redis = PrivateRedis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    for i in 0..500 {
        let _: () = redis::cmd("SET").arg(format!("session:{i}")).arg("x".repeat(200)).query(&mut conn).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "operator");
    let server = Server::start(&example("tchat"), &data);
    let base = &server.base;

    // From the CLI, as an operator would: live progress and output, exit 0 on success.
    let out = steward()
        .args(["run", "redis-memory-maintenance", "-p", &format!("url={url}"), "--follow", "--server", base, "--token", &token])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "[1/6] reachable: check redis-up",
        "[3/6] purge: MEMORY PURGE",
        "│ used memory: ",
        "✓ fragmentation_ok succeeded",
        "run 1 succeeded",
        "report = used memory:",
    ] {
        assert!(stdout.contains(expected), "expected {expected:?} in:\n{stdout}");
    }
    let id = 1;
    let d = wait_status(base, &token, id, "succeeded", Duration::from_secs(30));
    assert_eq!(d["steps"].as_array().unwrap().len(), 6, "every step is on record: {d:#}");
    let report = d["run"]["outputs"]["report"].as_str().unwrap();
    assert!(report.starts_with("used memory: ") && report.contains("fragmentation ratio"), "{report}");
    // The same run with an impossible limit fails at the gate, with the reason.
    let id = run(base, &token, "redis-memory-maintenance", json!({"url": url, "max_fragmentation": "0.001", "ignore_below_mb": 0}));
    let d = wait_status(base, &token, id, "failed", Duration::from_secs(30));
    assert!(d["run"]["error"].as_str().unwrap().contains("plan a restart"), "{}", d["run"]["error"]);

    let backups = dir.path().join("rdb");
    let id = run(base, &token, "redis-backup", json!({"port": redis.port, "dir": backups.display().to_string()}));
    let d = wait_status(base, &token, id, "succeeded", Duration::from_secs(60));
    let file = d["run"]["outputs"]["file"].as_str().unwrap();
    // 500 keys of 200 bytes each: LZF compresses the values, the key names remain.
    let size = std::fs::metadata(file).unwrap().len();
    assert!(size > 500 * 10, "the snapshot holds the data: {size} bytes");
    let verify = d["steps"].as_array().unwrap().iter().find(|s| s["path"] == "verify").unwrap();
    assert_eq!(verify["status"], "succeeded", "redis-check-rdb accepted it: {verify}");
    assert!(verify["output"].as_str().unwrap().contains("RDB looks OK"), "{verify}");
    assert_eq!(d["run"]["outputs"]["keys"], 500);
}

#[test]
fn nexus_region_failover_promotes_a_real_standby_after_the_lag_gate_and_an_approval() {
    let primary = PrivatePostgres::primary();
    primary
        .psql("create table messages (id int primary key, body text); insert into messages select g, 'hi' from generate_series(1, 250) g;");
    let standby = PrivatePostgres::standby_of(&primary);
    wait_for("the standby to replay", Duration::from_secs(20), || (standby.psql("select count(*) from messages") == "250").then_some(()));
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "t");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let operator = create_token(&data, "olga", "operator");
    let admin = create_token(&data, "ada", "admin");
    let server = Server::start(&example("nexus-failover"), &data);
    let base = &server.base;
    let id = run(base, &operator, "region-failover", json!({"replica_host": "127.0.0.1", "replica_port": standby.port}));
    let d = wait_status(base, &operator, id, "waiting", Duration::from_secs(30));
    assert_eq!(d["steps"][0]["status"], "succeeded", "the lag gate passed first: {d:#}");
    // The prompt carries the measured lag for the person deciding.
    let (_, evs) = request("GET", &format!("{base}/api/v1/runs/{id}/events"), &operator, None);
    let prompt = evs["events"].as_array().unwrap().iter().find(|e| e["kind"] == "approval_requested").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(prompt.contains("Continue with potential data loss?") && prompt.contains("caught up: yes"), "{prompt}");
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "t", "nothing is promoted before the approval");
    let (code, _) = request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &operator, Some(json!({})));
    assert_eq!(code, 403, "promotion needs an admin");
    let (code, v) = request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &admin, Some(json!({"comment": "eu-west is gone"})));
    assert_eq!(code, 200, "{v}");
    let d = wait_status(base, &operator, id, "succeeded", Duration::from_secs(60));
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "f", "the standby is the primary now");
    standby.psql("insert into messages values (251, 'after failover')");
    assert_eq!(standby.psql("select count(*) from messages"), "251");
    let dns = d["steps"].as_array().unwrap().iter().find(|s| s["path"] == "switch_dns").unwrap();
    assert_eq!(dns["status"], "skipped", "no DNS zone given: {dns}");
    assert_eq!(d["run"]["outputs"]["new_primary"], format!("127.0.0.1:{}", standby.port));
}

#[test]
fn procedures_that_need_kubectl_nodetool_or_aws_are_shown_with_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "viewer");
    for (name, runbook, params, expected) in [
        (
            "cassandra-chat",
            "cassandra-rolling-repair",
            vec!["nodes=10.0.1.1,10.0.1.2"],
            vec![
                "repair[0].repair_node",
                "NODE=10.0.1.1",
                "repair[1].repair_finished",
                "NODE=10.0.1.2",
                "pause: 5m",
                "nodetool -h \"$NODE\" repair -pr \"$KEYSPACE\"",
            ],
        ),
        ("chat-rooms", "blue-green", vec!["version=v2.4.1"], vec!["VERSION=v2.4.1", "switch_back_to_blue", "on failure:", "sleep: 10m"]),
        (
            "chat-rooms",
            "canary",
            vec!["version=v2.4.1", "hold=1m"],
            vec![
                "ramp[0].set_weight",
                "WEIGHT=10",
                "ramp[3].set_weight",
                "WEIGHT=100",
                "query=sum%28rate%28http_requests_total",
                "sleep: 1m",
            ],
        ),
        (
            "nexus-failover",
            "region-failover",
            vec!["replica_host=10.9.8.7", "dns_zone=Z123"],
            vec!["needs approval by admin", "when params.dns_zone != \"\" → true: runs", "aws route53"],
        ),
    ] {
        set_runbook_token("unused");
        let server = Server::start(&example(name), &data);
        let mut cmd = steward();
        cmd.args(["run", runbook, "--dry-run", "--server", &server.base, "--token", &token]);
        for p in &params {
            cmd.args(["-p", p]);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{runbook}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        for e in expected {
            assert!(stdout.contains(e), "{runbook}: expected {e:?} in the plan:\n{stdout}");
        }
        let (_, runs) = request("GET", &format!("{}/api/v1/runs", server.base), &token, None);
        assert_eq!(runs["runs"].as_array().unwrap().len(), 0, "a dry run changes nothing");
    }
}
