//! Backups and the audit log. Backups: every policy's latest, the list with age, size,
//! ratio, verification and measured restore time; one backup with its verifications
//! and restores, a verify button and a restore dry run (what a restore would do,
//! nothing changed). Real restores stay in the CLI and API, where `--force` is typed.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use minijinja::{Value, context};
use serde::Deserialize;

use super::session::Signed;
use super::view::{PageError, Params, Posted, page};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Role;
use crate::backups::service::RestoreOptions;
use crate::backups::sources::Progress;
use crate::backups::{BackupQuery, BackupStatus};
use crate::runbooks::AuditQuery;

pub(super) async fn list(State(s): State<Arc<AppState>>, Extension(who): Extension<Signed>) -> Result<Response, PageError> {
    let records = s.engine.store.backups(&BackupQuery { policy: None, status: None, limit: 200 }).await?;
    let config = s.engine.config();
    let policies: Vec<Value> = config
        .backups
        .iter()
        .map(|p| {
            let latest = records.iter().find(|r| r.policy == p.name && r.status == BackupStatus::Succeeded);
            context! {
                name => p.name,
                source => p.source.kind(),
                latest => Value::from_serialize(latest.map(|r| r.view())),
            }
        })
        .collect();
    let views: Vec<serde_json::Value> = records.iter().map(|r| r.view()).collect();
    page(&who, "backups", "backups.html", context! { policies, backups => Value::from_serialize(&views) })
}

async fn detail(s: &AppState, who: &Signed, id: &str, report: Option<serde_json::Value>) -> Result<Response, PageError> {
    let record = s.engine.store.backup(id).await?.ok_or_else(|| PageError::not_found("backup", id))?;
    let ctx = context! {
        backup => Value::from_serialize(record.view()),
        verifications => Value::from_serialize(s.engine.store.verifications(Some(id), 50).await?),
        restores => Value::from_serialize(s.engine.store.restores(Some(id), 50).await?),
        report => Value::from_serialize(&report),
        succeeded => record.status == BackupStatus::Succeeded,
    };
    page(who, "backups", "backup.html", ctx)
}

pub(super) async fn show(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    detail(&s, &who, &id, None).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifyForm {
    restore_test: Option<String>,
}

/// Starts a verification in the background (as the API does) and goes back to the
/// backup, where its result appears.
pub(super) async fn verify(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(id): Path<String>,
    Posted(f): Posted<VerifyForm>,
) -> Result<Response, PageError> {
    who.require(Role::Operator)?;
    let record = s.engine.store.backup(&id).await?.ok_or_else(|| PageError::not_found("backup", &id))?;
    if record.status != BackupStatus::Succeeded {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            format!("backup {id} is {}: only successful backups are verified", record.status.as_str()),
        ));
    }
    let restore_test = f.restore_test.is_some();
    let engine = s.engine.clone();
    let by = who.token.name.clone();
    tokio::spawn(async move {
        let config = engine.config();
        if let Err(e) = engine.backups.verify(&config, &id, restore_test, "console", None, Arc::new(Progress::default())).await {
            tracing::error!(backup = %id, by = %by, error = %e, "verification could not run");
        }
    });
    Ok(Redirect::to(&format!("/console/backups/{}", record.id)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestorePlanForm {
    to: String,
}

/// A restore dry run: checks the backup and the target and says what a restore would
/// do; changes nothing.
pub(super) async fn restore_plan(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(id): Path<String>,
    Posted(f): Posted<RestorePlanForm>,
) -> Result<Response, PageError> {
    who.require(Role::Operator)?;
    let config = s.engine.config();
    let how = RestoreOptions { force: false, dry_run: true, skip_check: false, actor: &who.token.name };
    let report = s.engine.backups.restore(&config, &id, f.to.trim(), how, Arc::new(Progress::default())).await.map_err(ApiError::from)?;
    detail(&s, &who, &id, Some(serde_json::to_value(&report).unwrap_or_default())).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditForm {
    runbook: Option<String>,
    actor: Option<String>,
    before: Option<i64>,
}

/// Events per page of the audit log.
const AUDIT_PAGE: u32 = 100;

pub(super) async fn audit(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Params(q): Params<AuditForm>,
) -> Result<Response, PageError> {
    let runbook = q.runbook.filter(|v| !v.is_empty());
    let actor = q.actor.filter(|v| !v.is_empty());
    let events = s
        .engine
        .store
        .audit(&AuditQuery { runbook: runbook.clone(), actor: actor.clone(), before_id: q.before, limit: AUDIT_PAGE })
        .await?;
    let next = (events.len() as u32 == AUDIT_PAGE).then(|| events.last().map(|e| e.id)).flatten();
    let ctx = context! {
        events => Value::from_serialize(&events),
        next,
        runbook => runbook.unwrap_or_default(),
        actor => actor.unwrap_or_default(),
    };
    page(&who, "audit", "audit.html", ctx)
}
