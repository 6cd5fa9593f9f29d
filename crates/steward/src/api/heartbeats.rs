//! `POST /api/v1/heartbeats/{check}` (and `…/fail`): a job's signal for its push
//! (`heartbeat`) check. The credential is the check's own token, sent as
//! `Authorization: Bearer …` — not an API token, so a cron job can signal one check and
//! do nothing else, and not in the URL, which proxies and shells keep in their logs.
//! An unknown check and a wrong token get the same 401, so the endpoint does not tell
//! which checks exist. The check is run at once after the signal, so its health
//! follows the job without waiting for its interval.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::{ApiError, Code};
use crate::config::Probe;

pub(super) async fn ok(s: State<Arc<AppState>>, check: Path<String>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    signal(s, check, headers, true).await
}

pub(super) async fn fail(s: State<Arc<AppState>>, check: Path<String>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    signal(s, check, headers, false).await
}

async fn signal(
    State(s): State<Arc<AppState>>,
    Path(check): Path<String>,
    headers: HeaderMap,
    ok: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let refused = || {
        ApiError::new(
            Code::Unauthorized,
            "no heartbeat check by that name takes this token: send `Authorization: Bearer <the check's heartbeat token>`",
        )
    };
    let sent = headers.get(axum::http::header::AUTHORIZATION).and_then(super::auth::bearer_value).ok_or_else(refused)?;
    let config = s.engine.config();
    let expected = config.check(&check).and_then(|spec| match &spec.probe {
        Probe::Heartbeat(p) => Some(p.token.expose().trim().to_string()),
        _ => None,
    });
    // Digests compared, not the secrets: equal-length digests of any input, so the
    // comparison's time says nothing about the token.
    let same = expected.is_some_and(|e| Sha256::digest(e.as_bytes()) == Sha256::digest(sent.as_bytes()));
    if !same {
        return Err(refused());
    }
    let at = crate::clock::now();
    let heartbeat = s.engine.store.record_heartbeat(&check, at, ok).await?;
    tracing::info!(check = %check, ok, "heartbeat received");
    let outcome = s.engine.checks.run_now(&check).await;
    Ok(Json(json!({
        "check": check,
        "signal": if ok { "ok" } else { "fail" },
        "at": at,
        "signals": heartbeat.signals,
        "healthy": outcome.map(|o| o.healthy),
    })))
}
