//! Several `steward serve` replicas on one private PostgreSQL (initdb on a free port),
//! real webhook receivers: one leader at a time, any replica answers, and losing the
//! leader — killed, or paused past its lease — neither skips nor repeats a page.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::alerting::{Receiver, file_check, request};
use common::{PrivatePostgres, Server, steward, wait_for};
use serde_json::Value;

const TTL: &str = "3s";

fn ready(base: &str) -> Option<Value> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new().get(format!("{base}/health/ready")).timeout(Duration::from_secs(2)).send().await.ok()?;
        resp.json::<Value>().await.ok()
    })
}

fn role(base: &str) -> Option<String> {
    ready(base).and_then(|v| v["role"].as_str().map(str::to_string))
}

/// The one replica that says it leads, once the others agree on it.
fn leader_of(replicas: &[&Server]) -> usize {
    wait_for("one leader the others agree on", Duration::from_secs(20), || {
        let states: Vec<Option<Value>> = replicas.iter().map(|s| ready(&s.base)).collect();
        let leaders: Vec<usize> = (0..states.len()).filter(|&i| states[i].as_ref().is_some_and(|v| v["role"] == "leader")).collect();
        let [leader] = leaders[..] else { return None };
        let agreed = states.iter().enumerate().all(|(i, s)| {
            i == leader || s.as_ref().is_some_and(|v| v["role"] == "follower" && v["leader_address"] == replicas[leader].base.as_str())
        });
        agreed.then_some(leader)
    })
}

fn token(data: &Path, url: &str) -> String {
    let out = steward()
        .args(["token", "create", "--data"])
        .arg(data)
        .args(["--store", url, "--name", "ops", "--role", "operator", "--output", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["token"].as_str().unwrap().to_string()
}

/// A private PostgreSQL cluster with an empty `steward` database, its URL, and a work
/// directory for configuration and the replicas' data directories.
fn shared_store() -> (PrivatePostgres, String, tempfile::TempDir) {
    common::install_crypto();
    let pg = PrivatePostgres::primary();
    pg.psql("CREATE DATABASE steward");
    let url = pg.url("steward");
    (pg, url, tempfile::tempdir().unwrap())
}

fn start_replicas(n: usize, config: &Path, dir: &Path, url: &str) -> Vec<Server> {
    (0..n).map(|i| Server::start_with(config, &dir.join(format!("replica-{i}")), &["--store", url, "--lease-ttl", TTL])).collect()
}

#[test]
fn killing_the_leader_mid_escalation_neither_skips_nor_repeats_a_level() {
    let (_pg, url, dir) = shared_store();
    let up = dir.path().join("up");
    std::fs::write(&up, "").unwrap();
    let (a, b, c) = (Receiver::start(0), Receiver::start(0), Receiver::start(0));
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            "services:\n  - name: api\nchecks:\n{}alerts:\n  - {{name: ApiDown, when: check api-health unhealthy, severity: critical}}\nreceivers:\n  - {{name: a, webhook: {{url: '{}'}}}}\n  - {{name: b, webhook: {{url: '{}'}}}}\n  - {{name: c, webhook: {{url: '{}'}}}}\nroute:\n  receiver: a\n  group_wait: 0s\nincidents:\n  policies:\n    - {{name: all, escalation: steps}}\n  escalation_policies:\n    - name: steps\n      levels:\n        - {{notify: [a], wait: 5s}}\n        - {{notify: [b], wait: 5s}}\n        - {{notify: [c], wait: 5s}}\n",
            file_check("api-health", Some("api"), &up),
            a.url,
            b.url,
            c.url
        ),
    )
    .unwrap();
    let token = token(&dir.path().join("cli"), &url);
    let mut replicas = start_replicas(3, &config, dir.path(), &url);
    let leader = leader_of(&replicas.iter().collect::<Vec<_>>());
    let follower = (leader + 1) % 3;

    // Any replica answers the API: a follower forwards to the leader.
    let (code, checks) = request("GET", &format!("{}/api/v1/checks", replicas[follower].base), &token, None);
    assert_eq!(code, 200, "{checks}");
    assert_eq!(checks["checks"][0]["name"], "api-health", "{checks}");

    std::fs::remove_file(&up).unwrap();
    let pages = |r: &Receiver| r.accepted().iter().filter(|(_, p)| p["incident"]["escalation"].is_object()).count();
    let alert_pages = || a.accepted().iter().filter(|(_, p)| p["status"] == "firing" && p["incident"].is_null()).count();
    wait_for("level 1", Duration::from_secs(15), || (pages(&a) == 1).then_some(()));

    // kill -9 the leader while level 2 is pending.
    let killed = Instant::now();
    replicas[leader].signal(libc::SIGKILL);
    replicas[leader].child.wait().unwrap();
    let rest: Vec<&Server> = replicas.iter().enumerate().filter(|(i, _)| *i != leader).map(|(_, s)| s).collect();
    let new_leader = leader_of(&rest);
    let takeover = killed.elapsed();
    // A lease runs out at most a TTL after the last renewal; a follower tries every
    // third of it; starting the engine takes the rest.
    assert!(takeover < Duration::from_secs(3 + 1 + 3), "took {takeover:?} to take over");
    // `steward cluster status` shows the same: three registered, one leading, a later term.
    let new_id = ready(&rest[new_leader].base).unwrap()["replica"].as_str().unwrap().to_string();
    let out = steward().args(["cluster", "status", "--store", &url, "--output", "json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed = status["replicas"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{status}");
    let leaders: Vec<&str> = listed.iter().filter(|r| r["leader"] == true).map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(leaders, [new_id.as_str()], "{status}");
    assert!(status["lease"]["term"].as_i64().unwrap() >= 2, "{status}");
    wait_for("level 2 from the new leader", Duration::from_secs(15), || (pages(&b) == 1).then_some(()));
    wait_for("level 3, one wait later", Duration::from_secs(15), || (pages(&c) == 1).then_some(()));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!((pages(&a), pages(&b), pages(&c)), (1, 1, 1), "each level exactly once across the failover");
    assert_eq!(alert_pages(), 1, "the alert's page is not sent again by the new leader");

    // The record says so, read through the other survivor.
    let other = rest.iter().position(|s| s.base != rest[new_leader].base).unwrap();
    let (_, list) = request("GET", &format!("{}/api/v1/incidents?status=open", rest[other].base), &token, None);
    let id = list["incidents"][0]["id"].as_i64().expect("one open incident");
    let (_, detail) = request("GET", &format!("{}/api/v1/incidents/{id}", rest[other].base), &token, None);
    let levels: Vec<i64> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "escalated")
        .map(|e| e["data"]["level"].as_i64().unwrap())
        .collect();
    assert_eq!(levels, [1, 2, 3]);
    for (i, s) in replicas.iter_mut().enumerate().filter(|(i, _)| *i != leader) {
        assert_eq!(s.stop(), Some(0), "replica {i}");
        assert!(!s.log().contains("panicked"), "{}", s.log());
    }
}

#[test]
fn a_leader_paused_past_its_lease_stops_acting_and_pages_nothing_twice() {
    let (pg, url, dir) = shared_store();
    let up = dir.path().join("up");
    let hook = Receiver::start(0);
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            "checks:\n{}alerts:\n  - {{name: Down, when: check c unhealthy}}\nreceivers:\n  - {{name: ops, webhook: {{url: '{}'}}}}\nroute:\n  receiver: ops\n  group_wait: 0s\n",
            file_check("c", None, &up),
            hook.url
        ),
    )
    .unwrap();
    let replicas = start_replicas(2, &config, dir.path(), &url);
    let leader = leader_of(&replicas.iter().collect::<Vec<_>>());
    let other = 1 - leader;
    wait_for("the alert's page", Duration::from_secs(15), || (!hook.accepted().is_empty()).then_some(()));

    // SIGSTOP past the lease: the other replica takes over.
    replicas[leader].signal(libc::SIGSTOP);
    wait_for("the other replica to lead", Duration::from_secs(15), || {
        (role(&replicas[other].base).as_deref() == Some("leader")).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    replicas[leader].signal(libc::SIGCONT);
    // Woken, it finds another holder and stops its engine; it is a follower again.
    wait_for("the paused replica to follow", Duration::from_secs(10), || {
        (role(&replicas[leader].base).as_deref() == Some("follower")).then_some(())
    });
    assert!(replicas[leader].log().contains("no longer leads"), "{}", replicas[leader].log());
    std::thread::sleep(Duration::from_secs(2));
    let firing = hook.accepted().iter().filter(|(_, p)| p["status"] == "firing").count();
    assert_eq!(firing, 1, "one page for one alert, whoever led: {:?}", hook.summary());
    // The new leader keeps checking: results still land.
    let count = || pg.psql_in("steward", "SELECT count(*) FROM check_results").parse::<u64>().unwrap();
    let before = count();
    wait_for("results from the new leader", Duration::from_secs(10), || (count() > before).then_some(()));
}

#[test]
fn postgres_restarted_under_the_replicas_loses_nothing_and_leadership_resumes() {
    let (pg, url, dir) = shared_store();
    let up = dir.path().join("up");
    let ran = dir.path().join("ran");
    let hook = Receiver::start(0);
    let config = dir.path().join("steward.yaml");
    // The alert also starts a runbook: one firing, one run, whatever happens after.
    std::fs::write(
        &config,
        format!(
            "checks:\n{}alerts:\n  - {{name: Down, when: check c unhealthy, runbook: {{name: remediate, mode: run}}}}\nreceivers:\n  - {{name: ops, webhook: {{url: '{}'}}}}\nroute:\n  receiver: ops\n  group_wait: 0s\nrunbooks:\n  - name: remediate\n    steps:\n      - name: note\n        shell: {{script: 'echo ran >> {}'}}\n",
            file_check("c", None, &up),
            hook.url,
            ran.display()
        ),
    )
    .unwrap();
    let replicas = start_replicas(2, &config, dir.path(), &url);
    leader_of(&replicas.iter().collect::<Vec<_>>());
    wait_for("the alert's page", Duration::from_secs(15), || (!hook.accepted().is_empty()).then_some(()));
    let runs = || pg.psql_in("steward", "SELECT count(*) FROM runs WHERE status = 'succeeded'").parse::<u64>().unwrap();
    wait_for("the alert's run", Duration::from_secs(15), || (runs() == 1).then_some(()));
    let results = || pg.psql_in("steward", "SELECT count(*) FROM check_results").parse::<u64>().unwrap();
    let before = results();

    // PostgreSQL goes away (as a crash would) for longer than the lease.
    pg.stop();
    let status = |base: &str| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let r = reqwest::Client::new().get(format!("{base}/health/ready")).timeout(Duration::from_secs(5)).send().await;
            r.map(|r| r.status().as_u16()).unwrap_or(0)
        })
    };
    wait_for("both replicas to say they are not ready", Duration::from_secs(15), || {
        replicas.iter().all(|s| status(&s.base) == 503).then_some(())
    });
    std::thread::sleep(Duration::from_secs(4));
    // No replica acts on stale leadership: none says it leads.
    assert!(replicas.iter().all(|s| role(&s.base).as_deref() != Some("leader")), "a replica still leads without its store");
    pg.start();

    // Back: one leads again (a later term), results land again, nothing is paged twice.
    leader_of(&replicas.iter().collect::<Vec<_>>());
    wait_for("results after the restart", Duration::from_secs(15), || (results() > before).then_some(()));
    // A renewal issued just before the stop can reach the database just after the start,
    // carrying its old timestamp, and renew the expired lease under the same term (no
    // other replica held it meanwhile, or the statement would have changed nothing). The
    // next renewal, with a fresh timestamp, finds it expired and takes a new term.
    wait_for("leadership taken again under a new term", Duration::from_secs(10), || {
        let term: i64 = pg.psql_in("steward", "SELECT term FROM leadership").parse().unwrap();
        (term >= 2).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let firing = hook.accepted().iter().filter(|(_, p)| p["status"] == "firing").count();
    assert_eq!(firing, 1, "the alert was paged once across the outage: {:?}", hook.summary());
    let all_runs = pg.psql_in("steward", "SELECT count(*) FROM runs").parse::<u64>().unwrap();
    assert_eq!(all_runs, 1, "the still-firing alert did not start its runbook again under the new term");
    assert_eq!(std::fs::read_to_string(&ran).unwrap(), "ran\n", "the runbook's step ran once");
    for s in &replicas {
        assert!(!s.log().contains("panicked"), "{}", s.log());
    }
}

#[test]
fn a_run_whose_replica_dies_is_interrupted_elsewhere_and_resumes_on_an_operators_word() {
    let (_pg, url, dir) = shared_store();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let log = work.join("log");
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            r#"runbooks:
  - name: deploy
    steps:
      - name: confirm
        approve: {{ prompt: "Ship it?", role: operator }}
      - name: migrate
        shell: {{ script: 'echo migrate-start >> {log}; until [ -f {go} ]; do sleep 0.1; done; echo migrate-end >> {log}' }}
      - name: finish
        shell: {{ script: 'echo finish >> {log}' }}
"#,
            log = log.display(),
            go = work.join("go").display()
        ),
    )
    .unwrap();
    let token = token(&dir.path().join("cli"), &url);
    let mut replicas = start_replicas(2, &config, dir.path(), &url);
    let leader = leader_of(&replicas.iter().collect::<Vec<_>>());
    let other = 1 - leader;
    let bases: Vec<String> = replicas.iter().map(|s| s.base.clone()).collect();
    let via = |i: usize| bases[i].clone();

    // Started and approved through the replica that does not run it.
    let (code, v) = request("POST", &format!("{}/api/v1/runbooks/deploy/runs", via(other)), &token, Some(serde_json::json!({})));
    assert_eq!(code, 201, "{v}");
    let id = v["run"]["id"].as_i64().unwrap();
    let status = |base: &str| request("GET", &format!("{base}/api/v1/runs/{id}"), &token, None).1;
    wait_for("the approval to be asked", Duration::from_secs(10), || (status(&via(other))["run"]["status"] == "waiting").then_some(()));
    // The live stream, through the replica that does not run it: the events so far
    // arrive as server-sent events while the run waits.
    let streamed = {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut resp =
                reqwest::Client::new().get(format!("{}/api/v1/runs/{id}/stream", via(other))).bearer_auth(&token).send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 200);
            let mut text = String::new();
            let read = tokio::time::timeout(Duration::from_secs(10), async {
                while let Ok(Some(chunk)) = resp.chunk().await {
                    text.push_str(&String::from_utf8_lossy(&chunk));
                    if text.contains("approval_requested") {
                        break;
                    }
                }
            });
            let _ = read.await;
            text
        })
    };
    assert!(streamed.contains("event: run_event") && streamed.contains("approval_requested"), "{streamed}");
    let (code, v) = request("POST", &format!("{}/api/v1/runs/{id}/approve", via(other)), &token, Some(serde_json::json!({})));
    assert_eq!(code, 200, "{v}");
    wait_for("the migration to start", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).ok().filter(|l| l.contains("migrate-start"))
    });

    // The replica running it dies; the other takes over and says what it knows.
    replicas[leader].signal(libc::SIGKILL);
    replicas[leader].child.wait().unwrap();
    leader_of(&[&replicas[other]]);
    let d = wait_for("the run to be interrupted", Duration::from_secs(15), || {
        let d = status(&via(other));
        (d["run"]["status"] == "interrupted").then_some(d)
    });
    let migrate: Vec<&Value> = d["steps"].as_array().unwrap().iter().filter(|s| s["path"] == "migrate").collect();
    assert_eq!(migrate[0]["status"], "unknown", "{d}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(std::fs::read_to_string(&log).unwrap().matches("migrate-start").count(), 1, "not re-executed on its own");

    // An operator resumes it; it finishes on the surviving replica.
    std::fs::write(work.join("go"), "").unwrap();
    let (code, v) = request("POST", &format!("{}/api/v1/runs/{id}/resume", via(other)), &token, Some(serde_json::json!({})));
    assert_eq!(code, 200, "{v}");
    wait_for("the run to succeed", Duration::from_secs(15), || (status(&via(other))["run"]["status"] == "succeeded").then_some(()));
    let lines: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(String::from).collect();
    assert_eq!(lines, ["migrate-start", "migrate-start", "migrate-end", "finish"]);
    assert_eq!(replicas[other].stop(), Some(0));
}

/// A rolling upgrade: the first upgraded replica migrates the store, and the replicas
/// still on the old build stop leading (they follow and forward) until they run the
/// store's version too. Simulated by moving the store's schema version under them.
#[test]
fn replicas_built_for_another_schema_follow_and_never_lead() {
    let (pg, url, dir) = shared_store();
    let config = dir.path().join("steward.yaml");
    std::fs::write(&config, format!("checks:\n{}", file_check("c", None, &dir.path().join("up")))).unwrap();
    let replicas = start_replicas(2, &config, dir.path(), &url);
    leader_of(&replicas.iter().collect::<Vec<_>>());
    let version: i64 = pg.psql_in("steward", "SELECT version FROM steward_schema").parse().unwrap();
    pg.psql_in("steward", &format!("UPDATE steward_schema SET version = {}", version + 1));
    wait_for("no replica to lead", Duration::from_secs(10), || {
        replicas.iter().all(|s| role(&s.base).as_deref() == Some("follower")).then_some(())
    });
    let results = || pg.psql_in("steward", "SELECT count(*) FROM check_results").parse::<u64>().unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let frozen = results();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(results(), frozen, "nothing runs the checks against a schema it was not built for");
    assert!(replicas.iter().any(|s| s.log().contains("follows and does not lead")));
    pg.psql_in("steward", &format!("UPDATE steward_schema SET version = {version}"));
    leader_of(&replicas.iter().collect::<Vec<_>>());
    wait_for("checks to run again", Duration::from_secs(10), || (results() > frozen).then_some(()));
}

/// Every replica restarted in turn (a rolling deploy) while 1,000 checks run: the
/// leader hands over when it stops, the next one keeps the same slots, and no check
/// goes more than one interval without a result.
#[test]
fn a_rolling_restart_with_a_thousand_checks_misses_at_most_one_interval() {
    let (pg, url, dir) = shared_store();
    // A TCP target that accepts and closes every connection.
    let target = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = target.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in target.incoming() {
            drop(conn);
        }
    });
    const INTERVAL_MS: i64 = 5_000;
    let checks: String =
        (0..1000).map(|i| format!("  - {{name: c{i:04}, interval: 5s, timeout: 1s, tcp: {{address: '{address}'}}}}\n")).collect();
    let config = dir.path().join("steward.yaml");
    std::fs::write(&config, format!("checks:\n{checks}")).unwrap();
    let mut replicas = start_replicas(3, &config, dir.path(), &url);
    leader_of(&replicas.iter().collect::<Vec<_>>());
    let now_ms = || chrono::Utc::now().timestamp_millis();
    let covered = || pg.psql_in("steward", "SELECT count(DISTINCT check_name) FROM check_results").parse::<u64>().unwrap();
    wait_for("every check to have run", Duration::from_secs(20), || (covered() == 1000).then_some(()));
    let from = now_ms();
    for (i, replica) in replicas.iter_mut().enumerate() {
        assert_eq!(replica.stop(), Some(0), "replica {i} stops gracefully");
        *replica = Server::start_with(&config, &dir.path().join(format!("replica-{i}")), &["--store", &url, "--lease-ttl", TTL]);
        wait_for("the restarted replica to be ready", Duration::from_secs(15), || role(&replica.base).map(|_| ()));
        std::thread::sleep(Duration::from_secs(2));
    }
    std::thread::sleep(Duration::from_millis(INTERVAL_MS as u64 + 1_000));
    let to = now_ms();
    // The longest silence of any check inside the window, edges included.
    let gap: i64 = pg
        .psql_in(
            "steward",
            &format!(
                "SELECT max(gap) FROM (SELECT check_name, at_ms - lag(at_ms, 1, {from}::bigint) OVER (PARTITION BY check_name ORDER BY at_ms) AS gap \
                 FROM check_results WHERE at_ms >= {from} AND at_ms <= {to}) runs"
            ),
        )
        .parse()
        .unwrap();
    eprintln!("longest silence of a check across the rolling restart: {gap} ms (interval {INTERVAL_MS} ms)");
    assert!(gap <= 2 * INTERVAL_MS + 1_000, "a check went {gap} ms without a result across the rolling restart");
    let silent: u64 = pg
        .psql_in("steward", &format!("SELECT 1000 - count(DISTINCT check_name) FROM check_results WHERE at_ms > {}", to - 2 * INTERVAL_MS))
        .parse()
        .unwrap();
    assert_eq!(silent, 0, "every check ran in the last two intervals");
    for (i, s) in replicas.iter_mut().enumerate() {
        assert_eq!(s.stop(), Some(0), "replica {i}");
        assert!(!s.log().contains("panicked"), "{}", s.log());
    }
}

/// The receiver is down when the leader dies mid-retry: the new leader takes the
/// notification over from the outbox (the dead leader's claim released) and it is
/// delivered, once.
#[test]
fn a_receiver_down_across_a_failover_still_gets_every_notification_once() {
    let (pg, url, dir) = shared_store();
    let hook = Receiver::start(3);
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            "checks:\n{}alerts:\n  - {{name: Down, when: check c unhealthy}}\nreceivers:\n  - {{name: ops, webhook: {{url: '{}'}}}}\nroute:\n  receiver: ops\n  group_wait: 0s\n",
            file_check("c", None, &dir.path().join("up")),
            hook.url
        ),
    )
    .unwrap();
    let mut replicas = start_replicas(2, &config, dir.path(), &url);
    let leader = leader_of(&replicas.iter().collect::<Vec<_>>());
    wait_for("a failed delivery attempt", Duration::from_secs(15), || {
        (hook.attempts.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(())
    });
    replicas[leader].signal(libc::SIGKILL);
    replicas[leader].child.wait().unwrap();
    leader_of(&[&replicas[1 - leader]]);
    wait_for("the delivery after the failover", Duration::from_secs(40), || (!hook.accepted().is_empty()).then_some(()));
    std::thread::sleep(Duration::from_secs(3));
    let firing = hook.accepted().iter().filter(|(_, p)| p["status"] == "firing").count();
    assert_eq!(firing, 1, "delivered once: {:?}", hook.summary());
    let states = pg.psql_in("steward", "SELECT state || ':' || count(*) FROM outbox GROUP BY state ORDER BY 1");
    assert_eq!(states, "delivered:1", "the outbox says what happened");
}

/// The public status page does not depend on the leader: a follower renders it from the
/// store. Asked while the leader is paused (SIGSTOP, its lease still running, so the
/// follower still follows), the follower answers `/` and `/status.json` with what the
/// leader stored — a forwarded request could not have been answered.
#[test]
fn a_follower_serves_the_status_page_from_the_store_while_the_leader_cannot_answer() {
    let (_pg, url, dir) = shared_store();
    let up = dir.path().join("up");
    std::fs::write(&up, "").unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(&config, format!("services:\n  - {{name: payments, tier: 1}}\nchecks:\n{}", file_check("pay", Some("payments"), &up)))
        .unwrap();
    let replicas = start_replicas(2, &config, dir.path(), &url);
    let leader = leader_of(&replicas.iter().collect::<Vec<_>>());
    let other = 1 - leader;
    let get = |base: &str, path: &str| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let r = reqwest::Client::new().get(format!("{base}{path}")).timeout(Duration::from_secs(1)).send().await.ok()?;
            Some((r.status().as_u16(), r.text().await.ok()?))
        })
    };
    let operational = |base: &str| {
        let (code, body) = get(base, "/status.json")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (code == 200 && v["services"][0]["status"] == "operational").then_some(v)
    };
    wait_for("the leader to show the service operational", Duration::from_secs(15), || operational(&replicas[leader].base));
    // The follower's uptime history, read at its start, predates the leader's runs; a
    // visitor finding it stale (after 5 s on a store this small) has it read again
    // behind them. Wait until the leader's passing runs show as today's bar there.
    let today_passed = |v: &Value| v["services"][0]["uptime_90d"]["days"][89]["percent"] == 100.0;
    wait_for("today's passing runs in the follower's uptime history", Duration::from_secs(20), || {
        operational(&replicas[other].base).filter(today_passed)
    });

    replicas[leader].signal(libc::SIGSTOP);
    let started = Instant::now();
    let v = operational(&replicas[other].base).expect("the follower answers /status.json itself");
    assert_eq!(v["services"][0]["name"], "payments", "{v}");
    let (code, html) = get(&replicas[other].base, "/").expect("the follower answers / itself");
    assert_eq!(code, 200, "{html}");
    assert!(html.contains("payments"), "{html}");
    // The 90-day uptime comes from PostgreSQL too: today's runs all passed.
    let days = v["services"][0]["uptime_90d"]["days"].as_array().unwrap();
    assert_eq!((days.len(), &days[89]["percent"]), (90, &serde_json::json!(100.0)), "{v}");
    assert_eq!(html.matches("<i class=").count(), 90, "{html}");
    assert!(html.contains(r#"100% up"></i></div>"#), "today's bar is the last and says 100%: {html}");
    // The premise: all of it was answered while the other replica was still following.
    assert_eq!(role(&replicas[other].base).as_deref(), Some("follower"));
    assert!(started.elapsed() < Duration::from_secs(2), "asked within the paused leader's lease");
    replicas[leader].signal(libc::SIGCONT);
}
