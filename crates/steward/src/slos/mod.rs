//! Service level objectives at run time: check runs counted into each SLO's per-minute
//! buckets, and the figures (SLI, budget left, burn per alert window, time to
//! exhaustion) read back from them. The arithmetic is `steward_model::slo`'s; this
//! module only feeds it from the store.

pub mod export;
pub mod tally;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use steward_model::config::duration::format_duration;
use steward_model::config::slos::Slo;
use steward_model::slo::{self, Bucket};
use steward_store::{CheckStore, RecordedRun, SloEvents, StoreError};

use crate::telemetry::{Metrics, SloLabels, SloWindowLabels};

/// One event per run of a check an SLO counts, summed per SLO and minute: one pass over
/// the batch, whatever the number of SLOs.
pub fn events(slos: &[Slo], runs: &[RecordedRun]) -> Vec<SloEvents> {
    let mut by_check: HashMap<&str, Vec<&Slo>> = HashMap::new();
    for s in slos {
        if let Some(check) = s.sli.check() {
            by_check.entry(check).or_default().push(s);
        }
    }
    let mut index: HashMap<(&str, i64), usize> = HashMap::new();
    let mut out: Vec<SloEvents> = Vec::new();
    for r in runs {
        let minute = r.outcome.at.timestamp().div_euclid(60);
        for s in by_check.get(r.check.as_str()).into_iter().flatten() {
            let good = u64::from(s.sli.good(r.outcome.healthy, r.outcome.latency));
            let i = *index.entry((s.name.as_str(), minute)).or_insert_with(|| {
                out.push(SloEvents { slo: s.name.clone(), minute, good: 0, total: 0 });
                out.len() - 1
            });
            out[i].good += good;
            out[i].total += 1;
        }
    }
    out
}

/// Declares every configured SLO's series (at start and after each reload): the event
/// counters at 0 before the first event, so a rate over them starts from a known zero
/// (pyrra#1259: a counter that never moved gives no data), and the objective. Gauges
/// of SLOs no longer configured go; counters stay, as counters do.
pub fn declare_metrics(metrics: &Metrics, slos: &[Slo]) {
    metrics.slo_objective.clear();
    metrics.slo_sli.clear();
    metrics.slo_budget_remaining.clear();
    metrics.slo_burn_rate.clear();
    for s in slos {
        let l = SloLabels { slo: s.name.clone() };
        let _ = metrics.slo_events.get_or_create(&l);
        let _ = metrics.slo_good_events.get_or_create(&l);
        metrics.slo_objective.get_or_create(&l).set(s.objective.fraction());
    }
}

/// Counts stored events into the per-process counters.
pub fn count_metrics(metrics: &Metrics, events: &[SloEvents]) {
    for e in events {
        let l = SloLabels { slo: e.slo.clone() };
        metrics.slo_events.get_or_create(&l).inc_by(e.total);
        metrics.slo_good_events.get_or_create(&l).inc_by(e.good);
    }
}

/// Sets the SLO gauges from fresh figures. A figure without data leaves its gauge
/// absent rather than at a made-up value.
pub fn publish_metrics(metrics: &Metrics, statuses: &[SloStatus]) {
    for st in statuses {
        let l = SloLabels { slo: st.name.clone() };
        match st.sli_percent {
            Some(p) => {
                metrics.slo_sli.get_or_create(&l).set(p / 100.0);
            }
            None => {
                metrics.slo_sli.remove(&l);
            }
        }
        match st.budget_remaining_percent {
            Some(p) => {
                metrics.slo_budget_remaining.get_or_create(&l).set(p / 100.0);
            }
            None => {
                metrics.slo_budget_remaining.remove(&l);
            }
        }
        for b in &st.burn {
            for (window, burn) in [(&b.long_window, b.long_burn), (&b.short_window, b.short_burn)] {
                let l = SloWindowLabels { slo: st.name.clone(), window: window.clone() };
                match burn {
                    Some(v) => {
                        metrics.slo_burn_rate.get_or_create(&l).set(v);
                    }
                    None => {
                        metrics.slo_burn_rate.remove(&l);
                    }
                }
            }
        }
    }
}

/// Every configured SLO's figures at `now`; an SLO whose buckets cannot be read is left
/// out (and logged), the others are still given.
pub async fn statuses(store: &dyn CheckStore, slos: &[Slo], now: DateTime<Utc>) -> Vec<SloStatus> {
    let mut out = Vec::with_capacity(slos.len());
    for s in slos {
        match status(store, s, now).await {
            Ok(st) => out.push(st),
            Err(e) => tracing::warn!(slo = %s.name, error = %e, "cannot read the SLO's buckets"),
        }
    }
    out
}

/// Minutes are kept this long, or as long as the longest alert window if longer: the
/// alerts read minutes, the rest of the SLO window reads hours.
const MINUTES_KEPT: Duration = Duration::from_secs(3 * 86_400);

/// How many minutes an SLO keeps as minutes before rolling them into hours:
/// [`MINUTES_KEPT`], or its longest alert window if longer.
pub(crate) fn minutes_kept(s: &Slo) -> i64 {
    let keep = s.alerts.iter().map(|w| w.long).max().unwrap_or_default().max(MINUTES_KEPT);
    i64::try_from(keep.as_secs() / 60).unwrap_or(i64::MAX / 4)
}

/// Where an SLO's minutes end and its hours begin at Unix minute `minute_now`: the hour
/// boundary that keeps at least [`minutes_kept`] minutes. Shared by the store's roll-up
/// and the in-memory tallies, so both hold the same hours.
pub(crate) fn hours_before(s: &Slo, minute_now: i64) -> i64 {
    (minute_now - minutes_kept(s)).div_euclid(60) * 60
}

/// How far back an SLO's buckets are read: its window (or a whole month), and an hour
/// more for the hour the window starts in. Older buckets are dropped.
pub(crate) fn minutes_read(s: &Slo) -> i64 {
    i64::try_from(s.kept_for().as_secs() / 60).unwrap_or(i64::MAX / 4) + 60
}

/// Keeps an SLO's storage bounded: one-minute buckets older than the alerts need are
/// rolled up into hours, and buckets older than the window are dropped — about 4,300
/// minutes plus 700 hours for a 30-day SLO, whatever its traffic.
pub async fn roll_up(store: &dyn CheckStore, s: &Slo, now: DateTime<Utc>) -> Result<(), StoreError> {
    let minute_now = now.timestamp().div_euclid(60);
    let (before, drop_before) = (hours_before(s, minute_now), minute_now - minutes_read(s));
    let old: Vec<Bucket> =
        store.slo_buckets(&s.name, drop_before).await?.into_iter().filter(|b| b.minutes == 1 && b.start < before).collect();
    store.roll_up_slo(&s.name, before, &slo::roll_up(&old, 60, s.budgeting), drop_before).await
}

/// What `steward slo list|show` and `GET /api/v1/slos` say of one SLO.
#[derive(Debug, Clone, Serialize)]
pub struct SloStatus {
    pub name: String,
    pub service: String,
    pub objective_percent: f64,
    pub window: String,
    /// What the SLI counts: `check api-health`, `check api-health under 300ms`, `prometheus`.
    pub counts: String,
    /// Good ÷ total over the window, in percent; `None` without events.
    pub sli_percent: Option<f64>,
    pub good: f64,
    pub total: f64,
    /// Share of the window's error budget left, in percent (below 0: overspent).
    pub budget_remaining_percent: Option<f64>,
    /// At the burn rate of the shortest alert window (or the last hour).
    pub time_to_exhaustion_seconds: Option<u64>,
    pub burn: Vec<BurnStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BurnStatus {
    pub alert: String,
    pub long_window: String,
    pub short_window: String,
    pub factor: f64,
    pub severity: String,
    pub long_burn: Option<f64>,
    pub short_burn: Option<f64>,
    pub firing_condition: bool,
    pub too_little_traffic: bool,
}

/// One SLO's figures at `now`, from its stored buckets (its whole window). The leader
/// answers from memory instead ([`tally::Tallies::status`]); this is for a process
/// that does not count the events.
pub async fn status(store: &dyn CheckStore, s: &Slo, now: DateTime<Utc>) -> Result<SloStatus, StoreError> {
    let buckets = store.slo_buckets(&s.name, s.window_start(now.timestamp())).await?;
    Ok(status_with(s, now, |from, to| slo::counts(&buckets, from, to, s.budgeting)))
}

/// One SLO's figures at `now` from any source of window counts: `counts(from, to)` for
/// Unix minutes `[from, to)`.
pub fn status_with(s: &Slo, now: DateTime<Utc>, counts: impl Fn(i64, i64) -> slo::Counts) -> SloStatus {
    let end = slo::window_end(now.timestamp());
    let window = counts(s.window_start(now.timestamp()), end);
    let remaining = s.objective.budget_remaining(window);
    let burn: Vec<BurnStatus> = s
        .alerts
        .iter()
        .map(|w| {
            let r = slo::read_burn_with(&counts, now.timestamp(), s.objective, w, s.min_events);
            BurnStatus {
                alert: steward_model::config::slos::burn_rule_name(&s.name, w),
                long_window: format_duration(w.long),
                short_window: format_duration(w.short),
                factor: w.factor,
                severity: w.severity.clone(),
                long_burn: r.long_burn,
                short_burn: r.short_burn,
                firing_condition: r.fires,
                too_little_traffic: r.too_little_traffic,
            }
        })
        .collect();
    let recent = s.alerts.iter().map(|w| w.long).min().unwrap_or(Duration::from_secs(3600));
    let recent_burn = s.objective.burn_rate(counts(end - slo::minutes(recent), end));
    SloStatus {
        name: s.name.clone(),
        service: s.service.clone(),
        objective_percent: s.objective.fraction() * 100.0,
        window: s.window_label(),
        counts: s.sli.source(),
        sli_percent: window.ratio().map(|r| r * 100.0),
        good: window.good,
        total: window.total,
        budget_remaining_percent: remaining.map(|r| r * 100.0),
        time_to_exhaustion_seconds: slo::time_to_exhaustion(remaining, recent_burn, s.window).map(|d| d.as_secs()),
        burn,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn one_slo(window: &str) -> Slo {
        let yaml = format!(
            "services: [{{name: api}}]\nchecks: [{{name: c, service: api, tcp: {{address: '127.0.0.1:1'}}}}]\nslos: [{{name: s, service: api, objective: 99, window: {window}, sli: {{check: c}}}}]\n"
        );
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, yaml).unwrap();
        steward_model::config::load(&f).unwrap().slos.remove(0)
    }

    /// Each run is one event for every SLO of its check, summed per minute; a latency
    /// SLI counts a healthy but slow run as bad, availability as good.
    #[test]
    fn runs_become_events_per_slo_and_minute() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(
            &f,
            "services: [{name: api}]\nchecks: [{name: c, service: api, tcp: {address: '127.0.0.1:1'}}, {name: d, service: api, tcp: {address: '127.0.0.1:1'}}]\nslos:\n  - {name: avail, service: api, objective: 99, sli: {check: c}}\n  - {name: fast, service: api, objective: 99, sli: {latency: {check: c, threshold: 100ms}}}\n",
        )
        .unwrap();
        let slos = steward_model::config::load(&f).unwrap().slos;
        let run = |check: &str, second: i64, healthy: bool, ms: u64| {
            let at = Utc.timestamp_opt(second, 0).unwrap();
            RecordedRun {
                check: check.into(),
                outcome: steward_model::checks::Outcome {
                    healthy,
                    latency: Duration::from_millis(ms),
                    reason: None,
                    at,
                    values: Default::default(),
                },
                state: steward_model::checks::state::CheckState::new(check, at),
                transition: None,
            }
        };
        let runs =
            [run("c", 60, true, 50), run("c", 61, true, 500), run("c", 62, false, 10), run("d", 63, false, 10), run("c", 120, true, 10)];
        let mut got = events(&slos, &runs);
        got.sort_by(|a, b| (&a.slo, a.minute).cmp(&(&b.slo, b.minute)));
        let e = |slo: &str, minute: i64, good: u64, total: u64| SloEvents { slo: slo.into(), minute, good, total };
        assert_eq!(got, vec![e("avail", 1, 2, 3), e("avail", 2, 1, 1), e("fast", 1, 1, 3), e("fast", 2, 1, 1)]);
    }

    /// A calendar-month SLO counts from midnight UTC on the 1st: November's last day
    /// is out on 6 December, in on 30 November; a rolling 30-day one counts both.
    #[tokio::test]
    async fn a_calendar_month_counts_from_the_first_of_the_month() {
        let dir = tempfile::tempdir().unwrap();
        let store = steward_store::SqliteStore::open(dir.path()).await.unwrap();
        let monthly = one_slo("month");
        let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let minute = |s: &str| at(s).timestamp().div_euclid(60);
        // 30 November: 10 events, 5 bad; 1 December: 10 events, 1 bad.
        let events = [
            SloEvents { slo: "s".into(), minute: minute("2026-11-30T12:00:00Z"), good: 5, total: 10 },
            SloEvents { slo: "s".into(), minute: minute("2026-12-01T00:00:00Z"), good: 9, total: 10 },
        ];
        store.add_slo_events(&events).await.unwrap();
        let december = status(&store, &monthly, at("2026-12-06T00:54:00Z")).await.unwrap();
        assert_eq!((december.window.as_str(), december.good, december.total), ("month", 9.0, 10.0));
        assert_eq!(monthly.window_start(at("2026-12-06T00:54:00Z").timestamp()), minute("2026-12-01T00:00:00Z"));
        let november = status(&store, &monthly, at("2026-11-30T23:59:00Z")).await.unwrap();
        assert_eq!((november.good, november.total), (5.0, 10.0));
        let rolling = status(&store, &one_slo("30d"), at("2026-12-06T00:54:00Z")).await.unwrap();
        assert_eq!((rolling.good, rolling.total), (14.0, 20.0));
    }

    /// Five days of minutes into a 4-day SLO: after the roll-up, the last 3 days are
    /// minutes, the day before them hours, the fifth day gone; the alerts' figures are
    /// what they were, the window's short by at most its first partial hour.
    #[tokio::test]
    async fn old_minutes_become_hours_and_what_is_outside_the_window_goes() {
        let dir = tempfile::tempdir().unwrap();
        let store = steward_store::SqliteStore::open(dir.path()).await.unwrap();
        let s = one_slo("4d");
        let now = Utc.timestamp_opt(5 * 86_400, 0).unwrap();
        let events: Vec<SloEvents> =
            (0..5 * 1440).map(|m| SloEvents { slo: "s".into(), minute: m, good: 9 + u64::from(m % 11 != 0), total: 10 }).collect();
        store.add_slo_events(&events).await.unwrap();
        let before = status(&store, &s, now).await.unwrap();
        roll_up(&store, &s, now).await.unwrap();
        let after = status(&store, &s, now).await.unwrap();
        let buckets = store.slo_buckets("s", 0).await.unwrap();
        let (minutes, hours): (Vec<&Bucket>, Vec<&Bucket>) = buckets.iter().partition(|b| b.minutes == 1);
        assert_eq!(minutes.len(), 3 * 1440, "the alerts' 3 days stay minutes");
        assert_eq!(hours.len(), 25, "the day before in hours (and the hour the window starts in)");
        assert!(buckets[0].start >= 1440 - 60, "the fifth day is gone: {:?}", buckets[0]);
        // The window now starts at the first whole hour inside it (minute 1500 rather
        // than 1441): 59 minutes of 10 events fewer, never more than an hour.
        assert_eq!(before.total - after.total, 590.0);
        let good_in = |from: i64, to: i64| (from..to).map(|m| 9.0 + f64::from(u8::from(m % 11 != 0))).sum::<f64>();
        assert_eq!(before.good - after.good, good_in(1441, 1500));
        let burns = |st: &SloStatus| st.burn.iter().map(|b| b.long_burn).collect::<Vec<_>>();
        assert_eq!(burns(&before), burns(&after));
        // Again: nothing left to roll, nothing changes.
        roll_up(&store, &s, now).await.unwrap();
        assert_eq!(store.slo_buckets("s", 0).await.unwrap(), buckets);
    }
}
