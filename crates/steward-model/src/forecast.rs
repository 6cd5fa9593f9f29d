//! Capacity forecasts: a model fitted to a series' recent history, asked when the series
//! will cross a limit ("disk 90 % within 4 h", Redis `used_memory` reaching
//! `maxmemory`). Pure functions of the points given; tests use synthetic series with
//! known crossing times.
//!
//! Two models:
//! - **linear**: ordinary least squares over the window. Right for steady growth (a disk
//!   filling with logs); a daily cycle fools it, in both directions.
//! - **Holt-Winters** (additive, triple exponential smoothing): level, trend and a
//!   seasonal term of a given period (a day). Right for a series that rises and falls
//!   every day while it grows — it predicts the crossing at tomorrow's peak, not at the
//!   trend line's. It needs two whole seasons of history to start.

use std::time::Duration;

/// One observation: seconds (any epoch) and value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub t: f64,
    pub v: f64,
}

/// Which way a series must go to be in trouble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crossing {
    /// Trouble at or above the limit (memory used, disk used percent).
    Above,
    /// Trouble at or below the limit (bytes free).
    Below,
}

impl Crossing {
    pub fn reached(self, value: f64, limit: f64) -> bool {
        match self {
            Crossing::Above => value >= limit,
            Crossing::Below => value <= limit,
        }
    }
}

/// `v = intercept + slope × t` (slope per second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearFit {
    pub slope: f64,
    pub intercept: f64,
    pub points: usize,
}

impl LinearFit {
    pub fn at(&self, t: f64) -> f64 {
        self.intercept + self.slope * t
    }
}

/// Least squares over `points`; `None` with fewer than two distinct times.
pub fn linear(points: &[Point]) -> Option<LinearFit> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    // Centred on the means, so large epoch seconds lose no precision.
    let (mt, mv) = (points.iter().map(|p| p.t).sum::<f64>() / n, points.iter().map(|p| p.v).sum::<f64>() / n);
    let (mut stt, mut stv) = (0.0, 0.0);
    for p in points {
        stt += (p.t - mt) * (p.t - mt);
        stv += (p.t - mt) * (p.v - mv);
    }
    if stt <= 0.0 || !stt.is_finite() || !stv.is_finite() {
        return None;
    }
    let slope = stv / stt;
    Some(LinearFit { slope, intercept: mv - slope * mt, points: points.len() })
}

/// When the fitted line reaches `limit` after `now`: `Some(ZERO)` if it is already
/// there at `now`, `None` if it moves away from it (or never gets there).
pub fn linear_crossing(fit: &LinearFit, now: f64, limit: f64, crossing: Crossing) -> Option<Duration> {
    if crossing.reached(fit.at(now), limit) {
        return Some(Duration::ZERO);
    }
    let towards = match crossing {
        Crossing::Above => fit.slope > 0.0,
        Crossing::Below => fit.slope < 0.0,
    };
    if !towards {
        return None;
    }
    let t = (limit - fit.intercept) / fit.slope;
    Duration::try_from_secs_f64(t - now).ok()
}

/// An additive Holt-Winters model after its last observation: `level + h × trend +
/// season[(h) mod period]` is the forecast `h` steps ahead.
#[derive(Debug, Clone, PartialEq)]
pub struct HoltWinters {
    pub level: f64,
    pub trend: f64,
    /// The seasonal terms, `season[0]` the one for the next step.
    pub season: Vec<f64>,
    /// Seconds between steps.
    pub step: f64,
    /// When the last observation was.
    pub last: f64,
}

/// Smoothing factors: how fast the level, trend and seasonal terms follow new data.
/// Fixed rather than fitted: a forecast alert must be explainable in its annotation,
/// and these follow a change within a few seasons without chasing noise.
pub const ALPHA: f64 = 0.3;
pub const BETA: f64 = 0.05;
pub const GAMMA: f64 = 0.3;

/// Fits an additive Holt-Winters model to `values`, `step` seconds apart (the last at
/// `last`), with a season of `period` steps. `None` with fewer than two seasons.
pub fn holt_winters(values: &[f64], step: f64, last: f64, period: usize) -> Option<HoltWinters> {
    if period < 2 || values.len() < 2 * period || step <= 0.0 || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, second) = (mean(&values[..period]), mean(&values[period..2 * period]));
    let mut trend = (second - first) / period as f64;
    // The trend line through the first two seasons' means; the seasonal terms are what
    // both seasons show above it. (Taken from the raw values, they would carry the
    // season's own share of the trend: a sawtooth the level then follows, and the
    // trend smoothed away to nothing.)
    let line = |i: usize| first + trend * (i as f64 - (period - 1) as f64 / 2.0);
    let mut season: Vec<f64> = (0..period).map(|j| (values[j] - line(j) + values[period + j] - line(period + j)) / 2.0).collect();
    let mut level = line(period - 1);
    // The first season only initialises; smoothing runs from the second on.
    for (i, &v) in values.iter().enumerate().skip(period) {
        let s = season[i % period];
        let previous = level;
        level = ALPHA * (v - s) + (1.0 - ALPHA) * (level + trend);
        trend = BETA * (level - previous) + (1.0 - BETA) * trend;
        season[i % period] = GAMMA * (v - level) + (1.0 - GAMMA) * s;
    }
    // Rotate so that season[0] belongs to the step after the last observation.
    season.rotate_left(values.len() % period);
    Some(HoltWinters { level, trend, season, step, last })
}

impl HoltWinters {
    /// The forecast `h` steps after the last observation (h ≥ 1).
    pub fn forecast(&self, h: usize) -> f64 {
        self.level + h as f64 * self.trend + self.season[(h - 1) % self.season.len()]
    }

    /// The first step within `horizon` of `now` whose forecast reaches `limit`: the
    /// time from `now` to it.
    pub fn crossing(&self, now: f64, limit: f64, crossing: Crossing, horizon: Duration) -> Option<Duration> {
        let until = now + horizon.as_secs_f64();
        let mut h = 1usize;
        loop {
            let t = self.last + h as f64 * self.step;
            if t > until {
                return None;
            }
            if t >= now && crossing.reached(self.forecast(h), limit) {
                return Duration::try_from_secs_f64(t - now).ok();
            }
            h += 1;
        }
    }
}

/// Resamples irregular points onto a grid `step` seconds apart ending at the last
/// point, carrying the last value forward over gaps (Holt-Winters needs evenly spaced
/// values); `None` when the points span less than one step.
pub fn resample(points: &[Point], step: f64) -> Option<(Vec<f64>, f64)> {
    let (first, last) = (points.first()?.t, points.last()?.t);
    if step <= 0.0 || last - first < step {
        return None;
    }
    let n = ((last - first) / step).floor() as usize + 1;
    let start = last - (n - 1) as f64 * step;
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    for k in 0..n {
        let t = start + k as f64 * step;
        while i + 1 < points.len() && points[i + 1].t <= t {
            i += 1;
        }
        out.push(points[i].v);
    }
    Some((out, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: f64 = 3600.0;
    const DAY: f64 = 86_400.0;

    #[test]
    fn a_steady_rise_crosses_when_the_line_says() {
        // 50 % full, +2 % an hour, sampled every minute for 6 h from a large epoch
        // time: at 62 % now, it reaches 90 % in 14 h.
        let t0 = 1_800_000_000.0;
        let points: Vec<Point> = (0..=360).map(|m| Point { t: t0 + m as f64 * 60.0, v: 50.0 + 2.0 * m as f64 / 60.0 }).collect();
        let fit = linear(&points).unwrap();
        assert!((fit.slope * HOUR - 2.0).abs() < 1e-9, "{fit:?}");
        let now = t0 + 6.0 * HOUR;
        let eta = linear_crossing(&fit, now, 90.0, Crossing::Above).unwrap();
        assert!((eta.as_secs_f64() - 14.0 * HOUR).abs() < 1e-3, "{eta:?}");
        // Free space falling: the same series upside down, with `below`.
        let free: Vec<Point> = points.iter().map(|p| Point { t: p.t, v: 100.0 - p.v }).collect();
        let eta = linear_crossing(&linear(&free).unwrap(), now, 10.0, Crossing::Below).unwrap();
        assert!((eta.as_secs_f64() - 14.0 * HOUR).abs() < 1e-3, "{eta:?}");
    }

    #[test]
    fn a_flat_or_receding_series_never_crosses_and_one_past_the_limit_already_has() {
        let flat: Vec<Point> = (0..10).map(|i| Point { t: i as f64, v: 5.0 }).collect();
        assert_eq!(linear_crossing(&linear(&flat).unwrap(), 10.0, 90.0, Crossing::Above), None);
        let falling: Vec<Point> = (0..10).map(|i| Point { t: i as f64, v: 50.0 - i as f64 }).collect();
        assert_eq!(linear_crossing(&linear(&falling).unwrap(), 10.0, 90.0, Crossing::Above), None);
        assert_eq!(linear_crossing(&linear(&falling).unwrap(), 10.0, 45.0, Crossing::Below), Some(Duration::ZERO));
        assert_eq!(linear(&flat[..1]), None, "one point has no slope");
        let same_time = [Point { t: 1.0, v: 1.0 }, Point { t: 1.0, v: 2.0 }];
        assert_eq!(linear(&same_time), None);
    }

    /// Memory that grows 1 % a day and swings ±10 % over each day, peaking at 18:00: a
    /// limit of 83 % is first reached this afternoon, near today's peak of 83.75 %.
    /// Holt-Winters finds that crossing (within a step); the straight line through
    /// three cycles puts it two days later.
    #[test]
    fn a_daily_cycle_is_crossed_near_its_peak_which_the_line_misses() {
        let step = 600.0; // 10 minutes
        let value = |t: f64| 70.0 + t / DAY + 10.0 * (2.0 * std::f64::consts::PI * (t - 12.0 * HOUR) / DAY).sin();
        // Three days of history; "now" is the start of day 3 (midnight).
        let values: Vec<f64> = (0..3 * 144).map(|i| value(i as f64 * step)).collect();
        let last = (3 * 144 - 1) as f64 * step;
        let now = last + step;
        let model = holt_winters(&values, step, last, 144).unwrap();
        let truth = (0..10 * 144).map(|i| now + i as f64 * step).find(|&t| value(t) >= 83.0).unwrap();
        assert!(truth > now + 16.0 * HOUR && truth < now + 18.0 * HOUR, "{truth}");
        let eta = model.crossing(now, 83.0, Crossing::Above, Duration::from_secs(86_400)).unwrap();
        let error = (now + eta.as_secs_f64() - truth).abs();
        assert!(error <= step, "Holt-Winters off by {error} s");
        // A horizon ending before it: no crossing.
        assert_eq!(model.crossing(now, 83.0, Crossing::Above, Duration::from_secs(12 * 3600)), None);
        // The line through the three cycles: 35 hours late.
        let points: Vec<Point> = values.iter().enumerate().map(|(i, &v)| Point { t: i as f64 * step, v }).collect();
        let line = linear_crossing(&linear(&points).unwrap(), now, 83.0, Crossing::Above).unwrap();
        assert!(now + line.as_secs_f64() - truth > DAY, "the line: {line:?}");
    }

    #[test]
    fn holt_winters_needs_two_seasons_and_clean_values() {
        assert_eq!(holt_winters(&[1.0; 10], 60.0, 0.0, 6), None);
        assert!(holt_winters(&[1.0; 12], 60.0, 0.0, 6).is_some());
        assert_eq!(holt_winters(&[f64::NAN; 12], 60.0, 0.0, 6), None);
        assert_eq!(holt_winters(&[1.0; 12], 0.0, 0.0, 6), None);
    }

    #[test]
    fn resampling_carries_values_over_gaps_onto_an_even_grid() {
        let points = [Point { t: 0.0, v: 1.0 }, Point { t: 25.0, v: 2.0 }, Point { t: 60.0, v: 3.0 }];
        let (values, last) = resample(&points, 10.0).unwrap();
        // Grid 0,10,…,60 ending at the last point.
        assert_eq!(values, vec![1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0]);
        assert_eq!(last, 60.0);
        assert_eq!(resample(&points[..1], 10.0), None);
    }
}
