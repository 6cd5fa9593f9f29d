//! The web console under `/console`: server-rendered pages for the people who operate
//! the system — overview, checks, incidents, alerts and silences, on-call (with iCal
//! feeds), runbooks and runs, backups, audit.
//!
//! - **Sign-in** turns a pasted token into a session kept in the store (see
//!   [`crate::store::Store::create_session`]): the browser holds only a random id in an
//!   `HttpOnly`, `SameSite=Strict` cookie (`Secure` when the external URL is https).
//!   Sign-out, expiry and revoking the token end it, on every replica.
//! - **Every POST** passes [`signed_in`], which refuses it without a live session, when
//!   the browser says it came from another site, or when its `_csrf` field is not the
//!   session's token — so no handler can forget. Handlers then check the role, the same
//!   role the API asks for the same action; templates hide the buttons a viewer could
//!   not use, and the server refuses them anyway.
//! - **Same domain calls as the API**: handlers call the incident manager, runbook
//!   control and silence validation the JSON API calls; only the shape of the answer
//!   differs (a page or a redirect back to it instead of JSON).
//! - **Pages work without JavaScript.** Actions are plain forms answered with
//!   303 See Other (post/redirect/get). `console.js` adds only the live parts: a run's
//!   log over SSE and an incident's timeline refreshing, paused while the tab is hidden.
//!   Everything is embedded in the binary; no CDN, no build step (why no htmx: see
//!   ARCHITECTURE.md).

mod alerts;
mod backups;
mod checks;
mod incidents;
mod oncall;
mod overview;
mod runs;
mod session;
mod view;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::AppState;
use view::PageError;

pub(super) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let signed = Router::new()
        .route("/console", get(overview::show))
        .route("/console/checks", get(checks::list))
        .route("/console/checks/{name}", get(checks::show))
        .route("/console/incidents", get(incidents::list))
        .route("/console/incidents/{id}", get(incidents::show))
        .route("/console/incidents/{id}/timeline", get(incidents::timeline_fragment))
        .route("/console/incidents/{id}/postmortem", get(incidents::postmortem))
        .route("/console/incidents/{id}/notes", post(incidents::note))
        .route("/console/incidents/{id}/{action}", post(incidents::act))
        .route("/console/alerts", get(alerts::page_of))
        .route("/console/alerts/{fingerprint}", get(alerts::show))
        .route("/console/silences", post(alerts::create_silence))
        .route("/console/silences/{id}/expire", post(alerts::expire_silence))
        .route("/console/oncall", get(oncall::show))
        .route("/console/oncall/{schedule}/overrides", post(oncall::add_override))
        .route("/console/runbooks", get(runs::runbooks))
        .route("/console/runbooks/{name}", get(runs::runbook).post(runs::start))
        .route("/console/runs", get(runs::list))
        .route("/console/runs/{id}", get(runs::show))
        .route("/console/runs/{id}/log", get(runs::log))
        .route("/console/runs/{id}/{action}", post(runs::act))
        .route("/console/backups", get(backups::list))
        .route("/console/backups/{id}", get(backups::show))
        .route("/console/backups/{id}/verify", post(backups::verify))
        .route("/console/backups/{id}/restore-plan", post(backups::restore_plan))
        .route("/console/audit", get(backups::audit))
        .route("/console/sign-out", post(session::sign_out))
        .route_layer(middleware::from_fn_with_state(state, session::signed_in));
    Router::new()
        .route("/console/sign-in", get(session::sign_in_page).post(session::sign_in))
        .route("/console/assets/{file}", get(asset))
        .route("/console/calendar/{kind}/{name}/{file}", get(oncall::feed))
        .merge(signed)
        .layer(middleware::from_fn(headers))
}

/// What every console response carries: no caching of pages that show internal state,
/// no framing (clickjacking), scripts and styles only from the console's own assets;
/// and `Server-Timing` with the time the server took (what `bench/console.sh` reads;
/// browsers show it in their network panel).
async fn headers(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(req).await;
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={took_ms:.2}")) {
        h.insert("server-timing", v);
    }
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}

/// The embedded stylesheet and script. Public: they hold nothing about the system.
async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (include_str!("assets/console.css"), "text/css; charset=utf-8"),
        "console.js" => (include_str!("assets/console.js"), "text/javascript; charset=utf-8"),
        _ => return PageError::new(StatusCode::NOT_FOUND, "no such file").into_response(),
    };
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "public, max-age=300")], body).into_response()
}
