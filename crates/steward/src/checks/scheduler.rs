//! Runs every check on its own interval.
//!
//! One lightweight task per check sleeps until its next due time, which is computed
//! from a fixed origin (`origin + k × interval`), so schedules never drift. Origins are
//! spread across the interval by a hash of the name, so 20,000 checks with the same
//! interval do not all fire in the same millisecond. A semaphore bounds how many probes
//! are in flight; a run that overruns its interval makes the next one skip (runs of one
//! check never overlap), and a hanging target only ever holds its own task — its
//! timeout frees the permit — so it never delays another check.
//!
//! Results go to a single writer task through a bounded channel and are written in
//! batches; a slow store drops (and counts) results rather than slowing probes, since
//! the authoritative state lives in memory and is re-written with every later run.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Checks;
use crate::config::CheckSpec;
use crate::store::RecordedRun;

pub struct Scheduler {
    running: HashMap<String, (Arc<CheckSpec>, CancellationToken)>,
    tracker: TaskTracker,
    permits: Arc<Semaphore>,
}

impl Scheduler {
    pub fn new(max_concurrency: usize) -> Scheduler {
        Scheduler { running: HashMap::new(), tracker: TaskTracker::new(), permits: Arc::new(Semaphore::new(max_concurrency.max(1))) }
    }

    /// Makes the running set match `checks`: unchanged checks keep their schedule,
    /// changed ones restart, removed ones stop. Returns (started, stopped).
    pub fn apply(&mut self, owner: &Arc<Checks>, checks: &[CheckSpec]) -> (usize, usize) {
        let wanted: HashMap<&str, &CheckSpec> = checks.iter().map(|c| (c.name.as_str(), c)).collect();
        let mut stopped = 0;
        self.running.retain(|name, (spec, cancel)| match wanted.get(name.as_str()) {
            Some(new) if new.runs_like(spec) => true,
            _ => {
                cancel.cancel();
                stopped += 1;
                false
            }
        });
        let mut started = 0;
        for spec in checks {
            if self.running.contains_key(&spec.name) {
                continue;
            }
            let spec = Arc::new(spec.clone());
            let cancel = CancellationToken::new();
            self.tracker.spawn(run_check(owner.clone(), spec.clone(), self.permits.clone(), cancel.clone()));
            self.running.insert(spec.name.clone(), (spec, cancel));
            started += 1;
        }
        (started, stopped)
    }

    /// Stops every check task and waits for in-flight runs to be abandoned.
    pub async fn shutdown(&mut self) {
        for (_, (_, cancel)) in self.running.drain() {
            cancel.cancel();
        }
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Where in its interval a check runs: a fixed offset from the wall clock's interval
/// boundaries, from its name. The same on every replica and across restarts, so a
/// replica that takes over keeps the slots the last leader kept: a check misses at most
/// the slots that fell inside the takeover, never a whole new interval of its own.
fn phase(name: &str, interval: Duration) -> Duration {
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % ms)
}

/// How long from `now_ms` (wall clock, ms since the epoch) until check `name` with
/// `interval` next runs: its first run after a start or a reload that changed it.
pub fn next_run_in(name: &str, interval: Duration, now_ms: i64) -> Duration {
    until_next_slot(now_ms, interval, phase(name, interval))
}

/// How long from `now_ms` (wall clock, ms since the epoch) until the check's next slot.
fn until_next_slot(now_ms: i64, interval: Duration, phase: Duration) -> Duration {
    let period = interval.as_millis().clamp(1, i64::MAX as u128) as i64;
    let offset = phase.as_millis() as i64 % period;
    Duration::from_millis((offset - now_ms.rem_euclid(period)).rem_euclid(period) as u64)
}

async fn run_check(checks: Arc<Checks>, spec: Arc<CheckSpec>, permits: Arc<Semaphore>, cancel: CancellationToken) {
    let wait = until_next_slot(crate::clock::now().timestamp_millis(), spec.interval, phase(&spec.name, spec.interval));
    let mut due = Instant::now() + wait;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        let permit = tokio::select! {
            _ = cancel.cancelled() => return,
            p = permits.acquire() => p.expect("the semaphore is never closed"),
        };
        checks.metrics().scheduler_lag.observe(Instant::now().saturating_duration_since(due).as_secs_f64());
        let prober = checks.prober();
        // Boxed: a probe future is ~17 KB (TLS, HTTP, SQL clients inline). Held inline,
        // every idle check task would carry it — 350 MB for 20,000 checks — when only
        // the few hundred runs in flight need it.
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            o = Box::pin(prober.run(&spec)) => o,
        };
        drop(permit);
        checks.observe(&spec, outcome).await;
        // Next slot on the fixed grid; slots already missed are skipped, not queued.
        due += spec.interval;
        let now = Instant::now();
        if due <= now {
            let behind = now - due;
            let skip = (behind.as_nanos() / spec.interval.as_nanos()) as u32 + 1;
            due += spec.interval * skip;
        }
    }
}

/// A run for the writer, with a channel told whether it was committed when the
/// caller waits for it (health transitions do; see [`Checks::observe`]).
pub type Queued = (RecordedRun, Option<tokio::sync::oneshot::Sender<bool>>);

/// Drains results into the store in batches of up to `max_batch`, flushing at least
/// every `linger`, and at once when a run in the batch is waited for. Runs are written
/// in the order they came, so a waited-for transition is never overwritten by an older
/// run of its check.
///
/// The queue is shared so that a supervisor can restart a writer that panicked: the
/// batch in hand is lost (its waiters are told it was not stored), the queue is not.
pub async fn write_results(
    checks: Arc<Checks>,
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<Queued>>>,
    max_batch: usize,
    linger: Duration,
) {
    let mut rx = queue.lock().await;
    let mut batch = Vec::with_capacity(max_batch);
    let mut acks = Vec::new();
    while let Some((first, ack)) = rx.recv().await {
        batch.push(first);
        acks.extend(ack);
        let deadline = Instant::now() + linger;
        while batch.len() < max_batch && acks.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((run, ack))) => {
                    batch.push(run);
                    acks.extend(ack);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let mut attempt = 0;
        let stored = loop {
            let started = std::time::Instant::now();
            match checks.store().record(&batch).await {
                Ok(()) => {
                    checks.metrics().store_write_duration.observe(started.elapsed().as_secs_f64());
                    break true;
                }
                Err(e) if attempt < 3 => {
                    attempt += 1;
                    tracing::warn!(error = %e, attempt, runs = batch.len(), "writing check results failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
                }
                Err(e) => {
                    tracing::error!(error = %e, runs = batch.len(), "writing check results failed; dropping this batch (states are rewritten by later runs)");
                    checks.metrics().store_dropped_results.inc_by(batch.len() as u64);
                    break false;
                }
            }
        };
        if stored {
            count_slo_events(&checks, &batch).await;
        }
        for ack in acks.drain(..) {
            let _ = ack.send(stored);
        }
        batch.clear();
    }
}

/// Adds the stored runs to the per-minute buckets of the SLOs that count them. A
/// separate write after the runs': if it keeps failing, the SLOs miss these events
/// (logged and counted), the results themselves are kept.
async fn count_slo_events(checks: &Checks, batch: &[RecordedRun]) {
    let config = checks.config();
    if config.slos.is_empty() {
        return;
    }
    let cpu = crate::telemetry::thread_cpu();
    let events = crate::slos::events(&config.slos, batch);
    checks.metrics().slo_work_since(crate::telemetry::SloWork::Counting, cpu);
    if events.is_empty() {
        return;
    }
    for attempt in 0..3 {
        match checks.slo_tallies().record(checks.store(), &events).await {
            Ok(()) => {
                crate::slos::count_metrics(checks.metrics(), &events);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, attempt, "counting SLO events failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * (1 << attempt))).await;
            }
        }
    }
    tracing::error!(events = events.len(), "counting SLO events failed; these runs are missing from their SLOs");
    checks.metrics().store_dropped_results.inc_by(events.len() as u64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_wall_clock_so_every_replica_keeps_the_same_ones() {
        let (interval, phase) = (Duration::from_secs(10), Duration::from_millis(2_500));
        // At 1,000,000 ms the slots are …, 992,500, 1,002,500, …
        assert_eq!(until_next_slot(1_000_000, interval, phase), Duration::from_millis(2_500));
        assert_eq!(until_next_slot(1_002_500, interval, phase), Duration::ZERO, "on a slot: now");
        assert_eq!(until_next_slot(1_002_501, interval, phase), Duration::from_millis(9_999));
        for now in [0, 1, 9_999, 123_456_789, -5] {
            let wait = until_next_slot(now, interval, phase).as_millis() as i64;
            assert!(wait < 10_000);
            assert_eq!((now + wait - 2_500).rem_euclid(10_000), 0, "{now} + {wait} is a slot");
        }
    }

    #[test]
    fn phases_are_stable_and_inside_the_interval() {
        let i = Duration::from_secs(10);
        assert_eq!(phase("a", i), phase("a", i));
        let phases: std::collections::HashSet<_> = (0..100).map(|n| phase(&format!("check-{n}"), i)).collect();
        assert!(phases.iter().all(|p| *p < i));
        assert!(phases.len() > 90, "phases should spread checks across the interval");
    }
}
