//! One scenario per seed system, end to end: break one real component and follow the
//! chain the example configuration promises — its check fails → its alert fires → one
//! incident opens → the runbook the alert names runs (with the approval the seed asks
//! for) → the component recovers → the alert resolves → the incident is resolved.
//!
//! Each test runs the example's own files from `examples/<system>/`, cut down to what
//! the failure touches (the services, routing, receivers and incident policy whole; the
//! named checks, alerts and runbooks; no backups, no Prometheus rules, no SLOs over
//! checks left out, no maintenance window that might be open when CI runs) and with its hosts pointed at local
//! components and its intervals and `for:` shortened. Every cut and every replacement
//! must match the example, so an example that changes underneath fails here.
//!
//! Kubernetes cannot run here. Where a runbook calls kubectl, a `kubectl` on the
//! server's PATH stands in: it accepts only the exact commands the runbook should send,
//! records them, and makes the change happen on the local component.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::alerting::{Receiver, request};
use common::{PrivateNats, PrivatePostgres, Server, create_token, free_port, steward, wait_for};
use regex::Regex;
use serde_json::{Value, json};

/// The parts of an example a scenario keeps.
struct Cut<'a> {
    system: &'a str,
    /// List sections whose items are kept by name; every name must be found.
    keep: &'a [(&'a str, &'a [&'a str])],
    /// Top-level sections left out whole.
    drop: &'a [&'a str],
    /// Text replaced in what is kept; each must occur at least once.
    replace: &'a [(&'a str, &'a str)],
}

/// Writes the cut-down example to `dir`/<system> and returns that directory.
fn cut_example(dir: &Path, cut: &Cut) -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(cut.system);
    let out = dir.join(cut.system);
    std::fs::create_dir_all(&out).unwrap();
    let mut found = Vec::new();
    let mut replaced = vec![0; cut.replace.len()];
    for entry in std::fs::read_dir(&source).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let mut text = keep_items(&std::fs::read_to_string(&path).unwrap(), cut, &mut found);
        for (i, (from, to)) in cut.replace.iter().enumerate() {
            replaced[i] += text.matches(from).count();
            text = text.replace(from, to);
        }
        std::fs::write(out.join(path.file_name().unwrap()), text).unwrap();
    }
    for (section, names) in cut.keep {
        for name in *names {
            assert!(found.contains(&format!("{section}/{name}")), "{}: no {section} item named {name}", cut.system);
        }
    }
    for (i, (from, _)) in cut.replace.iter().enumerate() {
        assert!(replaced[i] > 0, "{}: {from:?} is not in what the scenario keeps", cut.system);
    }
    out
}

/// The YAML `text`, line by line: top-level sections in `cut.drop` left out; in the
/// sections of `cut.keep`, only the list items (at two spaces, with the comments just
/// above them) whose `name:` (or `alert:`) is listed. The examples are written in this
/// shape; a line-level cut keeps their text exactly as written.
fn keep_items(text: &str, cut: &Cut, found: &mut Vec<String>) -> String {
    let name_of = Regex::new(r#"^  - \{?\s*(?:name|alert):\s*"?([A-Za-z0-9_.-]+)"#).unwrap();
    let mut out = String::new();
    let mut section = String::new();
    let mut comments = String::new();
    let mut keeping = true;
    for line in text.lines() {
        if !line.is_empty() && !line.starts_with([' ', '#']) {
            section = line.split(':').next().unwrap_or_default().to_string();
            keeping = true;
            comments.clear();
            if !cut.drop.contains(&section.as_str()) {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        if cut.drop.contains(&section.as_str()) {
            continue;
        }
        let Some((_, names)) = cut.keep.iter().find(|(s, _)| *s == section) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if line.starts_with("  - ") {
            let name = name_of.captures(line).map(|c| c[1].to_string()).unwrap_or_default();
            keeping = names.contains(&name.as_str());
            if keeping {
                found.push(format!("{section}/{name}"));
                out.push_str(&comments);
                out.push_str(line);
                out.push('\n');
            }
            comments.clear();
        } else if line.starts_with("  #") {
            comments.push_str(line);
            comments.push('\n');
        } else if keeping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A `kubectl` for the server's PATH: each accepted command (its arguments joined by
/// spaces) prints its output and, if given, creates a file the test's component
/// watches; anything else fails loudly. Every call is logged to `kubectl.log`.
fn fake_kubectl(dir: &Path, accepts: &[(&str, &str, Option<&Path>)]) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("kubectl.log");
    let mut script =
        format!("#!/bin/sh\n# kubectl stand-in (Kubernetes cannot run here)\necho \"$*\" >> '{}'\ncase \"$*\" in\n", log.display());
    for (args, output, touch) in accepts {
        let quoted = output.replace('\'', "'\\''");
        script.push_str(&format!("  '{args}')\n    printf '%s\\n' '{quoted}'\n"));
        if let Some(f) = touch {
            script.push_str(&format!("    touch '{}'\n", f.display()));
        }
        script.push_str("    ;;\n");
    }
    script.push_str("  *) echo \"kubectl stand-in: unexpected command: $*\" >&2; exit 1 ;;\nesac\n");
    let path = bin.join("kubectl");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn kubectl_calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("kubectl.log")).unwrap_or_default().lines().map(str::to_string).collect()
}

fn path_with(bin: &Path) -> String {
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default())
}

/// Starts a cut-down example with the secrets its receivers and databases read:
/// `<PREFIX>_SLACK_WEBHOOK` at a local webhook receiver (returned: keep it alive),
/// PagerDuty and SMTP secrets of the right shape that reach nothing here, database
/// passwords that trust authentication ignores; then `env`.
fn serve_example(config: &Path, data: &Path, port: u16, prefix: &str, env: &[(&str, &str)]) -> (Server, Receiver) {
    let slack = Receiver::start(0);
    let names = ["SLACK_WEBHOOK", "PAGERDUTY_KEY", "SMTP_PASSWORD", "PG_PASSWORD"].map(|n| format!("{prefix}_{n}"));
    let values = [slack.url.as_str(), "0123456789abcdef0123456789abcdef", "reaches-no-smtp-here", "trust-auth-here"];
    let mut all: Vec<(&str, &str)> = names.iter().map(String::as_str).zip(values).collect();
    all.extend_from_slice(env);
    (Server::start_on(config, data, port, &[], &all), slack)
}

/// The chain's observations, through the API as an operator sees them.
struct Chain<'a> {
    base: &'a str,
    token: &'a str,
    check: &'a str,
    alert: &'a str,
    service: &'a str,
    runbook: &'a str,
}

impl Chain<'_> {
    fn get(&self, path: &str) -> Value {
        let (code, v) = request("GET", &format!("{}{path}", self.base), self.token, None);
        assert_eq!(code, 200, "GET {path}: {v}");
        v
    }

    fn wait_health(&self, health: &str, within: Duration) {
        wait_for(&format!("check {} to be {health}", self.check), within, || {
            (self.get(&format!("/api/v1/checks/{}", self.check))["health"] == health).then_some(())
        });
    }

    fn alert_state(&self) -> Option<String> {
        let v = self.get("/api/v1/alerts");
        let alert = v["alerts"].as_array()?.iter().find(|a| a["rule"] == self.alert)?;
        alert["state"].as_str().map(str::to_string)
    }

    fn incidents(&self) -> Vec<Value> {
        self.get(&format!("/api/v1/incidents?status=all&service={}", self.service))["incidents"].as_array().cloned().unwrap_or_default()
    }

    fn runs(&self) -> Vec<Value> {
        self.get(&format!("/api/v1/runs?runbook={}", self.runbook))["runs"].as_array().cloned().unwrap_or_default()
    }

    /// Healthy, nothing firing, no incident, no run: the break is what starts the chain.
    fn assert_quiet(&self) {
        self.wait_health("healthy", Duration::from_secs(30));
        assert_ne!(self.alert_state().as_deref(), Some("firing"));
        assert!(self.incidents().is_empty(), "{:#?}", self.incidents());
        assert!(self.runs().is_empty(), "{:#?}", self.runs());
    }

    /// After the break: the alert fires and exactly one incident holds it.
    fn wait_incident(&self, priority: &str) -> i64 {
        wait_for(&format!("{} to fire", self.alert), Duration::from_secs(60), || {
            (self.alert_state().as_deref() == Some("firing")).then_some(())
        });
        let incident = wait_for("one incident holding the alert", Duration::from_secs(30), || {
            let list = self.incidents();
            let first = list.first()?;
            let d = self.get(&format!("/api/v1/incidents/{}", first["id"]));
            d["alerts"].as_array()?.iter().any(|a| a["rule"] == self.alert || a["labels"]["alertname"] == self.alert).then_some(d)
        });
        assert_eq!(self.incidents().len(), 1, "one incident: {:#?}", self.incidents());
        assert_eq!(incident["incident"]["priority"], priority, "{incident:#}");
        assert_eq!(incident["incident"]["services"], json!([self.service]), "{incident:#}");
        incident["incident"]["id"].as_i64().unwrap()
    }

    /// The run the alert started, once it waits for its approval.
    fn started_run_waiting(&self) -> Value {
        let run = wait_for("the alert to start its runbook", Duration::from_secs(30), || self.runs().first().cloned());
        assert_eq!(run["trigger"], "alert", "{run:#}");
        assert_eq!(run["started_by"], format!("alert {}", self.alert), "{run:#}");
        self.wait_run(run["id"].as_i64().unwrap(), "waiting")
    }

    fn wait_run(&self, id: i64, status: &str) -> Value {
        wait_run(self.base, self.token, id, status)
    }

    fn approval_prompt(&self, id: i64) -> String {
        let evs = self.get(&format!("/api/v1/runs/{id}/events"));
        let e = evs["events"].as_array().unwrap().iter().find(|e| e["kind"] == "approval_requested").cloned();
        e.unwrap_or_else(|| panic!("no approval requested: {evs:#}"))["message"].as_str().unwrap().to_string()
    }

    fn approve(&self, id: i64, token: &str) -> u16 {
        request("POST", &format!("{}/api/v1/runs/{id}/approve", self.base), token, Some(json!({"comment": "agreed"}))).0
    }

    /// Recovery: the check passes, the alert resolves, the one incident is resolved with
    /// the run in its timeline, and nothing ran twice.
    fn assert_recovered(&self, incident: i64, run: i64) {
        self.wait_health("healthy", Duration::from_secs(60));
        wait_for(&format!("{} to resolve", self.alert), Duration::from_secs(60), || {
            (self.alert_state().as_deref() == Some("resolved")).then_some(())
        });
        let d = wait_for("the incident to be resolved", Duration::from_secs(60), || {
            let d = self.get(&format!("/api/v1/incidents/{incident}"));
            (d["incident"]["status"] == "resolved").then_some(d)
        });
        let ran: Vec<&str> =
            d["timeline"].as_array().unwrap().iter().filter(|e| e["kind"] == "runbook").filter_map(|e| e["text"].as_str()).collect();
        assert!(ran.contains(&format!("Runbook {} run {run} succeeded", self.runbook).as_str()), "{ran:?}");
        assert_eq!(self.incidents().len(), 1, "still one incident: {:#?}", self.incidents());
        assert_eq!(self.runs().len(), 1, "one run: {:#?}", self.runs());
    }
}

fn wait_run(base: &str, token: &str, id: i64, status: &str) -> Value {
    wait_for(&format!("run {id} to be {status}"), Duration::from_secs(90), || {
        let (_, d) = request("GET", &format!("{base}/api/v1/runs/{id}"), token, None);
        let now = d["run"]["status"].as_str().unwrap_or("").to_string();
        assert!(!["failed", "cancelled", "interrupted"].contains(&now.as_str()) || now == status, "run {id} ended {now}: {d:#}");
        (now == status).then_some(d)
    })
}

/// Chat platform RB-003: the message writers stop; msg-writer-pool's backlog passes
/// 10,000 on a real JetStream; NatsConsumerLag starts rb-003-consumer-lag, an operator
/// approves the scale-up, the writers drain the backlog and the incident resolves.
#[test]
fn chat_platform_consumer_lag_scales_the_writers_and_the_backlog_drains() {
    let dir = tempfile::tempdir().unwrap();
    let nats = PrivateNats::start();
    let url = format!("nats://127.0.0.1:{}", nats.port);
    let scaled = dir.path().join("scaled");
    let bin = fake_kubectl(
        dir.path(),
        &[
            ("get deployment message-writer -n chat -o jsonpath={.spec.replicas}", "2", None),
            ("scale deployment/message-writer --replicas=10 -n chat", "deployment.apps/message-writer scaled", Some(&scaled)),
        ],
    );
    let config = cut_example(
        dir.path(),
        &Cut {
            system: "chat-platform",
            keep: &[("checks", &["message-writer-lag"]), ("alerts", &["NatsConsumerLag"]), ("runbooks", &["rb-003-consumer-lag"])],
            drop: &["prometheus", "rule_files", "repositories", "backups", "maintenance_windows", "slos"],
            replace: &[("nats://nats-1.chat.svc:4222", &url), ("interval: 30s", "interval: 1s"), ("for: 2m", "for: 2s")],
        },
    );

    // The stream and the writers' durable pull consumer, as the platform runs them; the
    // writers themselves are this test: they consume only once kubectl scaled them.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let js = rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        let stream = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: "MESSAGES".into(),
                subjects: vec!["messages.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some("msg-writer-pool".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        js
    });

    let data = dir.path().join("data");
    let operator = create_token(&data, "ana", "operator");
    let path = path_with(&bin);
    let (server, _slack) = serve_example(&config, &data, free_port(), "CHAT", &[("PATH", &path)]);
    let chain = Chain {
        base: &server.base,
        token: &operator,
        check: "message-writer-lag",
        alert: "NatsConsumerLag",
        service: "message-writer",
        runbook: "rb-003-consumer-lag",
    };
    chain.assert_quiet();

    // Break: 10,050 messages arrive and nobody writes them.
    rt.block_on(async {
        // Acknowledged in batches: the client bounds the acknowledgements in flight.
        for batch in (0..10_050).collect::<Vec<_>>().chunks(500) {
            let mut acks = Vec::new();
            for i in batch {
                acks.push(js.publish(format!("messages.room.{}", i % 13), format!("message {i}").into()).await.unwrap());
            }
            for a in acks {
                a.await.unwrap();
            }
        }
    });
    let incident = chain.wait_incident("P3");
    let run = chain.started_run_waiting();
    let id = run["run"]["id"].as_i64().unwrap();
    let prompt = chain.approval_prompt(id);
    assert!(prompt.contains("from 2 to 10 replicas"), "{prompt}");
    assert!(!scaled.exists(), "nothing is scaled before the approval");

    // The writers drain the stream once scaled (consume and acknowledge everything).
    let drained = rt.spawn({
        let js = js.clone();
        let scaled = scaled.clone();
        async move {
            while !scaled.exists() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let stream = js.get_stream("MESSAGES").await.unwrap();
            let consumer: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer("msg-writer-pool").await.unwrap();
            let mut written = 0;
            while written < 10_050 {
                use futures::StreamExt;
                let mut batch = consumer.fetch().max_messages(1000).messages().await.unwrap();
                while let Some(m) = batch.next().await {
                    m.unwrap().ack().await.unwrap();
                    written += 1;
                }
            }
            written
        }
    });
    assert_eq!(chain.approve(id, &operator), 200);
    let d = chain.wait_run(id, "succeeded");
    assert_eq!(rt.block_on(drained).unwrap(), 10_050);
    assert_eq!(d["run"]["outputs"]["scaled"], "2 → 10", "{d:#}");
    assert_eq!(
        kubectl_calls(dir.path()),
        ["get deployment message-writer -n chat -o jsonpath={.spec.replicas}", "scale deployment/message-writer --replicas=10 -n chat"]
    );
    chain.assert_recovered(incident, id);
}

/// Nexus COS "Database Primary Failure": the primary of a real primary/standby pair
/// stops; no host takes writes; DatabasePrimaryDown starts region-failover, which
/// waits for an admin (an operator may not), promotes the standby, and the
/// applications' read-write connection finds it.
#[test]
fn nexus_primary_failure_promotes_the_standby_after_an_admin_approves() {
    let dir = tempfile::tempdir().unwrap();
    let primary = PrivatePostgres::primary();
    primary.psql("create role nexus login superuser");
    primary.psql("create database nexusdb owner nexus");
    primary.psql_in("nexusdb", "create table orders (id int primary key); insert into orders select generate_series(1, 100)");
    let standby = PrivatePostgres::standby_of(&primary);
    wait_for("the standby to replay", Duration::from_secs(20), || {
        (standby.psql_in("nexusdb", "select count(*) from orders") == "100").then_some(())
    });
    let (p, s) = (format!("127.0.0.1:{}", primary.port), format!("127.0.0.1:{}", standby.port));
    let replica_param = format!("replica_host: 127.0.0.1, replica_port: \"{}\"", standby.port);
    let config = cut_example(
        dir.path(),
        &Cut {
            system: "nexus-cos",
            keep: &[("checks", &["database-writable"]), ("alerts", &["DatabasePrimaryDown"]), ("runbooks", &["region-failover"])],
            drop: &["repositories", "backups", "maintenance_windows"],
            replace: &[
                ("postgres-0.postgres.nexus-cos.svc:5432", &p),
                ("postgres-replica-0.postgres.nexus-cos.svc:5432", &s),
                ("replica_host: postgres-replica-0.postgres.nexus-cos.svc, replica_port: \"5432\"", &replica_param),
                ("interval: 10s", "interval: 1s"),
                ("for: 30s", "for: 1s"),
            ],
        },
    );
    let data = dir.path().join("data");
    let operator = create_token(&data, "olga", "operator");
    let admin = create_token(&data, "ada", "admin");
    let (server, _slack) = serve_example(&config, &data, free_port(), "NEXUS", &[]);
    let chain = Chain {
        base: &server.base,
        token: &operator,
        check: "database-writable",
        alert: "DatabasePrimaryDown",
        service: "database",
        runbook: "region-failover",
    };
    chain.assert_quiet();

    // Break: the primary dies as a crash would.
    primary.stop();
    let incident = chain.wait_incident("P1");
    let run = chain.started_run_waiting();
    let id = run["run"]["id"].as_i64().unwrap();
    assert_eq!(run["run"]["params"]["replica_port"], standby.port, "{run:#}");
    let prompt = chain.approval_prompt(id);
    assert!(prompt.contains("Continue with potential data loss?") && prompt.contains("caught up: yes"), "{prompt}");
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "t", "nothing is promoted before the approval");
    assert_eq!(chain.approve(id, &operator), 403, "promotion needs an admin");
    assert_eq!(chain.approve(id, &admin), 200);
    chain.wait_run(id, "succeeded");
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "f");
    standby.psql_in("nexusdb", "insert into orders values (101)");
    chain.assert_recovered(incident, id);
}

/// Tchat "Database Connection Issues": a service leaks 30 idle connections into a real
/// PostgreSQL; PostgresConnectionsHigh starts reset-db-connections, which names who
/// holds them and, approved, ends the idle ones; the count falls below the threshold.
#[test]
fn tchat_connection_leak_is_reset_after_an_approval() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PrivatePostgres::primary();
    pg.psql("create role steward login superuser");
    pg.psql("create database tchat_auth");
    let host = format!("127.0.0.1:{}", pg.port);
    let config = cut_example(
        dir.path(),
        &Cut {
            system: "tchat",
            keep: &[
                ("checks", &["postgres-connections"]),
                ("alerts", &["PostgresConnectionsHigh"]),
                ("runbooks", &["reset-db-connections"]),
            ],
            drop: &["prometheus", "repositories", "backups", "maintenance_windows"],
            replace: &[
                ("postgres.tchat.svc:5432", &host),
                ("row.connections < 180", "row.connections < 20"),
                ("interval: 30s", "interval: 1s"),
                ("interval: 10s, timeout: 10m", "interval: 1s, timeout: 10m"),
                (
                    "for: 5m, severity: critical, runbook: { name: reset-db-connections",
                    "for: 1s, severity: critical, runbook: { name: reset-db-connections",
                ),
                ("default: 600, min: 0", "default: 2, min: 0"),
            ],
        },
    );
    let data = dir.path().join("data");
    let operator = create_token(&data, "somchai", "operator");
    let (server, _slack) = serve_example(&config, &data, free_port(), "TCHAT", &[]);
    let chain = Chain {
        base: &server.base,
        token: &operator,
        check: "postgres-connections",
        alert: "PostgresConnectionsHigh",
        service: "postgres",
        runbook: "reset-db-connections",
    };
    chain.assert_quiet();

    // Break: auth-service's pool opens 30 connections and leaves them idle.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let leaked = rt.block_on(async {
        use sqlx::{ConnectOptions, Executor};
        use std::str::FromStr;
        let opts = sqlx::postgres::PgConnectOptions::from_str(&pg.url("tchat_auth")).unwrap().application_name("auth-service");
        // Kept open and idle until the runbook terminates them.
        let mut conns = Vec::new();
        for _ in 0..30 {
            let mut c = opts.connect().await.unwrap();
            c.execute("select 1").await.unwrap();
            conns.push(c);
        }
        conns
    });
    let incident = chain.wait_incident("P1");
    let run = chain.started_run_waiting();
    let id = run["run"]["id"].as_i64().unwrap();
    let prompt = chain.approval_prompt(id);
    // Steward's own connections may be listed too; the 30 leaked ones are among the idle.
    let idle: i64 = Regex::new(r"terminate the (\d+) idle").unwrap().captures(&prompt).map_or(0, |c| c[1].parse().unwrap());
    assert!(prompt.contains("auth-service") && idle >= 30, "{prompt}");
    let count = || pg.psql("select count(*) from pg_stat_activity where application_name = 'auth-service'");
    assert_eq!(count(), "30", "nothing is terminated before the approval");
    assert_eq!(chain.approve(id, &operator), 200);
    let d = chain.wait_run(id, "succeeded");
    assert!(d["run"]["outputs"]["terminated"].as_i64().unwrap() >= 30, "{d:#}");
    assert_eq!(count(), "0");
    drop(leaked);
    chain.assert_recovered(incident, id);
}

/// Chat Rooms "High Error Rate → if deployment-related, rollback": a bad rollout makes
/// the API answer 503; ApiDown starts rollback-api, which gathers the errors and the
/// rollout history and, approved, undoes the rollout; the API is healthy again.
#[test]
fn chat_rooms_bad_rollout_is_undone_after_an_approval() {
    let dir = tempfile::tempdir().unwrap();
    let (bad, undone) = (dir.path().join("bad-rollout"), dir.path().join("undone"));
    let bin = fake_kubectl(
        dir.path(),
        &[
            (
                "logs -n production deployment/chat-rooms-api --tail=100",
                "ERROR TypeError: cannot read properties of undefined (reading 'roomId')",
                None,
            ),
            ("rollout history deployment/chat-rooms-api -n production", "REVISION  CHANGE-CAUSE\n41  v2.4.0\n42  v2.4.1", None),
            ("rollout undo deployment/chat-rooms-api -n production", "deployment.apps/chat-rooms-api rolled back", Some(&undone)),
            (
                "rollout status deployment/chat-rooms-api -n production --timeout=5m",
                "deployment \"chat-rooms-api\" successfully rolled out",
                None,
            ),
        ],
    );
    // The API: healthy, 503 after the bad rollout, healthy again once it is undone.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let api = format!("http://{}/api/health", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/api/health",
        axum::routing::get({
            let (bad, undone) = (bad.clone(), undone.clone());
            move || {
                let broken = bad.exists() && !undone.exists();
                async move {
                    if broken {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "db pool exhausted")
                    } else {
                        (axum::http::StatusCode::OK, "{\"status\":\"ok\"}")
                    }
                }
            }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    let config = cut_example(
        dir.path(),
        &Cut {
            system: "chat-rooms",
            keep: &[("checks", &["api-health"]), ("alerts", &["ApiDown"]), ("runbooks", &["rollback-api"])],
            drop: &["prometheus", "maintenance_windows", "slos"],
            replace: &[
                ("http://api.example.com/api/health", &api),
                ("interval: 30s", "interval: 1s"),
                (
                    "for: 1m, severity: critical, runbook: { name: rollback-api",
                    "for: 1s, severity: critical, runbook: { name: rollback-api",
                ),
                ("interval: 10s, timeout: 10m", "interval: 1s, timeout: 10m"),
            ],
        },
    );
    let data = dir.path().join("data");
    let operator = create_token(&data, "john", "operator");
    let path = path_with(&bin);
    let (server, _slack) = serve_example(&config, &data, free_port(), "CHAT_ROOMS", &[("PATH", &path)]);
    let chain = Chain {
        base: &server.base,
        token: &operator,
        check: "api-health",
        alert: "ApiDown",
        service: "chat-rooms",
        runbook: "rollback-api",
    };
    chain.assert_quiet();

    std::fs::write(&bad, "v2.4.1").unwrap();
    let incident = chain.wait_incident("P1");
    let run = chain.started_run_waiting();
    let id = run["run"]["id"].as_i64().unwrap();
    let steps = run["steps"].as_array().unwrap();
    let output = |name: &str| steps.iter().find(|s| s["path"] == name).map(|s| s["output"].as_str().unwrap_or("").to_string());
    assert!(output("errors").unwrap().contains("reading 'roomId'"), "the errors are on record before anyone decides: {run:#}");
    assert!(output("history").unwrap().contains("v2.4.1"), "{run:#}");
    assert!(!undone.exists(), "nothing is undone before the approval");
    assert_eq!(chain.approve(id, &operator), 200);
    chain.wait_run(id, "succeeded");
    assert_eq!(
        kubectl_calls(dir.path()),
        [
            "logs -n production deployment/chat-rooms-api --tail=100",
            "rollout history deployment/chat-rooms-api -n production",
            "rollout undo deployment/chat-rooms-api -n production",
            "rollout status deployment/chat-rooms-api -n production --timeout=5m",
        ]
    );
    chain.assert_recovered(incident, id);
}

/// Spoke "Emergency: restore from backup if data corruption": the registry's modules
/// are gone from a real PostgreSQL; SpokeModulesLost carries the restore command; the
/// on-call runs it, a second person approves, the newest archive is restored under a
/// maintenance silence and the modules are back.
#[test]
fn spoke_lost_modules_are_restored_from_the_newest_backup_with_a_second_person() {
    let dir = tempfile::tempdir().unwrap();
    let pg = PrivatePostgres::primary();
    pg.psql("create database spoke");
    pg.psql_in(
        "spoke",
        "create table modules (id int primary key, name text); insert into modules select g, 'm' || g from generate_series(1, 42) g;
         create table versions (id int primary key, module int references modules); insert into versions select g, 1 + g % 42 from generate_series(1, 100) g;",
    );
    let archives = dir.path().join("archives");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let (host, pg_port, dir_default, url_default) = (
        format!("127.0.0.1:{}", pg.port),
        format!("port: {{ type: int, default: {}", pg.port),
        format!("dir: {{ type: string, default: {}", archives.display()),
        format!("default: \"{base}\""),
    );
    let config = cut_example(
        dir.path(),
        &Cut {
            system: "spoke",
            keep: &[
                ("checks", &["spoke-db-up", "spoke-modules"]),
                ("alerts", &["SpokeModulesLost"]),
                ("runbooks", &["postgres-backup", "postgres-restore"]),
            ],
            drop: &["prometheus", "repositories", "backups", "maintenance_windows"],
            replace: &[
                ("127.0.0.1:5432", &host),
                ("port: { type: int, default: 5432", &pg_port),
                ("dir: { type: string, default: /var/backups/spoke", &dir_default),
                ("default: \"http://127.0.0.1:8080\"", &url_default),
                ("interval: 30s", "interval: 1s"),
                (
                    "    for: 1m\n    severity: critical\n    annotations: { summary: \"the registry",
                    "    for: 1s\n    severity: critical\n    annotations: { summary: \"the registry",
                ),
            ],
        },
    );
    let data = dir.path().join("data");
    let (dana, eli) = (create_token(&data, "dana", "operator"), create_token(&data, "eli", "operator"));
    let runbooks_token = create_token(&data, "runbooks", "operator");
    let (server, _slack) = serve_example(&config, &data, port, "SPOKE", &[("STEWARD_RUNBOOK_TOKEN", &runbooks_token)]);
    assert_eq!(server.base, base);
    // The night's backup (postgres-backup, verified by its own restore test).
    let (code, v) = request("POST", &format!("{base}/api/v1/runbooks/postgres-backup/runs"), &dana, Some(json!({"params": {}})));
    assert_eq!(code, 201, "{v}");
    let d = wait_run(&base, &dana, v["run"]["id"].as_i64().unwrap(), "succeeded");
    assert_eq!(d["run"]["outputs"]["row_counts"], json!({"modules": 42, "versions": 100}));

    let chain = Chain {
        base: &base,
        token: &dana,
        check: "spoke-modules",
        alert: "SpokeModulesLost",
        service: "spoke-db",
        runbook: "postgres-restore",
    };
    chain.assert_quiet();
    // Break: a bad migration empties the registry.
    pg.psql_in("spoke", "truncate modules cascade");
    let incident = chain.wait_incident("P1");
    // The notification's command, run as written by the person paged.
    let alerts = chain.get("/api/v1/alerts");
    let alert = alerts["alerts"].as_array().unwrap().iter().find(|a| a["rule"] == "SpokeModulesLost").unwrap();
    let command = alert["annotations"]["runbook"].as_str().unwrap();
    assert_eq!(command, "steward run postgres-restore -p database=spoke");
    // A run for an incident that does not exist is refused and starts nothing.
    let (code, v) = request(
        "POST",
        &format!("{base}/api/v1/runbooks/postgres-restore/runs"),
        &dana,
        Some(json!({"params": {"database": "spoke"}, "incident": incident + 1000})),
    );
    assert_eq!((code, v["error"]["code"].as_str()), (404, Some("not_found")), "{v}");
    assert!(chain.runs().is_empty());
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let incident_arg = incident.to_string();
    let out = steward().args(&args).args(["--incident", &incident_arg, "--server", &base, "--token", &dana]).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let run = wait_for("the restore run", Duration::from_secs(10), || chain.runs().first().cloned());
    let id = run["id"].as_i64().unwrap();
    chain.wait_run(id, "waiting");
    let prompt = chain.approval_prompt(id);
    assert!(prompt.contains(&archives.display().to_string()) && prompt.contains("over spoke"), "the newest archive is named: {prompt}");
    assert_eq!(chain.approve(id, &dana), 403, "the person who started the restore cannot approve it");
    assert_eq!(chain.approve(id, &eli), 200);
    let d = chain.wait_run(id, "succeeded");
    assert_eq!(d["run"]["outputs"]["modules"], 42, "{d:#}");
    assert_eq!(pg.psql_in("spoke", "select count(*) from versions"), "100");
    chain.assert_recovered(incident, id);
}
