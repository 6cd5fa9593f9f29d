//! Notification payloads for each receiver kind, rendered from the Alertmanager
//! payload stored in the outbox (so a retry sends exactly what was decided).

use serde_json::{Value as Json, json};

/// A Slack-compatible incoming-webhook message rendered from the Alertmanager payload.
pub fn slack_body(payload: &Json, channel: Option<&str>) -> Json {
    let status = payload["status"].as_str().unwrap_or("firing");
    let alerts = payload["alerts"].as_array().cloned().unwrap_or_default();
    let firing = alerts.iter().filter(|a| a["status"] == "firing").count();
    let resolved = alerts.len() - firing;
    let mut lines = vec![format!(
        "*[{}]* {}",
        status.to_uppercase(),
        payload["groupLabels"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    )];
    if firing > 0 && resolved > 0 {
        lines.push(format!("{firing} firing, {resolved} resolved"));
    }
    for a in &alerts {
        let icon = if a["status"] == "firing" { ":red_circle:" } else { ":large_green_circle:" };
        let name = a["labels"]["alertname"].as_str().unwrap_or("alert");
        let summary = a["annotations"]["summary"].as_str().or(a["annotations"]["description"].as_str()).unwrap_or("");
        let severity = a["labels"]["severity"].as_str().unwrap_or("");
        lines.push(format!("{icon} *{name}* ({severity}) {summary}").trim_end().to_string());
    }
    let mut body = json!({ "text": lines.join("\n") });
    if let Some(c) = channel {
        body["channel"] = json!(c);
    }
    body
}

/// The alerts of a payload with the given status.
fn with_status<'a>(payload: &'a Json, status: &str) -> Vec<&'a Json> {
    payload["alerts"].as_array().map(|a| a.iter().filter(|x| x["status"] == status).collect()).unwrap_or_default()
}

fn label_text(labels: &Json) -> String {
    labels
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Alertmanager's subject line: `[FIRING:2] ApiDown (service=api)`.
pub fn title(payload: &Json) -> String {
    let firing = with_status(payload, "firing").len();
    let status = payload["status"].as_str().unwrap_or("firing").to_uppercase();
    let count = if status == "FIRING" { format!(":{firing}") } else { String::new() };
    let name = payload["commonLabels"]["alertname"].as_str().or(payload["groupLabels"]["alertname"].as_str()).unwrap_or("alerts");
    let others: serde_json::Map<String, Json> = payload["groupLabels"]
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| *k != "alertname").map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let rest = if others.is_empty() { String::new() } else { format!(" ({})", label_text(&Json::Object(others))) };
    format!("[{status}{count}] {name}{rest}")
}

/// A plain-text email: subject and body listing every alert with its labels and
/// annotations.
pub fn email(payload: &Json) -> (String, String) {
    let mut body = String::new();
    for (heading, status) in [("Firing", "firing"), ("Resolved", "resolved")] {
        let alerts = with_status(payload, status);
        if alerts.is_empty() {
            continue;
        }
        body.push_str(&format!("{heading} ({}):\n\n", alerts.len()));
        for a in alerts {
            body.push_str(&format!("- {}\n", a["labels"]["alertname"].as_str().unwrap_or("alert")));
            if let Some(ann) = a["annotations"].as_object() {
                for (k, v) in ann {
                    body.push_str(&format!("  {k}: {}\n", v.as_str().unwrap_or("")));
                }
            }
            body.push_str(&format!("  labels: {}\n", label_text(&a["labels"])));
            body.push_str(&format!("  since: {}\n", a["startsAt"].as_str().unwrap_or("")));
            if status == "resolved" {
                body.push_str(&format!("  resolved: {}\n", a["endsAt"].as_str().unwrap_or("")));
            }
            body.push('\n');
        }
    }
    if let Some(url) = payload["externalURL"].as_str().filter(|u| !u.is_empty()) {
        body.push_str(&format!("Steward: {url}\n"));
    }
    body.push_str(&format!("Group: {}\n", payload["groupKey"].as_str().unwrap_or("")));
    (title(payload), body)
}

/// PagerDuty's severity for a group: the most severe of its firing alerts, mapped
/// from steward's vocabulary (P0/P1 critical, P2 error, P3 warning, P4 info).
fn pagerduty_severity(payload: &Json) -> &'static str {
    let rank = |s: &str| match s {
        "critical" | "P0" | "P1" => 4,
        "error" | "P2" => 3,
        "warning" | "P3" => 2,
        "info" | "P4" => 1,
        _ => 3,
    };
    let worst = with_status(payload, "firing").iter().map(|a| rank(a["labels"]["severity"].as_str().unwrap_or(""))).max().unwrap_or(3);
    ["info", "info", "warning", "error", "critical"][worst]
}

/// A PagerDuty Events API v2 event. `dedup_key` identifies the group, so its trigger
/// and its resolve name the same PagerDuty incident.
pub fn pagerduty_event(payload: &Json, routing_key: &str, dedup_key: &str) -> Json {
    if payload["status"] == "resolved" {
        return json!({ "routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key });
    }
    let firing = with_status(payload, "firing");
    let summary = match firing.as_slice() {
        [one] => match one["annotations"]["summary"].as_str() {
            Some(s) => format!("{}: {s}", title(payload)),
            None => title(payload),
        },
        _ => title(payload),
    };
    let details: Vec<Json> =
        firing.iter().map(|a| json!({ "labels": a["labels"], "annotations": a["annotations"], "startsAt": a["startsAt"] })).collect();
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "Steward",
        "payload": {
            "summary": summary.chars().take(1024).collect::<String>(),
            "source": payload["commonLabels"]["service"].as_str().or(payload["commonLabels"]["instance"].as_str()).unwrap_or("steward"),
            "severity": pagerduty_severity(payload),
            "timestamp": crate::clock::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "group": payload["groupKey"],
            "custom_details": { "firing": details, "group_labels": payload["groupLabels"] },
        },
    });
    if let Some(url) = payload["externalURL"].as_str().filter(|u| !u.is_empty()) {
        event["client_url"] = json!(url);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_message_names_each_alert() {
        let payload = json!({
            "status": "firing",
            "groupLabels": {"alertname": "ApiDown"},
            "alerts": [
                {"status": "firing", "labels": {"alertname": "ApiDown", "severity": "critical"}, "annotations": {"summary": "api is down"}},
                {"status": "resolved", "labels": {"alertname": "ApiDown", "severity": "critical"}, "annotations": {}}
            ]
        });
        let body = slack_body(&payload, Some("#ops"));
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with("*[FIRING]* alertname=ApiDown"), "{text}");
        assert!(text.contains("1 firing, 1 resolved"));
        assert!(text.contains(":red_circle: *ApiDown* (critical) api is down"));
        assert_eq!(body["channel"], "#ops");
    }

    fn payload(status: &str) -> Json {
        json!({
            "status": status,
            "groupKey": "{0}:{alertname=\"ApiDown\"}",
            "groupLabels": {"alertname": "ApiDown", "service": "api"},
            "commonLabels": {"alertname": "ApiDown", "service": "api"},
            "externalURL": "",
            "alerts": [
                {"status": "firing", "labels": {"alertname": "ApiDown", "service": "api", "severity": "P2"},
                 "annotations": {"summary": "api is down"}, "startsAt": "2026-11-22T10:00:00.000Z"},
                {"status": "firing", "labels": {"alertname": "ApiDown", "service": "api", "severity": "P1"},
                 "annotations": {}, "startsAt": "2026-11-22T10:00:00.000Z"}
            ]
        })
    }

    #[test]
    fn titles_and_emails_follow_alertmanager() {
        assert_eq!(title(&payload("firing")), "[FIRING:2] ApiDown (service=api)");
        let (subject, body) = email(&payload("firing"));
        assert_eq!(subject, "[FIRING:2] ApiDown (service=api)");
        assert!(body.starts_with("Firing (2):\n\n- ApiDown\n  summary: api is down\n"), "{body}");
        assert!(body.contains("labels: alertname=ApiDown service=api severity=P1"));
    }

    #[test]
    fn pagerduty_events_trigger_with_the_worst_severity_and_resolve_by_dedup_key() {
        let e = pagerduty_event(&payload("firing"), "k", "d1");
        assert_eq!(e["event_action"], "trigger");
        assert_eq!(e["payload"]["severity"], "critical", "P1 is the worst of P1 and P2");
        assert_eq!(e["payload"]["source"], "api");
        assert_eq!(e["payload"]["summary"], "[FIRING:2] ApiDown (service=api)");
        assert_eq!(e["payload"]["custom_details"]["firing"].as_array().unwrap().len(), 2);
        let r = pagerduty_event(&payload("resolved"), "k", "d1");
        assert_eq!(r, json!({"routing_key": "k", "event_action": "resolve", "dedup_key": "d1"}));
    }
}
