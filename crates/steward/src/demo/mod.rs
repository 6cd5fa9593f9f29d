//! `steward demo`: a small fleet modelled on the Tchat runbook (auth, messaging,
//! payment, notification, each with `/health`), a real configuration for it, and a
//! real `serve` on an embedded store. Each service can be broken and healed over HTTP
//! so a user can watch a check cross its failure threshold and recover, an alert
//! fire, and an incident open, page the on-call person, and resolve — then restart
//! the service with the runbook the alert names (after an approval), and see the demo's
//! data set backed up and restore-tested. Every pillar, on one machine, in minutes.

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

/// The demo's data set (under the data directory): what the backup protects.
pub const HISTORY_DIR: &str = "messaging-history";

/// Writes the data set: a few rooms' messages, as a chat service would keep them.
pub fn write_history(data: &std::path::Path) -> std::io::Result<()> {
    let dir = data.join(HISTORY_DIR).join("rooms");
    std::fs::create_dir_all(&dir)?;
    for (room, messages) in [("general", 120), ("ops", 45), ("random", 300)] {
        let lines: Vec<String> = (0..messages)
            .map(|i| {
                json!({"id": i, "room": room, "from": format!("user{}", i % 7), "text": format!("message {i} in #{room}")}).to_string()
            })
            .collect();
        std::fs::write(dir.join(format!("{room}.jsonl")), lines.join("\n") + "\n")?;
    }
    Ok(())
}

pub const SERVICES: &[(&str, u8, &[&str])] =
    &[("auth", 1, &[]), ("payment", 1, &["auth"]), ("messaging", 2, &["auth"]), ("notification", 3, &["messaging"])];

type Modes = Arc<Mutex<HashMap<String, Mode>>>;
/// What the demo's webhook receiver was sent, newest last.
type Received = Arc<Mutex<Vec<serde_json::Value>>>;

/// The running fleet: one port per service and one control port.
pub struct Fleet {
    pub ports: Vec<(String, u16)>,
    pub control: SocketAddr,
    modes: Modes,
    received: Received,
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
        let received: Received = Arc::default();
        let notifications = Router::new().route("/demo/notifications", get(list_notifications).post(receive)).with_state(received.clone());
        let app = Router::new()
            .route("/demo/{service}/{action}", post(control_action))
            .route("/demo", get(list_modes))
            .with_state(modes.clone())
            .merge(notifications);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Fleet { ports, control, modes, received })
    }

    /// Notifications the demo receiver got so far.
    pub fn received(&self) -> Vec<serde_json::Value> {
        self.received.lock().expect("received").clone()
    }

    pub fn set(&self, service: &str, mode: Mode) {
        self.modes.lock().expect("modes").insert(service.to_string(), mode);
    }

    /// A configuration for the fleet: services with tiers and dependencies, an HTTP
    /// check per service, and a TCP check, at a short interval so changes show quickly;
    /// a runbook to restart messaging; a backup of the data set in `data`.
    pub fn config_yaml(&self, data: &std::path::Path) -> String {
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
            "  - name: messaging-port\n    service: messaging\n    interval: 5s\n    tcp:\n      address: 127.0.0.1:{messaging}\n  - name: messaging-history-backup\n    service: messaging\n    interval: 5s\n    backup: {{ policy: messaging-history, max_age: 2h }}\n"
        ));
        // One alert per service; tier 1 pages as P1. Dependencies mute the downstream
        // alerts when an upstream service fails, so breaking `auth` notifies once.
        y.push_str("\nalerts:\n");
        for (name, tier, _) in SERVICES {
            let title = format!("{}{}Down", name[..1].to_uppercase(), &name[1..]);
            let severity = if *tier == 1 { "P1" } else { "warning" };
            // The alert names the runbook that fixes it: notifications carry the command.
            let runbook = if *name == "messaging" { "    runbook: restart-messaging\n" } else { "" };
            y.push_str(&format!(
                "  - name: {title}\n    when: check {name}-health unhealthy\n    severity: {severity}\n{runbook}    annotations:\n      summary: \"{name} fails its health check\"\n"
            ));
        }
        y.push_str(&format!(
            "\n# The runbook MessagingDown names: an operator approves, Steward restarts messaging\n# (the demo's control API) and waits for its check to pass.\nrunbooks:\n  - name: restart-messaging\n    description: Restart the messaging service and wait until its health check passes\n    owner: team-messaging\n    steps:\n      - name: confirm\n        description: Users lose their open connections for a few seconds\n        approve: {{ prompt: \"Restart messaging now?\", role: operator, timeout: 30m }}\n      - name: restart\n        http: {{ url: \"http://{control}/demo/messaging/restart\", method: POST }}\n      - name: wait-healthy\n        wait_until: {{ check: messaging-health, timeout: 1m, interval: 2s }}\n",
            control = self.control
        ));
        // The messages' history, backed up every hour into a local repository and
        // restore-tested (restored into a scratch directory, every file's checksum
        // compared); a check says when the newest verified backup is too old.
        let history = data.join(HISTORY_DIR);
        let repository = data.join("backups");
        y.push_str(&format!(
            "\nrepositories:\n  - name: demo-backups\n    path: {}\nbackups:\n  - name: messaging-history\n    directory: {{ path: {} }}\n    schedule: \"0 * * * *\"\n    repository: demo-backups\n    retention: {{ keep_last: 24 }}\n    verify: {{ schedule: \"30 * * * *\", restore_test: true }}\n",
            repository.display(),
            history.display()
        ));
        y.push_str(&format!(
            "\n# The demo's own webhook receiver: curl http://{}/demo/notifications\nreceivers:\n  - name: demo-webhook\n    webhook: {{url: \"http://{}/demo/notifications\"}}\nroute:\n  receiver: demo-webhook\n  group_by: [alertname]\n  group_wait: 2s\n  group_interval: 10s\n  repeat_interval: 1h\n",
            self.control, self.control
        ));
        // Incidents: an alert storm opens one incident, which pages whoever is on
        // call (through the same webhook) until someone acknowledges it.
        let start = (crate::clock::now() - chrono::Duration::days(7)).format("%Y-%m-%d");
        y.push_str(&format!(
            "\nincidents:\n  policies:\n    - name: pages\n      matchers: ['severity=~\"P1|warning\"']\n      group_by: [service]\n      escalation: demo-oncall\n  escalation_policies:\n    - name: demo-oncall\n      repeat: 2\n      levels:\n        - {{oncall: [primary], wait: 1m}}\n        - {{people: [lead], wait: 2m}}\n  schedules:\n    - name: primary\n      time_zone: Europe/Berlin\n      rotation: {{people: [ana, ben], shift: daily, handoff: \"09:00\", start: \"{start}\"}}\n  people:\n    - {{name: ana, notify: [demo-webhook]}}\n    - {{name: ben, notify: [demo-webhook]}}\n    - {{name: lead, notify: [demo-webhook]}}\n"
        ));
        y
    }
}

/// The first failing service `name` depends on, directly or not: a service whose
/// dependency is down fails its own health check too, as real ones do.
fn failing_upstream(modes: &HashMap<String, Mode>, name: &str) -> Option<String> {
    let deps = SERVICES.iter().find(|(n, _, _)| *n == name).map_or(&[][..], |(_, _, d)| *d);
    deps.iter().find_map(|d| if modes.get(*d) == Some(&Mode::Failing) { Some(d.to_string()) } else { failing_upstream(modes, d) })
}

async fn health(State((modes, name)): State<(Modes, String)>) -> impl IntoResponse {
    let (mode, upstream) = {
        let modes = modes.lock().expect("modes");
        (modes.get(&name).copied().unwrap_or(Mode::Healthy), failing_upstream(&modes, &name))
    };
    if let (Mode::Healthy, Some(cause)) = (mode, upstream) {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "degraded", "service": name, "cause": cause})));
    }
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
        "heal" | "restart" => Mode::Healthy,
        "slow" => Mode::Slow,
        _ => return (StatusCode::BAD_REQUEST, Json(json!({"error": "action must be fail, heal, slow or restart"}))),
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

async fn receive(State(received): State<Received>, Json(payload): Json<serde_json::Value>) -> impl IntoResponse {
    received.lock().expect("received").push(payload);
    StatusCode::OK
}

/// One line per alert of each notification: what a pager would have shown.
async fn list_notifications(State(received): State<Received>) -> impl IntoResponse {
    let received = received.lock().expect("received");
    let lines: Vec<serde_json::Value> = received
        .iter()
        .flat_map(|p| p["alerts"].as_array().cloned().unwrap_or_default())
        .map(|a| {
            json!({
                "status": a["status"],
                "alert": a["labels"]["alertname"],
                "severity": a["labels"]["severity"],
                "summary": a["annotations"]["summary"],
                "startsAt": a["startsAt"],
            })
        })
        .collect();
    Json(json!({ "notifications": lines }))
}

async fn list_modes(State(modes): State<Modes>) -> impl IntoResponse {
    let modes = modes.lock().expect("modes");
    Json(json!(modes.iter().map(|(k, v)| (k.clone(), format!("{v:?}").to_lowercase())).collect::<HashMap<_, _>>()))
}
