//! PromQL rules, evaluated by a real Prometheus through its HTTP query API
//! (`/api/v1/query`), so the seeds' rules work as written.
//!
//! Each rule is an instant query every `every`; each series in the result is one alert,
//! labelled with the series' labels (minus `__name__`), then the rule's labels, then
//! `alertname`, exactly as Prometheus does. Alerts of the rule whose series left the
//! result resolve, subject to `keep_firing_for`.
//!
//! This runs beside the check-rule evaluator, never inside it: a slow or unreachable
//! Prometheus delays only PromQL rules. A failed query changes no alert (a Prometheus
//! restart must not resolve everything and re-page a minute later); it is counted in
//! `steward_rule_evaluation_failures_total` and shown by `GET /api/v1/rules`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use super::Alerting;
use super::evaluate::advance;
use super::{Alert, AlertSource, AlertState, Labels, fingerprint};
use crate::config::{AlertCondition, AlertRule, PrometheusSource};
use crate::telemetry::RuleLabels;
use steward_model::config::forecast::{Forecast, Limit};
use steward_model::forecast::Point;

/// How a rule's last evaluation went, for the API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleHealth {
    pub last_evaluation: DateTime<Utc>,
    pub duration_ms: f64,
    /// Series in the last successful result.
    pub series: usize,
    /// Why the last evaluation failed; `None` when it succeeded.
    pub error: Option<String>,
}

pub async fn run(alerting: Arc<Alerting>, stop: CancellationToken) {
    let client = match crate::checks::http::build_client(&Default::default(), false) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client for PromQL rules; they will not be evaluated");
            return;
        }
    };
    let mut last: HashMap<String, Instant> = HashMap::new();
    loop {
        let config = alerting.config.get();
        let now = Instant::now();
        let due: Vec<&AlertRule> = config
            .alerts
            .iter()
            .filter(|r| is_promql(&r.when))
            .filter(|r| last.get(&r.name).is_none_or(|t| now.duration_since(*t) >= r.every))
            .collect();
        if let Some(source) = &config.prometheus {
            for r in &due {
                last.insert(r.name.clone(), now);
            }
            let evaluations = due.iter().map(|r| evaluate(&alerting, &client, source, r));
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = futures::future::join_all(evaluations) => {}
            }
        }
        last.retain(|name, _| config.alert(name).is_some());
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// Whether Prometheus answers a rule's condition (a PromQL rule, or a forecast over a
/// PromQL series); the others are evaluated from Steward's own state.
pub fn is_promql(when: &AlertCondition) -> bool {
    match when {
        AlertCondition::Query { .. } => true,
        AlertCondition::Forecast(f) => f.promql().is_some(),
        _ => false,
    }
}

/// The series whose condition holds: labels, value, and for a forecast what the fit
/// says (an annotation).
type Holding = Vec<(Labels, f64, Option<String>)>;

async fn evaluate(alerting: &Alerting, client: &reqwest::Client, source: &PrometheusSource, rule: &AlertRule) {
    let started = Instant::now();
    let now = crate::clock::now();
    let result: Result<Holding, String> = match &rule.when {
        AlertCondition::Query { expr } => {
            query(client, source, expr, now).await.map(|s| s.into_iter().map(|(l, v)| (l, v, None)).collect())
        }
        AlertCondition::Forecast(f) => forecast(client, source, f, now).await,
        _ => return,
    };
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    let previous_error = alerting.rule_health(&rule.name).and_then(|h| h.error);
    let samples = match result {
        Ok(s) => s,
        Err(e) => {
            let e = alerting.config.get().redactor.redact(&e).into_owned();
            if previous_error.as_deref() != Some(e.as_str()) {
                tracing::warn!(alert = %rule.name, error = %e, "PromQL rule could not be evaluated; its alerts keep their state");
            }
            alerting.metrics.rule_evaluation_failures.get_or_create(&RuleLabels { rule: rule.name.clone() }).inc();
            alerting.live.set_rule_health(&rule.name, RuleHealth { last_evaluation: now, duration_ms, series: 0, error: Some(e) });
            return;
        }
    };
    if previous_error.is_some() {
        tracing::info!(alert = %rule.name, "PromQL rule evaluates again");
    }
    alerting.live.set_rule_health(&rule.name, RuleHealth { last_evaluation: now, duration_ms, series: samples.len(), error: None });
    let mut seen = HashSet::new();
    let mut changes = Vec::new();
    for (series, value, fit) in samples {
        let labels = alert_labels(rule, series);
        let fp = fingerprint(&labels);
        let current = alerting.alert(&fp).unwrap_or_else(|| Alert::inactive(&fp, &rule.name, labels, now));
        seen.insert(fp);
        changes.extend(advance(rule, &current, Some(value), now).map(|(mut next, event)| {
            if let Some(fit) = fit {
                next.annotations.entry("forecast".into()).or_insert(fit);
            }
            (next, event)
        }));
    }
    let gone: Vec<Alert> = alerting
        .alerts()
        .into_iter()
        .filter(|a| a.rule == rule.name && a.source == AlertSource::Rule && !seen.contains(&a.fingerprint))
        .filter(|a| matches!(a.state, AlertState::Pending | AlertState::Firing))
        .map(|a| Alert::clone(&a))
        .collect();
    for a in gone {
        changes.extend(advance(rule, &a, None, now));
    }
    alerting.commit(changes, now).await;
}

/// Prometheus' rule labels: the series' labels without `__name__`, the rule's
/// severity and labels over them, and `alertname`.
fn alert_labels(rule: &AlertRule, mut series: Labels) -> Labels {
    series.remove("__name__");
    series.insert("severity".into(), rule.severity.clone());
    series.extend(rule.labels.clone());
    series.insert("alertname".into(), rule.name.clone());
    series
}

/// One instant query; the samples of a vector result (a scalar is one unlabelled sample).
async fn query(client: &reqwest::Client, source: &PrometheusSource, expr: &str, at: DateTime<Utc>) -> Result<Vec<(Labels, f64)>, String> {
    let time = seconds(at);
    parse_response(&get(client, source, "query", &[("query", expr), ("time", time.as_str())]).await?)
}

fn seconds(at: DateTime<Utc>) -> String {
    format!("{:.3}", at.timestamp_millis() as f64 / 1000.0)
}

/// The series of a forecast rule predicted to cross the limit within its horizon: the
/// value is the seconds until then; the annotation says what the fit saw.
async fn forecast(client: &reqwest::Client, source: &PrometheusSource, f: &Forecast, now: DateTime<Utc>) -> Result<Holding, String> {
    let start = now - chrono::Duration::from_std(f.over).unwrap_or_default();
    let (start, end, step) = (seconds(start), seconds(now), format!("{}", f.step.as_secs_f64()));
    let (Some(expr), Limit::Value(limit)) = (f.promql(), &f.limit) else { return Ok(Vec::new()) };
    let limit = *limit;
    let body = get(client, source, "query_range", &[("query", expr), ("start", &start), ("end", &end), ("step", &step)]).await?;
    let now = now.timestamp_millis() as f64 / 1000.0;
    Ok(parse_matrix(&body)?
        .into_iter()
        .filter_map(|(labels, points)| {
            let (eta, fit) = super::forecasts::predict(f, limit, &points, now)?;
            (eta <= f.within).then_some((labels, eta.as_secs_f64(), Some(fit)))
        })
        .collect())
}

/// A GET on the query API (`query`, `query_range`), its JSON body.
pub(super) async fn get(
    client: &reqwest::Client,
    source: &PrometheusSource,
    endpoint: &str,
    params: &[(&str, &str)],
) -> Result<Json, String> {
    let url = format!("{}/api/v1/{endpoint}", source.url.expose().trim_end_matches('/'));
    let url = url::Url::parse_with_params(&url, params).map_err(|e| format!("bad Prometheus URL: {e}"))?;
    let mut req = client.get(url).timeout(source.timeout);
    for (k, v) in &source.headers {
        req = req.header(k, v.expose());
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_timeout() {
            format!("Prometheus did not answer within {:?}", source.timeout)
        } else {
            format!("cannot reach Prometheus: {e}")
        }
    })?;
    let status = resp.status();
    let body: Json = resp.json().await.map_err(|e| format!("Prometheus answered {status} with a body that is not JSON: {e}"))?;
    if body["status"] != "success" {
        let kind = body["errorType"].as_str().unwrap_or("error");
        return Err(format!("Prometheus answered {status}: {kind}: {}", body["error"].as_str().unwrap_or("no error message")));
    }
    Ok(body)
}

/// Reads a range query's matrix: each series' labels and its points, oldest first
/// (non-numeric values are left out).
pub fn parse_matrix(body: &Json) -> Result<Vec<(Labels, Vec<Point>)>, String> {
    let data = &body["data"];
    if data["resultType"] != "matrix" {
        return Err(format!("a range query answered {:?}, not a matrix", data["resultType"].as_str()));
    }
    Ok(data["result"]
        .as_array()
        .ok_or("a matrix without series")?
        .iter()
        .map(|s| {
            let labels: Labels = s["metric"]
                .as_object()
                .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
                .unwrap_or_default();
            let points = s["values"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    Some(Point { t: p.get(0)?.as_f64()?, v: p.get(1)?.as_str()?.parse::<f64>().ok().filter(|v| v.is_finite())? })
                })
                .collect();
            (labels, points)
        })
        .collect())
}

/// Reads the query API's JSON: `{"status":"success","data":{"resultType":…,"result":…}}`.
pub fn parse_response(body: &Json) -> Result<Vec<(Labels, f64)>, String> {
    if body["status"] != "success" {
        let kind = body["errorType"].as_str().unwrap_or("error");
        return Err(format!("{kind}: {}", body["error"].as_str().unwrap_or("no error message")));
    }
    let value = |v: &Json| -> Result<f64, String> {
        let text = v.get(1).and_then(Json::as_str).ok_or("a sample without a value")?;
        text.parse::<f64>().map_err(|_| format!("sample value `{text}` is not a number"))
    };
    let data = &body["data"];
    match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .ok_or("a vector result without samples")?
            .iter()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))).collect())
                    .unwrap_or_default();
                Ok((labels, value(&s["value"])?))
            })
            .collect(),
        Some("scalar") => Ok(vec![(Labels::new(), value(&data["result"])?)]),
        other => Err(format!("result type {other:?} cannot drive an alert; the expression must return an instant vector")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_vectors_scalars_and_errors() {
        let v = parse_response(&json!({"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"__name__":"up","job":"api","instance":"a:1"},"value":[1700000000.0,"0"]},
            {"metric":{"job":"db"},"value":[1700000000.0,"NaN"]}]}}))
        .unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].0["instance"], "a:1");
        assert_eq!(v[0].1, 0.0);
        assert!(v[1].1.is_nan());
        let s = parse_response(&json!({"status":"success","data":{"resultType":"scalar","result":[1.0,"3.5"]}})).unwrap();
        assert_eq!(s, vec![(Labels::new(), 3.5)]);
        let e = parse_response(&json!({"status":"error","errorType":"bad_data","error":"parse error"})).unwrap_err();
        assert_eq!(e, "bad_data: parse error");
        assert!(parse_response(&json!({"status":"success","data":{"resultType":"matrix","result":[]}})).is_err());
    }
}
