//! Rendering: the embedded templates, their filters, and the error page.

use std::sync::LazyLock;

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, Utc};
use minijinja::{Environment, UndefinedBehavior, Value, context};

use super::session::Signed;
use crate::api::error::ApiError;
use crate::auth::Role;

/// Every template, embedded. Names ending in `.html` are HTML-escaped by minijinja
/// unless marked `|safe` (used only for SVG this module draws itself).
const TEMPLATES: &[(&str, &str)] = &[
    ("head.html", include_str!("templates/head.html")),
    ("base.html", include_str!("templates/base.html")),
    ("error.html", include_str!("templates/error.html")),
    ("sign_in.html", include_str!("templates/sign_in.html")),
    ("overview.html", include_str!("templates/overview.html")),
    ("incidents.html", include_str!("templates/incidents.html")),
    ("incident.html", include_str!("templates/incident.html")),
    ("timeline.html", include_str!("templates/timeline.html")),
    ("alerts.html", include_str!("templates/alerts.html")),
    ("alert.html", include_str!("templates/alert.html")),
    ("mute.html", include_str!("templates/mute.html")),
    ("checks.html", include_str!("templates/checks.html")),
    ("check.html", include_str!("templates/check.html")),
    ("runbooks.html", include_str!("templates/runbooks.html")),
    ("runbook.html", include_str!("templates/runbook.html")),
    ("runs.html", include_str!("templates/runs.html")),
    ("oncall.html", include_str!("templates/oncall.html")),
    ("backups.html", include_str!("templates/backups.html")),
    ("backup.html", include_str!("templates/backup.html")),
    ("audit.html", include_str!("templates/audit.html")),
    ("run.html", include_str!("templates/run.html")),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    // A name a template uses but the handler did not pass is an error, not an empty
    // string: the template tests catch it instead of a blank on the page.
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.add_filter("when", when);
    env.add_filter("when_in", when_in);
    env.add_filter("ago", ago);
    env.add_filter("duration", duration);
    env.add_filter("took", took);
    env.add_filter("bytes", bytes);
    for (name, source) in TEMPLATES {
        env.add_template(name, source).unwrap_or_else(|e| panic!("console template {name} does not parse: {e:#}"));
    }
    env
});

/// `2026-12-05 01:23 UTC` from an RFC 3339 time (as the domain types serialise).
fn when(value: Value) -> String {
    match value.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()) {
        Some(t) => t.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None if value.is_none() || value.is_undefined() => "—".into(),
        None => value.to_string(),
    }
}

/// `2026-12-05 09:00 CET` from an RFC 3339 time, in the IANA zone `zone` (a schedule's:
/// shifts hand over at local times); [`when`]'s UTC for a zone it does not know.
fn when_in(value: Value, zone: &str) -> String {
    let Ok(tz) = zone.parse::<chrono_tz::Tz>() else { return when(value) };
    match value.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()) {
        Some(t) => t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string(),
        None => when(value),
    }
}

/// `3m ago` from an RFC 3339 time.
fn ago(value: Value) -> String {
    let Some(t) = value.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok()) else { return "—".into() };
    let s = (crate::clock::now() - t.with_timezone(&Utc)).num_seconds();
    match s {
        ..0 => "in the future".into(),
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        3600..86400 => format!("{}h ago", s / 3600),
        _ => format!("{}d ago", s / 86400),
    }
}

/// How long from `start` to `end` (both RFC 3339), `duration`-formatted; "running"
/// without an end.
fn took(start: Value, end: Value) -> String {
    let parse = |v: &Value| v.as_str().and_then(|s| DateTime::parse_from_rfc3339(s).ok());
    match (parse(&start), parse(&end)) {
        (Some(a), Some(b)) => duration(Value::from((b - a).num_milliseconds())),
        (Some(_), None) => "running".into(),
        _ => "—".into(),
    }
}

/// `1.5 MiB` from a number of bytes.
fn bytes(value: Value) -> String {
    let Some(n) = value.as_i64() else { return "—".into() };
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// `1m 5s` from a number of milliseconds.
fn duration(value: Value) -> String {
    let Some(ms) = value.as_i64() else { return "—".into() };
    let s = ms / 1000;
    match s {
        ..1 => format!("{ms} ms"),
        1..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// A console page for the signed-in person: `ctx` plus who they are, what they may do,
/// the session's CSRF token for forms, and which section the menu marks.
pub(super) fn page(who: &Signed, section: &str, template: &str, ctx: Value) -> Result<Response, PageError> {
    let me = context! {
        name => who.token.name,
        role => who.token.role.as_str(),
        can_operate => who.token.role >= Role::Operator,
    };
    render(template, context! { me, csrf => who.csrf, section, ..ctx })
}

pub(super) fn render(template: &str, ctx: Value) -> Result<Response, PageError> {
    Ok(Html(render_fragment(template, ctx)?).into_response())
}

/// A template rendered to text: a whole page, or a fragment a live stream sends.
pub(super) fn render_fragment(template: &str, ctx: Value) -> Result<String, PageError> {
    ENV.get_template(template).and_then(|t| t.render(ctx)).map_err(|e| {
        tracing::error!(template, error = %format!("{e:#}"), "console template failed to render");
        PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "this page failed to render (a bug in steward; its log says more)")
    })
}

/// An error shown as a page: the status, what went wrong in words, a way back.
#[derive(Debug)]
pub(super) struct PageError {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl PageError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError { status, message: message.into() }
    }
    pub(super) fn not_found(what: &str, name: impl std::fmt::Display) -> PageError {
        PageError::new(StatusCode::NOT_FOUND, format!("no {what} `{name}`"))
    }
}

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> PageError {
        let mut message = e.message;
        if let Some(details) = e.details.as_ref().and_then(|d| d["params"].as_array()) {
            message = details.iter().filter_map(|p| p.as_str()).collect::<Vec<_>>().join("; ");
        }
        PageError { status: e.code.status(), message }
    }
}

impl From<crate::store::StoreError> for PageError {
    fn from(e: crate::store::StoreError) -> PageError {
        ApiError::from(e).into()
    }
}

/// A posted form as `T`; a field `T` does not take, or a malformed one, is a 422 page
/// that names it (the `_csrf` field was taken out by the session guard).
pub(super) struct Posted<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Posted<T> {
    type Rejection = PageError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Posted<T>, PageError> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(v)) => Ok(Posted(v)),
            Err(rejection) => Err(PageError::new(StatusCode::UNPROCESSABLE_ENTITY, rejection.body_text())),
        }
    }
}

/// A page's query string as `T`; a parameter `T` does not take, or a malformed one
/// (`?before=abc`), is a 400 page that names it rather than the API's JSON error.
pub(super) struct Params<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Params<T>, PageError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(Params(v)),
            Err(rejection) => Err(PageError::new(StatusCode::BAD_REQUEST, rejection.body_text())),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = ENV
            .get_template("error.html")
            .and_then(|t| t.render(context! { status => self.status.as_u16(), title, message => self.message }))
            .unwrap_or_else(|_| "steward: error".to_string());
        (self.status, Html(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_parses_and_filters_format() {
        for (name, _) in TEMPLATES {
            ENV.get_template(name).unwrap();
        }
        assert_eq!(when(Value::from("2026-12-05T01:02:03.456Z")), "2026-12-05 01:02:03 UTC");
        assert_eq!(when(Value::from(())), "—");
        assert_eq!(when_in(Value::from("2026-12-05T08:00:00Z"), "Europe/Berlin"), "2026-12-05 09:00 CET");
        assert_eq!(when_in(Value::from("2026-07-05T08:00:00Z"), "Europe/Berlin"), "2026-07-05 10:00 CEST");
        assert_eq!(when_in(Value::from("2026-12-05T08:00:00Z"), "Mars/Olympus"), "2026-12-05 08:00:00 UTC");
        assert_eq!(duration(Value::from(65_000)), "1m 5s");
        assert_eq!(duration(Value::from(250)), "250 ms");
        assert_eq!(duration(Value::from(7_260_000)), "2h 1m");
        assert_eq!(took(Value::from("2026-12-05T01:00:00Z"), Value::from("2026-12-05T01:01:05Z")), "1m 5s");
        assert_eq!(took(Value::from("2026-12-05T01:00:00Z"), Value::from(())), "running");
        assert_eq!((bytes(Value::from(512)), bytes(Value::from(1_572_864))), ("512 B".to_string(), "1.5 MiB".to_string()));
    }

    #[test]
    fn what_people_typed_is_escaped() {
        let html = render_fragment("error.html", context! { status => 409, title => "Conflict", message => "<script>x</script>" }).unwrap();
        assert!(html.contains("&lt;script&gt;x&lt;&#x2f;script&gt;") && !html.contains("<script>x"), "{html}");
        let r = PageError::new(StatusCode::CONFLICT, "<b>").into_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
    }
}
