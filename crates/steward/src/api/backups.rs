//! `/api/v1/backups`: list and show backups (with live progress), take one, verify
//! one, restore one (admin) and prune (admin). Long work — a backup, a verification —
//! starts in the background and answers 202; its record shows how it went.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Caller;
use super::error::{ApiError, Code};
use super::guard::body;
use crate::auth::Role;
use crate::backups::service::{BackupError, RestoreOptions};
use crate::backups::sources::Progress;
use crate::backups::{BackupQuery, BackupRecord, BackupStatus};
use crate::config::duration::format_duration;

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> ApiError {
        match e {
            BackupError::NotFound(m) => ApiError::new(Code::NotFound, m),
            BackupError::Busy(m) | BackupError::TargetNotEmpty(m) => ApiError::new(Code::Conflict, m),
            BackupError::Invalid(m) => ApiError::new(Code::BadRequest, m),
            BackupError::Failed(m) => ApiError::new(Code::Internal, m),
            BackupError::Store(e) => e.into(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct BackupListQuery {
    policy: Option<String>,
    status: Option<String>,
    limit: Option<u32>,
}

/// A record with the progress of its live operation, if one runs in this server.
fn view(s: &AppState, r: &BackupRecord) -> Value {
    let mut v = r.view();
    if let Some(p) = s.engine.backups.progress(&r.id) {
        v["progress"] = json!({
            "phase": p.phase(),
            "bytes": p.plain.load(Ordering::Relaxed),
            "total_bytes": p.total.load(Ordering::Relaxed),
        });
    }
    v
}

pub(super) async fn list(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Query(q): Query<BackupListQuery>,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let status = match q.status.as_deref() {
        None => None,
        Some(t) => Some(BackupStatus::parse(t).ok_or_else(|| {
            ApiError::new(Code::BadRequest, format!("unknown status `{t}`; use running, succeeded, failed, interrupted or deleted"))
        })?),
    };
    let list = s.engine.store.backups(&BackupQuery { policy: q.policy, status, limit: q.limit.unwrap_or(100).min(1000) }).await?;
    let config = s.engine.config();
    let policies: Vec<Value> = config
        .backups
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "source": p.source.kind(),
                "target": p.source.target(),
                "repository": p.repository,
                "schedule": p.schedule.as_ref().map(|c| json!({"cron": c.cron, "timezone": c.timezone.name()})),
                "verify_schedule": p.verify.schedule.as_ref().map(|c| json!({"cron": c.cron, "timezone": c.timezone.name()})),
                "restore_test": p.verify.restore_test,
                "encrypted": p.encryption_key.is_some(),
                "compression_level": p.compression_level,
                "retention": p.retention.as_ref().map(|r| json!({
                    "keep_last": r.keep_last, "keep_hourly": r.keep_hourly, "keep_daily": r.keep_daily,
                    "keep_weekly": r.keep_weekly, "keep_monthly": r.keep_monthly,
                    "keep_within": r.keep_within.map(format_duration), "min_keep": r.min_keep,
                })),
            })
        })
        .collect();
    Ok(Json(json!({ "backups": list.iter().map(|r| view(&s, r)).collect::<Vec<_>>(), "policies": policies })))
}

pub(super) async fn show(caller: Caller, State(s): State<Arc<AppState>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Viewer)?;
    let record = s.engine.store.backup(&id).await?.ok_or_else(|| ApiError::new(Code::NotFound, format!("no backup {id}")))?;
    let verifications = s.engine.store.verifications(Some(&id), 50).await?;
    let restores = s.engine.store.restores(Some(&id), 50).await?;
    Ok(Json(json!({ "backup": view(&s, &record), "verifications": verifications, "restores": restores })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunBody {
    policy: String,
}

/// Takes a backup now: 202 with the `running` record; the work continues in the
/// background (follow it with GET /backups/{id}).
pub(super) async fn run(caller: Caller, State(s): State<Arc<AppState>>, bytes: Bytes) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Operator)?;
    let req: RunBody = body(&bytes, r#"{"policy": "orders-db"}"#)?;
    let config = s.engine.config();
    let record = s.engine.backups.begin(&config, &req.policy, "api", &caller.0.name, None).await?;
    let engine = s.engine.clone();
    let begun = record.clone();
    tokio::spawn(async move {
        let _ = engine.backups.complete(&config, begun, Arc::new(Progress::default())).await;
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "backup": view(&s, &record) }))))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    #[serde(default)]
    restore_test: bool,
}

/// Verifies a backup in the background: 202; the result lands in its verifications.
pub(super) async fn verify(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Operator)?;
    let req: VerifyBody = body(&bytes, r#"{"restore_test": true}"#)?;
    let record = s.engine.store.backup(&id).await?.ok_or_else(|| ApiError::new(Code::NotFound, format!("no backup {id}")))?;
    if record.status != BackupStatus::Succeeded {
        return Err(ApiError::new(
            Code::Conflict,
            format!("backup {id} is {}: only successful backups are verified", record.status.as_str()),
        ));
    }
    let engine = s.engine.clone();
    let config = engine.config();
    let who = caller.0.name.clone();
    tokio::spawn(async move {
        let progress = Arc::new(Progress::default());
        if let Err(e) = engine.backups.verify(&config, &id, req.restore_test, "api", None, progress).await {
            tracing::error!(backup = %id, by = %who, error = %e, "verification could not run");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(json!({ "backup": record.id, "level": if req.restore_test { 2 } else { 1 }, "started": true }))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    to: String,
    #[serde(default)]
    force: bool,
    #[serde(default)]
    dry_run: bool,
    /// Skip reading every stored object before the restore (see `steward backup restore --skip-check`).
    #[serde(default)]
    skip_check: bool,
}

/// Restores a backup (admin); answers when it is done, with what was done. A target
/// holding data is refused (409) unless `force`. `dry_run` changes nothing.
pub(super) async fn restore(
    caller: Caller,
    State(s): State<Arc<AppState>>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, ApiError> {
    let req: RestoreBody = body(&bytes, r#"{"to": "postgres://127.0.0.1/orders_restored", "force": false, "dry_run": true}"#)?;
    caller.require(if req.dry_run { Role::Operator } else { Role::Admin })?;
    let config = s.engine.config();
    if !req.dry_run {
        tracing::warn!(backup = %id, by = %caller.0.name, force = req.force, "restore requested through the API");
    }
    // Its own task: a client that disconnects must not cut a restore off half-way.
    let engine = s.engine.clone();
    let actor = caller.0.name.clone();
    let task = tokio::spawn(async move {
        let how = RestoreOptions { force: req.force, dry_run: req.dry_run, skip_check: req.skip_check, actor: &actor };
        engine.backups.restore(&config, &id, &req.to, how, Arc::new(Progress::default())).await
    });
    let report = task.await.map_err(|e| ApiError::new(Code::Internal, format!("the restore task failed: {e}")))??;
    Ok(Json(json!({ "restore": report })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PruneBody {
    policy: String,
    #[serde(default)]
    dry_run: bool,
}

/// Applies a policy's retention (admin), or with `dry_run` shows the plan (viewer).
pub(super) async fn prune(caller: Caller, State(s): State<Arc<AppState>>, bytes: Bytes) -> Result<Json<Value>, ApiError> {
    let req: PruneBody = body(&bytes, r#"{"policy": "orders-db", "dry_run": true}"#)?;
    caller.require(if req.dry_run { Role::Viewer } else { Role::Admin })?;
    let config = s.engine.config();
    let report = s.engine.backups.prune(&config, &req.policy, req.dry_run).await?;
    if !req.dry_run {
        tracing::warn!(policy = %req.policy, by = %caller.0.name, deleted = report.deleted.len(), "pruned through the API");
    }
    Ok(Json(json!({ "plan": report })))
}
