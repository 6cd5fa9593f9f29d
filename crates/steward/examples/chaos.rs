//! Crash-safety harness (not a test; run by bench/chaos.sh, figures in RELIABILITY.md).
//!
//! `chaos STEWARD RUNS SEED`: one steward server is killed with SIGKILL at random
//! moments and restarted at once, over and over, while
//! - RUNS runbook runs are started through the API (about 25 a second), each with two
//!   non-idempotent shell steps that append `RUN_ID STEP` to a ledger file, 300 ms apart;
//! - four HTTP targets fail and heal on their own random schedules (3–6 s each way),
//!   one alert rule each, notified to a webhook receiver that itself flaps (down — HTTP
//!   500, nothing recorded — for 0.3–2 s at random moments, about a third of the time);
//! - a directory backup is requested every second (a killed backup holds its lease,
//!   so many requests are refused as busy: that is the design).
//!
//! Then a last server runs without kills, with every target healed and the receiver
//! up, until runs, alerts and the outbox settle; then backups are verified offline.
//! It counts: lost runs (accepted, absent), duplicated runs, silent re-executions (a
//! ledger step executed twice), side effects without a record (a ledger line whose step
//! the run never recorded as started), runs stuck running; lost notifications (a
//! firing without its resolved, a failure episode that steward was up for with no
//! firing), duplicated notifications (the same alert, start and status delivered
//! twice — expected after a kill mid-send, counted), alerts resolved while their target
//! failed throughout; partial backups listed (listed succeeded, failing verification)
//! and backups left running.
//!
//! Prints one JSON object and a table; exits 1 if a target (everything 0 except
//! duplicated notifications) is missed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

mod bench_support;
use bench_support::{free_port, operator_token, serve_command};

const TARGETS: usize = 4;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn parse_ms(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339).ok().map(|t| t.timestamp_millis())
}

/// Each target's health over time: (since_ms, healthy), in order.
type Timeline = Arc<Mutex<Vec<Vec<(i64, bool)>>>>;

/// One alert as the receiver got it (HTTP 200 answered).
#[derive(Clone, Debug)]
struct Received {
    alertname: String,
    status: String,
    starts_ms: i64,
    ends_ms: Option<i64>,
}

#[derive(Default)]
struct Receiver {
    up: AtomicBool,
    got: Mutex<Vec<Received>>,
    refused: AtomicUsize,
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: chaos STEWARD RUNS SEED");
        std::process::exit(2);
    }
    let steward = PathBuf::from(&args[1]);
    let runs: usize = args[2].parse().expect("RUNS is a number");
    let seed: u64 = args[3].parse().expect("SEED is a number");
    let report = chaos(&steward, runs, seed).await;
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let missed: Vec<&str> = [
        "lost_runs",
        "duplicated_runs",
        "silent_reexecutions",
        "side_effects_without_record",
        "runs_stuck_running",
        "lost_notifications",
        "unnotified_failure_episodes",
        "resolved_while_failing",
        "partial_backups_listed",
        "backups_left_running",
    ]
    .into_iter()
    .filter(|k| report["counts"][*k].as_u64() != Some(0))
    .collect();
    if !missed.is_empty() {
        eprintln!("targets missed: {}", missed.join(", "));
        std::process::exit(1);
    }
}

async fn chaos(steward: &Path, runs: usize, seed: u64) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut rng = StdRng::seed_from_u64(seed);

    // Targets that flip on their own, recording when.
    let health: Arc<Vec<AtomicBool>> = Arc::new((0..TARGETS).map(|_| AtomicBool::new(true)).collect());
    let timeline: Timeline = Arc::new(Mutex::new((0..TARGETS).map(|_| vec![(now_ms(), true)]).collect()));
    let targets = Router::new()
        .route(
            "/t/{i}",
            axum::routing::get(|State(h): State<Arc<Vec<AtomicBool>>>, UrlPath(i): UrlPath<usize>| async move {
                if h[i].load(Ordering::SeqCst) { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }
            }),
        )
        .with_state(health.clone());
    let target_port = listen(targets).await;

    let receiver = Arc::new(Receiver { up: AtomicBool::new(true), ..Default::default() });
    let hook = Router::new()
        .route(
            "/hook",
            axum::routing::post(|State(r): State<Arc<Receiver>>, body: axum::body::Bytes| async move {
                if !r.up.load(Ordering::SeqCst) {
                    r.refused.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let v: Value = serde_json::from_slice(&body).unwrap_or_default();
                let mut got = r.got.lock().unwrap();
                for a in v["alerts"].as_array().into_iter().flatten() {
                    got.push(Received {
                        alertname: a["labels"]["alertname"].as_str().unwrap_or_default().to_string(),
                        status: a["status"].as_str().unwrap_or_default().to_string(),
                        starts_ms: a["startsAt"].as_str().and_then(parse_ms).unwrap_or_default(),
                        ends_ms: a["endsAt"].as_str().and_then(parse_ms).filter(|t| *t > 0),
                    });
                }
                StatusCode::OK
            }),
        )
        .with_state(receiver.clone());
    let hook_port = listen(hook).await;

    // Configuration: checks + alerts, a runbook with non-idempotent effects, a backup.
    let ledger = d.join("ledger");
    std::fs::write(&ledger, "").unwrap();
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..16 {
        let bytes: Vec<u8> = (0..256 * 1024).map(|_| rng.random::<u8>()).collect();
        std::fs::write(src.join(format!("f{i}.bin")), bytes).unwrap();
    }
    let mut config = String::from("checks:\n");
    for i in 0..TARGETS {
        config.push_str(&format!(
            "  - {{name: t{i}, interval: 500ms, timeout: 400ms, failure_threshold: 1, success_threshold: 1, http: {{url: 'http://127.0.0.1:{target_port}/t/{i}'}}}}\n"
        ));
    }
    config.push_str("alerts:\n");
    for i in 0..TARGETS {
        config.push_str(&format!("  - {{name: T{i}Down, when: check t{i} unhealthy}}\n"));
    }
    let effect = |step: &str| format!("printf '%s {step}\\n' \"$STEWARD_RUN_ID\" >> {}", ledger.display());
    config.push_str(&format!(
        r#"receivers:
  - {{name: hook, webhook: {{url: 'http://127.0.0.1:{hook_port}/hook'}}}}
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1000h
runbooks:
  - name: effects
    params: {{ tag: {{ type: string }} }}
    steps:
      - {{ name: a, shell: {{ script: "{a}" }} }}
      - {{ name: pause, sleep: 300ms }}
      - {{ name: b, shell: {{ script: "{b}" }} }}
repositories:
  - {{ name: local, path: {repo} }}
backups:
  - name: files
    directory: {{ path: {src} }}
    repository: local
"#,
        a = effect("a").replace('"', "\\\""),
        b = effect("b").replace('"', "\\\""),
        repo = d.join("repo").display(),
        src = src.display(),
    ));
    let config_path = d.join("steward.yaml");
    std::fs::write(&config_path, &config).unwrap();
    let data = d.join("data");
    let validated = Command::new(steward).args(["validate", "-c"]).arg(&config_path).output().unwrap();
    assert!(validated.status.success(), "{}", String::from_utf8_lossy(&validated.stdout));
    let token = operator_token(steward, &data);
    let log = d.join("steward.log");

    // The world changes on its own from now on.
    let stop_world = Arc::new(AtomicBool::new(false));
    for i in 0..TARGETS {
        let (health, timeline, stop) = (health.clone(), timeline.clone(), stop_world.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ ((i as u64 + 1) * 7919));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(3000..6000))).await;
                let healthy = !health[i].load(Ordering::SeqCst) || stop.load(Ordering::SeqCst);
                // The timeline is written before the target answers differently, so a
                // probe never sees a state the timeline does not show yet.
                timeline.lock().unwrap()[i].push((now_ms(), healthy));
                health[i].store(healthy, Ordering::SeqCst);
            }
        });
    }
    {
        let (receiver, stop) = (receiver.clone(), stop_world.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ 0xface);
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(500..4000))).await;
                receiver.up.store(false, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(rng.random_range(300..2000))).await;
                receiver.up.store(true, Ordering::SeqCst);
            }
        });
    }

    // Lives: start, load, kill -9 at a random moment; until every run was requested.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut accepted: BTreeMap<i64, String> = BTreeMap::new();
    let mut ambiguous: Vec<String> = Vec::new();
    let mut refused_runs = 0usize;
    let mut backups_requested = (0usize, 0usize); // (accepted, busy)
    let mut lives: Vec<(i64, i64)> = Vec::new();
    let mut kills = 0usize;
    let mut tag = 0usize;
    let started = std::time::Instant::now();
    while tag < runs {
        let mut child = spawn(steward, &config_path, &data, port, &log);
        let alive_from = now_ms();
        if !ready(&client, &base).await {
            panic!("steward did not become ready; see {}", log.display());
        }
        let life = Duration::from_millis(rng.random_range(200..2500));
        let until = tokio::time::Instant::now() + life;
        let mut next_backup = tokio::time::Instant::now();
        while tokio::time::Instant::now() < until && tag < runs {
            if tokio::time::Instant::now() >= next_backup {
                next_backup += Duration::from_secs(1);
                match client.post(format!("{base}/api/v1/backups/run")).bearer_auth(&token).json(&json!({"policy": "files"})).send().await {
                    Ok(r) if r.status() == StatusCode::ACCEPTED => backups_requested.0 += 1,
                    Ok(r) if r.status() == StatusCode::CONFLICT => backups_requested.1 += 1,
                    _ => {}
                }
            }
            let t = format!("r{tag}");
            tag += 1;
            let send =
                client.post(format!("{base}/api/v1/runbooks/effects/runs")).bearer_auth(&token).json(&json!({"params": {"tag": t}})).send();
            // The kill comes when it comes, also in the middle of a request.
            let sent = tokio::select! {
                r = send => r,
                _ = tokio::time::sleep_until(until) => {
                    ambiguous.push(t);
                    break;
                }
            };
            match sent {
                Ok(r) if r.status() == StatusCode::CREATED => match r.json::<Value>().await {
                    Ok(v) => {
                        accepted.insert(v["run"]["id"].as_i64().expect("a run id"), t);
                    }
                    Err(_) => ambiguous.push(t),
                },
                Ok(_) => refused_runs += 1,
                Err(_) => ambiguous.push(t),
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        kills += 1;
        lives.push((alive_from, now_ms()));
        eprint!("\rlives {kills}, runs requested {tag}/{runs}   ");
    }
    eprintln!();
    let chaos_seconds = started.elapsed().as_secs_f64();

    // Settle: heal everything, keep the receiver up, one last life without kills.
    stop_world.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    receiver.up.store(true, Ordering::SeqCst);
    for i in 0..TARGETS {
        if !health[i].load(Ordering::SeqCst) {
            timeline.lock().unwrap()[i].push((now_ms(), true));
            health[i].store(true, Ordering::SeqCst);
        }
    }
    let mut child = spawn(steward, &config_path, &data, port, &log);
    let settle_from = now_ms();
    assert!(ready(&client, &base).await, "steward did not become ready; see {}", log.display());
    let settled = settle(&client, &base, &token).await;
    let all_runs = list_runs(&client, &base, &token).await;
    let mut steps: HashMap<i64, Vec<Value>> = HashMap::new();
    for id in all_runs.keys() {
        let v: Value = get(&client, &format!("{base}/api/v1/runs/{id}"), &token).await;
        steps.insert(*id, v["steps"].as_array().cloned().unwrap_or_default());
    }
    let notifications: Value = get(&client, &format!("{base}/api/v1/notifications?limit=1000"), &token).await;
    child.kill().unwrap();
    child.wait().unwrap();
    lives.push((settle_from, now_ms()));

    // Runs.
    let ledger_text = std::fs::read_to_string(&ledger).unwrap();
    let mut executed: HashMap<(i64, String), usize> = HashMap::new();
    for line in ledger_text.lines() {
        let mut parts = line.split(' ');
        if let (Some(id), Some(step)) = (parts.next().and_then(|i| i.parse().ok()), parts.next()) {
            *executed.entry((id, step.to_string())).or_default() += 1;
        }
    }
    let lost_runs = accepted.keys().filter(|id| !all_runs.contains_key(id)).count();
    let mut by_tag: HashMap<&str, usize> = HashMap::new();
    for r in all_runs.values() {
        *by_tag.entry(r["params"]["tag"].as_str().unwrap_or_default()).or_default() += 1;
    }
    let duplicated_runs = by_tag.values().filter(|n| **n > 1).map(|n| n - 1).sum::<usize>();
    let silent_reexecutions = executed.values().filter(|n| **n > 1).map(|n| n - 1).sum::<usize>();
    let side_effects_without_record = executed
        .keys()
        .filter(|(id, step)| !steps.get(id).is_some_and(|s| s.iter().any(|r| r["name"] == step.as_str() && r["status"] != "pending")))
        .count();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    for r in all_runs.values() {
        *statuses.entry(r["status"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    let runs_stuck_running = all_runs.values().filter(|r| matches!(r["status"].as_str(), Some("running" | "pending"))).count();

    // Notifications.
    let got = receiver.got.lock().unwrap().clone();
    let mut seen: HashMap<(String, i64, String), usize> = HashMap::new();
    for g in &got {
        *seen.entry((g.alertname.clone(), g.starts_ms, g.status.clone())).or_default() += 1;
    }
    let duplicated_notifications = seen.values().filter(|n| **n > 1).map(|n| n - 1).sum::<usize>();
    let firing: HashSet<(String, i64)> = got.iter().filter(|g| g.status == "firing").map(|g| (g.alertname.clone(), g.starts_ms)).collect();
    let resolved: Vec<&Received> = got.iter().filter(|g| g.status == "resolved").collect();
    let lost_resolved = firing.iter().filter(|(a, s)| !resolved.iter().any(|r| &r.alertname == a && r.starts_ms == *s)).count();
    let resolved_without_firing = resolved
        .iter()
        .filter(|r| !firing.contains(&(r.alertname.clone(), r.starts_ms)))
        .map(|r| (&r.alertname, r.starts_ms))
        .collect::<HashSet<_>>()
        .len();
    let timeline = timeline.lock().unwrap().clone();
    let healthy_within = |i: usize, from: i64, to: i64| -> bool {
        let t = &timeline[i];
        t.iter().enumerate().any(|(k, (since, healthy))| {
            let until = t.get(k + 1).map_or(i64::MAX, |n| n.0);
            *healthy && *since <= to && until >= from
        })
    };
    let target_of =
        |alertname: &str| alertname.strip_prefix('T').and_then(|s| s.strip_suffix("Down")).and_then(|s| s.parse::<usize>().ok());
    let resolved_while_failing = resolved
        .iter()
        .filter(|r| {
            let (Some(i), Some(end)) = (target_of(&r.alertname), r.ends_ms) else { return false };
            !healthy_within(i, r.starts_ms, end)
        })
        .count();
    // A failure episode steward was up for (2 s or more of it, over one or several lives)
    // must have been notified.
    let mut episodes = 0usize;
    let mut unnotified = Vec::new();
    for (i, t) in timeline.iter().enumerate() {
        for (k, (since, healthy)) in t.iter().enumerate() {
            if *healthy {
                continue;
            }
            let until = t.get(k + 1).map_or(now_ms(), |n| n.0);
            let observed = lives.iter().map(|(a, b)| ((*b).min(until) - (*a).max(*since)).max(0)).sum::<i64>() >= 2000;
            if !observed {
                continue;
            }
            episodes += 1;
            let name = format!("T{i}Down");
            if !firing.iter().any(|(a, s)| *a == name && *s >= *since - 1000 && *s <= until) {
                unnotified.push(json!({"target": i, "from": since, "until": until}));
            }
        }
    }
    let outbox_states: BTreeMap<String, usize> =
        notifications["notifications"].as_array().into_iter().flatten().fold(BTreeMap::new(), |mut m, n| {
            *m.entry(n["state"].as_str().unwrap_or_default().to_string()).or_default() += 1;
            m
        });

    // Backups, checked offline once the server is gone.
    let listed: Value = cli_json(steward, &["backup", "list", "-c"], &config_path, &data, &["--limit", "100000", "-o", "json"]);
    let records = listed["backups"].as_array().cloned().unwrap_or_default();
    let mut backup_states: BTreeMap<String, usize> = BTreeMap::new();
    let mut partial = Vec::new();
    for b in &records {
        let status = b["status"].as_str().unwrap_or_default().to_string();
        *backup_states.entry(status.clone()).or_default() += 1;
        if status == "succeeded" {
            let id = b["id"].as_str().unwrap();
            let out = Command::new(steward)
                .args(["backup", "verify", id, "-c"])
                .arg(&config_path)
                .arg("--data")
                .arg(&data)
                .args(["-o", "json"])
                .stderr(Stdio::null())
                .output()
                .unwrap();
            if !out.status.success() {
                partial.push(json!({"id": id, "verification": String::from_utf8_lossy(&out.stdout)}));
            }
        }
    }
    let backups_left_running = backup_states.get("running").copied().unwrap_or(0);

    json!({
        "seed": seed,
        "chaos_seconds": (chaos_seconds * 10.0).round() / 10.0,
        "kills": kills,
        "settled": settled,
        "runs": {
            "requested": tag,
            "accepted": accepted.len(),
            "refused": refused_runs,
            "ambiguous (request cut by a kill)": ambiguous.len(),
            "ambiguous_that_started": ambiguous.iter().filter(|t| by_tag.contains_key(t.as_str())).count(),
            "stored": all_runs.len(),
            "statuses": statuses,
            "ledger_lines": ledger_text.lines().count(),
        },
        "alerts": {
            "failure_episodes_observed": episodes,
            "firing_notified": firing.len(),
            "resolved_notified": resolved.len(),
            "deliveries_refused_by_flapping_receiver": receiver.refused.load(Ordering::SeqCst),
            "outbox": outbox_states,
            "unnotified_episodes": unnotified,
            "resolved_without_firing": resolved_without_firing,
        },
        "backups": {
            "requested_accepted": backups_requested.0,
            "requested_busy": backups_requested.1,
            "records": backup_states,
            "partial": partial,
        },
        "counts": {
            "lost_runs": lost_runs,
            "duplicated_runs": duplicated_runs,
            "silent_reexecutions": silent_reexecutions,
            "side_effects_without_record": side_effects_without_record,
            "runs_stuck_running": runs_stuck_running,
            "lost_notifications": lost_resolved,
            "unnotified_failure_episodes": unnotified.len(),
            "duplicated_notifications": duplicated_notifications,
            "resolved_while_failing": resolved_while_failing,
            "partial_backups_listed": partial.len(),
            "backups_left_running": backups_left_running,
        },
    })
}

async fn listen(app: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn spawn(steward: &Path, config: &Path, data: &Path, port: u16, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    serve_command(steward, config, data, port).env("STEWARD_LOG", "warn").stdout(Stdio::null()).stderr(log).spawn().unwrap()
}

async fn ready(client: &reqwest::Client, base: &str) -> bool {
    for _ in 0..1500 {
        if client.get(format!("{base}/health")).send().await.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn get(client: &reqwest::Client, url: &str, token: &str) -> Value {
    client.get(url).bearer_auth(token).send().await.unwrap().json().await.unwrap()
}

/// Every run, by id.
async fn list_runs(client: &reqwest::Client, base: &str, token: &str) -> BTreeMap<i64, Value> {
    let mut out = BTreeMap::new();
    let mut before: Option<i64> = None;
    loop {
        let url = match before {
            Some(b) => format!("{base}/api/v1/runs?limit=500&before={b}"),
            None => format!("{base}/api/v1/runs?limit=500"),
        };
        let v = get(client, &url, token).await;
        for r in v["runs"].as_array().into_iter().flatten() {
            out.insert(r["id"].as_i64().unwrap(), r.clone());
        }
        match v["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => return out,
        }
    }
}

/// Waits (10 min at most) until no run is running, no alert fires, no notification
/// is pending and no backup is running, three polls in a row a second apart (a resolved alert's notification is
/// enqueued at its group's next flush). Returns how long it took, or that it did not.
async fn settle(client: &reqwest::Client, base: &str, token: &str) -> Value {
    let from = std::time::Instant::now();
    let mut quiet = 0;
    while from.elapsed() < Duration::from_secs(600) {
        let runs = list_runs(client, base, token).await;
        let running = runs.values().filter(|r| matches!(r["status"].as_str(), Some("running" | "pending"))).count();
        let alerts = get(client, &format!("{base}/api/v1/alerts"), token).await;
        let firing =
            alerts["alerts"].as_array().into_iter().flatten().filter(|a| matches!(a["state"].as_str(), Some("firing" | "pending"))).count();
        let outbox = get(client, &format!("{base}/api/v1/notifications?limit=1000"), token).await;
        let pending = outbox["notifications"].as_array().into_iter().flatten().filter(|n| n["state"] == "pending").count();
        // A killed backup keeps its lease (30 s) before the server may call it interrupted.
        let backups = get(client, &format!("{base}/api/v1/backups?status=running"), token).await;
        let backing_up = backups["backups"].as_array().map_or(0, Vec::len);
        eprint!(
            "\rsettling: {running} runs running, {firing} alerts firing, {pending} notifications pending, {backing_up} backups running   "
        );
        quiet = if running == 0 && firing == 0 && pending == 0 && backing_up == 0 { quiet + 1 } else { 0 };
        if quiet == 3 {
            eprintln!();
            return json!({"seconds": from.elapsed().as_secs()});
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!();
    json!({"seconds": from.elapsed().as_secs(), "timed_out": true})
}

fn cli_json(steward: &Path, args: &[&str], config: &Path, data: &Path, tail: &[&str]) -> Value {
    let out = Command::new(steward).args(args).arg(config).arg("--data").arg(data).args(tail).output().unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
}
