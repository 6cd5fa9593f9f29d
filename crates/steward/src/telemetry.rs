//! Prometheus metrics, one registry per process (no globals), rendered at `/metrics`.
//! Names follow `steward_<noun>_<unit>`, counters end in `_total`, and labels stay
//! low-cardinality except the per-check `up` gauge, which is the point of a prober.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub check: String,
    pub service: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub kind: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HealthLabels {
    pub to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabels {
    pub rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabels {
    pub receiver: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub receiver: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunbookLabels {
    pub runbook: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PriorityLabels {
    pub priority: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WhereLabels {
    /// `http` for a request handler, otherwise the name of a background task.
    pub r#where: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabels {
    pub task: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub panics: Family<WhereLabels, Counter>,
    pub task_restarts: Family<TaskLabels, Counter>,
    pub check_up: Family<CheckLabels, Gauge>,
    pub check_duration: Family<KindLabels, Histogram>,
    pub check_runs: Family<RunLabels, Counter>,
    pub check_transitions: Family<HealthLabels, Counter>,
    pub checks_configured: Gauge,
    pub scheduler_lag: Histogram,
    pub store_write_duration: Histogram,
    pub store_dropped_results: Counter,
    pub config_reloads: Family<ResultLabels, Counter>,
    pub config_last_reload_success: Gauge<f64, AtomicU64>,
    pub alerts: Family<StateLabels, Gauge>,
    pub notifications_enqueued: Family<ReceiverLabels, Counter>,
    pub notifications: Family<DeliveryLabels, Counter>,
    pub outbox_depth: Gauge,
    pub outbox_oldest_age: Gauge<f64, AtomicU64>,
    pub alerts_received: Counter,
    pub rule_evaluation_failures: Family<RuleLabels, Counter>,
    pub incidents_open: Family<PriorityLabels, Gauge>,
    pub incident_time_to_acknowledge: Family<PriorityLabels, Histogram>,
    pub incident_time_to_mitigate: Family<PriorityLabels, Histogram>,
    pub incident_time_to_resolve: Family<PriorityLabels, Histogram>,
    pub runbook_runs: Family<RunbookLabels, Counter>,
    pub runbook_runs_active: Gauge,
    pub runbook_run_duration: Family<RunbookLabels, Histogram>,
    pub backup_last_success: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    pub backup_last_size: Family<PolicyLabels, Gauge>,
    pub backup_last_stored_size: Family<PolicyLabels, Gauge>,
    pub backup_last_duration: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    pub backup_last_verification: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    pub backup_last_verification_success: Family<PolicyLabels, Gauge>,
    pub backup_last_restore_duration: Family<PolicyLabels, Gauge<f64, AtomicU64>>,
    /// 1 while this replica leads (runs the loops that must run once), else 0.
    pub leader: Gauge,
    pub leader_changes: Counter,
    /// Seconds since each registered replica last said it was alive.
    pub replica_heartbeat_age: Family<ReplicaLabels, Gauge<f64, AtomicU64>>,
    /// Events counted into each SLO by this process (the runs it stored), and the good
    /// ones: the counters `steward slo export --prometheus-rules` builds on.
    pub slo_events: Family<SloLabels, Counter>,
    pub slo_good_events: Family<SloLabels, Counter>,
    pub slo_objective: Family<SloLabels, Gauge<f64, AtomicU64>>,
    pub slo_sli: Family<SloLabels, Gauge<f64, AtomicU64>>,
    pub slo_budget_remaining: Family<SloLabels, Gauge<f64, AtomicU64>>,
    pub slo_burn_rate: Family<SloWindowLabels, Gauge<f64, AtomicU64>>,
    /// CPU time spent on SLOs in memory, per part (see [`SloWork`]), and the wall time
    /// of writing their counts to the store: what SLOs cost, measured rather than
    /// inferred from the whole process.
    pub slo_work: Family<SloWorkLabels, Counter<f64, AtomicU64>>,
    pub slo_store_writes: Counter<f64, AtomicU64>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SloWorkLabels {
    pub part: &'static str,
}

/// The parts of SLO work `steward_slo_cpu_seconds_total` tells apart.
#[derive(Clone, Copy, Debug)]
pub enum SloWork {
    /// Turning stored runs into per-minute events and adding them to the tallies.
    Counting,
    /// Reading burn rates for the burn-rate alert rules.
    BurnRules,
    /// SLI, budget and burn figures: the 15-second gauges and the API.
    Figures,
}

impl Metrics {
    /// Adds the CPU time this thread used since `since` (from [`thread_cpu`]) to `part`.
    pub fn slo_work_since(&self, part: SloWork, since: std::time::Duration) {
        let part = match part {
            SloWork::Counting => "counting",
            SloWork::BurnRules => "burn_rules",
            SloWork::Figures => "figures",
        };
        self.slo_work.get_or_create(&SloWorkLabels { part }).inc_by(thread_cpu().saturating_sub(since).as_secs_f64());
    }
}

/// CPU time the calling thread has used. Synchronous work between two readings on one
/// thread is measured exactly: time the thread was preempted or waiting is not counted.
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    if !ok {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SloLabels {
    pub slo: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SloWindowLabels {
    pub slo: String,
    pub window: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicaLabels {
    pub replica: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
}

fn buckets(list: &[f64]) -> impl Iterator<Item = f64> + '_ {
    list.iter().copied()
}

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// From a one-step run to a night-long rolling repair.
const RUN_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0, 43200.0];
/// From a page answered in seconds to an outage of a day.
const RESPONSE_BUCKETS: &[f64] = &[30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0];
const LAG_BUCKETS: &[f64] = &[0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("steward")),
            panics: Family::default(),
            task_restarts: Family::default(),
            check_up: Family::default(),
            check_duration: Family::new_with_constructor(|| Histogram::new(buckets(LATENCY_BUCKETS))),
            check_runs: Family::default(),
            check_transitions: Family::default(),
            checks_configured: Gauge::default(),
            scheduler_lag: Histogram::new(buckets(LAG_BUCKETS)),
            store_write_duration: Histogram::new(buckets(LATENCY_BUCKETS)),
            store_dropped_results: Counter::default(),
            config_reloads: Family::default(),
            config_last_reload_success: Gauge::default(),
            alerts: Family::default(),
            notifications_enqueued: Family::default(),
            notifications: Family::default(),
            outbox_depth: Gauge::default(),
            leader: Gauge::default(),
            leader_changes: Counter::default(),
            replica_heartbeat_age: Family::default(),
            outbox_oldest_age: Gauge::default(),
            alerts_received: Counter::default(),
            rule_evaluation_failures: Family::default(),
            incidents_open: Family::default(),
            incident_time_to_acknowledge: Family::new_with_constructor(|| Histogram::new(buckets(RESPONSE_BUCKETS))),
            incident_time_to_mitigate: Family::new_with_constructor(|| Histogram::new(buckets(RESPONSE_BUCKETS))),
            incident_time_to_resolve: Family::new_with_constructor(|| Histogram::new(buckets(RESPONSE_BUCKETS))),
            runbook_runs: Family::default(),
            runbook_runs_active: Gauge::default(),
            runbook_run_duration: Family::new_with_constructor(|| Histogram::new(buckets(RUN_BUCKETS))),
            backup_last_success: Family::default(),
            backup_last_size: Family::default(),
            backup_last_stored_size: Family::default(),
            backup_last_duration: Family::default(),
            backup_last_verification: Family::default(),
            backup_last_verification_success: Family::default(),
            backup_last_restore_duration: Family::default(),
            slo_events: Family::default(),
            slo_good_events: Family::default(),
            slo_objective: Family::default(),
            slo_sli: Family::default(),
            slo_budget_remaining: Family::default(),
            slo_burn_rate: Family::default(),
            slo_work: Family::default(),
            slo_store_writes: Counter::default(),
        };
        {
            let mut r = m.registry.lock().expect("registry");
            r.register(
                "panics",
                "Panics caught, by where (http: a request answered 500; otherwise the background task restarted)",
                m.panics.clone(),
            );
            r.register("task_restarts", "Background tasks restarted after a panic, by task", m.task_restarts.clone());
            r.register("check_up", "Whether the check is healthy (1) or unhealthy (0), after thresholds", m.check_up.clone());
            r.register_with_unit("check_duration", "Time one probe took, by kind", Unit::Seconds, m.check_duration.clone());
            r.register("check_runs", "Probe runs by kind and result (success, failure)", m.check_runs.clone());
            r.register("check_transitions", "Health changes, by the health entered", m.check_transitions.clone());
            r.register("checks_configured", "Checks in the loaded configuration", m.checks_configured.clone());
            r.register_with_unit("scheduler_lag", "Delay between a run's due time and its start", Unit::Seconds, m.scheduler_lag.clone());
            r.register_with_unit(
                "store_write_duration",
                "Time to write one batch of results",
                Unit::Seconds,
                m.store_write_duration.clone(),
            );
            r.register(
                "store_dropped_results",
                "Results dropped because the store could not keep up or failed",
                m.store_dropped_results.clone(),
            );
            r.register("config_reloads", "Configuration reloads by result (success, failure)", m.config_reloads.clone());
            r.register_with_unit(
                "config_last_reload_success_timestamp",
                "When the configuration was last loaded successfully (Unix time)",
                Unit::Seconds,
                m.config_last_reload_success.clone(),
            );
            r.register("alerts", "Alerts by state (pending, firing, resolved)", m.alerts.clone());
            r.register("notifications_enqueued", "Notifications written to the outbox, by receiver", m.notifications_enqueued.clone());
            r.register("notifications", "Delivery attempts by receiver and result (delivered, retried, expired)", m.notifications.clone());
            r.register("outbox_depth", "Notifications waiting for delivery", m.outbox_depth.clone());
            r.register("leader", "1 while this replica leads: it runs checks, alerting, escalation and schedules", m.leader.clone());
            r.register("leader_changes", "Times this replica became or stopped being the leader", m.leader_changes.clone());
            r.register(
                "replica_heartbeat_age_seconds",
                "Seconds since each replica sharing the store last said it was alive",
                m.replica_heartbeat_age.clone(),
            );
            r.register_with_unit(
                "outbox_oldest_age",
                "Age of the oldest notification waiting for delivery",
                Unit::Seconds,
                m.outbox_oldest_age.clone(),
            );
            r.register("alerts_received", "Alerts received on the Alertmanager webhook endpoint", m.alerts_received.clone());
            r.register(
                "rule_evaluation_failures",
                "Alert rule evaluations that failed (e.g. Prometheus unreachable); the alert keeps its state",
                m.rule_evaluation_failures.clone(),
            );
            r.register("incidents_open", "Incidents not yet resolved, by priority", m.incidents_open.clone());
            r.register(
                "runbook_runs",
                "Runbook runs that ended, by runbook and status (succeeded, failed, cancelled)",
                m.runbook_runs.clone(),
            );
            r.register(
                "runbook_runs_active",
                "Runbook runs executing in this process (waiting at approvals included)",
                m.runbook_runs_active.clone(),
            );
            r.register_with_unit(
                "runbook_run_duration",
                "From a run's start to its end, by runbook and status",
                Unit::Seconds,
                m.runbook_run_duration.clone(),
            );
            r.register_with_unit(
                "incident_time_to_acknowledge",
                "From an incident opening to its first acknowledgement, by priority (MTTA = sum / count)",
                Unit::Seconds,
                m.incident_time_to_acknowledge.clone(),
            );
            r.register_with_unit(
                "incident_time_to_mitigate",
                "From an incident opening to its mitigation, by priority",
                Unit::Seconds,
                m.incident_time_to_mitigate.clone(),
            );
            r.register_with_unit(
                "incident_time_to_resolve",
                "From an incident opening to its resolution, by priority (MTTR = sum / count)",
                Unit::Seconds,
                m.incident_time_to_resolve.clone(),
            );
            r.register_with_unit(
                "backup_last_success_timestamp",
                "When the newest successful backup of the policy finished (Unix time)",
                Unit::Seconds,
                m.backup_last_success.clone(),
            );
            r.register_with_unit("backup_last_size", "Plain size of the newest successful backup", Unit::Bytes, m.backup_last_size.clone());
            r.register_with_unit(
                "backup_last_stored_size",
                "Stored (compressed, encrypted) size of the newest successful backup",
                Unit::Bytes,
                m.backup_last_stored_size.clone(),
            );
            r.register_with_unit(
                "backup_last_duration",
                "How long the newest successful backup took",
                Unit::Seconds,
                m.backup_last_duration.clone(),
            );
            r.register_with_unit(
                "backup_last_verification_timestamp",
                "When a backup of the policy was last verified (Unix time)",
                Unit::Seconds,
                m.backup_last_verification.clone(),
            );
            r.register(
                "backup_last_verification_success",
                "Whether the last verification of a backup of the policy passed (1) or failed (0)",
                m.backup_last_verification_success.clone(),
            );
            r.register_with_unit(
                "backup_last_restore_duration",
                "The last restore test's restore time: the measured RTO",
                Unit::Seconds,
                m.backup_last_restore_duration.clone(),
            );
            r.register("slo_events", "Events this process counted into each SLO (one per stored run of its check)", m.slo_events.clone());
            r.register("slo_good_events", "Good events this process counted into each SLO", m.slo_good_events.clone());
            r.register("slo_objective_ratio", "Each SLO's objective as a ratio (0.999 for 99.9 %)", m.slo_objective.clone());
            r.register(
                "slo_sli_ratio",
                "Each SLO's good ÷ total over its window (absent without events: no data is not 100 %)",
                m.slo_sli.clone(),
            );
            r.register(
                "slo_error_budget_remaining_ratio",
                "Share of each SLO's error budget left over its window (1 untouched, 0 spent, below 0 overspent)",
                m.slo_budget_remaining.clone(),
            );
            r.register(
                "slo_burn_rate",
                "How fast each SLO burns its budget over each alert window (1 spends exactly the budget over the SLO window)",
                m.slo_burn_rate.clone(),
            );
            r.register_with_unit(
                "slo_cpu",
                "CPU time this process spent on SLOs in memory, per part: counting (runs into per-minute events), burn_rules, figures (gauges and API)",
                Unit::Seconds,
                m.slo_work.clone(),
            );
            r.register_with_unit(
                "slo_store_write",
                "Wall time this process spent writing SLO events to the store",
                Unit::Seconds,
                m.slo_store_writes.clone(),
            );
            let info: Family<Vec<(String, String)>, Gauge> = Family::default();
            info.get_or_create(&vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())]).set(1);
            r.register("build_info", "Steward's version", info);
        }
        m
    }

    /// Counts a caught panic (`where`: `http` or a task name).
    pub fn panic(&self, at: &str) {
        self.panics.get_or_create(&WhereLabels { r#where: at.to_string() }).inc();
    }

    pub fn backup_observed(&self, b: &steward_model::backups::BackupRecord) {
        let l = PolicyLabels { policy: b.policy.clone() };
        if let Some(f) = b.finished_at {
            self.backup_last_success.get_or_create(&l).set(f.timestamp_millis() as f64 / 1000.0);
        }
        self.backup_last_size.get_or_create(&l).set(b.plain_bytes);
        self.backup_last_stored_size.get_or_create(&l).set(b.stored_bytes);
        if let Some(ms) = b.duration_ms() {
            self.backup_last_duration.get_or_create(&l).set(ms as f64 / 1000.0);
        }
    }

    pub fn backup_verification_observed(&self, b: &steward_model::backups::BackupRecord) {
        let l = PolicyLabels { policy: b.policy.clone() };
        if let Some(at) = b.verified_at {
            self.backup_last_verification.get_or_create(&l).set(at.timestamp_millis() as f64 / 1000.0);
        }
        self.backup_last_verification_success.get_or_create(&l).set(i64::from(b.verify_result.as_deref() == Some("passed")));
        if let Some(ms) = b.restore_ms {
            self.backup_last_restore_duration.get_or_create(&l).set(ms as f64 / 1000.0);
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let r = self.registry.lock().expect("registry");
        prometheus_client::encoding::text::encode(&mut out, &r).expect("writing to a String cannot fail");
        out
    }
}

/// The longest log line Steward writes; longer ones (a huge value someone sent, quoted
/// in a message) are cut, so a request cannot make the log grow by megabytes.
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// Standard error with every log line capped at [`MAX_LOG_LINE`] bytes. The formatter
/// writes one whole event per `write`, so a line is cut as a unit; in JSON mode a cut
/// line is replaced by a valid JSON line that says so and keeps its beginning.
#[derive(Clone, Copy)]
pub struct CappedStderr {
    pub json: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CappedStderr {
    type Writer = CappedStderr;
    fn make_writer(&'a self) -> CappedStderr {
        *self
    }
}

impl std::io::Write for CappedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if buf.len() <= MAX_LOG_LINE {
            err.write_all(buf)?;
        } else {
            let head = String::from_utf8_lossy(&buf[..MAX_LOG_LINE - 256]);
            let head = head.trim_end_matches('\u{FFFD}');
            if self.json {
                let line = serde_json::json!({
                    "level": "WARN",
                    "fields": {"message": format!("a log line of {} bytes was cut to its beginning", buf.len()), "head": head},
                });
                writeln!(err, "{line}")?;
            } else {
                writeln!(err, "{head}… [log line of {} bytes cut]", buf.len())?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The message a panic carried, for a log line (`"unknown panic"` when it was not text).
pub fn panic_message(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload_text(payload.as_ref()),
        Err(e) => e.to_string(),
    }
}

/// The text of a panic payload (`panic!("…")` carries a `&str` or a `String`).
pub fn payload_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string())
}

/// Runs a background loop for the life of the process: when it panics, the panic is
/// logged with the task's name, counted (`steward_panics_total{where=name}`,
/// `steward_task_restarts_total{task=name}`) and the loop starts again after a backoff
/// (1 s, doubling to 60 s). A loop that returns has finished on purpose (shutdown).
/// The loops keep no state between passes that the store does not, so a fresh start
/// resumes where the crashed one was.
pub fn supervise<F, Fut>(name: &'static str, metrics: std::sync::Arc<Metrics>, make: F) -> tokio::task::JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut backoff = std::time::Duration::from_secs(1);
        loop {
            let started = std::time::Instant::now();
            match tokio::spawn(make()).await {
                Ok(()) => return,
                Err(e) if e.is_cancelled() => return,
                Err(e) => {
                    let why = panic_message(e);
                    metrics.panic(name);
                    metrics.task_restarts.get_or_create(&TaskLabels { task: name.to_string() }).inc();
                    // A loop that ran a good while before failing starts over quickly.
                    if started.elapsed() > std::time::Duration::from_secs(300) {
                        backoff = std::time::Duration::from_secs(1);
                    }
                    tracing::error!(task = name, panic = %why, restart_in = ?backoff, "background task panicked; restarting it");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(60));
                }
            }
        }
    })
}

/// This process, as the owner of locks, leases, runs and claims: host, pid and start
/// time, so a restarted steward on the same host never mistakes an old lease for its own.
pub fn process_owner() -> String {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER
        .get_or_init(|| {
            let host =
                std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "localhost".into());
            format!("{host}:{}:{}", std::process::id(), crate::clock::now().timestamp_millis())
        })
        .clone()
}

/// Whether `owner` (a [`process_owner`] string) names a process of this host that is
/// gone: its pid no longer runs, or runs as another process (this one, restarted).
/// Owners on other hosts are never judged from here.
pub fn owner_gone(owner: &str) -> bool {
    let mine = process_owner();
    let host_of = |o: &str| o.rsplitn(3, ':').nth(2).map(str::to_string);
    let pid_of = |o: &str| o.rsplit(':').nth(1).and_then(|p| p.parse::<u32>().ok());
    if owner == mine || host_of(owner).is_none() || host_of(owner) != host_of(&mine) {
        return false;
    }
    match pid_of(owner) {
        Some(pid) if pid == std::process::id() => true,
        Some(pid) => !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_panicking_loop_is_restarted_counted_and_logged() {
        let metrics = Arc::new(Metrics::new());
        let starts = Arc::new(AtomicU32::new(0));
        let s = starts.clone();
        let handle = supervise("flaky", metrics.clone(), move || {
            let s = s.clone();
            async move {
                // Panics on its first two starts, then finishes normally.
                if s.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            }
        });
        handle.await.unwrap();
        assert_eq!(starts.load(Ordering::SeqCst), 3);
        let text = metrics.render();
        assert!(text.contains(r#"steward_panics_total{where="flaky"} 2"#), "{text}");
        assert!(text.contains(r#"steward_task_restarts_total{task="flaky"} 2"#), "{text}");
    }
}
