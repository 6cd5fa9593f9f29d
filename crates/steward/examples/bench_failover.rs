//! Failover harness (not a test; run by bench/replicas.sh, figures in BENCHMARKS.md).
//!
//! `bench_failover STEWARD KILLS TTL_SECONDS SEED`: three `steward serve` replicas on one
//! private PostgreSQL cluster (initdb on a free port). Four checks flap (a file each,
//! created and removed by this harness at random, 1–4 s apart), one alert rule each,
//! notified to a webhook receiver here. KILLS times, at a random moment, the leader is
//! killed with SIGKILL and restarted once another replica leads. Per kill it measures
//! - takeover: from the kill to another replica saying it leads (`/health/ready`);
//! - first action: from the kill to the first check result the new leader writes.
//!
//! Then flapping stops, every check heals, and once the outbox has nothing pending it
//! counts lost notifications (enqueued but never received, or given up) and duplicated
//! ones (one notification received twice: the documented at-least-once window of a
//! kill in the middle of a send). Prints one JSON object.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use steward_testkit::{PrivatePostgres, free_port};

const FLAPPERS: usize = 4;
const REPLICAS: usize = 3;

struct Replica {
    child: Child,
    base: String,
    port: u16,
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: bench_failover STEWARD KILLS TTL_SECONDS SEED");
        std::process::exit(2);
    }
    let steward = PathBuf::from(&args[1]);
    let kills: usize = args[2].parse().expect("KILLS is a number");
    let ttl: u64 = args[3].parse().expect("TTL_SECONDS is a number");
    let seed: u64 = args[4].parse().expect("SEED is a number");
    let mut rng = StdRng::seed_from_u64(seed);

    let pg = PrivatePostgres::primary();
    let keep = std::env::var_os("BENCH_KEEP").is_some();
    pg.psql("CREATE DATABASE steward");
    let url = pg.url("steward");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // The receiver: every delivery, by idempotency key.
    let received: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let hook_port = {
        let received = received.clone();
        let app = Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap| {
                let received = received.clone();
                async move {
                    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    *received.lock().unwrap().entry(key).or_default() += 1;
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        port
    };
    let files: Vec<PathBuf> = (0..FLAPPERS).map(|i| d.join(format!("up-{i}"))).collect();
    let mut config = String::from("checks:\n");
    for (i, f) in files.iter().enumerate() {
        std::fs::write(f, "").unwrap();
        config += &format!(
            "  - {{name: flap-{i}, interval: 200ms, timeout: 190ms, failure_threshold: 1, command: {{argv: [test, -f, '{}']}}}}\n",
            f.display()
        );
    }
    config += "alerts:\n";
    for i in 0..FLAPPERS {
        config += &format!("  - {{name: Flap{i}, when: check flap-{i} unhealthy}}\n");
    }
    config += &format!(
        "receivers:\n  - {{name: hook, webhook: {{url: 'http://127.0.0.1:{hook_port}/hook'}}}}\nroute:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 0s\n  group_interval: 500ms\n"
    );
    let config_path = d.join("steward.yaml");
    std::fs::write(&config_path, config).unwrap();

    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let spawn = |i: usize, port: u16| -> Replica {
        let data = d.join(format!("replica-{i}"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(d.join(format!("replica-{i}.log"))).unwrap();
        let child = Command::new(&steward)
            .args(["serve", "-c"])
            .arg(&config_path)
            .arg("--data")
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}"), "--store", &url, "--lease-ttl", &format!("{ttl}s")])
            .env("STEWARD_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Replica { child, base: format!("http://127.0.0.1:{port}"), port }
    };
    let mut replicas: Vec<Replica> = (0..REPLICAS).map(|i| spawn(i, free_port())).collect();

    // Flapping, until told to stop.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (files, stop) = (files.clone(), stop.clone());
        let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                let f = &files[rng.random_range(0..FLAPPERS)];
                if f.exists() {
                    let _ = std::fs::remove_file(f);
                } else {
                    let _ = std::fs::write(f, "");
                }
            }
        });
    }

    let mut takeover_ms = Vec::new();
    let mut first_action_ms = Vec::new();
    for k in 0..kills {
        let leader = leader(&client, &replicas).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(1000..4000))).await;
        let killed_at = Instant::now();
        let killed_ms = chrono::Utc::now().timestamp_millis();
        let _ = replicas[leader].child.kill();
        let _ = replicas[leader].child.wait();
        // The first result of a check run after the kill comes from the new leader.
        let mut took_over = None;
        let mut acted = None;
        while took_over.is_none() || acted.is_none() {
            if took_over.is_none() {
                for (i, r) in replicas.iter().enumerate() {
                    if i != leader && role(&client, &r.base).await.as_deref() == Some("leader") {
                        took_over = Some(killed_at.elapsed());
                    }
                }
            }
            if acted.is_none() && pg.psql_in("steward", &format!("SELECT count(*) FROM check_results WHERE at_ms > {killed_ms}")) != "0" {
                acted = Some(killed_at.elapsed());
            }
            assert!(killed_at.elapsed() < Duration::from_secs(ttl * 4 + 30), "no takeover after kill {k}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        takeover_ms.push(took_over.unwrap().as_secs_f64() * 1000.0);
        first_action_ms.push(acted.unwrap().as_secs_f64() * 1000.0);
        eprintln!("kill {}/{kills}: takeover {:.0} ms, first action {:.0} ms", k + 1, takeover_ms[k], first_action_ms[k]);
        let port = replicas[leader].port;
        replicas[leader] = spawn(leader, port);
    }

    // Settle: every check heals, nothing pending in the outbox, three quiet seconds.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for f in &files {
        std::fs::write(f, "").unwrap();
    }
    let settle = Instant::now();
    let mut quiet = 0;
    while quiet < 3 && settle.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let pending = pg.psql_in("steward", "SELECT count(*) FROM outbox WHERE state = 'pending'");
        let firing = pg.psql_in("steward", "SELECT count(*) FROM alerts WHERE state IN ('firing', 'pending')");
        quiet = if pending == "0" && firing == "0" { quiet + 1 } else { 0 };
    }
    let unsettled = pg.psql_in(
        "steward",
        "SELECT 'alert ' || fingerprint || ' ' || state FROM alerts WHERE state IN ('firing', 'pending') \
         UNION ALL SELECT 'outbox ' || dedup_key || ' ' || state FROM outbox WHERE state = 'pending'",
    );
    let outbox = pg.psql_in("steward", "SELECT dedup_key || ' ' || state FROM outbox ORDER BY id");
    let received = received.lock().unwrap().clone();
    let mut lost = 0;
    let mut enqueued = 0;
    for line in outbox.lines() {
        let (key, state) = line.rsplit_once(' ').unwrap();
        enqueued += 1;
        if state != "delivered" || !received.contains_key(key) {
            lost += 1;
        }
    }
    let duplicated: usize = received.values().map(|n| n.saturating_sub(1)).sum();
    for r in &mut replicas {
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        json!({"p50_ms": v[v.len() / 2].round(), "max_ms": v.last().copied().unwrap_or(0.0).round(), "all_ms": v.iter().map(|x| x.round()).collect::<Vec<_>>()})
    };
    let report = json!({
        "kills": kills,
        "ttl_seconds": ttl,
        "seed": seed,
        "takeover": stats(&mut takeover_ms),
        "first_action": stats(&mut first_action_ms),
        "notifications_enqueued": enqueued,
        "notifications_received": received.len(),
        "lost_notifications": lost,
        "duplicated_notifications": duplicated,
        "settled": settle.elapsed().as_secs() < 120,
        "unsettled": unsettled.lines().collect::<Vec<_>>(),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    if keep {
        eprintln!("kept: {} and PostgreSQL on port {} (BENCH_KEEP)", dir.keep().display(), pg.port);
        std::mem::forget(pg);
        return;
    }
    if lost != 0 || !unsettled.is_empty() {
        std::process::exit(1);
    }
}

async fn role(client: &reqwest::Client, base: &str) -> Option<String> {
    let r = client.get(format!("{base}/health/ready")).send().await.ok()?;
    r.json::<Value>().await.ok()?["role"].as_str().map(str::to_string)
}

/// The replica that leads, once one does.
async fn leader(client: &reqwest::Client, replicas: &[Replica]) -> usize {
    for _ in 0..600 {
        for (i, r) in replicas.iter().enumerate() {
            if role(client, &r.base).await.as_deref() == Some("leader") {
                return i;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no replica leads");
}
