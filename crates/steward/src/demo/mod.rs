//! `steward demo`: a small fleet modelled on the Tchat runbook (auth, messaging,
//! payment, notification, each with `/health`), a real configuration for it, and a
//! real `serve` on an embedded store. Each service can be broken and healed over HTTP
//! so a user can watch a check cross its failure threshold and recover.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

/// How a demo service answers its health check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Healthy,
    /// 503 with `{"status": "failing"}`.
    Failing,
    /// Answers after 3 seconds: longer than the check's timeout.
    Slow,
}

pub const SERVICES: &[(&str, u8, &[&str])] =
    &[("auth", 1, &[]), ("payment", 1, &["auth"]), ("messaging", 2, &["auth"]), ("notification", 3, &["messaging"])];

type Modes = Arc<Mutex<HashMap<String, Mode>>>;

/// The running fleet: one port per service and one control port.
pub struct Fleet {
    pub ports: Vec<(String, u16)>,
    pub control: SocketAddr,
    modes: Modes,
}

impl Fleet {
    pub async fn start() -> std::io::Result<Fleet> {
        let modes: Modes = Arc::new(Mutex::new(SERVICES.iter().map(|(n, _, _)| (n.to_string(), Mode::Healthy)).collect()));
        let mut ports = Vec::new();
        for (name, _, _) in SERVICES {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            ports.push((name.to_string(), listener.local_addr()?.port()));
            let app = Router::new()
                .route("/health", get(health))
                .route("/health/ready", get(health))
                .with_state((modes.clone(), name.to_string()));
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let control = listener.local_addr()?;
        let app =
            Router::new().route("/demo/{service}/{action}", post(control_action)).route("/demo", get(list_modes)).with_state(modes.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Fleet { ports, control, modes })
    }

    pub fn set(&self, service: &str, mode: Mode) {
        self.modes.lock().expect("modes").insert(service.to_string(), mode);
    }

    /// A configuration for the fleet: services with tiers and dependencies, an HTTP
    /// check per service, and a TCP check, at a short interval so changes show quickly.
    pub fn config_yaml(&self) -> String {
        let mut y =
            String::from("# Written by `steward demo`. Edit it and send SIGHUP (or POST /api/v1/config/reload) to reload.\nservices:\n");
        for (name, tier, deps) in SERVICES {
            y.push_str(&format!("  - name: {name}\n    tier: {tier}\n    owner: team-{name}\n"));
            if !deps.is_empty() {
                y.push_str(&format!("    depends_on: [{}]\n", deps.join(", ")));
            }
        }
        y.push_str("\nchecks:\n");
        for (name, port) in &self.ports {
            y.push_str(&format!(
                "  - name: {name}-health\n    service: {name}\n    interval: 2s\n    timeout: 1s\n    failure_threshold: 2\n    success_threshold: 1\n    http:\n      url: http://127.0.0.1:{port}/health\n      expect_status: [200]\n      conditions:\n        - body.status == \"ok\"\n        - response_time < 500ms\n"
            ));
        }
        let messaging = self.ports.iter().find(|(n, _)| n == "messaging").map_or(0, |(_, p)| *p);
        y.push_str(&format!(
            "  - name: messaging-port\n    service: messaging\n    interval: 5s\n    tcp:\n      address: 127.0.0.1:{messaging}\n"
        ));
        y
    }
}

async fn health(State((modes, name)): State<(Modes, String)>) -> impl IntoResponse {
    let mode = modes.lock().expect("modes").get(&name).copied().unwrap_or(Mode::Healthy);
    match mode {
        Mode::Healthy => (StatusCode::OK, Json(json!({"status": "ok", "service": name}))),
        Mode::Failing => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "failing", "service": name}))),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            (StatusCode::OK, Json(json!({"status": "ok", "service": name})))
        }
    }
}

async fn control_action(State(modes): State<Modes>, Path((service, action)): Path<(String, String)>) -> impl IntoResponse {
    let mode = match action.as_str() {
        "fail" => Mode::Failing,
        "heal" => Mode::Healthy,
        "slow" => Mode::Slow,
        _ => return (StatusCode::BAD_REQUEST, Json(json!({"error": "action must be fail, heal or slow"}))),
    };
    let mut modes = modes.lock().expect("modes");
    match modes.get_mut(&service) {
        Some(m) => {
            *m = mode;
            (StatusCode::OK, Json(json!({"service": service, "mode": action})))
        }
        None => (StatusCode::NOT_FOUND, Json(json!({"error": format!("no demo service `{service}`")}))),
    }
}

async fn list_modes(State(modes): State<Modes>) -> impl IntoResponse {
    let modes = modes.lock().expect("modes");
    Json(json!(modes.iter().map(|(k, v)| (k.clone(), format!("{v:?}").to_lowercase())).collect::<HashMap<_, _>>()))
}
