//! Backup freshness: "the newest verified backup of X is younger than N hours", read
//! from the store the server records backups in. The probe fails with a reason that
//! says how old the newest one is; conditions can read `backup.*` for more.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Map, Value as Json, json};

use crate::backups::{BackupQuery, BackupStatus};
use crate::config::BackupProbe;
use crate::config::duration::format_duration;
use crate::store::BackupStore;

pub(super) async fn observe(store: Option<&Arc<dyn BackupStore>>, probe: &BackupProbe) -> Result<Map<String, Json>, String> {
    let store = store.ok_or("backup checks read the server's store: run them under `steward serve` (or see `steward backup list`)")?;
    let q = BackupQuery { policy: Some(probe.policy.clone()), status: Some(BackupStatus::Succeeded), limit: 500 };
    let list = store.backups(&q).await.map_err(|e| format!("cannot read backups from the store: {e}"))?;
    let now = crate::clock::now();
    let newest = list.first();
    let newest_verified = list.iter().find(|b| b.verify_result.as_deref() == Some("passed"));
    let age = |t: chrono::DateTime<Utc>| (now - t).num_seconds().max(0);
    let mut backup = json!({
        "policy": probe.policy,
        "id": newest.map(|b| b.id.clone()),
        "age_seconds": newest.map(|b| age(b.finished_at.unwrap_or(b.started_at))),
        "size_bytes": newest.map(|b| b.plain_bytes),
        "verify_result": newest.and_then(|b| b.verify_result.clone()),
        "verified_id": newest_verified.map(|b| b.id.clone()),
        "verified_age_seconds": newest_verified.map(|b| age(b.finished_at.unwrap_or(b.started_at))),
        "restore_seconds": newest_verified.and_then(|b| b.restore_ms).map(|ms| ms as f64 / 1000.0),
    });
    let (which, candidate) = if probe.verified { ("verified backup", newest_verified) } else { ("successful backup", newest) };
    let max = format_duration(probe.max_age);
    let Some(b) = candidate else {
        return Err(format!("policy `{}` has no {which} (max_age {max})", probe.policy));
    };
    let taken = b.finished_at.unwrap_or(b.started_at);
    let old = std::time::Duration::from_secs(age(taken) as u64);
    if old > probe.max_age {
        return Err(format!(
            "the newest {which} of `{}` ({}) is {} old, more than max_age {max}",
            probe.policy,
            b.id,
            format_duration(old)
        ));
    }
    backup["fresh"] = Json::Bool(true);
    let mut obs = Map::new();
    obs.insert("backup".into(), backup);
    Ok(obs)
}
