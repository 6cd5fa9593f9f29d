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
    /// The request is valid but does not apply to the resource's current state.
    Conflict,
    InvalidConfig,
    StoreUnavailable,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::NotFound => "not_found",
            Code::BadRequest => "bad_request",
            Code::Conflict => "conflict",
            Code::InvalidConfig => "invalid_config",
            Code::StoreUnavailable => "store_unavailable",
            Code::Internal => "internal",
        }
    }

    fn status(self) -> StatusCode {
        match self {
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::Conflict => StatusCode::CONFLICT,
            Code::InvalidConfig => StatusCode::UNPROCESSABLE_ENTITY,
            Code::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

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
        tracing::error!(error = %e, "store error while serving an API request");
        ApiError::new(Code::StoreUnavailable, "the store could not answer; see steward's log")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code.as_str(), "message": self.message}});
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
