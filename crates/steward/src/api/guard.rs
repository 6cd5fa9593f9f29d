//! What every request passes through, so that no handler has to remember it:
//!
//! - [`outer`] (around the whole router): a panic in a handler answers a JSON 500 and
//!   is counted (`steward_panics_total{where="http"}`) instead of dropping the
//!   connection; an over-long URI is refused; and every 4xx/5xx that is not already
//!   JSON (axum's extractor rejections, 405, the body-limit 413) is rewritten into the
//!   one documented error shape with a stable code.
//! - [`strict`] (before routing, on the full path): query parameters and request
//!   bodies are checked against the operation the OpenAPI document describes. A parameter the
//!   operation does not declare is refused, as is any body sent to an operation that
//!   takes none — a misspelled `dryRun` must never fall through to the real action.
//!   Operations with a body refuse unknown fields in their own types
//!   (`#[serde(deny_unknown_fields)]`, read through [`body`]), and the OpenAPI walk test
//!   checks both against the document.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::error::{ApiError, Code};
use crate::bounds::cut;
use crate::config::diagnostics::closest;
use crate::telemetry::Metrics;

/// Request bodies larger than this are refused (413) before a handler reads them.
pub(super) const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Path plus query string; longer URIs are refused (414).
pub(super) const MAX_URI_BYTES: usize = 8 * 1024;

/// What the OpenAPI document declares for one operation.
struct Operation {
    query: Vec<String>,
    has_body: bool,
}

/// `(METHOD, path template)` → operation, read once from the embedded document.
static OPERATIONS: LazyLock<HashMap<(String, String), Operation>> = LazyLock::new(|| {
    let doc: serde_json::Value = serde_json::from_str(super::OPENAPI).expect("the embedded OpenAPI document is valid JSON");
    let mut out = HashMap::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        let shared: Vec<&serde_json::Value> = item["parameters"].as_array().into_iter().flatten().collect();
        for (method, op) in item.as_object().into_iter().flatten() {
            if method == "parameters" {
                continue;
            }
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(shared.iter().copied())
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect();
            out.insert((method.to_uppercase(), path.clone()), Operation { query, has_body: !op["requestBody"].is_null() });
        }
    }
    out
});

/// The documented operation a request is for: its path matched segment by segment
/// against the document's templates, literal segments preferred over `{parameters}`
/// (`/incidents/1/acknowledge` is its own operation, not `/incidents/{id}/{action}`).
fn operation(method: &str, path: &str) -> Option<(&'static str, &'static Operation)> {
    let segments: Vec<&str> = path.split('/').collect();
    OPERATIONS
        .iter()
        .filter(|((m, _), _)| m == method)
        .filter_map(|((_, template), op)| {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (p, s) in parts.iter().zip(&segments) {
                if p.starts_with('{') && p.ends_with('}') {
                    continue;
                }
                if p != s {
                    return None;
                }
                literal += 1;
            }
            Some((literal, template.as_str(), op))
        })
        .max_by_key(|(literal, _, _)| *literal)
        .map(|(_, template, op)| (template, op))
}

/// Around the whole router: panics, URI length, one error shape.
pub(super) async fn outer(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > MAX_URI_BYTES {
        return ApiError::new(Code::UriTooLong, format!("the path and query string are longer than {MAX_URI_BYTES} bytes")).into_response();
    }
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = match AssertUnwindSafe(next.run(req)).catch_unwind().await {
        Ok(r) => r,
        Err(payload) => {
            metrics.panic("http");
            let why = crate::telemetry::payload_text(payload.as_ref());
            tracing::error!(%method, path = %cut(&path, 200), panic = %why, "a request handler panicked; answered 500");
            return ApiError::new(Code::Internal, "the request failed unexpectedly (a bug in steward; its log says more)").into_response();
        }
    };
    one_error_shape(response).await
}

/// Rewrites an error response that is not JSON (or an HTML page of ours) into the
/// documented `{"error": {"code", "message"}}`, keeping its status.
async fn one_error_shape(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if content_type.starts_with("application/json") || content_type.starts_with("text/html") {
        return response;
    }
    let allow = response.headers().get(header::ALLOW).cloned();
    let text = axum::body::to_bytes(response.into_body(), 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_string();
    let code = Code::for_status(status);
    let message = match (code, text.is_empty()) {
        (Code::MethodNotAllowed, _) => match &allow {
            Some(a) => format!("this endpoint does not answer this method; it answers {}", a.to_str().unwrap_or("")),
            None => "this endpoint does not answer this method".to_string(),
        },
        (Code::PayloadTooLarge, _) => format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        (_, true) => status.canonical_reason().unwrap_or("error").to_string(),
        (_, false) => text,
    };
    let mut out = ApiError::new(code, message).into_response();
    *out.status_mut() = status;
    if let Some(a) = allow {
        out.headers_mut().insert(header::ALLOW, a);
    }
    out
}

/// Query parameters and bodies checked against the documented operation.
pub(super) async fn strict(req: Request, next: Next) -> Response {
    // HEAD is answered by GET handlers.
    let method = if req.method() == Method::HEAD { "GET".to_string() } else { req.method().as_str().to_string() };
    let Some((route, op)) = operation(&method, req.uri().path()) else {
        // Every route is documented (a unit test holds it); the router answers the rest.
        return next.run(req).await;
    };
    // Query strings are checked on the API. The public pages ignore them: mail and chat
    // tools append their own to links, and no query changes what those pages do.
    if let Some(query) = req.uri().query().filter(|_| route.starts_with("/api/v1/")) {
        let known: Vec<&str> = op.query.iter().map(String::as_str).collect();
        for (name, _) in url::form_urlencoded::parse(query.as_bytes()) {
            if !known.contains(&name.as_ref()) {
                return unknown_field(&name, &known, "query parameter").into_response();
            }
        }
        let mut seen = HashSet::new();
        for (name, _) in url::form_urlencoded::parse(query.as_bytes()) {
            if !seen.insert(name.to_string()) {
                return ApiError::new(Code::BadRequest, format!("query parameter `{}` is given twice", cut(&name, 64))).into_response();
            }
        }
    }
    if op.has_body {
        return next.run(req).await;
    }
    // An operation that takes no body accepts none: `{"dry_run": true}` sent to one
    // would otherwise be ignored while the real action runs.
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(b) => b,
        Err(_) => {
            return ApiError::new(Code::PayloadTooLarge, format!("the request body is larger than {MAX_BODY_BYTES} bytes")).into_response();
        }
    };
    let trimmed = String::from_utf8_lossy(&bytes);
    let trimmed = trimmed.trim();
    if !(trimmed.is_empty() || trimmed == "{}") {
        return ApiError::new(Code::BadRequest, format!("{} {route} takes no request body; send none", parts.method)).into_response();
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

/// A request body as `T` (an empty body is `{}`). Unknown fields are refused naming the
/// field and its nearest valid name; other mistakes say what to send.
pub(super) fn body<T: DeserializeOwned>(bytes: &Bytes, example: &str) -> Result<T, ApiError> {
    let text = if bytes.iter().all(u8::is_ascii_whitespace) { &b"{}"[..] } else { &bytes[..] };
    serde_json::from_slice(text).map_err(|e| {
        let message = e.to_string();
        match parse_unknown_field(&message) {
            Some((field, expected)) => {
                let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
                unknown_field(&field, &expected, "field")
            }
            None => ApiError::new(Code::BadRequest, format!("invalid request body: {}; send {example}", cut(&message, 300))),
        }
    })
}

/// serde's "unknown field `x`, expected `a` or `b`" (or "expected one of `a`, `b`, `c`",
/// or "there are no fields") → the field and the names it could have meant.
fn parse_unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let end = rest.find('`')?;
    let field = rest[..end].to_string();
    let tail = &rest[end + 1..];
    let tail = tail.split(" at line ").next().unwrap_or(tail);
    let expected = tail.split('`').skip(1).step_by(2).map(str::to_string).collect();
    Some((field, expected))
}

/// The 400 for a name the operation does not know, with the nearest valid name.
fn unknown_field(name: &str, known: &[&str], what: &str) -> ApiError {
    let shown = cut(name, 64);
    let nearest = closest(&name.to_ascii_lowercase().replace('-', "_"), known.iter().copied())
        .or_else(|| known.iter().copied().find(|k| k.replace('_', "").eq_ignore_ascii_case(&name.replace(['-', '_'], ""))));
    let message = match (nearest, known.is_empty()) {
        (Some(k), _) => format!("unknown {what} `{shown}`; did you mean `{k}`?"),
        (None, true) => format!("unknown {what} `{shown}`; this operation takes none"),
        (None, false) => format!("unknown {what} `{shown}`; known: {}", known.join(", ")),
    };
    ApiError { code: Code::UnknownField, message, details: Some(json!({ "field": shown, "did_you_mean": nearest, "known": known })) }
}

impl Code {
    /// The code for a status produced outside our handlers (axum's own rejections).
    fn for_status(status: StatusCode) -> Code {
        match status {
            StatusCode::UNAUTHORIZED => Code::Unauthorized,
            StatusCode::FORBIDDEN => Code::Forbidden,
            StatusCode::NOT_FOUND => Code::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Code::MethodNotAllowed,
            StatusCode::CONFLICT => Code::Conflict,
            StatusCode::PAYLOAD_TOO_LARGE => Code::PayloadTooLarge,
            StatusCode::URI_TOO_LONG => Code::UriTooLong,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Code::UnsupportedMediaType,
            s if s.is_client_error() => Code::BadRequest,
            StatusCode::SERVICE_UNAVAILABLE => Code::StoreUnavailable,
            _ => Code::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler that panics answers the documented JSON 500, is counted, and the server
    /// goes on answering.
    #[tokio::test]
    async fn a_panicking_handler_answers_json_500_and_is_counted() {
        use axum::routing::get;
        async fn boom() -> &'static str {
            panic!("boom")
        }
        let metrics = Arc::new(Metrics::new());
        let app = axum::Router::new()
            .route("/boom", get(boom))
            .route("/fine", get(|| async { "fine" }))
            .layer(axum::middleware::from_fn_with_state(metrics.clone(), outer));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::new();
        let resp = client.get(format!("{base}/boom")).send().await.unwrap();
        assert_eq!(resp.status(), 500);
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "internal", "{v}");
        assert!(metrics.render().contains(r#"steward_panics_total{where="http"} 1"#), "{}", metrics.render());
        assert_eq!(client.get(format!("{base}/fine")).send().await.unwrap().text().await.unwrap(), "fine");
    }

    #[test]
    fn unknown_fields_name_the_nearest_valid_one() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Prune {
            policy: String,
            #[serde(default)]
            dry_run: bool,
        }
        for (sent, nearest) in [("dryRun", "dry_run"), ("dry-run", "dry_run"), ("dryrun", "dry_run"), ("polcy", "policy")] {
            let bytes = Bytes::from(format!(r#"{{"policy": "p", "{sent}": true}}"#));
            let e = body::<Prune>(&bytes, "{}").unwrap_err();
            assert_eq!(e.code, Code::UnknownField, "{sent}");
            assert!(e.message.contains(&format!("did you mean `{nearest}`")), "{sent}: {}", e.message);
        }
        let e = body::<Prune>(&Bytes::from(r#"{"zzzzzzzz": 1}"#), "{}").unwrap_err();
        assert!(e.message.contains("known: policy, dry_run"), "{}", e.message);
    }

    #[test]
    fn echoed_input_is_cut() {
        let long = "x".repeat(10_000);
        let e = unknown_field(&long, &["a"], "field");
        assert!(e.message.len() < 200, "{}", e.message.len());
        assert_eq!(cut("héllo", 2), "hé…");
    }

    /// The strict checks can only hold for routes the document describes: every route
    /// the router declares (read from its source) must match a documented path.
    #[test]
    fn every_route_is_documented() {
        let source = include_str!("mod.rs");
        let re = regex::Regex::new(r#"\.route\("([^"]+)""#).unwrap();
        let api_start = source.find("let api = Router::new()").unwrap();
        let api_end = source[api_start..].find(".fallback(").unwrap() + api_start;
        let documented: Vec<Vec<&str>> = OPERATIONS.keys().map(|(_, p)| p.split('/').collect()).collect();
        let mut routes = 0;
        for c in re.captures_iter(source) {
            let at = c.get(0).unwrap().start();
            let path = if (api_start..api_end).contains(&at) { format!("/api/v1{}", &c[1]) } else { c[1].to_string() };
            let segments: Vec<&str> = path.split('/').collect();
            let found = documented.iter().any(|d| {
                d.len() == segments.len() && d.iter().zip(&segments).all(|(d, s)| d == s || (s.starts_with('{') && s.ends_with('}')))
            });
            assert!(found, "route {path} is not in openapi.json");
            routes += 1;
        }
        assert!(routes > 50, "{routes}");
    }

    #[test]
    fn every_documented_operation_is_known() {
        assert!(OPERATIONS.len() > 60, "{}", OPERATIONS.len());
        let op = &OPERATIONS[&("POST".to_string(), "/api/v1/runs/{id}/cancel".to_string())];
        assert!(op.has_body);
        let op = &OPERATIONS[&("GET".to_string(), "/api/v1/runs".to_string())];
        assert_eq!(op.query, ["runbook", "status", "before", "limit"]);
        assert_eq!(operation("POST", "/api/v1/incidents/7/acknowledge").unwrap().0, "/api/v1/incidents/{id}/acknowledge");
        assert_eq!(operation("GET", "/api/v1/incidents/stats").unwrap().0, "/api/v1/incidents/stats");
        assert_eq!(operation("GET", "/api/v1/incidents/7").unwrap().0, "/api/v1/incidents/{id}");
        assert!(operation("GET", "/api/v1/nope").is_none());
        assert_eq!(operation("GET", "/api/v1/action-items").unwrap().1.query, ["state"]);
    }
}
