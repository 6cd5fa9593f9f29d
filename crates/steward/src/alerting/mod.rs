//! Deciding when people must act, and telling them reliably.
//!
//! # Data flow
//! check states and results → [`evaluate`] (rules → alerts: pending → firing →
//! resolved, persisted with every change) → [`dispatch`] (routing tree, grouping,
//! silences, inhibition, service dependencies → one durable outbox row per
//! notification) → [`deliver`] (one worker per receiver: retries with backoff and
//! jitter until delivered).
//!
//! **Invariants.**
//! - An alert's state is written to the store before anything is sent about it, so a
//!   restart resumes `for` timers and knows what is firing. (A firing alert's value
//!   and `last_true` alone are written at most every 10 s; see `Live::commit`.)
//! - A notification is enqueued in the same transaction that records it in the
//!   notification log (what each receiver was last told about each group). A crash
//!   therefore either did both or neither: never a duplicate firing notification, never
//!   a lost resolved one.
//! - Delivery is at least once. Each notification carries a stable dedup key
//!   (`Idempotency-Key` header, PagerDuty `dedup_key`), so a receiver can drop the
//!   rare redelivery after a crash between sending and recording success.
//! - A receiver only ever blocks its own queue: each has its own worker and timeout.

pub mod deliver;
pub mod dispatch;
pub mod evaluate;
pub mod forecasts;
pub mod ingest;
pub mod live;
pub mod promql;
pub mod render;
pub mod route;
pub mod runbook_link;
pub mod slo_queries;

pub use live::{Alerting, AlertingParts, Live};
/// Alerts, silences and notifications as data, and their languages (matchers,
/// annotation templates, time intervals): the model layer's.
pub use steward_model::alerting::*;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::telemetry::StateLabels;

/// How often rules are evaluated when no check changed health in between.
const EVALUATION_TICK: Duration = Duration::from_secs(1);
/// How often the SLO gauges (`steward_slo_sli_ratio`, `…_error_budget_remaining_ratio`,
/// `…_burn_rate`) are recomputed from the buckets: each reads the SLO's whole window.
const SLO_FIGURES_EVERY: Duration = Duration::from_secs(15);
/// Resolved alerts are kept this long for the API, then forgotten.
const RESOLVED_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Runs alerting until `stop`: the evaluator here, the dispatcher and one delivery
/// worker per receiver beside it.
///
/// Supervised (see [`crate::telemetry::supervise`]): if this loop panics, the tasks it
/// started stop with it (their token is a child cancelled on unwind), so the restart
/// never runs two dispatchers or two workers for one receiver.
pub async fn run(alerting: Arc<Alerting>, stop: CancellationToken) {
    let stop = stop.child_token();
    let _stop_ours_on_unwind = stop.clone().drop_guard();
    let mut evaluator = evaluate::Evaluator::default();
    let mut workers = deliver::Workers::new();
    deliver::release_claims_of_gone_processes(&alerting).await;
    workers.sync(&alerting, &stop);
    let metrics = alerting.metrics.clone();
    let dispatcher = {
        let (alerting, stop) = (alerting.clone(), stop.clone());
        crate::telemetry::supervise("alert_dispatch", metrics.clone(), move || dispatch::run(alerting.clone(), stop.clone()))
    };
    let promql = {
        let (alerting, stop) = (alerting.clone(), stop.clone());
        crate::telemetry::supervise("promql_rules", metrics.clone(), move || promql::run(alerting.clone(), stop.clone()))
    };
    let slo_queries = {
        let (alerting, stop) = (alerting.clone(), stop.clone());
        crate::telemetry::supervise("slo_queries", metrics, move || slo_queries::run(alerting.clone(), stop.clone()))
    };
    let mut tick = tokio::time::interval(EVALUATION_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::Instant::now();
    let mut slo_figures: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
            _ = alerting.wake_evaluator.notified() => {}
        }
        let now = crate::clock::now();
        evaluator.tick(&alerting, now).await;
        ingest::expire(&alerting, now).await;
        workers.sync(&alerting, &stop);
        let alerts = alerting.alerts();
        for state in [AlertState::Pending, AlertState::Firing, AlertState::Resolved] {
            let n = alerts.iter().filter(|a| a.state == state).count();
            alerting.metrics.alerts.get_or_create(&StateLabels { state: state.as_str().into() }).set(n as i64);
        }
        if slo_figures.is_none_or(|t| t.elapsed() >= SLO_FIGURES_EVERY) {
            slo_figures = Some(tokio::time::Instant::now());
            let config = alerting.config.get();
            let statuses = alerting.checks.slo_tallies().statuses(alerting.checks.store(), &config.slos, now).await;
            let cpu = crate::telemetry::thread_cpu();
            crate::slos::publish_metrics(&alerting.metrics, &statuses);
            alerting.metrics.slo_work_since(crate::telemetry::SloWork::Figures, cpu);
        }
        if housekeeping.elapsed() >= Duration::from_secs(5) {
            housekeeping = tokio::time::Instant::now();
            if let Ok((depth, oldest)) = alerting.store.outbox_depth().await {
                alerting.metrics.outbox_depth.set(depth as i64);
                alerting.metrics.outbox_oldest_age.set(oldest.map_or(0.0, |t| (now - t).num_milliseconds() as f64 / 1000.0));
            }
            let before = now - chrono::Duration::from_std(RESOLVED_RETENTION).unwrap_or_default();
            if let Err(e) = alerting.store.forget_resolved(before).await {
                tracing::warn!(error = %e, "could not forget old resolved alerts");
            }
        }
    }
    let _ = dispatcher.await;
    let _ = promql.await;
    let _ = slo_queries.await;
}
