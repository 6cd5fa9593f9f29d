//! Signing in and out, and the guard every signed-in route passes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Duration;
use minijinja::context;
use rand::Rng;
use serde::Deserialize;

use super::view::{PageError, Params, Posted, render};
use crate::api::AppState;
use crate::auth::{Role, TokenInfo, hash_secret};

/// The cookie that holds the session id.
const COOKIE: &str = "steward_session";
/// How long a session lasts from sign-in: a long on-call shift, not a week.
pub(super) const SESSION_HOURS: i64 = 12;
/// The form field every POST in a session carries.
const CSRF_FIELD: &str = "_csrf";

/// The person behind a console request: their token and the session's CSRF token.
#[derive(Clone)]
pub(super) struct Signed {
    pub(super) token: TokenInfo,
    pub(super) csrf: String,
    /// The hash of the session id, to sign out.
    id_hash: String,
}

impl Signed {
    /// The role this action needs, or a 403 page that says which.
    pub(super) fn require(&self, role: Role) -> Result<(), PageError> {
        if self.token.role >= role {
            Ok(())
        } else {
            Err(PageError::new(
                StatusCode::FORBIDDEN,
                format!("this needs the {role} role; you are signed in as `{}` with {}", self.token.name, self.token.role),
            ))
        }
    }
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    hex::encode(bytes)
}

fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// `Secure` when people reach steward over https (it serves TLS itself, or a proxy
/// that does is its external URL): the cookie then never travels in clear text.
fn cookie_attributes(s: &AppState) -> &'static str {
    if s.engine.external_url().starts_with("https://") {
        "; Path=/; HttpOnly; SameSite=Strict; Secure"
    } else {
        "; Path=/; HttpOnly; SameSite=Strict"
    }
}

/// Where to go after signing in: a console path only (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/console") && !n.starts_with("//") && !n.contains('\\') => n.to_string(),
        _ => "/console".to_string(),
    }
}

/// A request the browser marks as coming from another site (Fetch Metadata), or whose
/// Origin is neither the Host it was sent to nor the external URL (a proxy may rewrite
/// Host): refused before any form is read.
fn cross_site(headers: &HeaderMap, external_url: &str) -> bool {
    if headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).is_some_and(|v| v == "cross-site" || v == "same-site") {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else { return false };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin.split_once("://").map(|(_, h)| h);
    origin_host.is_none() || (origin_host != host && origin.trim_end_matches('/') != external_url.trim_end_matches('/'))
}

#[derive(Deserialize, Default)]
pub(super) struct NextQuery {
    next: Option<String>,
}

pub(super) async fn sign_in_page(Params(q): Params<NextQuery>) -> Result<Response, PageError> {
    render("sign_in.html", context! { next => safe_next(q.next.as_deref()), error => None::<String> })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SignIn {
    token: String,
    next: Option<String>,
}

pub(super) async fn sign_in(State(s): State<Arc<AppState>>, headers: HeaderMap, Posted(f): Posted<SignIn>) -> Result<Response, PageError> {
    if cross_site(&headers, s.engine.external_url()) {
        return Err(PageError::new(StatusCode::FORBIDDEN, "sign-in from another site is refused"));
    }
    let next = safe_next(f.next.as_deref());
    let id = random_hex();
    let expires = crate::clock::now() + Duration::hours(SESSION_HOURS);
    let Some(token) = s.engine.store.create_session(&hash_secret(&id), &hash_secret(f.token.trim()), &random_hex(), expires).await? else {
        tracing::info!("console sign-in refused: unknown or revoked token");
        let page = render(
            "sign_in.html",
            context! { next, error => "That token is unknown or revoked. Create one with `steward token create NAME --role viewer`." },
        )?;
        return Ok((StatusCode::UNAUTHORIZED, page).into_response());
    };
    tracing::info!(token = %token.name, role = %token.role, "console sign-in");
    let cookie = format!("{COOKIE}={id}; Max-Age={}{}", SESSION_HOURS * 3600, cookie_attributes(&s));
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("hex and ASCII attributes"));
    Ok(response)
}

pub(super) async fn sign_out(State(s): State<Arc<AppState>>, axum::Extension(who): axum::Extension<Signed>) -> Result<Response, PageError> {
    s.engine.store.end_session(&who.id_hash).await?;
    tracing::info!(token = %who.token.name, "console sign-out");
    let mut response = Redirect::to("/console/sign-in").into_response();
    let cookie = format!("{COOKIE}=; Max-Age=0{}", cookie_attributes(&s));
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("ASCII"));
    Ok(response)
}

/// The guard of every signed-in route: a live session, and for a POST a same-site
/// request whose `_csrf` field is the session's token. The field is taken out of the
/// form before the handler reads it, so forms can refuse unknown fields.
pub(super) async fn signed_in(State(s): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let is_read = req.method() == Method::GET || req.method() == Method::HEAD;
    let session = match session_cookie(req.headers()) {
        Some(id) => match s.engine.store.session(&hash_secret(&id), crate::clock::now()).await {
            Ok(found) => found.map(|session| (hash_secret(&id), session)),
            Err(e) => return PageError::from(e).into_response(),
        },
        None => None,
    };
    let Some((id_hash, session)) = session else {
        if is_read {
            let path = req.uri().path_and_query().map_or("/console", |p| p.as_str());
            let target = format!("/console/sign-in?next={}", url::form_urlencoded::byte_serialize(path.as_bytes()).collect::<String>());
            return Redirect::to(&target).into_response();
        }
        return PageError::new(StatusCode::FORBIDDEN, "your session has ended (signed out, expired or its token revoked); sign in again")
            .into_response();
    };
    let signed = Signed { token: session.token, csrf: session.csrf, id_hash };
    let mut req = req;
    if !is_read {
        if cross_site(req.headers(), s.engine.external_url()) {
            return PageError::new(StatusCode::FORBIDDEN, "a form sent from another site is refused").into_response();
        }
        let (parts, body) = req.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, crate::api::guard::MAX_BODY_BYTES).await else {
            return PageError::new(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response();
        };
        let mut token = None;
        let mut rest = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(&bytes) {
            if k == CSRF_FIELD {
                token = Some(v.into_owned());
            } else {
                rest.append_pair(&k, &v);
            }
        }
        let valid = token.is_some_and(|t| constant_time_eq(t.as_bytes(), signed.csrf.as_bytes()));
        if !valid {
            tracing::warn!(token = %signed.token.name, path = %parts.uri.path(), "console form refused: missing or wrong CSRF token");
            return PageError::new(
                StatusCode::FORBIDDEN,
                "this form was not sent from this console session (missing or stale CSRF token); reload the page and try again",
            )
            .into_response();
        }
        req = Request::from_parts(parts, Body::from(rest.finish()));
    }
    req.extensions_mut().insert(signed);
    next.run(req).await
}

/// Compares without stopping at the first difference, so timing says nothing about
/// how much of a guessed token was right.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_in_the_console() {
        assert_eq!(safe_next(Some("/console/incidents/3")), "/console/incidents/3");
        assert_eq!(safe_next(Some("https://evil.example/")), "/console");
        assert_eq!(safe_next(Some("//evil.example/console")), "/console");
        assert_eq!(safe_next(Some("/console\\@evil")), "/console");
        assert_eq!(safe_next(None), "/console");
    }

    #[test]
    fn cross_site_requests_are_recognised() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            m
        };
        let ext = "https://steward.example.com";
        assert!(!cross_site(&h(&[("host", "127.0.0.1:8080")]), ext));
        assert!(!cross_site(
            &h(&[("host", "127.0.0.1:8080"), ("origin", "http://127.0.0.1:8080"), ("sec-fetch-site", "same-origin")]),
            ext
        ));
        assert!(!cross_site(&h(&[("host", "127.0.0.1:8080"), ("origin", "https://steward.example.com")]), ext), "behind a proxy");
        assert!(cross_site(&h(&[("host", "127.0.0.1:8080"), ("origin", "http://evil.example")]), ext));
        assert!(cross_site(&h(&[("host", "127.0.0.1:8080"), ("origin", "null")]), ext));
        assert!(cross_site(&h(&[("host", "127.0.0.1:8080"), ("sec-fetch-site", "cross-site")]), ext));
        assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"ab", b"abc"));
    }

    #[test]
    fn cookies_are_found_among_others() {
        let mut m = HeaderMap::new();
        m.insert(header::COOKIE, HeaderValue::from_static("a=1; steward_session=abc; b=2"));
        assert_eq!(session_cookie(&m).as_deref(), Some("abc"));
        m.insert(header::COOKIE, HeaderValue::from_static("steward_sessionx=no"));
        assert_eq!(session_cookie(&m), None);
    }
}
