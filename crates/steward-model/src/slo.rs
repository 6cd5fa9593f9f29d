//! Service level objectives as arithmetic over counted events: error budgets, burn
//! rates, time to exhaustion and multi-window, multi-burn-rate alert decisions.
//!
//! Events are kept as *buckets* — good and total counts per minute (older ones rolled
//! up into wider buckets) — so the figures for any window are a sum over the buckets
//! inside it: the cost depends on how many buckets a window holds, never on how many
//! events it saw, and a 30-day window costs the same on a quiet service as on a busy
//! one. Everything here is a pure function of the buckets and a given `now`: tests
//! drive the clock, nothing sleeps.
//!
//! Two ways of budgeting, in OpenSLO's terms:
//! - **occurrences**: the SLI is good events ÷ all events in the window;
//! - **timeslices**: each minute is good when its own ratio reaches a threshold, and
//!   the SLI is good minutes ÷ minutes with events (a burst of errors costs its minutes,
//!   however many requests it failed).
//!
//! "No data" is never a number: a window without events has no SLI and no burn rate
//! (`None`), so a counter that never moved does not read as a perfect 100 %.

use std::time::Duration;

/// Events counted in one span of time: `minutes` wide, from `start` (a Unix minute,
/// seconds ÷ 60). `good_slices`/`slices` carry timeslice counts for rolled-up buckets,
/// where the per-minute ratios are gone; for a one-minute bucket they are derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    pub start: i64,
    pub minutes: u32,
    pub good: u64,
    pub total: u64,
    pub good_slices: u32,
    pub slices: u32,
}

impl Bucket {
    /// A one-minute bucket.
    pub fn minute(start: i64, good: u64, total: u64) -> Bucket {
        Bucket { start, minutes: 1, good: good.min(total), total, good_slices: 0, slices: 0 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budgeting {
    Occurrences,
    /// A minute is good when good ÷ total in it is at least this ratio (0 < r ≤ 1).
    Timeslices {
        good_ratio: f64,
    },
}

/// Good and total units (events or minutes) in a window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counts {
    pub good: f64,
    pub total: f64,
}

impl Counts {
    pub fn bad(&self) -> f64 {
        self.total - self.good
    }

    /// good ÷ total; `None` without events.
    pub fn ratio(&self) -> Option<f64> {
        (self.total > 0.0).then(|| self.good / self.total)
    }
}

/// Whether a minute of `good` of `total` events is a good timeslice at `good_ratio`.
pub fn good_slice(good: u64, total: u64, good_ratio: f64) -> bool {
    total > 0 && good as f64 / total as f64 >= good_ratio
}

impl Counts {
    /// Adds one minute's events: themselves under occurrences, one slice under
    /// timeslices (none for a minute without events).
    pub fn add_minute(&mut self, good: u64, total: u64, budgeting: Budgeting) {
        match budgeting {
            Budgeting::Occurrences => {
                self.good += good as f64;
                self.total += total as f64;
            }
            Budgeting::Timeslices { good_ratio } => {
                if total > 0 {
                    self.total += 1.0;
                    self.good += f64::from(u8::from(good_slice(good, total, good_ratio)));
                }
            }
        }
    }

    /// Adds a rolled-up bucket's events, or its slices counted when it was rolled.
    pub fn add_rolled(&mut self, good: u64, total: u64, good_slices: u32, slices: u32, budgeting: Budgeting) {
        match budgeting {
            Budgeting::Occurrences => {
                self.good += good as f64;
                self.total += total as f64;
            }
            Budgeting::Timeslices { .. } => {
                self.good += f64::from(good_slices);
                self.total += f64::from(slices);
            }
        }
    }
}

/// Sums the buckets that start inside `[from, to)` (Unix minutes). A rolled-up bucket
/// straddling the window's start is left out whole: a window is never wider than asked,
/// at most one bucket narrower. (Rolled-up buckets are old ones; the minutes near `to`
/// are always one-minute buckets.)
pub fn counts(buckets: &[Bucket], from: i64, to: i64, budgeting: Budgeting) -> Counts {
    let mut c = Counts::default();
    for b in buckets.iter().filter(|b| b.start >= from && b.start < to) {
        if b.minutes == 1 {
            c.add_minute(b.good, b.total, budgeting);
        } else {
            c.add_rolled(b.good, b.total, b.good_slices, b.slices, budgeting);
        }
    }
    c
}

/// Rolls the one-minute buckets of `minute_buckets` (sorted or not) up into buckets
/// `width` minutes wide, aligned on multiples of `width`; timeslices are counted with
/// `budgeting`'s ratio on the way, since the minutes are gone afterwards.
pub fn roll_up(minute_buckets: &[Bucket], width: u32, budgeting: Budgeting) -> Vec<Bucket> {
    let width = width.max(1);
    let good_ratio = match budgeting {
        Budgeting::Timeslices { good_ratio } => good_ratio,
        Budgeting::Occurrences => 1.0,
    };
    let mut out: std::collections::BTreeMap<i64, Bucket> = std::collections::BTreeMap::new();
    for b in minute_buckets {
        let start = b.start.div_euclid(i64::from(width)) * i64::from(width);
        let r = out.entry(start).or_insert(Bucket { start, minutes: width, good: 0, total: 0, good_slices: 0, slices: 0 });
        r.good += b.good;
        r.total += b.total;
        if b.minutes == 1 {
            if b.total > 0 {
                r.slices += 1;
                r.good_slices += u32::from(good_slice(b.good, b.total, good_ratio));
            }
        } else {
            r.slices += b.slices;
            r.good_slices += b.good_slices;
        }
    }
    out.into_values().collect()
}

/// An objective as a fraction: 99.9 % is `0.999`. Constructed only inside (0, 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objective(f64);

impl Objective {
    /// From a percentage, strictly between 0 and 100.
    pub fn percent(p: f64) -> Option<Objective> {
        (p.is_finite() && p > 0.0 && p < 100.0).then_some(Objective(p / 100.0))
    }

    pub fn fraction(&self) -> f64 {
        self.0
    }

    /// The error budget: the share of units allowed to be bad (0.1 % for 99.9 %).
    pub fn budget(&self) -> f64 {
        1.0 - self.0
    }

    /// How fast the budget burns: the bad share ÷ the budget. 1 spends exactly the
    /// budget over the SLO window; `None` without events.
    pub fn burn_rate(&self, c: Counts) -> Option<f64> {
        (c.total > 0.0).then(|| (c.bad() / c.total) / self.budget())
    }

    /// The share of the window's budget still unspent: 1 untouched, 0 spent, below 0
    /// overspent. Budget is the allowed share of the units seen; `None` without events.
    pub fn budget_remaining(&self, window: Counts) -> Option<f64> {
        self.burn_rate(window).map(|b| 1.0 - b)
    }
}

/// When the budget runs out at the recent burn rate: `remaining` (a share of the
/// window's budget) spent at `burn` window-budgets per `window`. Zero when already
/// spent; `None` when it never runs out (no burn) or nothing is known.
pub fn time_to_exhaustion(remaining: Option<f64>, burn: Option<f64>, window: Duration) -> Option<Duration> {
    let (remaining, burn) = (remaining?, burn?);
    if remaining <= 0.0 {
        return Some(Duration::ZERO);
    }
    if burn <= 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(remaining / burn * window.as_secs_f64()).ok()
}

/// One alert of a multi-window, multi-burn-rate pair (the SRE workbook's): it fires
/// when both the long and the short window burn at least `factor` — the long window
/// proves the burn is significant, the short one that it is still going on, so the
/// alert resolves minutes after the burn stops rather than hours.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnWindow {
    pub long: Duration,
    pub short: Duration,
    pub factor: f64,
    pub severity: String,
}

impl BurnWindow {
    /// The workbook's alert that fires when `share` of the SLO window's budget is spent
    /// within `long`: factor = share × window ÷ long (2 % of 30 days in 1 h = 14.4).
    pub fn spending(share: f64, long: Duration, short: Duration, window: Duration, severity: &str) -> BurnWindow {
        let factor = share * window.as_secs_f64() / long.as_secs_f64().max(1.0);
        BurnWindow { long, short, factor, severity: severity.to_string() }
    }

    /// The four defaults: pages at 2 % of the budget in 1 h (5 m short window) and 5 %
    /// in 6 h (30 m); tickets at 10 % in 1 d (2 h) and 10 % in 3 d (6 h).
    pub fn defaults(window: Duration) -> Vec<BurnWindow> {
        let (m, h) = (60, 3600);
        let d = |s: u64| Duration::from_secs(s);
        vec![
            BurnWindow::spending(0.02, d(h), d(5 * m), window, "critical"),
            BurnWindow::spending(0.05, d(6 * h), d(30 * m), window, "critical"),
            BurnWindow::spending(0.10, d(24 * h), d(2 * h), window, "warning"),
            BurnWindow::spending(0.10, d(72 * h), d(6 * h), window, "warning"),
        ]
    }
}

/// What one burn-rate alert sees at `now`.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnReading {
    pub long_burn: Option<f64>,
    pub short_burn: Option<f64>,
    /// Units (events or minutes) in the long window, for the traffic gate.
    pub long_total: f64,
    pub fires: bool,
    /// Whether the traffic gate held the alert back.
    pub too_little_traffic: bool,
}

/// The Unix minute `now` falls in, plus one: windows end at the end of the current
/// minute, so the minute being counted is included.
pub fn window_end(now_unix_seconds: i64) -> i64 {
    now_unix_seconds.div_euclid(60) + 1
}

/// A duration in whole minutes, rounded up (a window is at least as long as asked).
pub fn minutes(d: Duration) -> i64 {
    i64::try_from(d.as_secs().div_ceil(60)).unwrap_or(i64::MAX / 4)
}

/// Reads `w` at `now`: fires when both windows burn at least the factor and the long
/// window holds at least `min_events` units (a quiet service does not page on one
/// error: pyrra#1925).
pub fn read_burn(
    buckets: &[Bucket],
    now_unix_seconds: i64,
    objective: Objective,
    budgeting: Budgeting,
    w: &BurnWindow,
    min_events: u64,
) -> BurnReading {
    read_burn_with(|from, to| counts(buckets, from, to, budgeting), now_unix_seconds, objective, w, min_events)
}

/// [`read_burn`] over any source of window counts: `counts(from, to)` for Unix minutes
/// `[from, to)` (an in-memory tally answers without materialising buckets).
pub fn read_burn_with(
    counts: impl Fn(i64, i64) -> Counts,
    now_unix_seconds: i64,
    objective: Objective,
    w: &BurnWindow,
    min_events: u64,
) -> BurnReading {
    let end = window_end(now_unix_seconds);
    let long = counts(end - minutes(w.long), end);
    let short = counts(end - minutes(w.short), end);
    let (long_burn, short_burn) = (objective.burn_rate(long), objective.burn_rate(short));
    let burning = long_burn.is_some_and(|b| b >= w.factor) && short_burn.is_some_and(|b| b >= w.factor);
    let too_little_traffic = long.total < min_events as f64;
    BurnReading { long_burn, short_burn, long_total: long.total, fires: burning && !too_little_traffic, too_little_traffic }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);
    const MONTH: Duration = Duration::from_secs(30 * 86_400);

    /// `per_minute` events a minute from minute 0 for `n` minutes, `bad(i)` of them bad.
    fn series(n: i64, per_minute: u64, bad: impl Fn(i64) -> u64) -> Vec<Bucket> {
        (0..n).map(|i| Bucket::minute(i, per_minute - bad(i).min(per_minute), per_minute)).collect()
    }

    fn at_end_of_minute(m: i64) -> i64 {
        m * 60 + 59
    }

    #[test]
    fn budget_figures_are_exact_for_known_counts() {
        let o = Objective::percent(99.9).unwrap();
        // 30 days of 1,000 events a minute, 21,600 bad: half of the 43,200 allowed.
        let total = 30.0 * 1440.0 * 1000.0;
        let c = Counts { good: total - 21_600.0, total };
        assert!((o.budget() - 0.001).abs() < 1e-12);
        assert!((o.burn_rate(c).unwrap() - 0.5).abs() < 1e-9);
        assert!((o.budget_remaining(c).unwrap() - 0.5).abs() < 1e-9);
        // At a burn of 2 budgets per window, half a budget lasts a quarter of the window.
        assert_eq!(time_to_exhaustion(Some(0.5), Some(2.0), MONTH), Some(MONTH / 4));
        assert_eq!(time_to_exhaustion(Some(-0.1), Some(2.0), MONTH), Some(Duration::ZERO));
        assert_eq!(time_to_exhaustion(Some(0.5), Some(0.0), MONTH), None);
        // No events: no SLI, no burn, no budget figure — not a perfect score.
        let none = Counts::default();
        assert_eq!((none.ratio(), o.burn_rate(none), o.budget_remaining(none)), (None, None, None));
    }

    #[test]
    fn objectives_are_strictly_between_0_and_100() {
        for bad in [0.0, 100.0, -1.0, 100.5, f64::NAN, f64::INFINITY] {
            assert_eq!(Objective::percent(bad), None, "{bad}");
        }
        assert_eq!(Objective::percent(99.0).map(|o| o.fraction()), Some(0.99));
    }

    #[test]
    fn the_default_windows_are_the_workbooks_for_30_days() {
        let f: Vec<f64> = BurnWindow::defaults(MONTH).iter().map(|w| (w.factor * 1000.0).round() / 1000.0).collect();
        assert_eq!(f, [14.4, 6.0, 3.0, 1.0]);
        // A 28-day window keeps the budget shares, so the factors scale with it.
        assert!((BurnWindow::defaults(28 * DAY)[0].factor - 13.44).abs() < 1e-9);
    }

    #[test]
    fn a_two_percent_error_rate_pages_in_the_minute_the_hour_has_spent_two_percent() {
        // A day of clean traffic, then 2 % of requests fail (burn 20). The 1 h window's
        // burn is 20 × k/60 after k bad minutes: it reaches 14.4 at k = 43.2, so the
        // page fires in the 44th minute of the outage and not the 43rd.
        let o = Objective::percent(99.9).unwrap();
        let start = 1440;
        let buckets = series(start + 120, 1000, |i| if i >= start { 20 } else { 0 });
        let page = &BurnWindow::defaults(MONTH)[0];
        let at = |k: i64| read_burn(&buckets, at_end_of_minute(start + k - 1), o, Budgeting::Occurrences, page, 100);
        assert!(!at(43).fires, "{:?}", at(43));
        assert!(at(44).fires, "{:?}", at(44));
        assert!((at(44).short_burn.unwrap() - 20.0).abs() < 1e-9);
        assert!((at(44).long_burn.unwrap() - 20.0 * 44.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn a_slow_burn_opens_a_ticket_and_never_pages() {
        // Three clean days, then 0.35 % errors (burn 3.5) for a day.
        let o = Objective::percent(99.9).unwrap();
        let start = 3 * 1440;
        let buckets = series(start + 1440, 100, |i| u64::from(i >= start && i % 20 < 7));
        // 7 bad of 2,000 events every 20 minutes = 0.35 %.
        let windows = BurnWindow::defaults(MONTH);
        let read = |w: &BurnWindow, k: i64| read_burn(&buckets, at_end_of_minute(start + k - 1), o, Budgeting::Occurrences, w, 100);
        for k in (20..=1440).step_by(20) {
            assert!(!read(&windows[0], k).fires && !read(&windows[1], k).fires, "no page at minute {k}");
        }
        // The 1 d ticket needs the day's burn at 3: 3 × 0.1 % × 144,000 events = 432 bad
        // ones. They come 7 to each 20 minutes, in the first 7: the 432nd (61 × 7 + 5)
        // arrives in minute 61 × 20 + 5 of the slow burn.
        let first = (1..=1440).find(|&k| read(&windows[2], k).fires).unwrap();
        assert_eq!(first, 1225);
        assert!(read(&windows[2], 1440).fires);
    }

    #[test]
    fn a_quiet_service_does_not_page_on_one_error() {
        // Three requests in an hour, one failed: a burn of 333, but under the gate.
        let o = Objective::percent(99.9).unwrap();
        let buckets = vec![Bucket::minute(10, 1, 1), Bucket::minute(20, 0, 1), Bucket::minute(58, 1, 1)];
        let page = &BurnWindow::defaults(MONTH)[0];
        let r = read_burn(&buckets, at_end_of_minute(59), o, Budgeting::Occurrences, page, 100);
        assert!(r.long_burn.unwrap() > 300.0 && !r.fires && r.too_little_traffic, "{r:?}");
        // With the gate at 0 the same hour pages only if the last 5 minutes burn too.
        let r = read_burn(&buckets, at_end_of_minute(59), o, Budgeting::Occurrences, page, 0);
        assert!(!r.fires, "the 5 m window saw no error: {r:?}");
    }

    #[test]
    fn timeslices_count_bad_minutes_not_bad_requests() {
        // 60 minutes; one minute with every request failed, one with 1 % failed.
        let buckets = series(60, 1000, |i| match i {
            7 => 1000,
            30 => 10,
            _ => 0,
        });
        let slices = counts(&buckets, 0, 60, Budgeting::Timeslices { good_ratio: 0.995 });
        assert_eq!(slices, Counts { good: 58.0, total: 60.0 });
        let events = counts(&buckets, 0, 60, Budgeting::Occurrences);
        assert_eq!(events, Counts { good: 58_990.0, total: 60_000.0 });
    }

    #[test]
    fn rolled_up_buckets_give_the_same_figures_as_their_minutes() {
        let budgeting = Budgeting::Timeslices { good_ratio: 0.99 };
        let minutes = series(6 * 60, 50, |i| (i % 7 == 0) as u64 * 3);
        let hours = roll_up(&minutes, 60, budgeting);
        assert_eq!(hours.len(), 6);
        for b in [Budgeting::Occurrences, budgeting] {
            assert_eq!(counts(&minutes, 0, 360, b), counts(&hours, 0, 360, b));
        }
        // A window starting inside an hour leaves that hour out whole, never more.
        assert_eq!(counts(&hours, 30, 360, Budgeting::Occurrences), counts(&minutes, 60, 360, Budgeting::Occurrences));
    }

    #[test]
    fn a_window_is_a_sum_of_buckets_whatever_its_length() {
        // A month of minutes: the 30-day figure is the sum, the 1 h one its last 60.
        let buckets = series(30 * 1440, 10, |i| u64::from(i % 1000 == 0));
        let end = window_end(at_end_of_minute(30 * 1440 - 1));
        let month = counts(&buckets, end - 30 * 1440, end, Budgeting::Occurrences);
        assert_eq!(month.total, 432_000.0);
        assert_eq!(month.bad(), 44.0);
        let hour = counts(&buckets, end - 60, end, Budgeting::Occurrences);
        assert_eq!((hour.total, hour.bad()), (600.0, 0.0));
    }
}
