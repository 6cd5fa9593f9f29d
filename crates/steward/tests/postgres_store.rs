//! Steward on PostgreSQL, as a user moves to it: an installation that ran on SQLite is
//! copied with `steward store copy` into a private PostgreSQL cluster (initdb on a free
//! port), and `steward serve --store postgres://…` carries on from it — the same token,
//! the same history — while the CLI reaches the same store.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::{PrivatePostgres, Server, create_token, free_port, steward, wait_for};
use serde_json::Value;

fn get(url: &str, token: &str) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    })
}

fn results(base: &str, token: &str) -> usize {
    let (status, body) = get(&format!("{base}/api/v1/checks/db-port/history?limit=1000"), token);
    assert_eq!(status, 200, "{body}");
    body["results"].as_array().map_or(0, Vec::len)
}

#[test]
fn an_installation_moves_to_postgres_with_one_command_and_serves_from_it() {
    common::install_crypto();
    let pg = PrivatePostgres::primary();
    pg.psql("CREATE DATABASE steward");
    let url = pg.url("steward");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    // A TCP check on a port nothing listens on: it fails every run, so history,
    // transitions and an alert accumulate quickly.
    let closed = free_port();
    std::fs::write(
        &config,
        format!(
            "services:\n  - name: db\n    tier: 1\nchecks:\n  - name: db-port\n    service: db\n    interval: 200ms\n    timeout: 100ms\n    failure_threshold: 1\n    tcp: {{address: '127.0.0.1:{closed}'}}\n"
        ),
    )
    .unwrap();

    // On SQLite first, as every installation starts.
    let sqlite_data = dir.path().join("sqlite-data");
    let admin = create_token(&sqlite_data, "admin", "admin");
    let mut server = Server::start(&config, &sqlite_data);
    wait_for("results on SQLite", Duration::from_secs(20), || (results(&server.base, &admin) >= 5).then_some(()));
    assert_eq!(server.stop(), Some(0));

    // The copy: every table, counts compared, in one transaction.
    let out = steward()
        .args(["store", "copy", "--from"])
        .arg(format!("sqlite:{}", sqlite_data.display()))
        .args(["--to", &url, "--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "copy failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let tables = report["tables"].as_array().unwrap();
    assert!(tables.iter().all(|t| t["source"] == t["copied"]), "{report}");
    let count = |table: &str| tables.iter().find(|t| t["table"] == table).unwrap()["copied"].as_u64().unwrap();
    assert_eq!(count("api_tokens"), 1);
    let before = count("check_results") as usize;
    assert!(before >= 5, "{report}");
    assert!(count("check_transitions") >= 1, "{report}");
    assert_eq!(count("server_keys"), 1, "the acknowledge-link key moves too");
    assert_eq!(pg.psql_in("steward", "SELECT count(*) FROM check_results").parse::<u64>().unwrap(), count("check_results"));

    // A second copy into the same database is refused and changes nothing.
    let again =
        steward().args(["store", "copy", "--from"]).arg(format!("sqlite:{}", sqlite_data.display())).args(["--to", &url]).output().unwrap();
    assert_eq!(again.status.code(), Some(4), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already holds data"));
    assert_eq!(pg.psql_in("steward", "SELECT count(*) FROM api_tokens"), "1");

    // A server on PostgreSQL, with a data directory of its own (local files only): the
    // token made on SQLite authenticates, and the history carries on from the copy.
    let pg_data = dir.path().join("pg-data");
    let server = Server::start_with(&config, &pg_data, &["--store", &url]);
    // Listening comes before leading: a replica answers 503 no_leader until it has
    // taken the lease (moments, longer on a loaded machine).
    wait_for("the replica to lead", Duration::from_secs(30), || {
        (get(&format!("{}/api/v1/checks", server.base), &admin).0 == 200).then_some(())
    });
    assert!(results(&server.base, &admin) >= before, "the copied history is there");
    wait_for("new results on PostgreSQL", Duration::from_secs(20), || (results(&server.base, &admin) > before + 3).then_some(()));
    assert!(!pg_data.join("steward.db").exists(), "no SQLite store is made beside a PostgreSQL one");

    // The CLI reaches the same store: a token made through it works on the server.
    let out = steward()
        .args(["token", "create", "--data"])
        .arg(&pg_data)
        .args(["--store", &url, "--name", "ci", "--role", "viewer", "--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ci: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(get(&format!("{}/api/v1/checks", server.base), ci["token"].as_str().unwrap()).0, 200);
}

#[test]
fn a_store_url_with_an_inline_password_is_refused_and_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let out = steward()
        .args(["token", "list", "--data"])
        .arg(dir.path())
        .args(["--store", "postgres://steward:hunter2@127.0.0.1:1/steward"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("inline password") && stderr.contains("${env:"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password was echoed: {stderr}");

    // By reference it resolves; nothing listens on port 1, and the message says where.
    let out = steward()
        .args(["token", "list", "--data"])
        .arg(dir.path())
        .args(["--store", "postgres://steward:${env:STEWARD_TEST_PW}@127.0.0.1:1/steward"])
        .env("STEWARD_TEST_PW", "hunter2")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password was echoed: {stderr}");
}

/// Approvals, cancels and live streams across replicas go through the store and
/// PostgreSQL's LISTEN/NOTIFY, not in-memory channels. Two checks:
/// - deterministic: a run written by another replica (another store handle) reaches
///   this engine's run-event channel — the feed is the only path by which it can learn
///   of that run;
/// - end to end: an approval decided by another replica lets the run waiting here go
///   on well before the polling safety net (15 s while the feed is followed) would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_another_replica_writes_about_a_run_wakes_this_one_through_listen_notify() {
    use std::sync::Arc;
    use steward::runbooks::control::{StartRequest, start};
    use steward::runbooks::{ApprovalState, Decision, NewEvent, NewRun, RunStatus};
    use steward::store::{PostgresStore, RunStore};

    let url = steward_testkit::shared_database();
    let config = steward::config::load_str(
        "t.yaml",
        "runbooks:\n  - name: deploy\n    steps:\n      - name: confirm\n        approve: {prompt: 'Ship it?', role: operator}\n      - name: done\n        shell: {script: 'true'}\n",
    )
    .expect("valid test configuration");
    let data = tempfile::tempdir().unwrap();
    let options = steward::engine::EngineOptions {
        max_concurrency: 4,
        config_path: None,
        external_url: "http://127.0.0.1".into(),
        run_retention: Duration::from_secs(3600),
        data_dir: data.path().to_path_buf(),
    };
    let here = PostgresStore::connect(&url).await.unwrap();
    let (engine, writer) = steward::engine::Engine::start(config, Arc::new(here), options).await.unwrap();
    let elsewhere = PostgresStore::connect(&url).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while engine.runbooks.poll_every() != Duration::from_secs(15) {
        assert!(std::time::Instant::now() < deadline, "the engine never followed the change feed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut wake = engine.runbooks.events.subscribe();
    let theirs = NewRun {
        runbook: "deploy".into(),
        params: Default::default(),
        trigger: "manual".into(),
        started_by: "bob".into(),
        parent_run: None,
        alert_fingerprint: None,
        incident_id: None,
        lock: None,
        trigger_key: None,
        owner: "elsewhere:1:1".into(),
    };
    let foreign = elsewhere.create_run(&theirs, NewEvent::new(0, "run_started", "started").by("bob")).await.unwrap();
    let woken = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(id) = wake.recv().await
                && id == foreign.id
            {
                return;
            }
        }
    })
    .await;
    assert!(woken.is_ok(), "a run written by another replica never reached this engine");

    let run = start(&engine.runbooks, StartRequest::manual("deploy", Default::default(), "alice")).await.unwrap();
    let status = async || elsewhere.run(run.id).await.unwrap().unwrap().status;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status().await != RunStatus::Waiting {
        assert!(std::time::Instant::now() < deadline, "the run never asked for its approval");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let decision = Decision { state: ApprovalState::Approved, by: "bob".into(), comment: String::new() };
    let decided = std::time::Instant::now();
    assert!(
        elsewhere
            .decide_approval(run.id, "confirm", 1, &decision, &[NewEvent::new(run.id, "approved", "bob approved").by("bob")])
            .await
            .unwrap()
    );
    while status().await != RunStatus::Succeeded {
        assert!(decided.elapsed() < Duration::from_secs(10), "the run did not go on after the decision: {:?}", status().await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    engine.shutdown(writer).await;
}
