//! The server's side of backups: each policy's `schedule` takes a backup and then
//! applies the policy's retention; `verify.schedule` verifies the newest successful
//! backup (by restore test when `verify.restore_test`). Every fire carries a trigger
//! key (`backup:POLICY@INSTANT`) that the store accepts once, so a restart or a second
//! server never takes the same scheduled backup twice. Fires missed while steward was
//! down are not made up; the next one comes on schedule (and the freshness check says
//! if that is too late).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::BackupStatus;
use super::service::BackupError;
use super::service::Backups;
use super::sources::Progress;
use crate::config::ConfigView;
use crate::cron::Fires;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Job {
    Backup,
    Verify,
}

/// How often backups left `running` by a dead process (a killed CLI, a previous
/// server) are looked for; they are settled once their lease expires.
const RECOVER_EVERY: Duration = Duration::from_secs(30);

pub async fn background(backups: Arc<Backups>, view: ConfigView, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fires: Fires<(String, Job, String)> = Fires::new(crate::clock::now());
    let mut last_recover = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let config = view.get();
        let now = crate::clock::now();
        let mut live = Vec::new();
        for p in &config.backups {
            let schedules = [(Job::Backup, p.schedule.as_ref()), (Job::Verify, p.verify.schedule.as_ref())];
            for (job, schedule) in schedules {
                let Some(s) = schedule else { continue };
                let key = (p.name.clone(), job, format!("{} {}", s.cron, s.timezone));
                live.push(key.clone());
                let Some(due) = fires.due(&key, &s.parsed, s.timezone, now) else { continue };
                if due.missed {
                    tracing::warn!(policy = %p.name, cron = %s.cron, ?job, "fires between {} and now were missed and are not made up", due.at);
                }
                let (backups, config) = (backups.clone(), config.clone());
                let policy = p.name.clone();
                match job {
                    Job::Backup => tokio::spawn(scheduled_backup(backups, config, policy, due.at)),
                    Job::Verify => tokio::spawn(scheduled_verify(backups, config, policy, due.at)),
                };
            }
        }
        fires.retain(&live);
        if last_recover.elapsed() >= RECOVER_EVERY {
            last_recover = Instant::now();
            if let Err(e) = backups.recover(&config).await {
                tracing::warn!(error = %e, "could not settle interrupted backups; will retry");
            }
        }
    }
}

async fn scheduled_backup(backups: Arc<Backups>, config: Arc<crate::config::Config>, policy: String, at: DateTime<Utc>) {
    let key = format!("backup:{policy}@{}", at.to_rfc3339());
    let progress = Arc::new(Progress::default());
    match backups.run(&config, &policy, "schedule", "schedule", Some(key), progress).await {
        Ok(r) if r.status == BackupStatus::Succeeded => {
            // Retention right after a success: never before one, so a failing source
            // cannot age out the backups that still work.
            if config.backup(&policy).is_some_and(|p| p.retention.is_some()) {
                match backups.prune(&config, &policy, false).await {
                    Ok(report) if !report.errors.is_empty() => {
                        tracing::error!(policy, errors = ?report.errors, "retention could not delete every backup it planned to")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(policy, error = %e, "retention failed"),
                }
            }
        }
        // The service logged the failure and recorded it.
        Ok(_) => {}
        Err(BackupError::Busy(m)) => tracing::warn!(policy, "scheduled backup not started: {m}"),
        Err(e) => tracing::error!(policy, error = %e, "scheduled backup could not start"),
    }
}

async fn scheduled_verify(backups: Arc<Backups>, config: Arc<crate::config::Config>, policy: String, at: DateTime<Utc>) {
    let Some(p) = config.backup(&policy) else { return };
    let latest = match backups.latest(&policy).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(policy, error = %e, "scheduled verification has nothing to verify");
            return;
        }
    };
    let key = format!("verify:{policy}@{}", at.to_rfc3339());
    let progress = Arc::new(Progress::default());
    match backups.verify(&config, &latest.id, p.verify.restore_test, "schedule", Some(&key), progress).await {
        Ok(_) => {}
        Err(BackupError::Busy(m)) => tracing::warn!(policy, "scheduled verification not started: {m}"),
        Err(e) => tracing::error!(policy, backup = %latest.id, error = %e, "scheduled verification could not run"),
    }
}
