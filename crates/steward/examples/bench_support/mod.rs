//! Helpers shared by the benchmark drivers (`mod bench_support;` in each example):
//! running a steward server, a token for it, and measuring a process's CPU time.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `url` until it answers 2xx (30 s at most).
pub(crate) async fn wait_ready(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client.get(url).send().await.is_ok_and(|r| r.status().is_success()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{url} never became ready");
}

/// utime + stime of `pid`, in seconds, from /proc.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split(' ').collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}

/// A child process killed when dropped.
pub(crate) struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Creates an operator token in `data` and returns its secret.
pub(crate) fn operator_token(steward: &Path, data: &Path) -> String {
    let out = Command::new(steward)
        .args(["token", "create", "--output", "json", "--name", "bench", "--role", "operator", "--data"])
        .arg(data)
        .output()
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["token"].as_str().unwrap().to_string()
}

/// `steward serve -c CONFIG --data DATA --listen 127.0.0.1:PORT`, not yet spawned.
pub(crate) fn serve_command(steward: &Path, config: &Path, data: &Path, port: u16) -> Command {
    let mut command = Command::new(steward);
    command.args(["serve", "-c"]).arg(config).arg("--data").arg(data).args(["--listen", &format!("127.0.0.1:{port}")]);
    command
}

/// `steward serve` on a free port, logging errors only; returns it and its base URL once
/// `/health` answers.
pub(crate) async fn serve(steward: &Path, config: &Path, data: &Path) -> (Killed, String) {
    let port = free_port();
    // BENCH_STEWARD_LOG=warn BENCH_STEWARD_LOG_FILE=/tmp/s.log keep the server's log.
    let child = serve_command(steward, config, data, port)
        .env("STEWARD_LOG", std::env::var("BENCH_STEWARD_LOG").unwrap_or("error".into()))
        .stderr(std::env::var("BENCH_STEWARD_LOG_FILE").map_or(Stdio::null(), |f| std::fs::File::create(f).unwrap().into()))
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let server = Killed(child);
    wait_leading(&base).await;
    (server, base)
}

/// Polls `/health/ready` until the server runs its engine: at once on SQLite; on a
/// shared store (`STEWARD_STORE=postgres://…`) once it has taken the leadership.
pub(crate) async fn wait_leading(base: &str) {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = client.get(format!("{base}/health/ready")).send().await
            && r.status().is_success()
            && let Ok(v) = r.json::<serde_json::Value>().await
            && v["role"] != "follower"
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{base} never became ready to act");
}
