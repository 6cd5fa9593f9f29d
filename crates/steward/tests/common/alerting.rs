//! Helpers for the alerting tests: a real webhook receiver and API calls.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::Value;

/// A webhook receiver on a real port: records what it accepts, answers 503 to the
/// first `fail_first` requests.
pub(crate) struct Receiver {
    pub url: String,
    pub accepted: Arc<Mutex<Vec<(String, Value)>>>,
    pub attempts: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl Receiver {
    pub(crate) fn start(fail_first: usize) -> Receiver {
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

    pub(crate) fn accepted(&self) -> Vec<(String, Value)> {
        self.accepted.lock().unwrap().clone()
    }

    /// (status, alertnames) of every accepted notification.
    pub(crate) fn summary(&self) -> Vec<(String, Vec<String>)> {
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

pub(crate) fn request(method: &str, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
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
pub(crate) fn file_check(name: &str, service: Option<&str>, file: &Path) -> String {
    let service = service.map_or(String::new(), |s| format!("\n    service: {s}"));
    format!(
        "  - name: {name}{service}\n    interval: 200ms\n    timeout: 190ms\n    failure_threshold: 1\n    command: {{argv: [test, -f, '{}']}}\n",
        file.display()
    )
}

pub(crate) fn alerts(base: &str, token: &str) -> Vec<Value> {
    request("GET", &format!("{base}/api/v1/alerts"), token, None).1["alerts"].as_array().cloned().unwrap_or_default()
}

pub(crate) fn alert_named<'a>(alerts: &'a [Value], name: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["rule"] == name)
}

/// An HTTP target serving `/metrics` in Prometheus' text format, changed by the test.
pub(crate) struct MetricsTarget {
    pub address: String,
    body: Arc<Mutex<String>>,
    _rt: tokio::runtime::Runtime,
}

impl MetricsTarget {
    pub(crate) fn start(body: &str) -> MetricsTarget {
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

    pub(crate) fn set(&self, body: &str) {
        *self.body.lock().unwrap() = body.to_string();
    }
}

/// One message an SMTP client handed over.
#[derive(Debug, Clone)]
pub(crate) struct Mail {
    pub auth: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// A small SMTP server that checks the command sequence (EHLO, AUTH, MAIL, RCPT, DATA)
/// and answers `451` (try again later) to the first `defer_first` MAIL commands.
pub(crate) struct FakeSmtp {
    pub port: u16,
    pub mails: Arc<Mutex<Vec<Mail>>>,
    pub protocol_errors: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

impl FakeSmtp {
    pub(crate) fn start(defer_first: usize) -> FakeSmtp {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mails = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let deferred = Arc::new(AtomicUsize::new(0));
        let (m, e) = (mails.clone(), errors.clone());
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else { return };
                let (m, e, deferred) = (m.clone(), e.clone(), deferred.clone());
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut lines = BufReader::new(r).lines();
                    let _ = w.write_all(b"220 fake.smtp ESMTP\r\n").await;
                    let (mut helo, mut auth, mut from, mut to) = (false, None::<String>, None::<String>, Vec::new());
                    while let Ok(Some(line)) = lines.next_line().await {
                        let upper = line.to_ascii_uppercase();
                        let reply: &[u8] = if upper.starts_with("EHLO") {
                            helo = true;
                            b"250-fake.smtp\r\n250 AUTH PLAIN\r\n"
                        } else if upper.starts_with("AUTH PLAIN ") {
                            auth = Some(line[11..].to_string());
                            b"235 2.7.0 accepted\r\n"
                        } else if upper.starts_with("MAIL FROM:") {
                            if !helo {
                                e.lock().unwrap().push("MAIL before EHLO".into());
                                b"503 EHLO first\r\n"
                            } else if deferred.fetch_add(1, Ordering::SeqCst) < defer_first {
                                b"451 4.3.0 try again later\r\n"
                            } else {
                                from = Some(line[10..].trim().to_string());
                                b"250 ok\r\n"
                            }
                        } else if upper.starts_with("RCPT TO:") {
                            if from.is_none() {
                                e.lock().unwrap().push("RCPT before MAIL".into());
                                b"503 MAIL first\r\n"
                            } else {
                                to.push(line[8..].trim().to_string());
                                b"250 ok\r\n"
                            }
                        } else if upper == "DATA" {
                            if to.is_empty() {
                                e.lock().unwrap().push("DATA before RCPT".into());
                                let _ = w.write_all(b"503 RCPT first\r\n").await;
                                continue;
                            }
                            let _ = w.write_all(b"354 end with .\r\n").await;
                            let mut data = String::new();
                            while let Ok(Some(l)) = lines.next_line().await {
                                if l == "." {
                                    break;
                                }
                                data.push_str(&l);
                                data.push('\n');
                            }
                            let from = from.take().unwrap_or_default();
                            m.lock().unwrap().push(Mail { auth: auth.clone(), from, to: std::mem::take(&mut to), data });
                            b"250 2.0.0 queued\r\n"
                        } else if upper == "QUIT" {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        } else if upper == "RSET" || upper == "NOOP" {
                            from = None;
                            to.clear();
                            b"250 ok\r\n"
                        } else {
                            e.lock().unwrap().push(format!("unexpected command {line:?}"));
                            b"500 unknown command\r\n"
                        };
                        if w.write_all(reply).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeSmtp { port, mails, protocol_errors: errors, _rt: rt }
    }

    pub(crate) fn mails(&self) -> Vec<Mail> {
        self.mails.lock().unwrap().clone()
    }
}

/// A PagerDuty Events API v2 endpoint that validates events as PagerDuty documents
/// them (202 on success, 400 with the reasons otherwise) and records the valid ones.
pub(crate) struct FakePagerDuty {
    pub url: String,
    pub events: Arc<Mutex<Vec<Value>>>,
    pub rejected: Arc<Mutex<Vec<String>>>,
    _rt: tokio::runtime::Runtime,
}

pub(crate) fn pagerduty_problems(e: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if e["routing_key"].as_str().is_none_or(|k| k.len() != 32) {
        problems.push("routing_key must be a 32-character integration key".to_string());
    }
    let action = e["event_action"].as_str().unwrap_or("");
    if !["trigger", "acknowledge", "resolve"].contains(&action) {
        problems.push(format!("event_action {action:?} is invalid"));
    }
    if e["dedup_key"].as_str().is_none_or(|k| k.is_empty() || k.len() > 255) {
        problems.push("dedup_key must be 1..255 characters".to_string());
    }
    if action == "trigger" {
        let p = &e["payload"];
        if p["summary"].as_str().is_none_or(|s| s.is_empty() || s.len() > 1024) {
            problems.push("payload.summary must be 1..1024 characters".to_string());
        }
        if p["source"].as_str().is_none_or(str::is_empty) {
            problems.push("payload.source is required".to_string());
        }
        if !["critical", "error", "warning", "info"].contains(&p["severity"].as_str().unwrap_or("")) {
            problems.push("payload.severity must be critical, error, warning or info".to_string());
        }
    }
    problems
}

impl FakePagerDuty {
    pub(crate) fn start() -> FakePagerDuty {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}/v2/enqueue", listener.local_addr().unwrap());
        let events = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(Mutex::new(Vec::new()));
        let (ev, rj) = (events.clone(), rejected.clone());
        let app = axum::Router::new().route(
            "/v2/enqueue",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (ev, rj) = (ev.clone(), rj.clone());
                async move {
                    use axum::http::StatusCode;
                    let json_type =
                        headers.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
                    let problems = match serde_json::from_slice::<Value>(&body) {
                        Ok(_) if !json_type => vec!["Content-Type must be application/json".to_string()],
                        Ok(e) => {
                            let p = pagerduty_problems(&e);
                            if p.is_empty() {
                                let key = e["dedup_key"].clone();
                                ev.lock().unwrap().push(e);
                                let ok = serde_json::json!({"status": "success", "message": "Event processed", "dedup_key": key});
                                return (StatusCode::ACCEPTED, ok.to_string());
                            }
                            p
                        }
                        Err(err) => vec![format!("invalid JSON: {err}")],
                    };
                    rj.lock().unwrap().extend(problems.clone());
                    let body = serde_json::json!({"status": "invalid event", "message": "Event object is invalid", "errors": problems});
                    (StatusCode::BAD_REQUEST, body.to_string())
                }
            }),
        );
        rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakePagerDuty { url, events, rejected, _rt: rt }
    }

    pub(crate) fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }
}

/// A webhook that accepts connections and never answers.
pub(crate) struct HangingReceiver {
    pub url: String,
    pub connections: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl HangingReceiver {
    pub(crate) fn start() -> HangingReceiver {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let c = connections.clone();
        rt.spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                held.push(sock);
            }
        });
        HangingReceiver { url, connections, _rt: rt }
    }
}
