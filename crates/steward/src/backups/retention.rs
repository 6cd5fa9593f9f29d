//! Retention as a plan: every backup is kept or deleted, each with its reasons, before
//! anything is deleted. Pure: the same backups, policy and time give the same plan.
//!
//! **Safety floors**, whatever the rules say: the newest successful backup is kept;
//! backups in progress or being restored are kept; at least `min_keep` successful
//! backups are kept (the newest ones). Only successful backups count towards rules;
//! failed and interrupted ones are leftovers and are deleted (unless in progress).
//! Calendar buckets (hour, day, ISO week, month) are UTC.

use std::collections::BTreeSet;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;

use super::BackupStatus;
use crate::config::backups::Retention;

#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub status: BackupStatus,
    /// A live backup (its lease is held).
    pub in_progress: bool,
    /// A restore or a verification is reading it.
    pub restoring: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanItem {
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub status: BackupStatus,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// The calendar bucket (UTC) a backup falls into for one `keep_*` rule.
type BucketOf = fn(DateTime<Utc>) -> (i32, u32, u32);

/// The plan, newest first. Deleted backups (already gone) are left out.
pub fn plan(backups: &[Candidate], policy: &Retention, now: DateTime<Utc>) -> Vec<PlanItem> {
    let mut sorted: Vec<&Candidate> = backups.iter().filter(|b| b.status != BackupStatus::Deleted).collect();
    sorted.sort_by(|a, b| b.started_at.cmp(&a.started_at).then_with(|| b.id.cmp(&a.id)));
    let mut items: Vec<PlanItem> = sorted
        .iter()
        .map(|b| PlanItem { id: b.id.clone(), started_at: b.started_at, status: b.status, keep: false, reasons: vec![] })
        .collect();
    let successes: Vec<usize> = (0..sorted.len()).filter(|&i| sorted[i].status == BackupStatus::Succeeded).collect();

    for (i, b) in sorted.iter().enumerate() {
        if b.in_progress || b.status == BackupStatus::Running {
            items[i].reasons.push("in progress".into());
        }
        if b.restoring {
            items[i].reasons.push("being restored or verified".into());
        }
    }
    if let Some(&newest) = successes.first() {
        items[newest].reasons.push("newest successful backup".into());
    }
    if let Some(n) = policy.keep_last {
        for &i in successes.iter().take(n as usize) {
            items[i].reasons.push(format!("keep_last {n}"));
        }
    }
    let buckets: [(Option<u32>, &str, BucketOf); 4] = [
        (policy.keep_hourly, "keep_hourly", |t| (t.year(), t.ordinal(), t.hour())),
        (policy.keep_daily, "keep_daily", |t| (t.year(), t.ordinal(), 0)),
        (policy.keep_weekly, "keep_weekly", |t| (t.iso_week().year(), t.iso_week().week(), 0)),
        (policy.keep_monthly, "keep_monthly", |t| (t.year(), t.month(), 0)),
    ];
    for (count, rule, bucket_of) in buckets {
        let Some(n) = count else { continue };
        let mut seen = BTreeSet::new();
        for &i in &successes {
            if seen.len() >= n as usize {
                break;
            }
            // Newest first: the first backup of a bucket is the one kept for it.
            if seen.insert(bucket_of(sorted[i].started_at)) {
                items[i].reasons.push(format!("{rule} {n}"));
            }
        }
    }
    if let Some(within) = policy.keep_within {
        let since = now - chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
        for &i in &successes {
            if sorted[i].started_at >= since {
                items[i].reasons.push(format!("keep_within {}", crate::config::duration::format_duration(within)));
            }
        }
    }
    let kept = successes.iter().filter(|&&i| !items[i].reasons.is_empty()).count();
    if kept < policy.min_keep as usize {
        let mut missing = policy.min_keep as usize - kept;
        for &i in &successes {
            if missing == 0 {
                break;
            }
            if items[i].reasons.is_empty() {
                items[i].reasons.push(format!("min_keep {}", policy.min_keep));
                missing -= 1;
            }
        }
    }
    for item in &mut items {
        item.keep = !item.reasons.is_empty();
        if !item.keep {
            item.reasons.push(match item.status {
                BackupStatus::Succeeded => "no rule keeps it".into(),
                other => format!("{}: never completed, its objects are leftovers", other.as_str()),
            });
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn candidate(i: usize, hours_ago: i64, status: BackupStatus, now: DateTime<Utc>) -> Candidate {
        Candidate {
            id: format!("b{i:04}"),
            started_at: now - chrono::Duration::hours(hours_ago),
            status,
            in_progress: false,
            restoring: false,
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-11-22T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_says_why() {
        let now = now();
        // Every 6 hours for 5 days.
        let backups: Vec<_> = (0..20).map(|i| candidate(i, i as i64 * 6, BackupStatus::Succeeded, now)).collect();
        let policy = Retention { keep_daily: Some(3), min_keep: 1, ..Default::default() };
        let plan = plan(&backups, &policy, now);
        let kept: Vec<_> = plan.iter().filter(|p| p.keep).map(|p| (p.id.as_str(), p.reasons.join(", "))).collect();
        // 12:00 today (newest), then the newest of yesterday (18:00) and the day before.
        assert_eq!(
            kept,
            vec![
                ("b0000", "newest successful backup, keep_daily 3".to_string()),
                ("b0003", "keep_daily 3".to_string()),
                ("b0007", "keep_daily 3".to_string()),
            ]
        );
        assert!(plan.iter().filter(|p| !p.keep).all(|p| p.reasons == ["no rule keeps it"]));
    }

    #[test]
    fn failed_backups_are_leftovers_and_live_ones_stay() {
        let now = now();
        let mut backups = vec![
            candidate(0, 1, BackupStatus::Running, now),
            candidate(1, 2, BackupStatus::Interrupted, now),
            candidate(2, 3, BackupStatus::Failed, now),
            candidate(3, 4, BackupStatus::Succeeded, now),
            candidate(4, 5, BackupStatus::Succeeded, now),
        ];
        backups[0].in_progress = true;
        backups[4].restoring = true;
        let policy = Retention { keep_last: Some(1), min_keep: 1, ..Default::default() };
        let plan = plan(&backups, &policy, now);
        let decided: Vec<_> = plan.iter().map(|p| (p.id.as_str(), p.keep)).collect();
        assert_eq!(decided, vec![("b0000", true), ("b0001", false), ("b0002", false), ("b0003", true), ("b0004", true)]);
        assert_eq!(plan[4].reasons, ["being restored or verified"]);
        assert!(plan[1].reasons[0].starts_with("interrupted: never completed"));
    }

    fn status() -> impl Strategy<Value = BackupStatus> {
        prop_oneof![
            6 => Just(BackupStatus::Succeeded),
            1 => Just(BackupStatus::Failed),
            1 => Just(BackupStatus::Interrupted),
            1 => Just(BackupStatus::Running),
        ]
    }

    fn policy() -> impl Strategy<Value = Retention> {
        (
            proptest::option::of(0u32..5),
            proptest::option::of(0u32..5),
            proptest::option::of(0u32..8),
            proptest::option::of(0u32..5),
            proptest::option::of(0u32..4),
            proptest::option::of(0u64..200),
            0u32..6,
        )
            .prop_map(|(last, hourly, daily, weekly, monthly, within_h, min_keep)| Retention {
                keep_last: last,
                keep_hourly: hourly,
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
                keep_within: within_h.map(|h| std::time::Duration::from_secs(h * 3600)),
                min_keep,
            })
    }

    fn backups() -> impl Strategy<Value = Vec<Candidate>> {
        proptest::collection::vec((0i64..24 * 90, status(), any::<bool>(), proptest::bool::weighted(0.1)), 0..60).prop_map(|v| {
            let now = now();
            v.into_iter()
                .enumerate()
                .map(|(i, (hours, status, live, restoring))| Candidate {
                    in_progress: status == BackupStatus::Running && live,
                    restoring,
                    ..candidate(i, hours, status, now)
                })
                .collect()
        })
    }

    proptest! {
        #[test]
        fn safety_floors_always_hold(backups in backups(), policy in policy()) {
            let now = now();
            let plan = plan(&backups, &policy, now);
            prop_assert_eq!(plan.len(), backups.len());
            let by_id = |id: &str| backups.iter().find(|b| b.id == id).unwrap();
            // The newest successful backup is never deleted.
            let newest = backups.iter().filter(|b| b.status == BackupStatus::Succeeded).max_by(|a, b| a.started_at.cmp(&b.started_at).then_with(|| a.id.cmp(&b.id)));
            if let Some(n) = newest {
                prop_assert!(plan.iter().any(|p| p.id == n.id && p.keep));
            }
            for p in &plan {
                let b = by_id(&p.id);
                // Nothing in progress or being restored is deleted.
                if b.in_progress || b.restoring || b.status == BackupStatus::Running {
                    prop_assert!(p.keep, "{} deleted while live", p.id);
                }
                // Every decision has a reason.
                prop_assert!(!p.reasons.is_empty());
            }
            // Never below min_keep successful backups (when there are that many).
            let successes = backups.iter().filter(|b| b.status == BackupStatus::Succeeded).count();
            let kept = plan.iter().filter(|p| p.keep && p.status == BackupStatus::Succeeded).count();
            prop_assert!(kept >= successes.min(policy.min_keep as usize));
            // keep_last N keeps exactly the N newest successful ones (at least).
            if let Some(n) = policy.keep_last {
                let mut s: Vec<_> = plan.iter().filter(|p| p.status == BackupStatus::Succeeded).collect();
                s.truncate(n as usize);
                prop_assert!(s.iter().all(|p| p.keep));
            }
        }

        #[test]
        fn applying_a_plan_leaves_nothing_more_to_delete(backups in backups(), policy in policy()) {
            let now = now();
            let first = plan(&backups, &policy, now);
            let remaining: Vec<Candidate> = backups.iter().filter(|b| first.iter().any(|p| p.id == b.id && p.keep)).cloned().collect();
            let second = plan(&remaining, &policy, now);
            prop_assert!(second.iter().all(|p| p.keep), "a second prune would delete {:?}", second.iter().filter(|p| !p.keep).map(|p| &p.id).collect::<Vec<_>>());
        }
    }
}
