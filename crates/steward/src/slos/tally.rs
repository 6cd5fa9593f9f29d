//! Every SLO's buckets in memory, on the process that counts its events (the leader),
//! so burn-rate rules, the 15-second gauges and the API sum memory rather than read the
//! store (the status page, which a follower also serves, reads the store through its
//! own cache): with 1,000 SLOs, reading their buckets meant hundreds of
//! queries of thousands of rows a second for the alerts, and five million rows every
//! 15 s for the gauges of 30-day windows.
//!
//! A tally holds what the store holds once rolled up: one SLO's minutes since
//! [`super::hours_before`] (the longest alert window, at least three days) and hours
//! before that, back to [`super::minutes_read`] — 35 KB of minutes and 18 KB of
//! hours for a 30-day SLO. It is loaded from the store on first use and kept by every
//! later count. Counting goes through [`Tallies::record`], which writes the store and
//! the tally under one lock, and loading takes the same lock: an event is either in the
//! store when a tally is read from it or added to the tally afterwards — never both,
//! never neither. A tally is read again when its SLO's shape changes (a reload), and
//! forgotten when the SLO goes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use steward_model::config::slos::Slo;
use steward_model::slo::{self, Bucket, Budgeting, BurnReading, Counts};
use steward_store::{CheckStore, SloEvents, StoreError};

use super::SloStatus;
use crate::telemetry::{Metrics, SloWork, thread_cpu};

/// One rolled-up hour, as the store's roll-up writes it (`slo::roll_up`): timeslices
/// are counted as the minutes are folded, with the SLO's ratio.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Hour {
    good: u64,
    total: u64,
    good_slices: u32,
    slices: u32,
}

/// What decides a tally's layout: a reload that changes it reads the store again.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Shape {
    /// Minutes kept before an hour is folded (`super::minutes_kept`).
    keep: i64,
    /// How far back hours are kept (`super::minutes_read`).
    kept_for: i64,
    /// The timeslice ratio hours are folded with (1.0 under occurrences, unused).
    good_ratio: f64,
}

impl Shape {
    fn of(s: &Slo) -> Shape {
        let good_ratio = match s.budgeting {
            Budgeting::Timeslices { good_ratio } => good_ratio,
            Budgeting::Occurrences => 1.0,
        };
        Shape { keep: super::minutes_kept(s), kept_for: super::minutes_read(s), good_ratio }
    }

    /// The first minute kept as a minute when minute `newest` is the latest
    /// (`super::hours_before`).
    fn minutes_from(&self, newest: i64) -> i64 {
        (newest - self.keep).div_euclid(60) * 60
    }
}

/// One SLO's buckets: `hours[i]` covers Unix minutes `[hours_first + 60 i, +60)` and
/// `minutes[i]` is (good, total) of minute `first + i` in 32 bits (a minute of more than
/// four billion events saturates). `first` is on an hour boundary and equals
/// `hours_first + 60 × hours.len()`: the hours end where the minutes begin.
struct Tally {
    shape: Shape,
    hours_first: i64,
    hours: VecDeque<Hour>,
    first: i64,
    minutes: VecDeque<(u32, u32)>,
}

impl Tally {
    /// An empty tally as of minute `newest`.
    fn new(shape: Shape, newest: i64) -> Tally {
        let first = shape.minutes_from(newest);
        let mut t = Tally { shape, hours_first: first, hours: VecDeque::new(), first, minutes: VecDeque::new() };
        // The first hour that starts no earlier than `newest - kept_for`.
        let oldest = (newest - shape.kept_for + 59).div_euclid(60) * 60;
        let hours = usize::try_from((first - oldest).div_euclid(60)).unwrap_or(0);
        t.hours_first = first - 60 * hours as i64;
        t.hours.extend(std::iter::repeat_n(Hour::default(), hours));
        t
    }

    fn add(&mut self, minute: i64, good: u64, total: u64) {
        self.advance(minute);
        let good = good.min(total);
        if minute < self.hours_first {
            return; // older than anything read
        }
        if minute < self.first {
            // A late minute of an hour already folded: counted into it, as the store's
            // next roll-up will.
            let i = usize::try_from((minute - self.hours_first) / 60).unwrap_or(0);
            if let Some(h) = self.hours.get_mut(i) {
                self.shape.fold(h, good, total);
            }
            return;
        }
        let at = usize::try_from(minute - self.first).unwrap_or(0);
        if at >= self.minutes.len() {
            self.minutes.extend(std::iter::repeat_n((0, 0), at + 1 - self.minutes.len()));
        }
        if let Some(m) = self.minutes.get_mut(at) {
            let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
            m.0 = m.0.saturating_add(narrow(good));
            m.1 = m.1.saturating_add(narrow(total));
        }
    }

    /// Adds a stored rolled-up bucket (an hour) as it is.
    fn add_rolled(&mut self, b: &Bucket) {
        if b.start < self.hours_first || b.start >= self.first {
            // Outside the hours (the clock went back since it was rolled): as a minute.
            self.add(b.start, b.good, b.total);
            return;
        }
        let i = usize::try_from((b.start - self.hours_first) / 60).unwrap_or(0);
        if let Some(h) = self.hours.get_mut(i) {
            h.good += b.good.min(b.total);
            h.total += b.total;
            h.good_slices += b.good_slices;
            h.slices += b.slices;
        }
    }

    /// Moves to minute `newest`: whole hours older than the minutes kept are folded,
    /// hours older than anything read dropped.
    fn advance(&mut self, newest: i64) {
        let boundary = self.shape.minutes_from(newest);
        if boundary - self.first > self.shape.kept_for + 60 {
            // So far ahead that nothing kept survives (a clock jump): start again there
            // rather than fold the gap hour by hour.
            *self = Tally::new(self.shape, newest);
            return;
        }
        while self.first < boundary {
            let n = self.minutes.len().min(60);
            let mut h = Hour::default();
            for (good, total) in self.minutes.drain(..n) {
                self.shape.fold(&mut h, u64::from(good), u64::from(total));
            }
            self.hours.push_back(h);
            self.first += 60;
        }
        let oldest = newest - self.shape.kept_for;
        while !self.hours.is_empty() && self.hours_first < oldest {
            self.hours.pop_front();
            self.hours_first += 60;
        }
    }

    /// The counts of minutes `[from, to)`, as `slo::counts` gives them for the same
    /// buckets: hours that start inside, and minutes.
    fn counts(&self, from: i64, to: i64, budgeting: Budgeting) -> Counts {
        let mut c = Counts::default();
        // The first bucket (`width` minutes each, from `first`) starting at or after `m`.
        let index = |m: i64, first: i64, width: u64, len: usize| {
            usize::try_from(u64::try_from(m - first).unwrap_or(0).div_ceil(width)).unwrap_or(usize::MAX).min(len)
        };
        let (start, end) = (index(from, self.hours_first, 60, self.hours.len()), index(to, self.hours_first, 60, self.hours.len()));
        for h in self.hours.range(start.min(end)..end) {
            c.add_rolled(h.good, h.total, h.good_slices, h.slices, budgeting);
        }
        let (start, end) = (index(from, self.first, 1, self.minutes.len()), index(to, self.first, 1, self.minutes.len()));
        for &(good, total) in self.minutes.range(start.min(end)..end) {
            c.add_minute(u64::from(good), u64::from(total), budgeting);
        }
        c
    }
}

impl Shape {
    /// Folds one minute into its hour, as `slo::roll_up` does.
    fn fold(&self, h: &mut Hour, good: u64, total: u64) {
        h.good += good;
        h.total += total;
        if total > 0 {
            h.slices += 1;
            h.good_slices += u32::from(slo::good_slice(good, total, self.good_ratio));
        }
    }
}

/// The tallies of this process' SLOs, and what their work costs
/// (`steward_slo_cpu_seconds_total`, `steward_slo_store_write_seconds_total`).
pub struct Tallies {
    by_slo: tokio::sync::Mutex<HashMap<String, Tally>>,
    metrics: Arc<Metrics>,
}

impl Tallies {
    pub fn new(metrics: Arc<Metrics>) -> Tallies {
        Tallies { by_slo: Default::default(), metrics }
    }

    /// Stores `events` and adds them to the loaded tallies, as one step (see the module
    /// comment); the store's error is returned and no tally changes.
    pub async fn record(&self, store: &dyn CheckStore, events: &[SloEvents]) -> Result<(), StoreError> {
        let mut by_slo = self.by_slo.lock().await;
        let writing = std::time::Instant::now();
        let stored = store.add_slo_events(events).await;
        self.metrics.slo_store_writes.inc_by(writing.elapsed().as_secs_f64());
        stored?;
        let cpu = thread_cpu();
        for e in events {
            if let Some(t) = by_slo.get_mut(&e.slo) {
                t.add(e.minute, e.good, e.total);
            }
        }
        self.metrics.slo_work_since(SloWork::Counting, cpu);
        Ok(())
    }

    /// Runs `read` over `s`'s tally as of `now`, loading the SLO's buckets from the
    /// store the first time (or after its shape changed); its CPU time counts to `part`.
    async fn with<T>(
        &self,
        store: &dyn CheckStore,
        s: &Slo,
        now: i64,
        part: SloWork,
        read: impl FnOnce(&Tally) -> T,
    ) -> Result<T, StoreError> {
        let mut by_slo = self.by_slo.lock().await;
        let (shape, newest) = (Shape::of(s), slo::window_end(now) - 1);
        if by_slo.get(&s.name).is_none_or(|t| t.shape != shape) {
            let mut t = Tally::new(shape, newest);
            for b in store.slo_buckets(&s.name, t.hours_first).await? {
                if b.minutes == 1 {
                    t.add(b.start, b.good, b.total);
                } else {
                    t.add_rolled(&b);
                }
            }
            by_slo.insert(s.name.clone(), t);
        }
        let cpu = thread_cpu();
        let t = by_slo.get_mut(&s.name).expect("just loaded");
        t.advance(newest);
        let out = read(t);
        self.metrics.slo_work_since(part, cpu);
        Ok(out)
    }

    /// What burn-rate alert `window` of `s` sees at `now` (Unix seconds).
    pub async fn read_burn(&self, store: &dyn CheckStore, s: &Slo, window: usize, now: i64) -> Result<Option<BurnReading>, StoreError> {
        let Some(w) = s.alerts.get(window) else { return Ok(None) };
        self.with(store, s, now, SloWork::BurnRules, |t| {
            slo::read_burn_with(|from, to| t.counts(from, to, s.budgeting), now, s.objective, w, s.min_events)
        })
        .await
        .map(Some)
    }

    /// `s`'s figures at `now`, what [`super::status`] reads from the store.
    pub async fn status(&self, store: &dyn CheckStore, s: &Slo, now: DateTime<Utc>) -> Result<SloStatus, StoreError> {
        self.with(store, s, now.timestamp(), SloWork::Figures, |t| super::status_with(s, now, |from, to| t.counts(from, to, s.budgeting)))
            .await
    }

    /// Every SLO's figures at `now`; one whose buckets cannot be loaded is left out (and
    /// logged), the others are still given.
    pub async fn statuses(&self, store: &dyn CheckStore, slos: &[Slo], now: DateTime<Utc>) -> Vec<SloStatus> {
        let mut out = Vec::with_capacity(slos.len());
        for s in slos {
            match self.status(store, s, now).await {
                Ok(st) => out.push(st),
                Err(e) => tracing::warn!(slo = %s.name, error = %e, "cannot read the SLO's buckets"),
            }
        }
        out
    }

    /// Forgets the tallies of SLOs no longer configured.
    pub async fn retain(&self, slos: &[Slo]) {
        self.by_slo.lock().await.retain(|name, _| slos.iter().any(|s| &s.name == name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The buckets the store holds for `minutes` once rolled up as of minute `newest`,
    /// as `super::roll_up` leaves them: hours before the minutes kept, nothing older
    /// than the hours kept.
    fn rolled(minutes: &[Bucket], shape: Shape, newest: i64, budgeting: Budgeting) -> Vec<Bucket> {
        let (before, drop) = (shape.minutes_from(newest), newest - shape.kept_for);
        let old: Vec<Bucket> = minutes.iter().filter(|b| b.start < before).copied().collect();
        let mut out: Vec<Bucket> = slo::roll_up(&old, 60, budgeting).into_iter().filter(|b| b.start >= drop).collect();
        out.extend(minutes.iter().filter(|b| b.start >= before));
        out
    }

    /// Whatever order minutes arrive in, a tally answers what the store's buckets answer
    /// once rolled up, for every window and both ways of budgeting: minutes where the
    /// store keeps minutes, hours before, nothing older than the hours kept.
    #[test]
    fn a_tally_counts_what_the_rolled_up_buckets_count() {
        // A 2-day window with 1-day alerts, compressed: 300 minutes kept, 600 read.
        for budgeting in [Budgeting::Occurrences, Budgeting::Timeslices { good_ratio: 0.9 }] {
            let good_ratio = if let Budgeting::Timeslices { good_ratio } = budgeting { good_ratio } else { 1.0 };
            let shape = Shape { keep: 300, kept_for: 600, good_ratio };
            let mut t = Tally::new(shape, 0);
            let mut minutes: std::collections::BTreeMap<i64, (u64, u64)> = Default::default();
            // Minutes ≡ 2 (mod 3) newest first, then ≡ 0 oldest first; ≡ 1 never (gaps).
            // The first ones arrive after their hour was folded, or after it was dropped.
            let newest = 1_199;
            for m in (0..=newest).rev().step_by(3).chain((0..newest).step_by(3)) {
                let (good, total) = ((m % 7) as u64 * 3, (m % 7) as u64 * 3 + (m % 5 == 0) as u64);
                t.add(m, good, total);
                let e = minutes.entry(m).or_default();
                *e = (e.0 + good, e.1 + total);
            }
            t.advance(newest);
            let minute_buckets: Vec<Bucket> = minutes.iter().map(|(&m, &(g, n))| Bucket::minute(m, g, n)).collect();
            let store = rolled(&minute_buckets, shape, newest, budgeting);
            assert_eq!((t.first, t.minutes.len()), (shape.minutes_from(newest), 1_200 - 840));
            assert_eq!((t.hours_first, t.hours.len()), (600, 4), "hours from the first whole one in the last 600 minutes");
            let end = newest + 1;
            for from in [end - 600, end - 599, end - 360, end - 300, end - 61, end - 60, end - 5, 0, end] {
                assert_eq!(t.counts(from, end, budgeting), slo::counts(&store, from, end, budgeting), "{from}..{end} {budgeting:?}");
            }
            assert_eq!(t.counts(1_150, 1_100, budgeting), Counts::default(), "an empty range");
        }
    }

    /// Events counted before a tally is first read come from the store, events after
    /// from memory: either way the burn is what the stored buckets say, neither counted
    /// twice nor missed, and a changed alert window reloads the tally.
    #[tokio::test]
    async fn loading_and_counting_agree_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        let config = |long: &str| {
            format!(
                "services: [{{name: api}}]\nchecks: [{{name: c, service: api, tcp: {{address: '127.0.0.1:1'}}}}]\nslos: [{{name: s, service: api, objective: 99, window: 1d, sli: {{check: c}}, min_events: 0, alerts: [{{long: {long}, short: 5m, budget_spent: 2%}}]}}]\n"
            )
        };
        std::fs::write(&f, config("1h")).unwrap();
        let slo = steward_model::config::load(&f).unwrap().slos.remove(0);
        let store = steward_store::SqliteStore::open(dir.path()).await.unwrap();
        let tallies = Tallies::new(Arc::new(Metrics::new()));
        let now = 10_000 * 60 + 30;
        let events = |from: i64, to: i64| {
            (from..to).map(|m| SloEvents { slo: "s".into(), minute: m, good: 9 + (m % 2) as u64, total: 10 }).collect::<Vec<_>>()
        };
        let from_store =
            |buckets: &[steward_model::slo::Bucket]| slo::read_burn(buckets, now, slo.objective, slo.budgeting, &slo.alerts[0], 0);
        tallies.record(&store, &events(9_900, 9_950)).await.unwrap();
        let first = tallies.read_burn(&store, &slo, 0, now).await.unwrap().unwrap();
        tallies.record(&store, &events(9_950, 10_001)).await.unwrap();
        tallies.record(&store, &events(9_990, 9_991)).await.unwrap(); // a late minute, added to
        let second = tallies.read_burn(&store, &slo, 0, now).await.unwrap().unwrap();
        let stored = store.slo_buckets("s", 0).await.unwrap();
        assert_ne!(first, second);
        assert_eq!(second, from_store(&stored));
        // A reload that lengthens the window reads the store again.
        std::fs::write(&f, config("2h")).unwrap();
        let longer = steward_model::config::load(&f).unwrap().slos.remove(0);
        let reread = tallies.read_burn(&store, &longer, 0, now).await.unwrap().unwrap();
        assert_eq!(reread, slo::read_burn(&stored, now, longer.objective, longer.budgeting, &longer.alerts[0], 0));
        assert!(reread.long_total > second.long_total, "{reread:?} {second:?}");
    }

    /// Thirty-five days of minutes into two 30-day SLOs (one of each budgeting): once
    /// the store has rolled up, the leader's figures from memory — SLI, budget, every
    /// burn, time to exhaustion — are the store's, and stay so while minutes are counted
    /// and, an hour later, an hour is folded on both sides.
    #[tokio::test]
    async fn figures_from_memory_are_the_stores() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(
            &f,
            "services: [{name: api}]\nchecks: [{name: c, service: api, tcp: {address: '127.0.0.1:1'}}]\nslos:\n  - {name: occ, service: api, objective: 99, window: 30d, sli: {check: c}}\n  - {name: ts, service: api, objective: 99, window: 30d, budgeting: {timeslices: 90}, sli: {check: c}}\n",
        )
        .unwrap();
        let slos = steward_model::config::load(&f).unwrap().slos;
        let store = steward_store::SqliteStore::open(dir.path()).await.unwrap();
        let tallies = Tallies::new(Arc::new(Metrics::new()));
        let at = |minute: i64| DateTime::from_timestamp(minute * 60 + 30, 0).unwrap();
        let events = |from: i64, to: i64| {
            (from..to)
                .flat_map(|m| {
                    let total = 10 + (m % 13) as u64;
                    let good = total - u64::from(m % 17 == 0) - 2 * u64::from(m % 101 == 0);
                    ["occ", "ts"].map(|slo| SloEvents { slo: slo.into(), minute: m, good, total })
                })
                .collect::<Vec<_>>()
        };
        let same = |a: &SloStatus, b: &SloStatus| {
            assert_eq!(serde_json::to_value(a).unwrap(), serde_json::to_value(b).unwrap());
            assert!(a.total > 0.0 && a.budget_remaining_percent.is_some(), "{a:?}");
        };
        let day = 1_440;
        let now = 35 * day + 17;
        store.add_slo_events(&events(0, now)).await.unwrap();
        for s in &slos {
            super::super::roll_up(&store, s, at(now)).await.unwrap();
        }
        for s in &slos {
            let memory = tallies.status(&store, s, at(now)).await.unwrap();
            same(&memory, &super::super::status(&store, s, at(now)).await.unwrap());
        }
        // Another hour and a half, counted through the tallies: the store rolls up
        // again, memory folds on its own.
        for m in now..now + 90 {
            tallies.record(&store, &events(m, m + 1)).await.unwrap();
        }
        let later = now + 90;
        for s in &slos {
            super::super::roll_up(&store, s, at(later)).await.unwrap();
            let memory = tallies.status(&store, s, at(later)).await.unwrap();
            same(&memory, &super::super::status(&store, s, at(later)).await.unwrap());
            assert!(memory.burn.iter().all(|b| b.long_burn.is_some()), "{memory:?}");
        }
    }

    /// A minute far in the future (a clock jump) restarts the tally rather than
    /// folding the gap hour by hour.
    #[test]
    fn a_jump_far_ahead_restarts_the_tally() {
        let shape = Shape { keep: 60, kept_for: 180, good_ratio: 1.0 };
        let mut t = Tally::new(shape, 0);
        t.add(0, 1, 1);
        t.add(10_000_000, 1, 2);
        assert_eq!((t.first, t.minutes.len(), t.hours.len()), (shape.minutes_from(10_000_000), 101, 1));
        assert_eq!(t.counts(0, 10_000_001, Budgeting::Occurrences), Counts { good: 1.0, total: 2.0 });
    }
}
