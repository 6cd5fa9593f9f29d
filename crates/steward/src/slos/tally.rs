//! Every SLO's recent minutes in memory, on the process that counts its events (the
//! leader), so a burn-rate rule is a sum over memory rather than a store read: with
//! 1,000 SLOs and four alerts each every 10 s, reading the buckets meant hundreds of
//! queries of thousands of rows a second.
//!
//! A tally holds one SLO's minutes for its longest alert window, loaded from the store
//! on first use and kept by every later count. Counting goes through [`Tallies::record`],
//! which writes the store and the tally under one lock, and loading takes the same lock:
//! an event is either in the store when a tally is read from it or added to the tally
//! afterwards — never both, never neither. A tally is read again when its SLO's alert
//! windows change (a reload), and forgotten when the SLO goes.

use std::collections::{HashMap, VecDeque};

use steward_model::config::slos::Slo;
use steward_model::slo::{self, Budgeting, BurnReading, Counts};
use steward_store::{CheckStore, SloEvents, StoreError};

/// One SLO's minutes: `minutes[i]` is (good, total) of Unix minute `first + i`, in
/// 32 bits (8 bytes a minute: 35 MB for 1,000 SLOs with 3-day alert windows; a minute
/// of more than four billion events saturates).
struct Tally {
    first: i64,
    minutes: VecDeque<(u32, u32)>,
    /// How many minutes it keeps: the longest alert window, plus the current minute.
    span: i64,
}

impl Tally {
    fn add(&mut self, minute: i64, good: u64, total: u64) {
        if minute < self.first {
            return; // older than any alert reads
        }
        if minute - (self.first + self.minutes.len() as i64) >= self.span {
            // So far ahead that nothing kept survives (a clock jump): start again there
            // rather than allocate the gap.
            self.minutes.clear();
            self.first = minute;
        }
        let at = usize::try_from(minute - self.first).unwrap_or(0);
        if at >= self.minutes.len() {
            self.minutes.extend(std::iter::repeat_n((0, 0), at + 1 - self.minutes.len()));
        }
        if let Some(m) = self.minutes.get_mut(at) {
            let narrow = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
            m.0 = m.0.saturating_add(narrow(good.min(total)));
            m.1 = m.1.saturating_add(narrow(total));
        }
        self.trim(minute);
    }

    /// Drops the minutes that no alert window ending at `newest` reaches.
    fn trim(&mut self, newest: i64) {
        while !self.minutes.is_empty() && self.first <= newest - self.span {
            self.minutes.pop_front();
            self.first += 1;
        }
    }

    /// The counts of minutes `[from, to)`, as `slo::counts` gives them for one-minute buckets.
    fn counts(&self, from: i64, to: i64, budgeting: Budgeting) -> Counts {
        let mut c = Counts::default();
        let start = usize::try_from((from - self.first).max(0)).unwrap_or(0);
        let end = usize::try_from((to - self.first).max(0)).unwrap_or(0).min(self.minutes.len());
        for &(good, total) in self.minutes.range(start.min(end)..end) {
            match budgeting {
                Budgeting::Occurrences => {
                    c.good += f64::from(good);
                    c.total += f64::from(total);
                }
                Budgeting::Timeslices { good_ratio } => {
                    if total > 0 {
                        c.total += 1.0;
                        if f64::from(good) / f64::from(total) >= good_ratio {
                            c.good += 1.0;
                        }
                    }
                }
            }
        }
        c
    }
}

/// The tallies of this process' SLOs.
#[derive(Default)]
pub struct Tallies {
    by_slo: tokio::sync::Mutex<HashMap<String, Tally>>,
}

/// Minutes a tally of `s` keeps.
fn span(s: &Slo) -> i64 {
    s.alerts.iter().map(|w| slo::minutes(w.long)).max().unwrap_or(0) + 1
}

impl Tallies {
    /// Stores `events` and adds them to the loaded tallies, as one step (see the module
    /// comment); the store's error is returned and no tally changes.
    pub async fn record(&self, store: &dyn CheckStore, events: &[SloEvents]) -> Result<(), StoreError> {
        let mut by_slo = self.by_slo.lock().await;
        store.add_slo_events(events).await?;
        for e in events {
            if let Some(t) = by_slo.get_mut(&e.slo) {
                t.add(e.minute, e.good, e.total);
            }
        }
        Ok(())
    }

    /// What burn-rate alert `window` of `s` sees at `now`, from memory (loading the
    /// SLO's minutes from the store the first time).
    pub async fn read_burn(&self, store: &dyn CheckStore, s: &Slo, window: usize, now: i64) -> Result<Option<BurnReading>, StoreError> {
        let Some(w) = s.alerts.get(window) else { return Ok(None) };
        let mut by_slo = self.by_slo.lock().await;
        let needed = span(s);
        if by_slo.get(&s.name).is_none_or(|t| t.span != needed) {
            let first = slo::window_end(now) - needed;
            let mut t = Tally { first, minutes: VecDeque::with_capacity(usize::try_from(needed).unwrap_or(0)), span: needed };
            for b in store.slo_buckets(&s.name, first).await? {
                // Roll-ups lie beyond the alerts' windows; only minutes are read here.
                if b.minutes == 1 {
                    t.add(b.start, b.good, b.total);
                }
            }
            by_slo.insert(s.name.clone(), t);
        }
        let t = by_slo.get_mut(&s.name).expect("just loaded");
        t.trim(slo::window_end(now) - 1);
        let t = &*t;
        Ok(Some(slo::read_burn_with(|from, to| t.counts(from, to, s.budgeting), now, s.objective, w, s.min_events)))
    }

    /// Forgets the tallies of SLOs no longer configured.
    pub async fn retain(&self, slos: &[Slo]) {
        self.by_slo.lock().await.retain(|name, _| slos.iter().any(|s| &s.name == name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_model::slo::{Bucket, Objective};

    /// Whatever order minutes arrive in, a tally answers what the same minutes as
    /// buckets answer, for every window and both ways of budgeting; minutes beyond its
    /// span are dropped, never counted.
    #[test]
    fn a_tally_counts_what_the_buckets_count() {
        // As loaded at minute 1,199: the span back from the end of that minute.
        let span = 90;
        let mut t = Tally { first: 1_200 - span, minutes: VecDeque::new(), span };
        let mut buckets = Vec::new();
        // Minutes ≡ 2 (mod 3) newest first, then ≡ 0 oldest first; ≡ 1 never (gaps).
        for m in (1_000..1_200).rev().step_by(3).chain((1_002..1_200).step_by(3)) {
            let (good, total) = ((m % 7) as u64 * 3, (m % 7) as u64 * 3 + (m % 5 == 0) as u64);
            t.add(m, good, total);
            buckets.push(Bucket::minute(m, good, total));
        }
        t.trim(1_199);
        assert_eq!((t.minutes.len() as i64, t.first), (span, 1_199 - span + 1));
        for budgeting in [Budgeting::Occurrences, Budgeting::Timeslices { good_ratio: 0.9 }] {
            for (from, to) in [(1_150, 1_200), (1_110, 1_200), (1_190, 1_195), (1_195, 1_190)] {
                assert_eq!(t.counts(from, to, budgeting), slo::counts(&buckets, from, to, budgeting), "{from}..{to} {budgeting:?}");
            }
        }
        let o = Objective::percent(99.0).unwrap();
        let w = steward_model::slo::BurnWindow::spending(
            0.02,
            std::time::Duration::from_secs(3600),
            std::time::Duration::from_secs(300),
            std::time::Duration::from_secs(30 * 86_400),
            "critical",
        );
        let now = 1_199 * 60 + 30;
        assert_eq!(
            slo::read_burn_with(|f, to| t.counts(f, to, Budgeting::Occurrences), now, o, &w, 1),
            slo::read_burn(&buckets, now, o, Budgeting::Occurrences, &w, 1)
        );
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
        let tallies = Tallies::default();
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

    /// A minute far in the future (a clock jump) restarts the tally rather than
    /// allocating the gap.
    #[test]
    fn a_jump_far_ahead_restarts_the_tally() {
        let mut t = Tally { first: 0, minutes: VecDeque::new(), span: 60 };
        t.add(0, 1, 1);
        t.add(10_000_000, 1, 2);
        assert_eq!((t.first, t.minutes.len()), (10_000_000, 1));
        assert_eq!(t.counts(0, 10_000_001, Budgeting::Occurrences), Counts { good: 1.0, total: 2.0 });
    }
}
