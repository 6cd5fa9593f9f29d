//! The HTTP front of a replica that shares its store with others (`serve --store
//! postgres://…`). The leader answers with its engine's API; a follower answers
//! `/health`, `/health/ready` and `/metrics` itself, renders the public status page
//! (`/`, `/status.json`) from the store — so it stays up while leadership moves — and
//! forwards everything else to the leader (as Vault's standby nodes forward to the
//! active one), so any replica serves the API and the acknowledge links. A request
//! already forwarded once is not forwarded again: during a failover it gets `503
//! no_leader`, never a loop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde_json::json;
use tokio::sync::watch;
use tower::ServiceExt;

use super::error::{ApiError, Code};
use super::{AppState, guard};
use crate::checks::state::CheckState;
use crate::cluster::ReplicaState;
use crate::config::ConfigView;
use crate::engine::Engine;
use crate::store::{Store, StoreError};
use crate::telemetry::Metrics;

/// How long readiness waits for the store.
const READY_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How long a follower reuses the check states it read for the status page: a busy
/// public page reads them once per period, not once per visitor.
const STATES_FRESH_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Check states by check name.
type States = HashMap<String, CheckState>;

/// Marks a request a follower forwarded, with the follower's id.
const FORWARDED_BY: HeaderName = HeaderName::from_static("x-steward-forwarded-by");

/// Headers that describe one hop, not the request (RFC 9110 §7.6.1), and the host.
const HOP_HEADERS: [HeaderName; 6] =
    [header::CONNECTION, header::HOST, header::TRANSFER_ENCODING, header::UPGRADE, header::TE, header::TRAILER];

pub struct Front {
    pub role: watch::Receiver<ReplicaState>,
    /// The unfenced store: a follower's readiness probe.
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub status_page: bool,
    /// The configuration as this replica last read it (services for the status page).
    pub config: ConfigView,
    /// This replica's id, sent along with what it forwards.
    pub me: String,
    client: reqwest::Client,
    /// The router of the engine this replica leads with, built once per engine.
    leading: Mutex<Option<(Arc<Engine>, Router)>>,
    /// Check states last read from the store, and when.
    states: Mutex<Option<(std::time::Instant, Arc<States>)>>,
    /// The status page's 90-day bars, shared with the engine's router when leading.
    uptime: Arc<super::uptime::UptimeCache>,
}

impl Front {
    /// Must be called within the Tokio runtime: with the status page on, the first
    /// reading of its uptime history starts here.
    pub fn new(
        role: watch::Receiver<ReplicaState>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        status_page: bool,
        config: ConfigView,
        me: String,
    ) -> Front {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(3))
            // A leader that stopped answering (paused, partitioned) fails the request
            // instead of holding it open; live streams send a keep-alive every 15 s.
            .read_timeout(std::time::Duration::from_secs(30))
            .build()
            .expect("an HTTP client without custom TLS roots builds");
        let uptime = Arc::new(super::uptime::UptimeCache::default());
        if status_page {
            uptime.warm(&config.get(), &store);
        }
        Front { role, store, metrics, status_page, config, me, client, leading: Mutex::new(None), states: Mutex::new(None), uptime }
    }

    /// The check states the leader stored (health changes are stored before anything
    /// acts on them), read at most once per [`STATES_FRESH_FOR`].
    async fn stored_states(&self) -> Result<Arc<States>, StoreError> {
        if let Some((at, states)) = &*self.states.lock().expect("states cache lock")
            && at.elapsed() < STATES_FRESH_FOR
        {
            return Ok(states.clone());
        }
        let states: Arc<States> = Arc::new(self.store.load_states().await?.into_iter().map(|s| (s.check.clone(), s)).collect());
        *self.states.lock().expect("states cache lock") = Some((std::time::Instant::now(), states.clone()));
        Ok(states)
    }

    fn engine_router(&self, engine: &Arc<Engine>) -> Router {
        let mut cached = self.leading.lock().expect("router cache lock");
        match &*cached {
            Some((e, r)) if Arc::ptr_eq(e, engine) => r.clone(),
            _ => {
                let r = super::router(Arc::new(AppState {
                    engine: engine.clone(),
                    status_page: self.status_page,
                    uptime: self.uptime.clone(),
                }));
                *cached = Some((engine.clone(), r.clone()));
                r
            }
        }
    }
}

pub fn router(front: Arc<Front>) -> Router {
    Router::new().fallback(dispatch).with_state(front)
}

async fn dispatch(State(front): State<Arc<Front>>, req: Request) -> Response {
    let role = front.role.borrow().clone();
    if req.uri().path() == "/health/ready" {
        return ready(&front, &role).await;
    }
    if let Some(engine) = &role.engine {
        let router = front.engine_router(engine);
        return router.oneshot(req).await.unwrap_or_else(|never| match never {});
    }
    match req.uri().path() {
        "/health" => Json(json!({"status": "ok"})).into_response(),
        path @ ("/" | "/status.json") if front.status_page && matches!(*req.method(), Method::GET | Method::HEAD) => {
            public_status(&front, path == "/status.json").await
        }
        "/metrics" => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], front.metrics.render()).into_response()
        }
        _ => forward(&front, &role, req).await,
    }
}

/// Ready when the store answers (writes, for the leader through its fence): a follower
/// is ready too — it serves by forwarding, and a rolling upgrade must see it ready.
async fn ready(front: &Front, role: &ReplicaState) -> Response {
    let now = crate::clock::now();
    let lease = role.lease.as_ref().map(|l| {
        json!({
            "holder": l.holder,
            "term": l.term,
            "acquired_at": l.acquired_at,
            "renewed_at": l.renewed_at,
            "expires_at": l.expires_at,
            "age_seconds": (now - l.acquired_at).num_milliseconds() as f64 / 1000.0,
            "renewed_seconds_ago": (now - l.renewed_at).num_milliseconds() as f64 / 1000.0,
        })
    });
    let store = role.engine.as_ref().map_or(&front.store, |e| &e.store);
    let name = if role.engine.is_some() { "leader" } else { "follower" };
    // Bounded: a probe to a store that does not answer is a "no", not a hung request.
    let probe = tokio::time::timeout(READY_PROBE_TIMEOUT, store.probe_writable())
        .await
        .unwrap_or_else(|_| Err(crate::store::StoreError::Unavailable(format!("no answer within {READY_PROBE_TIMEOUT:?}"))));
    let body = |status: &str, reason: Option<String>| json!({"status": status, "role": name, "replica": front.me, "lease": lease, "leader_address": role.leader_address, "reason": reason});
    match probe {
        Ok(()) if role.store_reachable => Json(body("ready", None)).into_response(),
        Ok(()) => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(body("not_ready", Some("the leadership could not be read".into())))).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(body("not_ready", Some(format!("store is not writable: {e}"))))).into_response(),
    }
}

/// The public status page (or its JSON twin) from the stored check states.
async fn public_status(front: &Front, as_json: bool) -> Response {
    let states = match front.stored_states().await {
        Ok(s) => s,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let config = front.config.get();
    let checks = super::incidents::service_checks(&config, &states);
    super::public_status(&config, &checks, &front.store, &front.uptime, as_json).await
}

async fn forward(front: &Front, role: &ReplicaState, req: Request) -> Response {
    let no_leader =
        |why: &str| ApiError::new(Code::NoLeader, format!("this replica does not lead and {why}; retry shortly")).into_response();
    if req.headers().contains_key(&FORWARDED_BY) {
        return no_leader("the request was already forwarded to it by another replica");
    }
    let Some(leader) = role.leader_address.as_deref() else {
        return no_leader("no leader is known yet");
    };
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, guard::MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => return ApiError::new(Code::PayloadTooLarge, "the request body is too large").into_response(),
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut out = front.client.request(parts.method.clone(), format!("{}{path}", leader.trim_end_matches('/'))).body(body);
    for (name, value) in &parts.headers {
        // The body is re-sent whole: the client sets its length.
        if !HOP_HEADERS.contains(name) && name != header::CONTENT_LENGTH {
            out = out.header(name, value);
        }
    }
    out = out.header(FORWARDED_BY, HeaderValue::from_str(&front.me).unwrap_or(HeaderValue::from_static("replica")));
    let resp = match out.send().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(leader, error = %e, "could not forward a request to the leader");
            return no_leader("the leader cannot be reached");
        }
    };
    let mut back = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if !HOP_HEADERS.contains(name) {
            back = back.header(name, value);
        }
    }
    // Streamed, so a run's live log (server-sent events) flows through as it comes.
    back.body(Body::from_stream(resp.bytes_stream())).unwrap_or_else(|_| no_leader("the leader's answer could not be relayed"))
}
