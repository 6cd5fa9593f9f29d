//! Benchmark helper (not part of the product): `target PORT` serves `{"status":"ok"}` on
//! every path as fast as it can; `drive URL_PREFIX RATE SECONDS CONCURRENCY` sends GETs
//! at a fixed rate (used to push probes through blackbox_exporter's `/probe`) and prints
//! how many completed. Used by bench/checks.sh.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("target") => {
            let port: u16 = args[2].parse().unwrap();
            let app = Router::new().fallback(|| async { axum::Json(serde_json::json!({"status": "ok"})) });
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
            axum::serve(listener, app).await.unwrap();
        }
        Some("drive") => {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let prefix = args[2].clone();
            let rate: f64 = args[3].parse().unwrap();
            let seconds: f64 = args[4].parse().unwrap();
            let concurrency: usize = args[5].parse().unwrap();
            let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build().unwrap();
            let ok = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let permits = Arc::new(tokio::sync::Semaphore::new(concurrency));
            let start = Instant::now();
            let total = (rate * seconds) as u64;
            for i in 0..total {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
                let permit = permits.clone().acquire_owned().await.unwrap();
                let (client, ok, failed) = (client.clone(), ok.clone(), failed.clone());
                let url = format!("{prefix}{}", i % 20_000);
                tokio::spawn(async move {
                    let good = match client.get(&url).send().await {
                        Ok(r) => r.status().is_success() && r.text().await.is_ok_and(|t| t.contains("probe_success 1")),
                        Err(_) => false,
                    };
                    if good {
                        ok.fetch_add(1, Ordering::Relaxed)
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed)
                    };
                    drop(permit);
                });
            }
            let _ = permits.acquire_many(concurrency as u32).await;
            let elapsed = start.elapsed().as_secs_f64();
            println!("{} {} {:.3}", ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), elapsed);
        }
        _ => eprintln!("usage: bench_tool target PORT | bench_tool drive URL_PREFIX RATE SECONDS CONCURRENCY"),
    }
}
