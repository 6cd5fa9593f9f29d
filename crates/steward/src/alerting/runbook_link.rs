//! What an alert rule's `runbook:` link means for one alert: the parameters its
//! templates fill in from the alert, and the command a person would type.

use serde_json::{Map, Value as Json};

use super::Alert;
use crate::config::alerting::RunbookLink;

/// The parameters `link` gives the runbook for `alert`; an error names the template
/// that failed.
pub fn params(link: &RunbookLink, alert: &Alert) -> Result<Map<String, Json>, String> {
    let ctx = minijinja::Value::from_serialize(serde_json::json!({
        "labels": alert.labels, "annotations": alert.annotations, "value": alert.value,
    }));
    link.params.iter().map(|(k, t)| t.render(&ctx).map(|v| (k.clone(), Json::String(v))).map_err(|e| format!("param {k}: {e}"))).collect()
}

/// The command a person would type, for the `runbook` annotation.
pub fn command(link: &RunbookLink, alert: &Alert) -> String {
    let mut cmd = format!("steward run {}", link.name);
    match params(link, alert) {
        Ok(params) => {
            for (k, v) in params {
                let v = v.as_str().unwrap_or_default().to_string();
                let safe = !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.,:/@=".contains(c));
                cmd.push_str(&if safe { format!(" -p {k}={v}") } else { format!(" -p '{k}={}'", v.replace('\'', "'\\''")) });
            }
        }
        Err(e) => cmd.push_str(&format!(" (parameters could not be filled in: {e})")),
    }
    cmd
}
