//! SLIs counted by Prometheus (`sli: {prometheus: {good, total}}`): every complete
//! minute's good and total events, read with one range query per expression (step 1m,
//! `{{.window}}` as `1m`) and added to the SLO's buckets like a check's runs — so the
//! budget, burn-rate alerts, gates and roll-up are the same code for both kinds.
//!
//! Each minute is written once: a cursor per SLO starts after the newest stored bucket
//! (so a restart or a new leader neither skips nor repeats a minute: the buckets are
//! the record of what was counted) and moves only after the write. A minute is read
//! only once it is two minutes old, so late scrapes are in. Prometheus counts per minute
//! as `increase` does: extrapolated, so the figures are rounded to whole events; a
//! minute Prometheus has nothing for (absent or NaN) adds nothing. A new SLO reads back
//! up to a week of history, at most 10,000 minutes per query.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Alerting;
use super::promql::{get, parse_matrix};
use crate::config::PrometheusSource;
use steward_model::config::slos::{Sli, Slo, WINDOW_PLACEHOLDER};
use steward_store::SloEvents;

/// How often the minutes that completed since are read.
const POLL: Duration = Duration::from_secs(15);
/// Minutes this old or newer are not read yet: their scrapes may still come.
const SETTLE_MINUTES: i64 = 2;
/// How far back a new SLO reads.
const BACKFILL_MINUTES: i64 = 7 * 1440;
/// Points per range query (Prometheus answers at most 11,000).
const CHUNK_MINUTES: i64 = 10_000;

pub async fn run(alerting: Arc<Alerting>, stop: CancellationToken) {
    let client = match crate::checks::http::build_client(&Default::default(), false) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client for PromQL SLIs; they will not be counted");
            return;
        }
    };
    // The last minute counted, per SLO (kept for this process' life; from the store at start).
    let mut cursors: HashMap<String, i64> = HashMap::new();
    loop {
        let config = alerting.config.get();
        if let Some(source) = &config.prometheus {
            for s in config.slos.iter().filter(|s| matches!(s.sli, Sli::Prometheus { .. })) {
                if stop.is_cancelled() {
                    return;
                }
                let now_minute = crate::clock::now().timestamp().div_euclid(60);
                if let Err(e) = count(&alerting, &client, source, s, now_minute, &mut cursors).await {
                    tracing::warn!(slo = %s.name, error = %e, "counting the SLO's events from Prometheus failed; the minutes are read again next time");
                }
            }
        }
        cursors.retain(|name, _| config.slos.iter().any(|s| &s.name == name));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// Reads and stores the settled minutes after the SLO's cursor (one chunk).
async fn count(
    alerting: &Alerting,
    client: &reqwest::Client,
    source: &PrometheusSource,
    s: &Slo,
    now_minute: i64,
    cursors: &mut HashMap<String, i64>,
) -> Result<(), String> {
    let Sli::Prometheus { good, total } = &s.sli else { return Ok(()) };
    let last_settled = now_minute - SETTLE_MINUTES;
    let after = match cursors.get(&s.name) {
        Some(c) => *c,
        None => {
            let floor = now_minute - BACKFILL_MINUTES.min(i64::try_from(s.kept_for().as_secs() / 60).unwrap_or(i64::MAX / 4));
            let stored = alerting.results.slo_buckets(&s.name, floor).await.map_err(|e| e.to_string())?;
            stored.iter().map(|b| b.start + i64::from(b.minutes) - 1).max().unwrap_or(floor - 1).max(floor - 1)
        }
    };
    let (first, last) = (after + 1, last_settled.min(after + CHUNK_MINUTES));
    if first > last {
        return Ok(());
    }
    let goods = minutes(client, source, good, first, last).await?;
    let totals = minutes(client, source, total, first, last).await?;
    let events: Vec<SloEvents> = totals
        .iter()
        .filter_map(|(minute, t)| {
            let total = t.round().max(0.0) as u64;
            let good = goods.get(minute).map_or(0.0, |g| g.round().max(0.0)) as u64;
            (total > 0).then(|| SloEvents { slo: s.name.clone(), minute: *minute, good: good.min(total), total })
        })
        .collect();
    if !events.is_empty() {
        alerting.checks.slo_tallies().record(alerting.checks.store(), &events).await.map_err(|e| e.to_string())?;
        crate::slos::count_metrics(&alerting.metrics, &events);
    }
    cursors.insert(s.name.clone(), last);
    Ok(())
}

/// The expression's value for each minute in `first..=last`: evaluated at the minute's
/// end over `[1m]`, summed over the series it returns.
async fn minutes(
    client: &reqwest::Client,
    source: &PrometheusSource,
    expr: &str,
    first: i64,
    last: i64,
) -> Result<HashMap<i64, f64>, String> {
    let query = expr.replace(WINDOW_PLACEHOLDER, "1m");
    let (start, end) = (((first + 1) * 60).to_string(), ((last + 1) * 60).to_string());
    let body = get(client, source, "query_range", &[("query", &query), ("start", &start), ("end", &end), ("step", "60")]).await?;
    let mut out: HashMap<i64, f64> = HashMap::new();
    for (_, points) in parse_matrix(&body)? {
        for p in points {
            *out.entry((p.t.round() as i64).div_euclid(60) - 1).or_default() += p.v;
        }
    }
    Ok(out)
}
