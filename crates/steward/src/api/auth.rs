//! Bearer-token authentication for `/api/v1`. A missing or unknown token is 401, a
//! token whose role is too low is 403; both say what to do.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::error::{ApiError, Code};
use crate::auth::{Role, TokenInfo, hash_secret};

/// The authenticated caller of a request.
pub struct Caller(pub TokenInfo);

impl Caller {
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.0.role >= role {
            Ok(())
        } else {
            Err(ApiError::new(Code::Forbidden, format!("this needs the {role} role; token `{}` has {}", self.0.name, self.0.role)))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Caller, ApiError> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
            ApiError::new(
                Code::Unauthorized,
                "missing bearer token: send `Authorization: Bearer <token>` (create one with `steward token create`)",
            )
        })?;
        let secret =
            bearer_value(header).ok_or_else(|| ApiError::new(Code::Unauthorized, "the Authorization header must be `Bearer <token>`"))?;
        match state.engine.store.token_by_hash(&hash_secret(secret)).await? {
            Some(token) => Ok(Caller(token)),
            None => Err(ApiError::new(Code::Unauthorized, "unknown or revoked token")),
        }
    }
}

/// The secret of an `Authorization: Bearer <secret>` header value (either case of
/// `Bearer`), trimmed; `None` for any other shape.
pub(super) fn bearer_value(header: &axum::http::HeaderValue) -> Option<&str> {
    header.to_str().ok().and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer "))).map(str::trim)
}
