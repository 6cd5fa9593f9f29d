//! Capacity forecasts at run time: a model fitted to a series, turned into an alert
//! decision (seconds until the limit) and a sentence for the `forecast` annotation.
//! PromQL series come from Prometheus (`promql.rs`); a check's own observations come
//! from its stored runs, evaluated here beside the other rules over checks.

use std::time::Duration;

use chrono::{DateTime, Utc};
use steward_model::config::duration::format_duration;
use steward_model::config::forecast::{Forecast, ForecastModel, ForecastSource, Limit};
use steward_model::forecast::{self, Crossing, Point};
use steward_store::{CheckStore, StoreError};

/// When `f`'s model, fitted to `points`, reaches `limit` (within the horizon, for
/// Holt-Winters), and a sentence saying so; `None` when it does not or too little is known.
pub fn predict(f: &Forecast, limit: f64, points: &[Point], now: f64) -> Option<(Duration, String)> {
    let side = match f.crossing {
        Crossing::Above => "rise to",
        Crossing::Below => "fall to",
    };
    let over = format_duration(f.over);
    match &f.model {
        ForecastModel::Linear => {
            let fit = forecast::linear(points)?;
            let eta = forecast::linear_crossing(&fit, now, limit, f.crossing)?;
            let text = format!(
                "linear fit over {over} ({} points): {} per hour, {} now; predicted to {side} {} in {}",
                fit.points,
                signed(fit.slope * 3600.0),
                readable(fit.at(now)),
                readable(limit),
                format_duration(Duration::from_secs(eta.as_secs()))
            );
            Some((eta, text))
        }
        ForecastModel::HoltWinters { season } => {
            let step = f.step.as_secs_f64();
            let (values, last) = forecast::resample(points, step)?;
            let period = (season.as_secs_f64() / step).round() as usize;
            let model = forecast::holt_winters(&values, step, last, period)?;
            let eta = model.crossing(now, limit, f.crossing, f.within)?;
            let text = format!(
                "Holt-Winters over {over} (season {}): level {}, trend {} per hour; predicted to {side} {} in {}",
                format_duration(*season),
                readable(model.level),
                signed(model.trend / step * 3600.0),
                readable(limit),
                format_duration(Duration::from_secs(eta.as_secs()))
            );
            Some((eta, text))
        }
    }
}

/// A forecast over a check's recorded field, from its runs within `over`: the seconds
/// until the limit and the annotation when it is predicted within the horizon. A limit
/// that is a field is its newest recorded value; without one, nothing is predicted.
pub async fn over_check(store: &dyn CheckStore, f: &Forecast, now: DateTime<Utc>) -> Result<Option<(f64, String)>, StoreError> {
    let ForecastSource::Check { check, value } = &f.source else { return Ok(None) };
    let since = now - chrono::Duration::from_std(f.over).unwrap_or_default();
    // Newest first.
    let runs = store.results_since(check, since).await?;
    let limit = match &f.limit {
        Limit::Value(v) => *v,
        Limit::Field(field) => match runs.iter().find_map(|r| r.values.get(&field.source)) {
            Some(v) => *v,
            None => return Ok(None),
        },
    };
    let points: Vec<Point> = runs
        .iter()
        .rev()
        .filter_map(|r| Some(Point { t: r.at.timestamp_millis() as f64 / 1000.0, v: *r.values.get(&value.source)? }))
        .collect();
    let now = now.timestamp_millis() as f64 / 1000.0;
    Ok(predict(f, limit, &points, now).filter(|(eta, _)| *eta <= f.within).map(|(eta, fit)| (eta.as_secs_f64(), fit)))
}

/// A number as people read it on a dashboard: four significant digits, with k, M, G, T
/// for thousands and up (`1.074G`, `52.3k`, `0.01234`), never scientific notation
/// unless it is tinier than a millionth.
pub fn readable(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    let a = x.abs();
    let (v, suffix) = match a {
        _ if a >= 1e12 => (x / 1e12, "T"),
        _ if a >= 1e9 => (x / 1e9, "G"),
        _ if a >= 1e6 => (x / 1e6, "M"),
        _ if a >= 1e4 => (x / 1e3, "k"),
        _ => (x, ""),
    };
    if v != 0.0 && v.abs() < 1e-6 {
        return format!("{v:.3e}");
    }
    // Decimals for four significant digits: 1234, 123.4, 12.34, 1.234, 0.01234.
    let magnitude = if v == 0.0 { 0 } else { v.abs().log10().floor() as i32 };
    let decimals = (3 - magnitude).clamp(0, 9) as usize;
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    if s == "-0" {
        s = "0".into();
    }
    s + suffix
}

/// [`readable`] with its sign always written: a rate of change.
fn signed(x: f64) -> String {
    if x > 0.0 { format!("+{}", readable(x)) } else { readable(x) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_a_dashboard() {
        let cases = [
            (0.0, "0"),
            (90.0, "90"),
            (3600.0, "3600"),
            (12_345.0, "12.35k"),
            (52_300.0, "52.3k"),
            (1_073_741_824.0, "1.074G"),
            (5e9, "5G"),
            (-2.5e6, "-2.5M"),
            (0.012_345_6, "0.01235"),
            (1.5e13, "15T"),
            (3e-9, "3.000e-9"),
        ];
        for (x, want) in cases {
            assert_eq!(readable(x), want, "{x}");
        }
        assert_eq!(signed(3600.0), "+3600");
        assert_eq!(signed(-0.5), "-0.5");
    }
}
