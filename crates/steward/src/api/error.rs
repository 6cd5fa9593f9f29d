//! API errors: one JSON shape, `{"error": {"code": ..., "message": ...}}`, with stable
//! codes mapped to HTTP statuses in exactly one place.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Unauthorized,
    Forbidden,
    NotFound,
    BadRequest,
    /// A request body field or query parameter the operation does not take (400).
    UnknownField,
    MethodNotAllowed,
    PayloadTooLarge,
    UriTooLong,
    UnsupportedMediaType,
    /// The request is valid but does not apply to the resource's current state.
    Conflict,
    InvalidConfig,
    StoreUnavailable,
    /// A replica that does not lead cannot reach the one that does (failover under way).
    NoLeader,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::BadRequest => "bad_request",
            Code::UnknownField => "unknown_field",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UriTooLong => "uri_too_long",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::Conflict => "conflict",
            Code::InvalidConfig => "invalid_config",
            Code::StoreUnavailable => "store_unavailable",
            Code::NoLeader => "no_leader",
            Code::Internal => "internal",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::BadRequest | Code::UnknownField => StatusCode::BAD_REQUEST,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UriTooLong => StatusCode::URI_TOO_LONG,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::Conflict => StatusCode::CONFLICT,
            Code::InvalidConfig => StatusCode::UNPROCESSABLE_ENTITY,
            Code::StoreUnavailable | Code::NoLeader => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The longest error message the API sends; longer ones are cut and marked.
pub const MAX_MESSAGE_CHARS: usize = 1_000;

#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), details: None }
    }

    pub fn not_found(what: &str, name: &str) -> ApiError {
        ApiError::new(Code::NotFound, format!("no {what} named `{name}`"))
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> ApiError {
        if let crate::store::StoreError::Fenced(why) = &e {
            tracing::warn!(why, "a write was refused: this replica no longer leads");
            return ApiError::new(Code::NoLeader, "this replica no longer leads; retry, and the request reaches the new leader");
        }
        tracing::error!(error = %e, "store error while serving an API request");
        ApiError::new(Code::StoreUnavailable, "the store could not answer; see steward's log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Messages quote what was sent (a name, a value); never a megabyte of it.
        let message = crate::bounds::cut(&self.message, MAX_MESSAGE_CHARS);
        let mut body = json!({"error": {"code": self.code.as_str(), "message": message}});
        if let Some(d) = self.details {
            body["error"]["details"] = d;
        }
        let mut resp = (self.code.status(), Json(body)).into_response();
        if self.code == Code::Unauthorized {
            resp.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer realm=\"steward\""));
        }
        resp
    }
}
