//! Helpers for the alerting tests: a real webhook receiver and API calls.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// A webhook receiver on a real port: records what it accepts, answers 503 to the
/// first `fail_first` requests.
pub struct Receiver {
    pub url: String,
    pub accepted: Arc<Mutex<Vec<(String, Value)>>>,
    pub attempts: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    pub fn start(fail_first: usize) -> Receiver {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(AtomicUsize::new(0));
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (acc, att) = (accepted.clone(), attempts.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (acc, att) = (acc.clone(), att.clone());
                async move {
                    if att.fetch_add(1, Ordering::SeqCst) < fail_first {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    acc.lock().unwrap().push((key, serde_json::from_slice(&body).unwrap()));
                    axum::http::StatusCode::OK
                }
            }),
        );
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, accepted, attempts, _rt: rt }
    }

    pub fn accepted(&self) -> Vec<(String, Value)> {
        self.accepted.lock().unwrap().clone()
    }

    /// (status, alertnames) of every accepted notification.
    pub fn summary(&self) -> Vec<(String, Vec<String>)> {
        self.accepted()
            .iter()
            .map(|(_, p)| {
                let names =
                    p["alerts"].as_array().unwrap().iter().map(|a| a["labels"]["alertname"].as_str().unwrap().to_string()).collect();
                (p["status"].as_str().unwrap().to_string(), names)
            })
            .collect()
    }
}

pub fn request(method: &str, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    super::install_crypto();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut r = reqwest::Client::new().request(method.parse().unwrap(), url).bearer_auth(token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    })
}

/// A check that is healthy while `file` exists: real process runs, flipped by the test.
pub fn file_check(name: &str, service: Option<&str>, file: &Path) -> String {
    let service = service.map_or(String::new(), |s| format!("\n    service: {s}"));
    format!(
        "  - name: {name}{service}\n    interval: 200ms\n    timeout: 190ms\n    failure_threshold: 1\n    command: {{argv: [test, -f, '{}']}}\n",
        file.display()
    )
}

pub fn alerts(base: &str, token: &str) -> Vec<Value> {
    request("GET", &format!("{base}/api/v1/alerts"), token, None).1["alerts"].as_array().cloned().unwrap_or_default()
}

pub fn alert_named<'a>(alerts: &'a [Value], name: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["rule"] == name)
}

/// An HTTP target serving `/metrics` in Prometheus' text format, changed by the test.
pub struct MetricsTarget {
    pub address: String,
    body: Arc<Mutex<String>>,
    _rt: tokio::runtime::Runtime,
}

impl MetricsTarget {
    pub fn start(body: &str) -> MetricsTarget {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let shared = Arc::new(Mutex::new(body.to_string()));
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let b = shared.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let b = b.clone();
                async move { b.lock().unwrap().clone() }
            }),
        );
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        MetricsTarget { address, body: shared, _rt: rt }
    }

    pub fn set(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_string();
    }
}
