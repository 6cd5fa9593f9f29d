//! The contract every store backend must meet. Each backend instantiates the suite
//! with `store_suite!`: SQLite in a temporary directory, PostgreSQL in a database of
//! its own on a private cluster (initdb on a free port, see `steward-testkit`).

use std::time::Duration;

use chrono::{TimeZone, Utc};
use steward_model::auth::Role;
use steward_model::checks::Outcome;
use steward_model::checks::state::{CheckState, Health, Transition};
use steward_store::{CheckStore, LockHolder, RecordedRun, Store, StoreError};

fn run(check: &str, at_s: i64, healthy: bool, health: Health, transition: bool) -> RecordedRun {
    let at = Utc.timestamp_opt(at_s, 0).unwrap();
    let mut state = CheckState::new(check, at);
    state.health = health;
    state.last_run = Some(at);
    RecordedRun {
        check: check.into(),
        outcome: Outcome {
            healthy,
            latency: Duration::from_millis(10 + at_s as u64 % 7),
            reason: (!healthy).then(|| "down".into()),
            at,
            values: Default::default(),
        },
        state,
        transition: transition.then(|| Transition { check: check.into(), from: Health::Unknown, to: health, at, reason: None }),
    }
}

pub async fn records_runs_states_and_transitions(store: impl Store) {
    let runs = vec![
        run("a", 1_000, true, Health::Healthy, true),
        run("a", 1_010, false, Health::Healthy, false),
        run("b", 1_020, false, Health::Unhealthy, true),
    ];
    store.record(&runs).await.unwrap();
    let mut states = store.load_states().await.unwrap();
    states.sort_by(|x, y| x.check.cmp(&y.check));
    assert_eq!(states.len(), 2);
    assert_eq!((states[0].check.as_str(), states[0].health), ("a", Health::Healthy));
    assert_eq!(states[0].last_run, Some(Utc.timestamp_opt(1_010, 0).unwrap()), "the later run's state wins");
    let history = store.history("a", 10, None).await.unwrap();
    assert_eq!(history.iter().map(|r| r.healthy).collect::<Vec<_>>(), vec![false, true], "newest first");
    assert_eq!(store.history("a", 10, Some(Utc.timestamp_opt(1_010, 0).unwrap())).await.unwrap().len(), 1);
    assert_eq!(store.transitions(None, 10).await.unwrap().len(), 2);
    let window = store.results_since("a", Utc.timestamp_opt(1_010, 0).unwrap()).await.unwrap();
    assert_eq!(window.iter().map(|r| r.at.timestamp()).collect::<Vec<_>>(), vec![1_010], "the window includes its start");
    assert_eq!(store.transitions(Some("b"), 10).await.unwrap()[0].to, Health::Unhealthy);
    assert!(window[0].values.is_empty(), "a run that records nothing reads back nothing");
    // The fields a check records for forecasts come back with the run, exactly.
    let mut recorded = run("a", 1_020, true, Health::Healthy, false);
    recorded.outcome.values = [("info.used_memory".to_string(), 1_073_741_824.0), ("row.ratio".to_string(), 0.123_456_789)].into();
    store.record(&[recorded.clone()]).await.unwrap();
    let newest = store.results_since("a", Utc.timestamp_opt(1_020, 0).unwrap()).await.unwrap();
    assert_eq!(newest[0].values, recorded.outcome.values);
    assert_eq!(store.history("a", 1, None).await.unwrap()[0].values, recorded.outcome.values);
}

/// Chart buckets sum rolled-up hours and raw results alike, in the database.
pub async fn buckets_sum_rollups_and_raw_results(store: impl Store) {
    // Two hours of one run a minute, every fourth failing; the first hour compacted.
    let runs: Vec<_> = (0..120).map(|i| run("c", 3_600 * 10 + i * 60, i % 4 != 0, Health::Healthy, false)).collect();
    store.record(&runs).await.unwrap();
    store.record(&[run("other", 3_600 * 10 + 5, false, Health::Unhealthy, false)]).await.unwrap();
    store.compact(Utc.timestamp_opt(3_600 * 11, 0).unwrap(), Utc.timestamp_opt(0, 0).unwrap()).await.unwrap();
    let since = Utc.timestamp_opt(0, 0).unwrap();
    let hourly = store.buckets("c", since, 3_600_000).await.unwrap();
    let got: Vec<(i64, u64, u64)> = hourly.iter().map(|b| (b.hour.timestamp(), b.runs, b.failures)).collect();
    assert_eq!(got, vec![(36_000, 60, 15), (39_600, 60, 15)], "the rolled-up hour and the raw hour, the same way");
    // A day bucket holds both; half-hour buckets split the raw hour and keep the rollup whole.
    let daily = store.buckets("c", since, 86_400_000).await.unwrap();
    assert_eq!(daily.iter().map(|b| (b.hour.timestamp(), b.runs, b.failures)).collect::<Vec<_>>(), vec![(0, 120, 30)]);
    let half: Vec<u64> = store.buckets("c", since, 1_800_000).await.unwrap().iter().map(|b| b.runs).collect();
    assert_eq!(half, vec![60, 30, 30]);
    let b = &hourly[1];
    assert!(b.latency_max_ms >= b.latency_avg_ms && b.latency_avg_ms >= 10.0, "{b:?}");
    // `since` cuts, and another check's rows never leak in.
    assert_eq!(store.buckets("c", Utc.timestamp_opt(39_600, 0).unwrap(), 3_600_000).await.unwrap().len(), 1);
    assert!(store.buckets("nope", since, 3_600_000).await.unwrap().is_empty());
}

/// Day-sized buckets are read from the daily sums, which compaction writes with the
/// hourly rollups: after several compactions folding parts of one day, each day still
/// says what its hours say, and retention drops both alike.
pub async fn day_buckets_agree_with_the_hours_across_compactions(store: impl Store) {
    const DAY: i64 = 86_400;
    // Day 0: hours 10 and 11, every fourth run failing; day 1: hour 5, all passing;
    // day 2: half an hour, all failing.
    let mut runs: Vec<_> = (0..120).map(|i| run("c", 3_600 * 10 + i * 60, i % 4 != 0, Health::Healthy, false)).collect();
    runs.extend((0..60).map(|i| run("c", DAY + 3_600 * 5 + i * 60, true, Health::Healthy, false)));
    runs.extend((0..30).map(|i| run("c", 2 * DAY + 3_600 + i * 60, false, Health::Healthy, false)));
    store.record(&runs).await.unwrap();
    let at = |s: i64| Utc.timestamp_opt(s, 0).unwrap();
    let keep_all = at(0);
    // Half of day 0's first hour, then the rest of day 0 and day 1: day 0 is summed twice.
    assert_eq!(store.compact(at(3_600 * 10 + 1_800), keep_all).await.unwrap(), 30);
    assert_eq!(store.compact(at(DAY + 3_600 * 6), keep_all).await.unwrap(), 150);
    let days = |list: Vec<steward_store::Rollup>| list.iter().map(|b| (b.hour.timestamp(), b.runs, b.failures)).collect::<Vec<_>>();
    let daily = days(store.buckets("c", at(0), steward_store::DAY_MS).await.unwrap());
    assert_eq!(daily, vec![(0, 120, 30), (DAY, 60, 0), (2 * DAY, 30, 30)], "folded days and the raw day alike");
    let hourly = store.buckets("c", at(0), 3_600_000).await.unwrap();
    for (day, runs, failures) in &daily {
        let hours = hourly.iter().filter(|b| b.hour.timestamp() / DAY == day / DAY);
        assert_eq!(hours.fold((0, 0), |(r, f), b| (r + b.runs, f + b.failures)), (*runs, *failures), "day {day}");
    }
    let two_days = days(store.buckets("c", at(0), 2 * steward_store::DAY_MS).await.unwrap());
    assert_eq!(two_days, vec![(0, 180, 30), (2 * DAY, 30, 30)]);
    // Folded results count from the first whole day at or after `since`; raw ones from `since`.
    let mid_day = days(store.buckets("c", at(DAY + 3_600), steward_store::DAY_MS).await.unwrap());
    assert_eq!(mid_day, vec![(2 * DAY, 30, 30)]);
    // Retention drops day 0's sums with its rollups; day 1 stays whole.
    store.compact(at(DAY + 3_600 * 6), at(DAY)).await.unwrap();
    assert_eq!(days(store.buckets("c", at(0), steward_store::DAY_MS).await.unwrap()), vec![(DAY, 60, 0), (2 * DAY, 30, 30)]);
}

/// A push check's signals: the watch starts at the first read and stays put; the latest
/// success and failure are kept whatever order they arrive in; every signal counts.
pub async fn heartbeats_keep_the_latest_signal_of_each_kind(store: impl Store) {
    let at = |s: i64| Utc.timestamp_opt(s, 0).unwrap();
    let fresh = store.heartbeat_of("nightly", at(1_000)).await.unwrap();
    assert_eq!((fresh.watching_since, fresh.last_ok, fresh.last_fail, fresh.signals), (at(1_000), None, None, 0));
    assert_eq!(store.heartbeat_of("nightly", at(5_000)).await.unwrap().watching_since, at(1_000), "the watch starts once");

    store.record_heartbeat("nightly", at(2_000), true).await.unwrap();
    store.record_heartbeat("nightly", at(3_000), false).await.unwrap();
    let late = store.record_heartbeat("nightly", at(1_500), true).await.unwrap(); // arrived late: older than the last
    assert_eq!((late.last_ok, late.last_fail, late.signals), (Some(at(2_000)), Some(at(3_000)), 3));
    store.record_heartbeat("nightly", at(4_000), true).await.unwrap();
    let now = store.heartbeat_of("nightly", at(9_000)).await.unwrap();
    assert_eq!((now.last_ok, now.last_fail, now.signals, now.watching_since), (Some(at(4_000)), Some(at(3_000)), 4, at(1_000)));

    // A signal before any read starts the watch at the signal.
    let first = store.record_heartbeat("weekly", at(7_000), false).await.unwrap();
    assert_eq!((first.watching_since, first.last_ok, first.last_fail, first.signals), (at(7_000), None, Some(at(7_000)), 1));
    assert_eq!(store.heartbeat_of("nightly", at(9_000)).await.unwrap().signals, 4, "checks are kept apart");
}

/// SLO buckets: events add up per minute whoever sends them, read back in time order
/// from a minute; a roll-up replaces the old minutes with wider buckets and drops what
/// is older than the window, in one step, and the figures stay what they were.
pub async fn slo_buckets_add_up_and_roll_up_without_changing_the_figures(store: impl Store) {
    use steward_model::slo::{self, Bucket, Budgeting};
    use steward_store::SloEvents;
    let ev = |minute: i64, good: u64, total: u64| SloEvents { slo: "api-availability".into(), minute, good, total };
    // Three hours of minutes, 10 events each, 1 bad in every 15th; then the same minute
    // once more, as a second replica's share would arrive.
    let events: Vec<SloEvents> = (0..180).map(|m| ev(m, 10 - u64::from(m % 15 == 0), 10)).collect();
    store.add_slo_events(&events).await.unwrap();
    store.add_slo_events(&[ev(179, 5, 5), SloEvents { slo: "other".into(), minute: 179, good: 0, total: 1 }]).await.unwrap();
    let all = store.slo_buckets("api-availability", 0).await.unwrap();
    assert_eq!(all.len(), 180);
    assert_eq!(all[179], Bucket::minute(179, 15, 15), "the two shares of minute 179 add up");
    assert_eq!(all[0], Bucket::minute(0, 9, 10));
    assert_eq!(store.slo_buckets("api-availability", 170).await.unwrap().len(), 10);
    let budgeting = Budgeting::Timeslices { good_ratio: 0.95 };
    let before = (slo::counts(&all, 60, 180, Budgeting::Occurrences), slo::counts(&all, 60, 180, budgeting));

    // Roll the second hour up; drop the first.
    let hour: Vec<Bucket> = all.iter().filter(|b| (60..120).contains(&b.start)).copied().collect();
    store.roll_up_slo("api-availability", 120, &slo::roll_up(&hour, 60, budgeting), 60).await.unwrap();
    let after = store.slo_buckets("api-availability", 0).await.unwrap();
    assert_eq!(after.len(), 61, "one hour bucket and 60 minutes");
    assert_eq!((after[0].start, after[0].minutes, after[0].good, after[0].total, after[0].slices), (60, 60, 596, 600, 60));
    assert_eq!(after[0].good_slices, 56, "minutes 60, 75, 90, 105 had 1 bad of 10: under 95 %");
    assert_eq!((slo::counts(&after, 60, 180, Budgeting::Occurrences), slo::counts(&after, 60, 180, budgeting)), before);
    assert_eq!(store.slo_buckets("other", 0).await.unwrap(), vec![Bucket::minute(179, 0, 1)], "SLOs are kept apart");
}

/// Every group's days in one query: daily sums and raw results of the group's checks
/// added up per day, from `since`; checks outside the map and days before `since` left out.
pub async fn days_are_summed_per_group_from_sums_and_raw_results(store: impl Store) {
    const DAY: i64 = 86_400;
    let at = |s: i64| Utc.timestamp_opt(s, 0).unwrap();
    // Group "api": checks a1 and a2; group "db": d1; "stray" is in no group.
    let mut runs = Vec::new();
    runs.extend((0..10).map(|i| run("a1", DAY + 60 * i, i != 0, Health::Healthy, false))); // day 1: 10 runs, 1 failed
    runs.extend((0..4).map(|i| run("a2", DAY + 3_600 + 60 * i, false, Health::Healthy, false))); // day 1: 4 failed
    runs.extend((0..3).map(|i| run("a1", 3 * DAY + 60 * i, true, Health::Healthy, false))); // day 3, stays raw
    runs.extend((0..5).map(|i| run("d1", 60 * i, false, Health::Healthy, false))); // day 0: before `since`
    runs.extend((0..2).map(|i| run("d1", 2 * DAY + 60 * i, i == 1, Health::Healthy, false))); // day 2: 2 runs, 1 failed
    runs.push(run("stray", DAY, false, Health::Healthy, false));
    store.record(&runs).await.unwrap();
    // Days 0 to 2 folded into the daily sums; day 3 stays raw. Day 1's a1 results are
    // folded in two compactions, so its sums are added to.
    store.compact(at(DAY + 300), at(0)).await.unwrap();
    store.compact(at(3 * DAY), at(0)).await.unwrap();
    let groups: std::collections::HashMap<String, String> =
        [("a1", "api"), ("a2", "api"), ("d1", "db"), ("idle", "db")].into_iter().map(|(c, g)| (c.into(), g.into())).collect();
    let got: Vec<_> = store
        .daily_by_group(&groups, at(DAY))
        .await
        .unwrap()
        .into_iter()
        .map(|d| (d.group, d.day.timestamp() / DAY, d.runs, d.failures))
        .collect();
    assert_eq!(got, vec![("api".into(), 1, 14, 5), ("api".into(), 3, 3, 0), ("db".into(), 2, 2, 1)]);
    assert!(store.daily_by_group(&Default::default(), at(0)).await.unwrap().is_empty(), "no checks, no days");
}

pub async fn compaction_folds_old_results_into_hourly_rollups(store: impl Store) {
    let runs: Vec<_> = (0..120).map(|i| run("c", 3_600 * 10 + i * 60, i % 4 != 0, Health::Healthy, false)).collect();
    store.record(&runs).await.unwrap();
    let cutoff = Utc.timestamp_opt(3_600 * 11, 0).unwrap();
    let folded = store.compact(cutoff, Utc.timestamp_opt(0, 0).unwrap()).await.unwrap();
    assert_eq!(folded, 60);
    assert_eq!(store.history("c", 1000, None).await.unwrap().len(), 60, "only recent raw results stay");
    let rollups = store.rollups("c", Utc.timestamp_opt(0, 0).unwrap()).await.unwrap();
    assert_eq!(rollups.len(), 1);
    assert_eq!((rollups[0].runs, rollups[0].failures), (60, 15));
    // Compacting again changes nothing; dropping old rollups removes them.
    assert_eq!(store.compact(cutoff, Utc.timestamp_opt(0, 0).unwrap()).await.unwrap(), 0);
    store.compact(cutoff, Utc.timestamp_opt(3_600 * 12, 0).unwrap()).await.unwrap();
    assert!(store.rollups("c", Utc.timestamp_opt(0, 0).unwrap()).await.unwrap().is_empty());
}

pub async fn tokens_are_unique_by_live_name_and_revocable(store: impl Store) {
    let t = store.create_token("ci", Role::Operator, "hash-1").await.unwrap();
    assert_eq!(t.role, Role::Operator);
    assert!(
        matches!(store.create_token("ci", Role::Viewer, "hash-2").await, Err(StoreError::NameTaken { kind: "token", name }) if name == "ci")
    );
    assert_eq!(store.token_by_hash("hash-1").await.unwrap().unwrap().name, "ci");
    assert!(store.token_by_hash("hash-x").await.unwrap().is_none());
    assert!(store.revoke_token("ci").await.unwrap());
    assert!(!store.revoke_token("ci").await.unwrap());
    assert!(store.token_by_hash("hash-1").await.unwrap().is_none(), "a revoked token no longer authenticates");
    store.create_token("ci", Role::Viewer, "hash-3").await.unwrap();
    assert_eq!(store.list_tokens().await.unwrap().len(), 2);
}

/// Console sessions: opened only with a live token, seen until they expire, ended by
/// sign-out or by revoking their token; expired rows are cleared when the next opens.
pub async fn console_sessions_end_by_expiry_sign_out_or_revocation(store: impl Store) {
    let now = steward_model::clock::now();
    let t = |s: i64| now + chrono::Duration::seconds(s);
    store.create_token("alice", Role::Operator, "tok-a").await.unwrap();
    store.create_token("bob", Role::Viewer, "tok-b").await.unwrap();
    assert_eq!(store.create_session("s-x", "tok-unknown", "c", t(60)).await.unwrap(), None, "an unknown token opens nothing");
    assert_eq!(store.create_session("s-1", "tok-a", "csrf-1", t(3600)).await.unwrap().unwrap().name, "alice");
    store.create_session("s-2", "tok-a", "csrf-2", t(3600)).await.unwrap().unwrap();
    store.create_session("s-3", "tok-b", "csrf-3", t(10)).await.unwrap().unwrap();
    let s1 = store.session("s-1", now).await.unwrap().expect("a live session");
    assert_eq!((s1.token.name.as_str(), s1.token.role, s1.csrf.as_str(), s1.expires_at), ("alice", Role::Operator, "csrf-1", t(3600)));
    assert!(store.session("s-x", now).await.unwrap().is_none());
    // Expiry: s-3 is seen before its time and not at it.
    assert!(store.session("s-3", t(9)).await.unwrap().is_some());
    assert!(store.session("s-3", t(10)).await.unwrap().is_none());
    // Sign-out ends that session only.
    assert!(store.end_session("s-1").await.unwrap());
    assert!(!store.end_session("s-1").await.unwrap());
    assert!(store.session("s-1", now).await.unwrap().is_none());
    assert!(store.session("s-2", now).await.unwrap().is_some());
    // Revoking the token ends its other sessions; a revoked token opens none.
    store.revoke_token("alice").await.unwrap();
    assert!(store.session("s-2", now).await.unwrap().is_none());
    assert_eq!(store.create_session("s-4", "tok-a", "c", t(60)).await.unwrap(), None);
    // Expired rows are deleted when the next session opens: s-old (expired a second ago)
    // is still seen with an earlier clock until then, and not after.
    store.create_session("s-old", "tok-b", "c", t(-1)).await.unwrap().unwrap();
    assert!(store.session("s-old", t(-10)).await.unwrap().is_some());
    store.create_session("s-5", "tok-b", "csrf-5", t(3600)).await.unwrap().unwrap();
    assert!(store.session("s-old", t(-10)).await.unwrap().is_none(), "the expired row was deleted");
    assert!(store.session("s-5", now).await.unwrap().is_some());
}

pub async fn forgets_states_of_removed_checks(store: impl Store) {
    store.record(&[run("keep", 1, true, Health::Healthy, false), run("gone", 2, true, Health::Healthy, false)]).await.unwrap();
    store.retain_states(&["keep".to_string()]).await.unwrap();
    let states = store.load_states().await.unwrap();
    assert_eq!(states.iter().map(|s| s.check.as_str()).collect::<Vec<_>>(), vec!["keep"]);
    store.probe_writable().await.unwrap();
}

pub async fn outbox_enqueues_once_per_dedup_key_with_its_log_entry(store: impl Store) {
    use steward_model::alerting::{DeliveryState, NotifyLogEntry};
    use steward_store::NewNotification;
    let t0 = Utc.timestamp_opt(2_000, 0).unwrap();
    let n = NewNotification {
        dedup_key: "k1".into(),
        receiver: "ops".into(),
        group_key: "{0}:{}".into(),
        status: "firing".into(),
        payload: serde_json::json!({"status": "firing"}).to_string(),
        alerts: vec![("fp1".into(), Some(t0)), ("fp2".into(), None)],
        log: NotifyLogEntry { receiver: "ops".into(), group_key: "{0}:{}".into(), firing: vec!["fp1".into(), "fp2".into()], sent_at: t0 },
    };
    let id = store.enqueue(&n).await.unwrap().expect("a new dedup key is enqueued");
    assert_eq!(store.enqueue(&n).await.unwrap(), None, "the same dedup key is never enqueued twice");
    assert_eq!(store.notify_log().await.unwrap(), vec![n.log.clone()], "the log entry is written with the row");
    let secs = |s: i64| t0 + chrono::Duration::seconds(s);
    let due = store.claim_due("ops", "w1", t0, secs(60), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].alerts, vec!["fp1".to_string(), "fp2".to_string()]);
    assert_eq!(due[0].payload, n.payload, "the payload reads back as it was written");
    assert!(store.claim_due("other", "w1", t0, secs(60), 10).await.unwrap().is_empty());
    // Claimed: no other worker gets it until the claim ends.
    assert!(store.claim_due("ops", "w2", secs(59), secs(120), 10).await.unwrap().is_empty());
    assert_eq!(store.next_due("ops").await.unwrap(), Some(secs(60)), "claimable again when the claim ends");
    // Only the claimant schedules the retry, which releases the claim and moves the row
    // out of the due set until its time.
    assert!(!store.mark_retry(id, "w2", 1, secs(30), "503").await.unwrap(), "w2 holds no claim");
    assert!(store.mark_retry(id, "w1", 1, secs(30), "503").await.unwrap());
    assert!(store.claim_due("ops", "w2", secs(29), secs(90), 10).await.unwrap().is_empty());
    assert_eq!(store.next_due("ops").await.unwrap(), Some(secs(30)));
    assert_eq!(store.outbox_depth().await.unwrap(), (1, Some(t0)));
    // A claim whose process is gone is released; one that ended is taken over, and the
    // worker that lost it can no longer give the row up.
    assert_eq!(store.claim_due("ops", "w2", secs(30), secs(90), 10).await.unwrap().len(), 1);
    assert_eq!(store.claim_owners().await.unwrap(), vec!["w2".to_string()]);
    assert_eq!(store.release_claims("w2").await.unwrap(), 1);
    assert_eq!(store.claim_due("ops", "w3", secs(31), secs(40), 10).await.unwrap().len(), 1, "released: claimable at once");
    assert_eq!(store.claim_due("ops", "w4", secs(40), secs(100), 10).await.unwrap().len(), 1, "w3's claim ended");
    assert!(!store.mark_expired(id, "w3", 2, "gave up").await.unwrap());
    store.mark_delivered(id, secs(30), 2).await.unwrap();
    assert!(store.claim_owners().await.unwrap().is_empty(), "delivery releases the claim");
    // Giving up is recorded by the claimant.
    let expiring = NewNotification { dedup_key: "k2".into(), ..n.clone() };
    let id2 = store.enqueue(&expiring).await.unwrap().unwrap();
    assert_eq!(store.claim_due("ops", "w5", secs(50), secs(60), 10).await.unwrap().iter().map(|n| n.id).collect::<Vec<_>>(), [id2]);
    assert!(store.mark_expired(id2, "w5", 1, "410 Gone").await.unwrap());
    let expired = store.notifications(None, 1).await.unwrap();
    assert_eq!((expired[0].id, expired[0].state, expired[0].last_error.as_deref()), (id2, DeliveryState::Expired, Some("410 Gone")));
    assert!(store.claim_due("ops", "w5", secs(3600), secs(3700), 10).await.unwrap().is_empty(), "an expired row is never sent");
    // Updating a log entry without a send.
    let quiet = NotifyLogEntry { firing: vec![], sent_at: secs(70), ..n.log.clone() };
    store.update_notify_log(&quiet).await.unwrap();
    assert_eq!(store.notify_log().await.unwrap(), vec![quiet]);
    let all = store.notifications(Some("fp2"), 10).await.unwrap();
    let delivered = all.iter().find(|x| x.id == id).unwrap();
    assert_eq!((delivered.state, delivered.attempts, delivered.last_error.as_deref()), (DeliveryState::Delivered, 2, None));
    assert_eq!(store.outbox_depth().await.unwrap(), (0, None));
    assert!(store.notifications(Some("fp-none"), 10).await.unwrap().is_empty());
    let recent = store.notifications(None, 10).await.unwrap();
    assert_eq!((recent.len(), recent[1].id, &recent[1].payload), (2, id, &n.payload));
}

pub async fn alert_batches_keep_every_transition_in_order(store: impl Store) {
    use steward_model::alerting::{Alert, AlertEvent, AlertSource, AlertState};
    let t0 = Utc.timestamp_opt(3_000, 0).unwrap();
    let labels: steward_model::alerting::Labels = [("alertname".to_string(), "A".to_string())].into();
    let mut firing = Alert::inactive("fpA", "A", labels, t0);
    firing.state = AlertState::Firing;
    firing.source = AlertSource::Alertmanager;
    firing.ends_at = Some(t0 + chrono::Duration::seconds(60));
    let mut resolved = firing.clone();
    resolved.state = AlertState::Resolved;
    resolved.ends_at = None;
    let event = |from, to| AlertEvent { fingerprint: "fpA".into(), rule: "A".into(), at: t0, from, to, value: None };
    // One alert changed twice in one batch: the last state wins, both events are kept.
    store
        .save_alerts(&[
            (firing.clone(), Some(event(AlertState::Inactive, AlertState::Firing))),
            (resolved.clone(), Some(event(AlertState::Firing, AlertState::Resolved))),
        ])
        .await
        .unwrap();
    assert_eq!(store.load_alerts().await.unwrap(), vec![resolved]);
    let events = store.alert_events(Some("fpA"), 10).await.unwrap();
    let moves: Vec<_> = events.iter().rev().map(|e| (e.from, e.to)).collect();
    assert_eq!(moves, [(AlertState::Inactive, AlertState::Firing), (AlertState::Firing, AlertState::Resolved)]);
    // Source and expiry survive the round trip.
    store.save_alert(&firing, None).await.unwrap();
    let loaded = store.load_alerts().await.unwrap();
    assert_eq!((loaded[0].source, loaded[0].ends_at), (AlertSource::Alertmanager, firing.ends_at));
}

fn incident(title: &str) -> steward_model::incidents::Incident {
    use steward_model::incidents::{Incident, Priority};
    Incident {
        policy: Some("pages".into()),
        group_key: "pages:service=api".into(),
        services: vec!["api".into()],
        auto_resolve: true,
        ..Incident::new(title, Priority::P2, "steward", Utc.timestamp_opt(5_000, 0).unwrap())
    }
}

pub async fn incident_writes_are_atomic_and_versioned(store: impl Store) {
    use steward_model::incidents::{AttachedState, IncidentAlert, Status, TimelineEntry};
    use steward_store::{IncidentQuery, IncidentWrite, OutboxMessage};
    let at = Utc.timestamp_opt(5_000, 0).unwrap();
    let message = |key: &str| OutboxMessage {
        dedup_key: key.into(),
        receiver: "pager".into(),
        group_key: "incident/1".into(),
        status: "firing".into(),
        payload: serde_json::json!({"status": "firing"}),
    };
    let mut w = IncidentWrite::of(incident("API down"));
    w.alerts.push(IncidentAlert {
        incident_id: 0,
        fingerprint: "fp1".into(),
        rule: "ApiDown".into(),
        labels: [("service".to_string(), "api".to_string())].into(),
        state: AttachedState::Firing,
        attached_at: at,
        changed_at: at,
        fired_at: Some(at),
    });
    w.timeline.push(TimelineEntry::new(at, "opened", "steward", "opened"));
    w.notifications.push(message("k1"));
    let first = store.write_incident(&w).await.unwrap();
    assert!(first.id > 0);
    assert_eq!(first.version, 1);
    assert_eq!(store.incident_alerts(None).await.unwrap().len(), 1, "alerts of open incidents");
    assert_eq!(store.incident_notifications(first.id).await.unwrap().len(), 1);

    // A write based on the current version succeeds; a stale one changes nothing.
    let mut ack = IncidentWrite::of(first.clone());
    ack.incident.status = Status::Acknowledged;
    ack.incident.acknowledged_at = Some(at);
    ack.timeline.push(TimelineEntry::new(at, "acknowledged", "alice", "ack"));
    ack.notifications.push(message("k1"));
    let second = store.write_incident(&ack).await.unwrap();
    assert_eq!((second.version, second.status), (2, Status::Acknowledged));
    assert_eq!(store.incident_notifications(first.id).await.unwrap().len(), 1, "a dedup key is enqueued once");
    let mut stale = IncidentWrite::of(first.clone());
    stale.incident.title = "lost update".into();
    stale.timeline.push(TimelineEntry::new(at, "note", "bob", "from a stale copy"));
    stale.notifications.push(message("k2"));
    assert!(matches!(store.write_incident(&stale).await, Err(StoreError::StaleVersion { .. })));
    let now = store.incident(first.id).await.unwrap().unwrap();
    assert_eq!((now.title.as_str(), now.version), ("API down", 2));
    assert_eq!(store.timeline(first.id).await.unwrap().len(), 2, "the refused write left no timeline entry");
    assert_eq!(store.incident_notifications(first.id).await.unwrap().len(), 1, "nor a notification");

    // Queries.
    let other = store
        .write_incident(&IncidentWrite::of(steward_model::incidents::Incident {
            services: vec!["db".into()],
            group_key: "pages:service=db".into(),
            ..incident("DB slow")
        }))
        .await
        .unwrap();
    let open = store.incidents(&IncidentQuery { open: true, ..Default::default() }).await.unwrap();
    assert_eq!(open.iter().map(|i| i.id).collect::<Vec<_>>(), [other.id, first.id], "newest first");
    let api = store.incidents(&IncidentQuery { service: Some("api".into()), ..Default::default() }).await.unwrap();
    assert_eq!(api.len(), 1);
    let mut resolve = IncidentWrite::of(now);
    resolve.incident.status = Status::Resolved;
    store.write_incident(&resolve).await.unwrap();
    assert!(store.incident_alerts(None).await.unwrap().is_empty(), "a resolved incident holds no alerts for the manager");
    assert_eq!(store.incident_alerts(Some(first.id)).await.unwrap().len(), 1, "but keeps them on record");
}

pub async fn server_keys_are_created_once(store: impl Store) {
    let a = store.server_key("acknowledge-links").await.unwrap();
    assert_eq!(a.len(), 32);
    assert_eq!(store.server_key("acknowledge-links").await.unwrap(), a, "the same key ever after");
    assert_ne!(store.server_key("other").await.unwrap(), a);
    // Rotation replaces it for good, and only that key.
    let other = store.server_key("other").await.unwrap();
    store.rotate_server_key("acknowledge-links").await.unwrap();
    let b = store.server_key("acknowledge-links").await.unwrap();
    assert_ne!(b, a, "a rotated key is new");
    assert_eq!(b.len(), 32);
    assert_eq!(store.server_key("acknowledge-links").await.unwrap(), b, "and stays");
    assert_eq!(store.server_key("other").await.unwrap(), other, "other keys are untouched");
}

/// Two firings (episodes) of one alert, each in its own incident: each incident lists
/// the notifications of its own episodes only — also when the second firing came
/// seconds after the first incident was resolved.
pub async fn an_incident_lists_only_its_own_episodes_notifications(store: impl Store) {
    use steward_model::alerting::NotifyLogEntry;
    use steward_model::incidents::{AttachedState, IncidentAlert, Status};
    use steward_store::{IncidentWrite, NewNotification};
    let t = |s: i64| Utc.timestamp_opt(10_000 + s, 0).unwrap();
    let notify = |key: &str, fired: i64, at: i64, status: &str| NewNotification {
        dedup_key: key.into(),
        receiver: "ops".into(),
        group_key: "{}:{alertname=\"ApiDown\"}".into(),
        status: status.into(),
        payload: serde_json::json!({"status": status}).to_string(),
        alerts: vec![("fp-api".into(), Some(t(fired)))],
        log: NotifyLogEntry { receiver: "ops".into(), group_key: "{}:{alertname=\"ApiDown\"}".into(), firing: vec![], sent_at: t(at) },
    };
    let open = |fired: i64| {
        let mut w = IncidentWrite::of(steward_model::incidents::Incident { opened_at: t(fired), ..incident("API down") });
        w.alerts.push(IncidentAlert {
            incident_id: 0,
            fingerprint: "fp-api".into(),
            rule: "ApiDown".into(),
            labels: Default::default(),
            state: AttachedState::Firing,
            attached_at: t(fired),
            changed_at: t(fired),
            fired_at: Some(t(fired)),
        });
        w
    };
    // Episode 1 fires at 0, is notified, resolves (notified) at 20; the incident resolves at 21.
    let first = store.write_incident(&open(0)).await.unwrap();
    store.enqueue(&notify("e1-firing", 0, 0, "firing")).await.unwrap();
    store.enqueue(&notify("e1-resolved", 0, 20, "resolved")).await.unwrap();
    let mut resolve = IncidentWrite::of(first.clone());
    resolve.incident.status = Status::Resolved;
    resolve.incident.resolved_at = Some(t(21));
    store.write_incident(&resolve).await.unwrap();
    // Episode 2 fires at 25 and opens the second incident.
    let second = store.write_incident(&open(25)).await.unwrap();
    store.enqueue(&notify("e2-firing", 25, 25, "firing")).await.unwrap();
    let keys = |list: Vec<steward_model::alerting::Notification>| list.into_iter().map(|n| n.dedup_key).collect::<Vec<_>>();
    assert_eq!(keys(store.incident_notifications(first.id).await.unwrap()), ["e1-firing", "e1-resolved"]);
    assert_eq!(keys(store.incident_notifications(second.id).await.unwrap()), ["e2-firing"]);
}

fn new_run(runbook: &str, lock: Option<&str>, key: Option<&str>) -> steward_model::runbooks::NewRun {
    steward_model::runbooks::NewRun {
        runbook: runbook.into(),
        params: Default::default(),
        trigger: "manual".into(),
        started_by: "alice".into(),
        parent_run: None,
        alert_fingerprint: None,
        incident_id: None,
        lock: lock.map(String::from),
        trigger_key: key.map(String::from),
        owner: "host:1:1".into(),
    }
}

pub async fn runs_take_locks_and_trigger_keys_once_and_keep_their_record(store: impl Store) {
    use steward_model::runbooks::{AuditQuery, NewEvent, RunQuery, RunStatus, StepRecord, StepStatus};
    let started = |who: &str| NewEvent::new(0, "run_started", "started").by(who);
    let a = store.create_run(&new_run("failover", Some("failover"), None), started("alice")).await.unwrap();
    assert_eq!(a.status, RunStatus::Running);
    // The lock is held: a second run is refused and leaves nothing behind.
    let err = store.create_run(&new_run("failover", Some("failover"), None), started("bob")).await.unwrap_err();
    assert!(matches!(&err, StoreError::LockHeld { lock, holder: LockHolder::Run(id) } if lock == "failover" && *id == a.id), "{err}");
    assert_eq!(store.runs(&RunQuery { limit: 10, ..Default::default() }).await.unwrap().len(), 1);
    assert_eq!(store.audit(&AuditQuery { limit: 10, ..Default::default() }).await.unwrap().len(), 1, "no audit event for the refused run");
    // One trigger key, one run.
    let keyed = store.create_run(&new_run("nightly", None, Some("nightly#0@2026-03-08T07:00:00Z")), started("schedule")).await.unwrap();
    let err = store.create_run(&new_run("nightly", None, Some("nightly#0@2026-03-08T07:00:00Z")), started("schedule")).await.unwrap_err();
    assert!(matches!(&err, StoreError::TriggerUsed { started, .. } if *started == format!("run {}", keyed.id)), "{err}");

    // Steps: an attempt is upserted by (run, path, attempt); open ones can be closed.
    let mut step = StepRecord {
        run_id: a.id,
        path: "promote".into(),
        name: "promote".into(),
        kind: "shell".into(),
        attempt: 1,
        status: StepStatus::Running,
        started_at: Utc::now(),
        finished_at: None,
        detail: serde_json::json!({"argv": ["true"]}),
        result: serde_json::Value::Null,
        output: String::new(),
        error: None,
    };
    store.save_step(&step, &[NewEvent::new(a.id, "step_started", "promote")]).await.unwrap();
    assert_eq!(store.close_open_steps(a.id, StepStatus::Unknown, "stopped").await.unwrap(), vec!["promote".to_string()]);
    step.attempt = 2;
    step.status = StepStatus::Succeeded;
    store.save_step(&step, &[]).await.unwrap();
    let steps = store.run_steps(a.id).await.unwrap();
    assert_eq!(steps.iter().map(|s| (s.attempt, s.status)).collect::<Vec<_>>(), vec![(1, StepStatus::Unknown), (2, StepStatus::Succeeded)]);
    assert_eq!(steps[0].error.as_deref(), Some("stopped"));

    // Interrupted keeps the lock; a final status releases it.
    store.set_run_status(a.id, RunStatus::Interrupted, Some("stopped"), None, &[]).await.unwrap();
    assert!(
        store.create_run(&new_run("failover", Some("failover"), None), started("bob")).await.is_err(),
        "an interrupted run keeps its lock"
    );
    store
        .set_run_status(
            a.id,
            RunStatus::Succeeded,
            None,
            Some(&serde_json::json!({"ok": 1})),
            &[NewEvent::new(a.id, "run_succeeded", "done")],
        )
        .await
        .unwrap();
    let b = store.create_run(&new_run("failover", Some("failover"), None), started("bob")).await.unwrap();
    let done = store.run(a.id).await.unwrap().unwrap();
    assert_eq!((done.status, done.outputs.clone()), (RunStatus::Succeeded, serde_json::json!({"ok": 1})));
    assert!(done.finished_at.is_some());

    // Listing: newest first, filtered, paged by id; unfinished runs; the audit trail.
    let all = store.runs(&RunQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b.id, keyed.id, a.id]);
    let page = store.runs(&RunQuery { before_id: Some(keyed.id), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a.id]);
    let failovers = store
        .runs(&RunQuery { runbook: Some("failover".into()), status: Some(RunStatus::Running), limit: 10, ..Default::default() })
        .await
        .unwrap();
    assert_eq!(failovers.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b.id]);
    assert_eq!(store.unfinished_runs().await.unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), vec![keyed.id, b.id]);
    let bobs = store.audit(&AuditQuery { actor: Some("bob".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(bobs.iter().map(|e| e.run_id).collect::<Vec<_>>(), vec![b.id]);
    let events = store.run_events(a.id, 0, 100).await.unwrap();
    assert_eq!(events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(), vec!["run_started", "step_started", "run_succeeded"]);
    assert_eq!(store.run_events(a.id, events[0].id, 100).await.unwrap().len(), 2, "after an id");

    // Retention removes finished runs only, with their steps and events.
    let removed = store.prune_runs(Utc::now() + chrono::Duration::seconds(1)).await.unwrap();
    assert_eq!(removed, 1);
    assert!(store.run(a.id).await.unwrap().is_none());
    assert!(store.run_steps(a.id).await.unwrap().is_empty() && store.run_events(a.id, 0, 10).await.unwrap().is_empty());
    assert!(store.run(b.id).await.unwrap().is_some(), "a running run is never expired");
}

fn new_backup(id: &str, policy: &str, key: Option<&str>) -> steward_model::backups::NewBackup {
    steward_model::backups::NewBackup {
        id: id.into(),
        policy: policy.into(),
        repository: "local".into(),
        source: "postgres".into(),
        trigger: "manual".into(),
        started_by: "test".into(),
        owner: format!("host:1:{id}"),
        started_at: Utc::now(),
        trigger_key: key.map(String::from),
        lease: Duration::from_secs(30),
    }
}

fn new_restore(backup: &str, actor: &str) -> steward_model::backups::NewRestore {
    steward_model::backups::NewRestore {
        backup_id: backup.into(),
        policy: "orders".into(),
        target: "postgres://app:***@db/orders".into(),
        actor: actor.into(),
        replaced: true,
        hold_until: Utc::now() + chrono::Duration::hours(24),
    }
}

pub async fn backups_take_one_lease_per_lock_and_restores_keep_a_record_and_a_hold(store: impl Store) {
    use steward_model::backups::BackupStatus;
    let lock = "orders@local";
    let a = store.create_backup(&new_backup("20261122T020000Z-aaaa", "orders", Some("orders@2")), lock).await.unwrap();
    assert_eq!(a.status, BackupStatus::Running);
    // One live lease per lock; the message names the holder.
    match store.create_backup(&new_backup("20261122T020001Z-bbbb", "orders-copy", None), lock).await {
        Err(StoreError::LockHeld { lock: l, holder: LockHolder::Backup { id, owner, .. } }) => {
            assert_eq!((l.as_str(), id.as_str(), owner.as_str()), (lock, "20261122T020000Z-aaaa", "host:1:20261122T020000Z-aaaa"))
        }
        other => panic!("a held lease must refuse a second backup: {other:?}"),
    }
    store.finish_backup(&a.id, BackupStatus::Succeeded, 1000, 100, None, &serde_json::json!({ "rows": 5 })).await.unwrap();
    // The lease is released, but a trigger key is used once, ever.
    match store.create_backup(&new_backup("20261122T020002Z-cccc", "orders", Some("orders@2")), lock).await {
        Err(StoreError::TriggerUsed { key, .. }) => assert_eq!(key, "orders@2"),
        other => panic!("a trigger key starts one backup: {other:?}"),
    }
    let b = store.create_backup(&new_backup("20261122T020003Z-dddd", "orders", None), lock).await.unwrap();
    store.finish_backup(&b.id, BackupStatus::Failed, 0, 0, Some("pg_dump exited 1"), &serde_json::Value::Null).await.unwrap();

    // Two restores of one backup: it is held while either runs.
    let first = store.start_restore(&new_restore(&a.id, "alice")).await.unwrap();
    let second = store.start_restore(&new_restore(&a.id, "bob")).await.unwrap();
    assert!(store.backup(&a.id).await.unwrap().unwrap().restoring_until.is_some());
    store.finish_restore(first, "succeeded", &serde_json::json!({ "seconds": 1.5 })).await.unwrap();
    assert!(store.backup(&a.id).await.unwrap().unwrap().restoring_until.is_some(), "bob's restore still runs");
    // A finished restore is not interrupted; a running one whose heartbeat is old is.
    store.heartbeat_restore(second, Utc::now() - chrono::Duration::minutes(5)).await.unwrap();
    assert_eq!(store.interrupt_stale_restores(Utc::now() - chrono::Duration::minutes(1)).await.unwrap(), 1);
    assert_eq!(store.interrupt_stale_restores(Utc::now() + chrono::Duration::minutes(1)).await.unwrap(), 0, "settled once");
    assert!(store.backup(&a.id).await.unwrap().unwrap().restoring_until.is_none(), "no restore runs: the hold is released");
    // Finishing an interrupted restore later changes nothing: the record says what happened.
    store.finish_restore(second, "succeeded", &serde_json::Value::Null).await.unwrap();

    let restores = store.restores(Some(&a.id), 10).await.unwrap();
    assert_eq!(restores.len(), 2);
    assert_eq!((restores[0].actor.as_str(), restores[0].result.as_str()), ("bob", "interrupted"), "newest first");
    assert!(restores[0].detail["error"].as_str().unwrap().contains("part of the data"), "{:?}", restores[0]);
    assert_eq!((restores[1].actor.as_str(), restores[1].result.as_str()), ("alice", "succeeded"));
    assert!(restores[1].finished_at.is_some() && restores[1].replaced);
    assert!(store.restores(Some(&b.id), 10).await.unwrap().is_empty());
}

/// One open incident per group key is the store's rule: a second writer opening the
/// group again is refused with the incident it must join. Action items, alert
/// attachments and on-call overrides round-trip.
pub async fn incidents_keep_one_open_per_group_with_items_and_overrides(store: impl Store) {
    use steward_model::incidents::oncall::Override;
    use steward_model::incidents::{ActionItem, AttachedState, IncidentAlert, Status};
    use steward_store::IncidentWrite;
    let at = Utc.timestamp_opt(5_000, 0).unwrap();
    let first = store.write_incident(&IncidentWrite::of(incident("API down"))).await.unwrap();
    let err = store.write_incident(&IncidentWrite::of(incident("API down again"))).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::GroupOpen { group_key, incident } if group_key == "pages:service=api" && *incident == first.id),
        "{err}"
    );
    assert!(err.is_conflict());
    // Incidents without a group (declared by a person) are never refused.
    let manual = |t: &str| steward_model::incidents::Incident { group_key: String::new(), policy: None, ..incident(t) };
    store.write_incident(&IncidentWrite::of(manual("a"))).await.unwrap();
    store.write_incident(&IncidentWrite::of(manual("b"))).await.unwrap();
    // Once resolved, the group may open a new incident.
    let mut w = IncidentWrite::of(first.clone());
    w.incident.status = Status::Resolved;
    w.alerts.push(IncidentAlert {
        incident_id: first.id,
        fingerprint: "fp-api".into(),
        rule: "ApiDown".into(),
        labels: Default::default(),
        state: AttachedState::Resolved,
        attached_at: at,
        changed_at: at,
        fired_at: Some(at),
    });
    let item = |id: i64, state: &str| ActionItem {
        id,
        incident_id: first.id,
        text: "alert on replica lag".into(),
        owner: Some("alice".into()),
        state: state.into(),
        created_by: "bob".into(),
        created_at: at,
        done_at: None,
    };
    w.action_items.push(item(0, "open"));
    let resolved = store.write_incident(&w).await.unwrap();
    let second = store.write_incident(&IncidentWrite::of(incident("API down, once more"))).await.unwrap();
    assert_ne!(second.id, first.id);
    let attached = store.attachments(&["fp-api".to_string(), "fp-none".to_string()]).await.unwrap();
    assert_eq!(attached.iter().map(|a| (a.incident_id, a.state)).collect::<Vec<_>>(), [(first.id, AttachedState::Resolved)]);
    let items = store.action_items(Some(first.id), Some("open")).await.unwrap();
    assert_eq!(items.iter().map(|i| (i.text.as_str(), i.owner.as_deref())).collect::<Vec<_>>(), [("alert on replica lag", Some("alice"))]);
    let mut done = IncidentWrite::of(resolved);
    done.action_items.push(item(items[0].id, "done"));
    store.write_incident(&done).await.unwrap();
    assert!(store.action_items(None, Some("open")).await.unwrap().is_empty());
    assert_eq!(store.action_items(None, None).await.unwrap().len(), 1, "updated, not added");
    // Overrides: those still in effect after a time.
    let o = |p: &str, from: i64, until: i64| Override {
        person: p.into(),
        from: Utc.timestamp_opt(from, 0).unwrap(),
        until: Utc.timestamp_opt(until, 0).unwrap(),
    };
    store.add_override("primary", &o("carol", 1_000, 2_000), "alice").await.unwrap();
    store.add_override("primary", &o("dave", 2_000, 3_000), "alice").await.unwrap();
    let live = store.overrides(Utc.timestamp_opt(2_000, 0).unwrap()).await.unwrap();
    assert_eq!(live, vec![("primary".to_string(), o("dave", 2_000, 3_000))]);
}

pub async fn silences_expire_and_resolved_alerts_are_forgotten(store: impl Store) {
    use steward_model::alerting::matcher::Matcher;
    use steward_model::alerting::{Alert, AlertState, NotifyLogEntry, Silence};
    use steward_store::NewNotification;
    let t = |s: i64| Utc.timestamp_opt(20_000 + s, 0).unwrap();
    let silence = Silence {
        id: "s1".into(),
        matchers: vec![Matcher::parse("service=\"api\"").unwrap()],
        starts_at: t(0),
        ends_at: t(3_600),
        created_by: "alice".into(),
        comment: "deploy".into(),
        created_at: t(0),
        expired_at: None,
    };
    store.create_silence(&silence).await.unwrap();
    assert_eq!(store.silences().await.unwrap(), vec![silence.clone()]);
    assert!(store.expire_silence("s1", t(60)).await.unwrap());
    assert!(!store.expire_silence("s1", t(61)).await.unwrap(), "expired once");
    assert!(!store.expire_silence("nope", t(61)).await.unwrap());
    assert_eq!(store.silences().await.unwrap()[0].expired_at, Some(t(60)));
    // Resolved alerts go after the cutoff — unless a log entry still lists them.
    let resolved =
        |fp: &str| Alert { state: AlertState::Resolved, resolved_at: Some(t(10)), ..Alert::inactive(fp, "R", Default::default(), t(0)) };
    store
        .save_alerts(&[
            (resolved("gone"), None),
            (resolved("listed"), None),
            (Alert { state: AlertState::Firing, ..resolved("firing") }, None),
        ])
        .await
        .unwrap();
    let log = NotifyLogEntry { receiver: "ops".into(), group_key: "g".into(), firing: vec!["listed".into()], sent_at: t(5) };
    let n = NewNotification {
        dedup_key: "d".into(),
        receiver: "ops".into(),
        group_key: "g".into(),
        status: "firing".into(),
        payload: "{}".into(),
        alerts: vec![],
        log,
    };
    store.enqueue(&n).await.unwrap();
    assert_eq!(store.forget_resolved(t(5)).await.unwrap(), 0, "resolved after the cutoff");
    assert_eq!(store.forget_resolved(t(20)).await.unwrap(), 1);
    let mut left: Vec<String> = store.load_alerts().await.unwrap().into_iter().map(|a| a.fingerprint).collect();
    left.sort();
    assert_eq!(left, ["firing", "listed"]);
}

pub async fn runs_heartbeat_and_send_messages_with_their_events(store: impl Store) {
    use steward_model::runbooks::NewEvent;
    use steward_store::OutboxMessage;
    let run = store.create_run(&new_run("notify", None, None), NewEvent::new(0, "run_started", "started")).await.unwrap();
    let beat = Utc.timestamp_opt(1_900_000_000, 0).unwrap();
    store.heartbeat(&[run.id], beat).await.unwrap();
    store.heartbeat(&[], beat).await.unwrap();
    assert_eq!(store.run(run.id).await.unwrap().unwrap().heartbeat_at, beat);
    let message = OutboxMessage {
        dedup_key: format!("run/{}/tell", run.id),
        receiver: "ops".into(),
        group_key: format!("run/{}", run.id),
        status: "firing".into(),
        payload: serde_json::json!({"text": "failover done"}),
    };
    let sent = NewEvent::new(run.id, "notified", "told ops");
    store.enqueue_messages(std::slice::from_ref(&message), &[sent]).await.unwrap();
    store.enqueue_messages(&[message], &[]).await.unwrap();
    let notes = store.notifications(None, 10).await.unwrap();
    assert_eq!(notes.len(), 1, "a message's dedup key is enqueued once");
    assert_eq!(notes[0].payload_value(), serde_json::json!({"text": "failover done"}));
    store.append_events(&[NewEvent::new(run.id, "note", "one"), NewEvent::new(run.id, "note", "two")]).await.unwrap();
    let kinds: Vec<String> = store.run_events(run.id, 0, 10).await.unwrap().into_iter().map(|e| e.message).collect();
    assert_eq!(kinds, ["started", "told ops", "one", "two"]);
}

pub async fn backup_leases_renew_and_end_and_verifications_keep_their_record(store: impl Store) {
    use steward_model::backups::{BackupQuery, BackupStatus};
    let t = |s: i64| Utc.timestamp_opt(1_900_000_000 + s, 0).unwrap();
    let at = |id: &str, lock_s: i64| steward_model::backups::NewBackup { started_at: t(lock_s), ..new_backup(id, "orders", None) };
    // An ended lease is taken over; a renewed one is not; a renewal by another owner is not one.
    store.create_backup(&at("20300101T000000Z-0001", 0), "l1").await.unwrap();
    store.create_backup(&at("20300101T000031Z-0002", 31), "l1").await.expect("the 30 s lease ended");
    let c = store.create_backup(&at("20300101T000000Z-0003", 0), "l2").await.unwrap();
    store.heartbeat_backup(&c.id, &c.owner, t(20), t(120)).await.unwrap();
    assert!(matches!(store.create_backup(&at("20300101T000100Z-0004", 60), "l2").await, Err(StoreError::LockHeld { .. })));
    let e = store.create_backup(&at("20300101T000000Z-0005", 0), "l3").await.unwrap();
    store.heartbeat_backup(&e.id, "someone-else", t(20), t(120)).await.unwrap();
    store.create_backup(&at("20300101T000031Z-0006", 31), "l3").await.expect("not renewed by a stranger");
    assert_eq!(store.backup(&c.id).await.unwrap().unwrap().heartbeat_at, t(20));

    store.finish_backup(&c.id, BackupStatus::Succeeded, 10, 5, None, &serde_json::Value::Null).await.unwrap();
    let v1 = store.start_verification(&c.id, "orders", 2, "schedule", Some("verify@1")).await.unwrap();
    assert!(matches!(
        store.start_verification(&c.id, "orders", 2, "schedule", Some("verify@1")).await,
        Err(StoreError::TriggerUsed { .. })
    ));
    // A verification whose heartbeat stopped fails, and its late result changes nothing.
    store.heartbeat_verification(v1, Utc::now() - chrono::Duration::minutes(10)).await.unwrap();
    assert_eq!(store.fail_stale_verifications(Utc::now() - chrono::Duration::minutes(1)).await.unwrap(), 1);
    store.finish_verification(v1, true, &serde_json::json!({"tables": 3}), Some(1200)).await.unwrap();
    assert!(store.backup(&c.id).await.unwrap().unwrap().verify_result.is_none());
    let v2 = store.start_verification(&c.id, "orders", 3, "manual", None).await.unwrap();
    store.finish_verification(v2, true, &serde_json::json!({"tables": 3}), Some(900)).await.unwrap();
    let list = store.verifications(Some(&c.id), 10).await.unwrap();
    assert_eq!(list.iter().map(|v| (v.id, v.result.as_str())).collect::<Vec<_>>(), [(v2, "passed"), (v1, "failed")]);
    assert_eq!(store.verifications(None, 1).await.unwrap()[0].id, v2);
    let verified = store.backup(&c.id).await.unwrap().unwrap();
    assert_eq!((verified.verify_result.as_deref(), verified.verify_level, verified.restore_ms), (Some("passed"), Some(3), Some(900)));

    store.mark_backup_deleted(&c.id).await.unwrap();
    let deleted = store.backups(&BackupQuery { status: Some(BackupStatus::Deleted), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(deleted.iter().map(|b| b.id.as_str()).collect::<Vec<_>>(), [c.id.as_str()]);
    let all = store.backups(&BackupQuery { policy: Some("orders".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all.len(), 5, "every backup but the one refused");
    assert!(all.windows(2).all(|w| w[0].started_at >= w[1].started_at), "newest first");
}

/// Two handles on one database race for everything only one may win: a run lock, a
/// trigger key, a backup lease, a group's open incident, a token name, outbox rows.
pub async fn two_writers_never_both_win(a: impl Store, b: impl Store) {
    use steward_model::runbooks::NewEvent;
    use steward_store::{IncidentWrite, NewNotification};
    let (a, b): (std::sync::Arc<dyn Store>, std::sync::Arc<dyn Store>) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    const ROUNDS: usize = 8;
    async fn both<T: Send + 'static>(
        a: impl std::future::Future<Output = T> + Send + 'static,
        b: impl std::future::Future<Output = T> + Send + 'static,
    ) -> [T; 2] {
        let (x, y) = tokio::join!(tokio::spawn(a), tokio::spawn(b));
        [x.unwrap(), y.unwrap()]
    }
    for round in 0..ROUNDS {
        let lock = format!("failover-{round}");
        let key = format!("nightly@{round}");
        let run = |s: std::sync::Arc<dyn Store>, lock: String, key: Option<String>| async move {
            s.create_run(&new_run("failover", Some(&lock), key.as_deref()), NewEvent::new(0, "run_started", "started")).await
        };
        let results = both(run(a.clone(), lock.clone(), None), run(b.clone(), lock.clone(), None)).await;
        let winner = results.iter().find_map(|r| r.as_ref().ok()).expect("one run takes the lock").id;
        let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(refused.len(), 1, "round {round}: exactly one run takes `{lock}`");
        assert!(matches!(refused[0], StoreError::LockHeld { holder: LockHolder::Run(id), .. } if *id == winner), "{}", refused[0]);

        let results =
            both(run(a.clone(), format!("k-{round}-a"), Some(key.clone())), run(b.clone(), format!("k-{round}-b"), Some(key.clone())))
                .await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "round {round}: one trigger key, one run");
        assert!(results.iter().any(|r| matches!(r, Err(StoreError::TriggerUsed { .. }))));

        let backup = |s: std::sync::Arc<dyn Store>, id: String| async move {
            s.create_backup(&new_backup(&id, "orders", None), "orders@race").await
        };
        let results =
            both(backup(a.clone(), format!("20300101T0000{round:02}Z-aaaa")), backup(b.clone(), format!("20300101T0000{round:02}Z-bbbb")))
                .await;
        let won: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: one backup holds the lease");
        store_finish(&*a, &won[0].id).await;

        let open = |s: std::sync::Arc<dyn Store>| async move {
            let group = steward_model::incidents::Incident { group_key: format!("pages:round={round}"), ..incident("race") };
            s.write_incident(&IncidentWrite::of(group)).await
        };
        let results = both(open(a.clone()), open(b.clone())).await;
        let opened = results.iter().find_map(|r| r.as_ref().ok()).expect("one incident opens").id;
        assert!(
            results.iter().any(|r| matches!(r, Err(StoreError::GroupOpen { incident, .. }) if *incident == opened)),
            "round {round}: the other writer is told which incident to join"
        );

        let token = |s: std::sync::Arc<dyn Store>, hash: &'static str| {
            let name = format!("deploy-{round}");
            async move { s.create_token(&name, Role::Operator, &format!("{hash}-{round}")).await }
        };
        let results = both(token(a.clone(), "ha"), token(b.clone(), "hb")).await;
        assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "round {round}: one live token per name");
    }
    // Outbox rows: four workers on two handles claim until nothing is left; every row
    // is claimed exactly once.
    let t0 = Utc.timestamp_opt(30_000, 0).unwrap();
    for i in 0..60 {
        let log =
            steward_model::alerting::NotifyLogEntry { receiver: "ops".into(), group_key: format!("g{i}"), firing: vec![], sent_at: t0 };
        let n = NewNotification {
            dedup_key: format!("race-{i}"),
            receiver: "ops".into(),
            group_key: format!("g{i}"),
            status: "firing".into(),
            payload: "{}".into(),
            alerts: vec![],
            log,
        };
        a.enqueue(&n).await.unwrap();
    }
    let worker = |s: std::sync::Arc<dyn Store>, name: &'static str| async move {
        let mut mine = Vec::new();
        loop {
            let got = s.claim_due("ops", name, t0, t0 + chrono::Duration::seconds(300), 3).await.unwrap();
            if got.is_empty() {
                return mine;
            }
            mine.extend(got.into_iter().map(|n| n.id));
            tokio::task::yield_now().await;
        }
    };
    let [w1, w2] = both(worker(a.clone(), "a1"), worker(b.clone(), "b1")).await;
    let [w3, w4] = both(worker(a.clone(), "a2"), worker(b.clone(), "b2")).await;
    let mut all: Vec<i64> = [w1, w2, w3, w4].concat();
    let claimed = all.len();
    all.sort();
    all.dedup();
    assert_eq!((claimed, all.len()), (60, 60), "every row claimed once, none twice");
}

async fn store_finish(s: &dyn Store, id: &str) {
    s.finish_backup(id, steward_model::backups::BackupStatus::Succeeded, 1, 1, None, &serde_json::Value::Null).await.unwrap();
}

/// Approvals, cancels and resumes are decisions any process may take: each is taken
/// once, in the store, and the loser learns it lost.
/// A pending approval of `run` at `path` (first attempt, operators, a distinct approver).
fn pending_approval(run: i64, path: &str, now: chrono::DateTime<Utc>) -> steward_model::runbooks::ApprovalRequest {
    use steward_model::runbooks::{ApprovalRequest, ApprovalState};
    ApprovalRequest {
        run_id: run,
        path: path.into(),
        attempt: 1,
        role: Role::Operator,
        distinct_approver: true,
        started_by: "alice".into(),
        requested_at: now,
        expires_at: now + chrono::Duration::minutes(30),
        state: ApprovalState::Pending,
        decided_by: None,
        decided_at: None,
        comment: String::new(),
    }
}

pub async fn approvals_cancels_and_resumes_are_decided_once(store: impl Store) {
    use steward_model::runbooks::{ApprovalState, Decision, NewEvent, RunStatus};
    let run = store.create_run(&new_run("deploy", Some("deploy"), None), NewEvent::new(0, "run_started", "started")).await.unwrap();
    let now = Utc.timestamp_opt(1_900_000_000, 0).unwrap();
    let approval = |path: &str| pending_approval(run.id, path, now);
    let decision = |state, by: &str, comment: &str| Decision { state, by: by.into(), comment: comment.into() };
    store.request_approval(&approval("confirm"), &[NewEvent::new(run.id, "approval_requested", "waits")]).await.unwrap();
    assert_eq!(store.run(run.id).await.unwrap().unwrap().status, RunStatus::Waiting);
    assert_eq!(store.approvals(run.id).await.unwrap(), vec![approval("confirm")]);
    // The first decision stands; a later one (the timeout, a second person) writes nothing.
    let approved = NewEvent::new(run.id, "approved", "bob approved").by("bob");
    assert!(store.decide_approval(run.id, "confirm", 1, &decision(ApprovalState::Approved, "bob", "lag ok"), &[approved]).await.unwrap());
    let late = NewEvent::new(run.id, "denied", "too late").by("carol");
    assert!(!store.decide_approval(run.id, "confirm", 1, &decision(ApprovalState::Denied, "carol", ""), &[late]).await.unwrap());
    assert!(!store.decide_approval(run.id, "confirm", 1, &decision(ApprovalState::Expired, "steward", ""), &[]).await.unwrap());
    let decided = &store.approvals(run.id).await.unwrap()[0];
    assert_eq!((decided.state, decided.decided_by.as_deref(), decided.comment.as_str()), (ApprovalState::Approved, Some("bob"), "lag ok"));
    assert!(decided.decided_at.is_some());
    let messages: Vec<String> = store.run_events(run.id, 0, 10).await.unwrap().into_iter().map(|e| e.message).collect();
    assert_eq!(messages, ["started", "waits", "bob approved"], "the losing decision left no event");
    // A run that stops withdraws what it waited for.
    store.request_approval(&approval("again"), &[]).await.unwrap();
    store.set_run_status(run.id, RunStatus::Interrupted, Some("stopped"), None, &[]).await.unwrap();
    assert_eq!(store.approvals(run.id).await.unwrap()[1].state, ApprovalState::Withdrawn);

    // Resume: from the given statuses only, once, taking the lock and the run for its owner.
    store
        .resume_run(run.id, &[RunStatus::Interrupted], "host:2:2", Some("deploy"), &[NewEvent::new(run.id, "resumed", "go")])
        .await
        .unwrap();
    let resumed = store.run(run.id).await.unwrap().unwrap();
    assert_eq!((resumed.status, resumed.owner.as_str(), resumed.error.as_deref()), (RunStatus::Running, "host:2:2", None));
    let again = store.resume_run(run.id, &[RunStatus::Interrupted], "host:3:3", Some("deploy"), &[]).await;
    assert!(matches!(again, Err(StoreError::StaleVersion { .. })), "{again:?}");

    // Cancel: asked once, while the run runs; the runner finds it among its runs.
    assert!(store.cancels_requested(&[run.id]).await.unwrap().is_empty());
    assert!(store.request_cancel(run.id, "carol", &[NewEvent::new(run.id, "cancelled", "carol cancelled")]).await.unwrap());
    assert!(!store.request_cancel(run.id, "dave", &[NewEvent::new(run.id, "cancelled", "dave cancelled")]).await.unwrap());
    assert_eq!(store.cancels_requested(&[run.id, run.id + 1000]).await.unwrap(), vec![run.id]);
    assert_eq!(store.run(run.id).await.unwrap().unwrap().cancel_requested_by.as_deref(), Some("carol"));
    store.set_run_status(run.id, RunStatus::Cancelled, Some("cancelled"), None, &[]).await.unwrap();
    assert!(store.cancels_requested(&[run.id]).await.unwrap().is_empty(), "an ended run is not cancelled again");
    assert!(!store.request_cancel(run.id, "erin", &[]).await.unwrap(), "nor can it be asked to");

    // A retry takes the lock back only when it is free, and changes nothing otherwise.
    let failed = store.create_run(&new_run("db", Some("db"), None), NewEvent::new(0, "run_started", "started")).await.unwrap();
    store.set_run_status(failed.id, RunStatus::Failed, Some("boom"), None, &[]).await.unwrap();
    let other = store.create_run(&new_run("db", Some("db"), None), NewEvent::new(0, "run_started", "started")).await.unwrap();
    let retry =
        store.resume_run(failed.id, &[RunStatus::Failed], "host:2:2", Some("db"), &[NewEvent::new(failed.id, "retried", "x")]).await;
    assert!(matches!(&retry, Err(StoreError::LockHeld { holder: LockHolder::Run(id), .. }) if *id == other.id), "{retry:?}");
    let still = store.run(failed.id).await.unwrap().unwrap();
    assert_eq!((still.status, still.error.as_deref()), (RunStatus::Failed, Some("boom")), "a refused retry changes nothing");
    assert_eq!(store.run_events(failed.id, 0, 10).await.unwrap().len(), 1);

    // Retention takes a finished run's approvals with it.
    assert_eq!(store.approvals(run.id).await.unwrap().len(), 2);
    assert_eq!(store.prune_runs(Utc::now() + chrono::Duration::seconds(1)).await.unwrap(), 2, "the cancelled and the failed run");
    assert!(store.run(run.id).await.unwrap().is_none());
    assert!(store.approvals(run.id).await.unwrap().is_empty(), "approvals of an expired run were left behind");
}

pub async fn leadership_is_one_lease_whose_term_only_grows(a: impl Store, b: impl Store) {
    use steward_store::{Fence, Replica};
    let t = |s: i64| Utc.timestamp_opt(1_000_000 + s, 0).unwrap();
    assert_eq!(a.leader().await.unwrap(), None, "nobody led yet");
    let lease = a.lead("a", t(0), t(15)).await.unwrap();
    assert_eq!((lease.holder.as_str(), lease.term), ("a", 1));
    let lease = b.lead("b", t(1), t(16)).await.unwrap();
    assert_eq!((lease.holder.as_str(), lease.term), ("a", 1), "a live lease is not taken");
    let lease = a.lead("a", t(5), t(20)).await.unwrap();
    assert_eq!((lease.holder.as_str(), lease.term, lease.acquired_at, lease.expires_at), ("a", 1, t(0), t(20)), "renewed: same term");
    let lease = b.lead("b", t(20), t(35)).await.unwrap();
    assert_eq!((lease.holder.as_str(), lease.term, lease.acquired_at), ("b", 2, t(20)), "taken once expired: next term");
    assert_eq!(a.lead("a", t(21), t(36)).await.unwrap().holder, "b");
    assert!(!a.resign(&Fence { holder: "a".into(), term: 1 }).await.unwrap(), "an ended term cannot resign");
    assert!(b.resign(&Fence { holder: "b".into(), term: 2 }).await.unwrap());
    let lease = a.lead("a", t(22), t(37)).await.unwrap();
    assert_eq!((lease.holder.as_str(), lease.term), ("a", 3), "resigned: taken at once, next term");
    // The same holder coming back after its own lease expired starts a new term too:
    // what it wrote under the old one may have been refused meanwhile.
    assert_eq!(a.lead("a", t(60), t(75)).await.unwrap().term, 4);
    // Two replicas racing for a free lease: one wins.
    b.resign(&Fence { holder: "a".into(), term: 4 }).await.unwrap();
    let (x, y) = tokio::join!(a.lead("x", t(80), t(95)), b.lead("y", t(80), t(95)));
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x, y, "both see the same lease");
    assert_eq!(x.term, 5);

    let replica = |id: &str, at: i64| Replica {
        id: id.into(),
        address: format!("http://{id}:8080"),
        version: "1.2.3".into(),
        schema: 2,
        started_at: t(0),
        heartbeat_at: t(at),
    };
    a.heartbeat_replica(&replica("r1", 0)).await.unwrap();
    b.heartbeat_replica(&replica("r2", 0)).await.unwrap();
    a.heartbeat_replica(&replica("r1", 30)).await.unwrap();
    let all = b.replicas().await.unwrap();
    assert_eq!(all.iter().map(|r| (r.id.as_str(), r.heartbeat_at)).collect::<Vec<_>>(), [("r1", t(30)), ("r2", t(0))]);
    assert_eq!(a.forget_replicas(t(10)).await.unwrap(), 1);
    assert_eq!(a.replicas().await.unwrap().len(), 1);
    assert!(a.schema_version().await.unwrap() >= 2, "a migrated store reports its schema");
}

macro_rules! store_suite {
    ($backend:ident, $open:expr, $open_twice:expr) => {
        mod $backend {
            use super::*;
            #[tokio::test]
            async fn records_runs_states_and_transitions() {
                let (_guard, store) = $open.await;
                super::records_runs_states_and_transitions(store).await;
            }
            #[tokio::test]
            async fn compaction_folds_old_results_into_hourly_rollups() {
                let (_guard, store) = $open.await;
                super::compaction_folds_old_results_into_hourly_rollups(store).await;
            }
            #[tokio::test]
            async fn day_buckets_agree_with_the_hours_across_compactions() {
                let (_guard, store) = $open.await;
                super::day_buckets_agree_with_the_hours_across_compactions(store).await;
            }
            #[tokio::test]
            async fn heartbeats_keep_the_latest_signal_of_each_kind() {
                let (_guard, store) = $open.await;
                super::heartbeats_keep_the_latest_signal_of_each_kind(store).await;
            }
            #[tokio::test]
            async fn days_are_summed_per_group_from_sums_and_raw_results() {
                let (_guard, store) = $open.await;
                super::days_are_summed_per_group_from_sums_and_raw_results(store).await;
            }
            #[tokio::test]
            async fn tokens_are_unique_by_live_name_and_revocable() {
                let (_guard, store) = $open.await;
                super::tokens_are_unique_by_live_name_and_revocable(store).await;
            }
            #[tokio::test]
            async fn buckets_sum_rollups_and_raw_results() {
                let (_guard, store) = $open.await;
                super::buckets_sum_rollups_and_raw_results(store).await;
            }
            #[tokio::test]
            async fn console_sessions_end_by_expiry_sign_out_or_revocation() {
                let (_guard, store) = $open.await;
                super::console_sessions_end_by_expiry_sign_out_or_revocation(store).await;
            }
            #[tokio::test]
            async fn outbox_enqueues_once_per_dedup_key_with_its_log_entry() {
                let (_guard, store) = $open.await;
                super::outbox_enqueues_once_per_dedup_key_with_its_log_entry(store).await;
            }
            #[tokio::test]
            async fn alert_batches_keep_every_transition_in_order() {
                let (_guard, store) = $open.await;
                super::alert_batches_keep_every_transition_in_order(store).await;
            }
            #[tokio::test]
            async fn an_incident_lists_only_its_own_episodes_notifications() {
                let (_guard, store) = $open.await;
                super::an_incident_lists_only_its_own_episodes_notifications(store).await;
            }

            #[tokio::test]
            async fn incident_writes_are_atomic_and_versioned() {
                let (_guard, store) = $open.await;
                super::incident_writes_are_atomic_and_versioned(store).await;
            }
            #[tokio::test]
            async fn server_keys_are_created_once() {
                let (_guard, store) = $open.await;
                super::server_keys_are_created_once(store).await;
            }
            #[tokio::test]
            async fn runs_take_locks_and_trigger_keys_once_and_keep_their_record() {
                let (_guard, store) = $open.await;
                super::runs_take_locks_and_trigger_keys_once_and_keep_their_record(store).await;
            }
            #[tokio::test]
            async fn backups_take_one_lease_per_lock_and_restores_keep_a_record_and_a_hold() {
                let (_guard, store) = $open.await;
                super::backups_take_one_lease_per_lock_and_restores_keep_a_record_and_a_hold(store).await;
            }
            #[tokio::test]
            async fn incidents_keep_one_open_per_group_with_items_and_overrides() {
                let (_guard, store) = $open.await;
                super::incidents_keep_one_open_per_group_with_items_and_overrides(store).await;
            }
            #[tokio::test]
            async fn silences_expire_and_resolved_alerts_are_forgotten() {
                let (_guard, store) = $open.await;
                super::silences_expire_and_resolved_alerts_are_forgotten(store).await;
            }
            #[tokio::test]
            async fn runs_heartbeat_and_send_messages_with_their_events() {
                let (_guard, store) = $open.await;
                super::runs_heartbeat_and_send_messages_with_their_events(store).await;
            }
            #[tokio::test]
            async fn backup_leases_renew_and_end_and_verifications_keep_their_record() {
                let (_guard, store) = $open.await;
                super::backup_leases_renew_and_end_and_verifications_keep_their_record(store).await;
            }
            #[tokio::test]
            async fn approvals_cancels_and_resumes_are_decided_once() {
                let (_guard, store) = $open.await;
                super::approvals_cancels_and_resumes_are_decided_once(store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn two_writers_never_both_win() {
                let (_guard, a, b) = $open_twice.await;
                super::two_writers_never_both_win(a, b).await;
            }
            #[tokio::test]
            async fn leadership_is_one_lease_whose_term_only_grows() {
                let (_guard, a, b) = $open_twice.await;
                super::leadership_is_one_lease_whose_term_only_grows(a, b).await;
            }
            #[tokio::test]
            async fn slo_buckets_add_up_and_roll_up_without_changing_the_figures() {
                let (_guard, store) = $open.await;
                super::slo_buckets_add_up_and_roll_up_without_changing_the_figures(store).await;
            }
            #[tokio::test]
            async fn forgets_states_of_removed_checks() {
                let (_guard, store) = $open.await;
                super::forgets_states_of_removed_checks(store).await;
            }
        }
    };
}

async fn sqlite() -> (tempfile::TempDir, steward_store::SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = steward_store::SqliteStore::open(dir.path()).await.unwrap();
    (dir, store)
}

/// Two handles (two pools, as two processes would have) on one database file.
async fn sqlite_twice() -> (tempfile::TempDir, steward_store::SqliteStore, steward_store::SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let a = steward_store::SqliteStore::open(dir.path()).await.unwrap();
    let b = steward_store::SqliteStore::open(dir.path()).await.unwrap();
    (dir, a, b)
}

store_suite!(sqlite_backend, sqlite(), sqlite_twice());

async fn postgres() -> ((), steward_store::PostgresStore) {
    let url = steward_testkit::shared_database();
    ((), steward_store::PostgresStore::connect(&url).await.unwrap())
}

/// Two stores (two pools, as two replicas would have) on one database.
async fn postgres_twice() -> ((), steward_store::PostgresStore, steward_store::PostgresStore) {
    let url = steward_testkit::shared_database();
    let a = steward_store::PostgresStore::connect(&url).await.unwrap();
    let b = steward_store::PostgresStore::connect(&url).await.unwrap();
    ((), a, b)
}

store_suite!(postgres_backend, postgres(), postgres_twice());

/// Every method of the store contract is called by the suite above, so a backend cannot
/// pass it with a method nobody tried. (Reads the trait's source: the list of methods
/// is the trait itself.)
#[test]
fn the_suite_calls_every_store_method() {
    let contract = concat!(include_str!("../src/lib.rs"), include_str!("../src/cluster.rs"));
    let suite = include_str!("store_suite.rs");
    let methods: Vec<&str> =
        contract.lines().filter_map(|l| l.trim_start().strip_prefix("async fn ")).filter_map(|rest| rest.split('(').next()).collect();
    assert!(methods.len() > 70, "the trait has its methods: {methods:?}");
    let uncalled: Vec<&&str> = methods.iter().filter(|m| !suite.contains(&format!(".{m}("))).collect();
    assert!(uncalled.is_empty(), "store methods the suite never calls: {uncalled:?}");
}

#[tokio::test]
async fn sqlite_reopens_with_its_data_and_refuses_newer_schemas() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = steward_store::SqliteStore::open(dir.path()).await.unwrap();
        store.record(&[run("a", 1, true, Health::Healthy, true)]).await.unwrap();
    }
    let store = steward_store::SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(store.load_states().await.unwrap().len(), 1);
    drop(store);
    let db = dir.path().join("steward.db");
    std::process::Command::new("python3")
        .arg("-c")
        .arg(format!("import sqlite3; c=sqlite3.connect('{}'); c.execute('PRAGMA user_version = 99'); c.commit()", db.display()))
        .status()
        .unwrap();
    let err = steward_store::SqliteStore::open(dir.path()).await.err().expect("a newer schema must be refused");
    assert!(err.to_string().contains("newer steward"), "{err}");
}

#[tokio::test]
async fn sqlite_refuses_to_edit_or_delete_the_incident_timeline() {
    use steward_model::incidents::TimelineEntry;
    use steward_store::{IncidentStore, IncidentWrite};
    let dir = tempfile::tempdir().unwrap();
    let store = steward_store::SqliteStore::open(dir.path()).await.unwrap();
    let mut w = IncidentWrite::of(incident("x"));
    w.timeline.push(TimelineEntry::new(Utc.timestamp_opt(5_000, 0).unwrap(), "opened", "steward", "opened"));
    store.write_incident(&w).await.unwrap();
    drop(store);
    let db = dir.path().join("steward.db");
    for sql in ["UPDATE incident_timeline SET text = 'edited'", "DELETE FROM incident_timeline"] {
        assert_refused_as_append_only(&db, sql);
    }
}

#[tokio::test]
async fn sqlite_refuses_to_edit_run_events_or_delete_those_of_unfinished_runs() {
    use steward_model::runbooks::NewEvent;
    use steward_store::RunStore;
    let dir = tempfile::tempdir().unwrap();
    let store = steward_store::SqliteStore::open(dir.path()).await.unwrap();
    store.create_run(&new_run("r", None, None), NewEvent::new(0, "run_started", "started").by("alice")).await.unwrap();
    drop(store);
    let db = dir.path().join("steward.db");
    for sql in ["UPDATE run_events SET actor = 'mallory'", "DELETE FROM run_events"] {
        assert_refused_as_append_only(&db, sql);
    }
}

/// Runs `sql` on the database file from another process (as an operator with the sqlite3
/// shell would) and expects the append-only triggers to refuse it.
fn assert_refused_as_append_only(db: &std::path::Path, sql: &str) {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!("import sqlite3; c=sqlite3.connect('{}'); c.execute(\"{sql}\"); c.commit()", db.display()))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{sql} must be refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("append-only"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `sql` on a PostgreSQL database through psql (as an operator would) and returns
/// whether it succeeded and what it printed on stderr.
fn psql(url: &str, sql: &str) -> (bool, String) {
    let out = std::process::Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-Atc", sql]).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn postgres_reconnects_to_its_data_and_refuses_newer_schemas() {
    let url = steward_testkit::shared_database();
    {
        let store = steward_store::PostgresStore::connect(&url).await.unwrap();
        store.record(&[run("a", 1, true, Health::Healthy, true)]).await.unwrap();
    }
    // Two replicas starting at once both migrate safely (the second finds it done).
    let (a, b) = tokio::join!(steward_store::PostgresStore::connect(&url), steward_store::PostgresStore::connect(&url));
    assert_eq!(a.unwrap().load_states().await.unwrap().len(), 1);
    drop(b.unwrap());
    assert!(psql(&url, "UPDATE steward_schema SET version = 99").0);
    let err = steward_store::PostgresStore::connect(&url).await.err().expect("a newer schema must be refused");
    assert!(err.to_string().contains("newer steward"), "{err}");
}

#[tokio::test]
async fn postgres_connection_errors_name_the_server_but_never_the_password() {
    let port = steward_testkit::free_port();
    let url = format!("postgres://steward:hunter2@127.0.0.1:{port}/steward");
    let err = steward_store::PostgresStore::connect(&url).await.err().expect("nothing listens there");
    let message = err.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(!message.contains("hunter2"), "the password leaked: {message}");
}

#[tokio::test]
async fn postgres_refuses_to_edit_or_delete_the_incident_timeline_and_run_events() {
    use steward_model::incidents::TimelineEntry;
    use steward_model::runbooks::NewEvent;
    use steward_store::{IncidentStore, IncidentWrite, RunStore};
    let url = steward_testkit::shared_database();
    let store = steward_store::PostgresStore::connect(&url).await.unwrap();
    let mut w = IncidentWrite::of(incident("x"));
    w.timeline.push(TimelineEntry::new(Utc.timestamp_opt(5_000, 0).unwrap(), "opened", "steward", "opened"));
    store.write_incident(&w).await.unwrap();
    store.create_run(&new_run("r", None, None), NewEvent::new(0, "run_started", "started").by("alice")).await.unwrap();
    for sql in [
        "UPDATE incident_timeline SET text = 'edited'",
        "DELETE FROM incident_timeline",
        "UPDATE run_events SET actor = 'mallory'",
        "DELETE FROM run_events",
    ] {
        let (ok, stderr) = psql(&url, sql);
        assert!(!ok, "{sql} must be refused");
        assert!(stderr.contains("append-only"), "{sql}: {stderr}");
    }
}

/// A leader's writes go through a store fenced with its term. Once another replica
/// has taken the leadership, every write through the old fence is refused by the
/// database and changes nothing; the new leader's fenced writes go through.
#[tokio::test]
async fn postgres_refuses_the_writes_of_an_ex_leader() {
    use steward_store::{ClusterStore, Fence};
    let url = steward_testkit::shared_database();
    let a = steward_store::PostgresStore::connect(&url).await.unwrap();
    let b = steward_store::PostgresStore::connect(&url).await.unwrap();
    let t = |s: i64| Utc.timestamp_opt(2_000_000 + s, 0).unwrap();
    let first = a.lead("a", t(0), t(15)).await.unwrap();
    let old = a.fenced(Fence { holder: "a".into(), term: first.term });
    old.record(&[run("c", 1, true, Health::Healthy, true)]).await.expect("the leader writes");
    // `a` is paused past its lease; `b` takes over.
    let second = b.lead("b", t(16), t(31)).await.unwrap();
    assert_eq!((second.holder.as_str(), second.term), ("b", first.term + 1));
    let refused = old.record(&[run("c", 2, false, Health::Unhealthy, true)]).await;
    assert!(matches!(&refused, Err(StoreError::Fenced(m)) if m.contains(&format!("term {}", first.term))), "{refused:?}");
    let refused = old.create_token("late", Role::Admin, "h").await;
    assert!(matches!(refused, Err(StoreError::Fenced(_))), "{refused:?}");
    assert_eq!(b.history("c", 10, None).await.unwrap().len(), 1, "nothing of the refused write landed");
    assert!(b.token_by_hash("h").await.unwrap().is_none());
    let new = b.fenced(Fence { holder: "b".into(), term: second.term });
    new.record(&[run("c", 3, false, Health::Unhealthy, true)]).await.expect("the new leader writes");
    // Unfenced handles (a follower serving the API, the CLI) are not checked.
    a.create_token("cli", Role::Viewer, "h2").await.unwrap();
}

/// Every table that holds state carries the fence trigger, so a table added later
/// cannot be written by an ex-leader because someone forgot it.
#[tokio::test]
async fn postgres_fences_every_state_table() {
    let url = steward_testkit::shared_database();
    drop(steward_store::PostgresStore::connect(&url).await.unwrap());
    let (ok, _) = psql(&url, "SELECT 1");
    assert!(ok);
    let out = std::process::Command::new("psql")
        .args([
            url.as_str(),
            "-Atc",
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = current_schema() AND c.relkind = 'r' \
               AND c.relname NOT IN ('leadership', 'replicas', 'readiness_probe', 'steward_schema') \
               AND NOT EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid \
                               WHERE t.tgrelid = c.oid AND p.proname = 'steward_fence') ORDER BY 1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "", "state tables without the fence");
}

/// The run change feed: what one replica commits about a run reaches another replica's
/// feed — a new run, an approval asked and decided, a cancel asked, a step, an event —
/// while a heartbeat (every few seconds per live run) does not notify. Deterministic:
/// notifications arrive in commit order, so the heartbeat is checked by what comes
/// right after it.
#[tokio::test]
async fn postgres_run_changes_reach_other_replicas() {
    use steward_model::runbooks::{ApprovalState, Decision, NewEvent};
    use steward_store::{RunChange, RunStore};
    let url = steward_testkit::shared_database();
    let watcher = steward_store::PostgresStore::connect(&url).await.unwrap();
    let writer = steward_store::PostgresStore::connect(&url).await.unwrap();
    let mut feed = watcher.run_changes().await.unwrap().expect("PostgreSQL has a change feed");
    let mut next = async || tokio::time::timeout(Duration::from_secs(10), feed.recv()).await.expect("a change within 10 s").unwrap();

    let run = writer.create_run(&new_run("deploy", None, None), NewEvent::new(0, "run_started", "started")).await.unwrap();
    assert_eq!(next().await, RunChange::Run(run.id), "a new run");
    let now = Utc.timestamp_opt(1_900_000_000, 0).unwrap();
    writer
        .request_approval(&pending_approval(run.id, "confirm", now), &[NewEvent::new(run.id, "approval_requested", "waits")])
        .await
        .unwrap();
    assert_eq!(next().await, RunChange::Run(run.id), "an approval asked: one notification for the whole transaction");
    // A heartbeat is not news; the next change is the decision.
    writer.heartbeat(&[run.id], Utc::now()).await.unwrap();
    let other = writer.create_run(&new_run("other", None, None), NewEvent::new(0, "run_started", "started")).await.unwrap();
    assert_eq!(next().await, RunChange::Run(other.id), "the heartbeat sent nothing");
    let decision = Decision { state: ApprovalState::Approved, by: "bob".into(), comment: String::new() };
    assert!(writer.decide_approval(run.id, "confirm", 1, &decision, &[]).await.unwrap());
    assert_eq!(next().await, RunChange::Run(run.id), "a decision, even without an event");
    assert!(writer.request_cancel(other.id, "carol", &[]).await.unwrap());
    assert_eq!(next().await, RunChange::Run(other.id), "a cancel asked");
    writer.append_events(&[NewEvent::new(run.id, "note", "hello")]).await.unwrap();
    assert_eq!(next().await, RunChange::Run(run.id), "an event");

    // The feed's connection is cut (as a restart or a network blip would): the feed says
    // to look again, and changes keep coming on the new connection.
    let (ok, stderr) =
        psql(&url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN%'");
    assert!(ok, "{stderr}");
    assert_eq!(next().await, RunChange::Resync, "a cut feed says so");
    writer.append_events(&[NewEvent::new(other.id, "note", "after")]).await.unwrap();
    assert_eq!(next().await, RunChange::Run(other.id), "changes flow again after the cut");
}

/// SQLite has no change feed (one server writes runs): waiters poll.
#[tokio::test]
async fn sqlite_has_no_run_change_feed() {
    use steward_store::RunStore;
    let (_dir, store) = sqlite().await;
    assert!(store.run_changes().await.unwrap().is_none());
}

/// Two steward processes opening a new data directory at the same moment (`steward
/// backup run` and `steward backup list` beside it): while one holds the database's
/// lock to create the schema, the other waits instead of failing "database is locked".
/// Held here deterministically: an exclusive lock on the fresh file, released after a
/// second, while `open` runs.
#[tokio::test]
async fn sqlite_open_waits_for_another_process_holding_the_lock() {
    use sqlx::Connection;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.db");
    let mut holder = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display())).await.unwrap();
    // A reader mid-transaction on the new file (rollback journal, before WAL): switching
    // the file to WAL needs it gone.
    sqlx::raw_sql("CREATE TABLE held (x INTEGER); BEGIN; SELECT count(*) FROM held;").execute(&mut holder).await.unwrap();
    let opening = tokio::spawn({
        let dir = dir.path().to_path_buf();
        async move { steward_store::SqliteStore::open(&dir).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    assert!(!opening.is_finished(), "open must wait while the lock is held");
    sqlx::raw_sql("COMMIT").execute(&mut holder).await.unwrap();
    holder.close().await.unwrap();
    let store = opening.await.unwrap().expect("open succeeds once the lock is released");
    store.probe_writable().await.unwrap();
}

/// Several processes opening one new data directory at once (a starting server and a
/// CLI command beside it) all get the store. Before the open waited, this failed in its
/// first round with "database is locked" (as CI's `steward backup run` died beside a
/// `steward backup list`); the lock taken while the file turns to WAL is
/// what `sqlite_open_waits_for_another_process_holding_the_lock` cannot hold from
/// outside, so this repeats the real race instead.
#[tokio::test]
async fn sqlite_opened_by_many_at_once_opens_for_all() {
    for _ in 0..30 {
        let dir = tempfile::tempdir().unwrap();
        let opens: Vec<_> = (0..4)
            .map(|_| {
                let dir = dir.path().to_path_buf();
                tokio::spawn(async move { steward_store::SqliteStore::open(&dir).await })
            })
            .collect();
        for o in opens {
            if let Err(e) = o.await.unwrap() {
                panic!("a concurrent open failed: {e}");
            }
        }
    }
}
