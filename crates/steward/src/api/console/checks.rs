//! Checks: the list (filtered and paged, so 20,000 checks stay one quick page), and one
//! check with its uptime and latency over 24 h, 7 d or 90 d as server-drawn SVG, its
//! transitions and its latest failure reasons.

use std::fmt::Write;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Duration, Utc};
use minijinja::{Value, context};
use serde::Deserialize;

use super::session::Signed;
use super::view::{PageError, Params, page};
use crate::api::uptime::{Day, percent_text};
use crate::api::{AppState, CheckView};
use crate::checks::state::Health;
use crate::store::Rollup;

/// Checks per page of the list.
const CHECKS_PER_PAGE: usize = 100;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    service: Option<String>,
    health: Option<String>,
    /// Names containing this text.
    q: Option<String>,
    page: Option<usize>,
}

pub(super) async fn list(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Params(f): Params<ListQuery>,
) -> Result<Response, PageError> {
    let config = s.engine.config();
    let health = match f.health.as_deref().filter(|h| !h.is_empty()) {
        None => None,
        Some("healthy") => Some(Health::Healthy),
        Some("unhealthy") => Some(Health::Unhealthy),
        Some("unknown") => Some(Health::Unknown),
        Some(other) => {
            return Err(PageError::new(StatusCode::BAD_REQUEST, format!("`{other}` is not a health; use healthy, unhealthy or unknown")));
        }
    };
    let service = f.service.clone().filter(|v| !v.is_empty());
    let text = f.q.clone().unwrap_or_default();
    // Filtered on the live states in place; only the page shown is made into views
    // (a view formats the target and copies labels: 20,000 of them cost more than the
    // rest of the page).
    let (total, pages, page_no, shown) = s.engine.checks.with_states(|states| {
        let matching: Vec<_> = config
            .checks
            .iter()
            .filter(|c| service.as_ref().is_none_or(|sv| c.service.as_ref() == Some(sv)))
            .filter(|c| text.is_empty() || c.name.contains(text.as_str()))
            .filter(|c| health.is_none_or(|h| states.get(&c.name).map_or(Health::Unknown, |s| s.health) == h))
            .collect();
        let pages = matching.len().div_ceil(CHECKS_PER_PAGE).max(1);
        let page_no = f.page.unwrap_or(1).clamp(1, pages);
        let shown: Vec<CheckView> = matching
            .iter()
            .skip((page_no - 1) * CHECKS_PER_PAGE)
            .take(CHECKS_PER_PAGE)
            .map(|c| CheckView::new(c, states.get(&c.name)))
            .collect();
        (matching.len(), pages, page_no, shown)
    });
    let ctx = context! {
        checks => Value::from_serialize(&shown),
        total,
        page_no,
        pages,
        service => service.unwrap_or_default(),
        health => f.health.unwrap_or_default(),
        q => text,
        services => config.services.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
    };
    page(&who, "checks", "checks.html", ctx)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RangeQuery {
    range: Option<String>,
}

/// A chart's span and bucket size.
fn range(name: &str) -> Option<(Duration, Duration)> {
    match name {
        "24h" => Some((Duration::hours(24), Duration::minutes(15))),
        "7d" => Some((Duration::days(7), Duration::hours(2))),
        "90d" => Some((Duration::days(90), Duration::days(1))),
        _ => None,
    }
}

pub(super) async fn show(
    State(s): State<Arc<AppState>>,
    Extension(who): Extension<Signed>,
    Path(name): Path<String>,
    Params(q): Params<RangeQuery>,
) -> Result<Response, PageError> {
    let config = s.engine.config();
    let spec = config.check(&name).ok_or_else(|| PageError::not_found("check", &name))?;
    let range_name = q.range.unwrap_or_else(|| "24h".into());
    let (span, bucket) = range(&range_name)
        .ok_or_else(|| PageError::new(StatusCode::BAD_REQUEST, format!("`{range_name}` is not a range; use 24h, 7d or 90d")))?;
    let now = crate::clock::now();
    let since = first_bucket(now, span, bucket);
    let store = &s.engine.store;
    let buckets = store.buckets(&name, since, bucket.num_milliseconds()).await?;
    let (runs, failures) = buckets.iter().fold((0u64, 0u64), |(r, f), b| (r + b.runs, f + b.failures));
    let uptime = Day { runs, failures }.hundredths().map(percent_text);
    let transitions = store.transitions(Some(&name), 20).await?;
    let recent = store.history(&name, 200, None).await?;
    let reasons: Vec<_> = recent.iter().filter(|r| !r.healthy).take(10).collect();
    let ctx = context! {
        check => Value::from_serialize(CheckView::new(spec, s.engine.checks.state(&name).as_ref())),
        range => range_name,
        ranges => ["24h", "7d", "90d"],
        uptime,
        runs,
        failures,
        chart => chart(&buckets, since, since + span, bucket),
        transitions => Value::from_serialize(&transitions),
        reasons => Value::from_serialize(&reasons),
    };
    page(&who, "checks", "check.html", ctx)
}

/// The start of the chart: `span` back from the end of the bucket holding `now`, so its
/// columns are whole buckets, the current one last (whole UTC days over 90 d, as on the
/// status page), even when `now` falls exactly on a bucket's start.
fn first_bucket(now: DateTime<Utc>, span: Duration, bucket: Duration) -> DateTime<Utc> {
    let b = bucket.num_milliseconds().max(1);
    let end = (now.timestamp_millis().div_euclid(b) + 1) * b;
    DateTime::from_timestamp_millis(end).map_or(now - span, |end| end - span)
}

/// The chart: one column per bucket, its height the share of runs that failed (red) —
/// an empty column where nothing ran — and the average latency as a line over it.
/// Plain SVG in a viewBox, so it scales to any width without JavaScript.
pub(super) fn chart(buckets: &[Rollup], since: DateTime<Utc>, until: DateTime<Utc>, bucket: Duration) -> String {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let b = bucket.num_milliseconds().max(1);
    let slots = ((until - since).num_milliseconds() + b - 1).div_euclid(b).max(1) as f64;
    let x_of = |t: DateTime<Utc>| ((t - since).num_milliseconds() as f64 / bucket.num_milliseconds() as f64 / slots * W).clamp(0.0, W);
    let width = (W / slots).max(1.0);
    let max_latency = buckets.iter().map(|b| b.latency_avg_ms).fold(0.0_f64, f64::max).max(1.0);
    let mut svg = String::with_capacity(64 * buckets.len() + 512);
    let _ = write!(
        svg,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" preserveAspectRatio="none" role="img" aria-label="failures per bucket and average latency (peak {max_latency:.1} ms)">"#
    );
    for b in buckets {
        let x = x_of(b.hour);
        let ok_share = if b.runs == 0 { 0.0 } else { (b.runs - b.failures) as f64 / b.runs as f64 };
        let _ = write!(svg, r#"<rect class="ok" x="{x:.2}" y="0" width="{width:.2}" height="{:.2}"/>"#, H * ok_share);
        if b.failures > 0 {
            let h = H * (1.0 - ok_share);
            let _ = write!(
                svg,
                r#"<rect class="fail" x="{x:.2}" y="{:.2}" width="{width:.2}" height="{h:.2}"><title>{} of {} failed</title></rect>"#,
                H - h,
                b.failures,
                b.runs
            );
        }
    }
    let points: Vec<String> =
        buckets.iter().map(|b| format!("{:.2},{:.2}", x_of(b.hour) + width / 2.0, H - H * 0.9 * b.latency_avg_ms / max_latency)).collect();
    if !points.is_empty() {
        let _ = write!(svg, r#"<polyline class="latency" fill="none" points="{}"/>"#, points.join(" "));
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_one_column_per_bucket_and_marks_failures() {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let b = |h: i64, runs: u64, failures: u64| Rollup {
            hour: t0 + Duration::hours(h),
            runs,
            failures,
            latency_avg_ms: 10.0 * (h + 1) as f64,
            latency_max_ms: 50.0,
        };
        let svg = chart(&[b(0, 60, 0), b(1, 60, 30), b(3, 60, 60)], t0, t0 + Duration::hours(4), Duration::hours(1));
        assert_eq!(svg.matches(r#"class="ok""#).count(), 3);
        assert_eq!(svg.matches(r#"class="fail""#).count(), 2);
        assert!(svg.contains("30 of 60 failed") && svg.contains("60 of 60 failed"), "{svg}");
        assert!(svg.contains(r#"x="450.00""#), "the fourth hour sits at three quarters: {svg}");
        assert!(svg.contains("peak 40.0 ms"));
        // Nothing ran: an empty chart, not a broken one.
        let empty = chart(&[], t0, t0 + Duration::hours(4), Duration::hours(1));
        assert!(empty.starts_with("<svg") && empty.ends_with("</svg>") && !empty.contains("polyline"));
    }

    #[test]
    fn a_range_is_whole_buckets_and_the_current_one() {
        let now = DateTime::parse_from_rfc3339("2026-12-05T13:20:00Z").unwrap().to_utc();
        for (name, first) in [("24h", "2026-12-04T13:30:00Z"), ("7d", "2026-11-28T14:00:00Z"), ("90d", "2026-09-07T00:00:00Z")] {
            let (span, bucket) = range(name).unwrap();
            let since = first_bucket(now, span, bucket);
            assert_eq!(since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true), first, "{name}");
            // The last column (the current bucket) ends at the chart's right edge.
            let last = Rollup {
                hour: since + bucket * (span.num_seconds() / bucket.num_seconds() - 1) as i32,
                runs: 1,
                failures: 0,
                latency_avg_ms: 1.0,
                latency_max_ms: 1.0,
            };
            let svg = chart(&[last], since, since + span, bucket);
            let x: f64 = svg.split(r#"<rect class="ok" x=""#).nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
            let width: f64 = svg.split(r#"width=""#).nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
            assert!((x + width - 600.0).abs() < 0.05, "{name}: {x} + {width}");
        }
        // Ninety columns over 90 days, as on the status page: today's the last.
        let (span, bucket) = range("90d").unwrap();
        assert_eq!(
            first_bucket(now, span, bucket) + Duration::days(89),
            DateTime::parse_from_rfc3339("2026-12-05T00:00:00Z").unwrap().to_utc()
        );
        // At a bucket's very start, that bucket is the last column and ends at the edge.
        let (span, bucket) = range("24h").unwrap();
        let on_edge = DateTime::parse_from_rfc3339("2026-12-05T13:30:00Z").unwrap().to_utc();
        let since = first_bucket(on_edge, span, bucket);
        assert_eq!(since, DateTime::parse_from_rfc3339("2026-12-04T13:45:00Z").unwrap().to_utc());
        let current = Rollup { hour: on_edge, runs: 1, failures: 0, latency_avg_ms: 1.0, latency_max_ms: 1.0 };
        let svg = chart(&[current], since, since + span, bucket);
        assert!(svg.contains(r#"x="593.75" y="0" width="6.25""#), "the 96th of 96 columns: {svg}");
    }
}
