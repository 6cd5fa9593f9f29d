//! Which firing alerts open incidents, at which priority, and which share one.

use crate::alerting::matcher::matches_all;
use crate::alerting::{Alert, Labels};
use crate::config::{Config, IncidentPolicy};

use super::Priority;

/// The first policy whose matchers all match.
pub fn policy_for<'c>(config: &'c Config, labels: &Labels) -> Option<&'c IncidentPolicy> {
    config.incidents.policies.iter().find(|p| matches_all(&p.matchers, labels))
}

/// Alerts with the same key share an open incident: the policy and the values of its
/// `group_by` labels (an alert storm on one service has one key).
pub fn group_key(policy: &IncidentPolicy, labels: &Labels) -> String {
    let values: Vec<String> = policy.group_by.iter().map(|l| format!("{l}={}", labels.get(l).map_or("", String::as_str))).collect();
    format!("{}:{}", policy.name, values.join(","))
}

/// The priority an alert deserves: the policy's fixed one, or its severity label
/// mapped and adjusted by the tier of its service.
pub fn priority(config: &Config, policy: &IncidentPolicy, alert: &Alert) -> Priority {
    if let Some(p) = policy.priority {
        return p;
    }
    let tier = alert.labels.get("service").and_then(|s| config.service(s)).map(|s| s.tier);
    config.incidents.priority_for(alert.labels.get("severity").map(String::as_str), tier)
}

/// Why an alert has the priority it has, for the timeline.
pub fn priority_reason(config: &Config, policy: &IncidentPolicy, alert: &Alert) -> String {
    if policy.priority.is_some() {
        return format!("policy {} sets it", policy.name);
    }
    let severity = alert.labels.get("severity").map_or("no severity".to_string(), |s| format!("severity {s}"));
    match alert.labels.get("service").and_then(|s| config.service(s)) {
        Some(s) => format!("alert {} ({severity}) on tier-{} service {}", alert.rule, s.tier, s.name),
        None => format!("alert {} ({severity})", alert.rule),
    }
}

/// A title people understand at 3 a.m.: the alert's summary, else its name and service.
pub fn title(alert: &Alert) -> String {
    if let Some(s) = alert.annotations.get("summary").filter(|s| !s.trim().is_empty()) {
        return s.clone();
    }
    match alert.labels.get("service") {
        Some(service) => format!("{} on {service}", alert.rule),
        None => alert.rule.clone(),
    }
}
