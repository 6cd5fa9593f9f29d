//! How well the team responds: time to acknowledge, mitigate and resolve, averaged by
//! service, priority or period.

use std::collections::BTreeMap;

use chrono::{Datelike, Duration};
use serde::Serialize;

use super::Incident;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Service,
    Priority,
    /// Calendar month (UTC) of opening.
    Month,
    /// ISO week (UTC) of opening.
    Week,
    /// One row for everything.
    All,
}

impl By {
    pub fn parse(s: &str) -> Option<By> {
        match s {
            "service" => Some(By::Service),
            "priority" | "severity" => Some(By::Priority),
            "month" => Some(By::Month),
            "week" => Some(By::Week),
            "all" | "" => Some(By::All),
            _ => None,
        }
    }
}

/// One group's figures. Means count only incidents that reached the state: an
/// incident resolved before anyone acknowledged it has no time to acknowledge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub group: String,
    pub incidents: usize,
    pub open: usize,
    pub acknowledged: usize,
    pub resolved: usize,
    /// Mean time to acknowledge, seconds.
    pub mtta_seconds: Option<f64>,
    pub mttm_seconds: Option<f64>,
    /// Mean time to resolve, seconds.
    pub mttr_seconds: Option<f64>,
    /// The slowest acknowledgement, seconds.
    pub max_tta_seconds: Option<f64>,
}

pub fn compute(incidents: &[Incident], by: By) -> Vec<Row> {
    let mut groups: BTreeMap<String, Vec<&Incident>> = BTreeMap::new();
    for i in incidents {
        let keys: Vec<String> = match by {
            By::Service if i.services.is_empty() => vec!["(no service)".into()],
            By::Service => i.services.clone(),
            By::Priority => vec![i.priority.as_str().into()],
            By::Month => vec![format!("{:04}-{:02}", i.opened_at.year(), i.opened_at.month())],
            By::Week => {
                let w = i.opened_at.iso_week();
                vec![format!("{:04}-W{:02}", w.year(), w.week())]
            }
            By::All => vec!["all".into()],
        };
        for k in keys {
            groups.entry(k).or_default().push(i);
        }
    }
    groups
        .into_iter()
        .map(|(group, list)| {
            let secs = |f: fn(&Incident) -> Option<Duration>| -> Vec<f64> {
                list.iter().filter_map(|i| f(i)).map(|d| d.num_milliseconds() as f64 / 1000.0).collect()
            };
            let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
            let tta = secs(Incident::time_to_acknowledge);
            Row {
                incidents: list.len(),
                open: list.iter().filter(|i| i.status.is_open()).count(),
                acknowledged: tta.len(),
                resolved: list.iter().filter(|i| i.resolved_at.is_some()).count(),
                mtta_seconds: mean(&tta),
                mttm_seconds: mean(&secs(Incident::time_to_mitigate)),
                mttr_seconds: mean(&secs(Incident::time_to_resolve)),
                max_tta_seconds: tta.iter().copied().reduce(f64::max),
                group,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::{Priority, Status};
    use chrono::{DateTime, Utc};

    fn incident(service: &str, priority: Priority, opened: &str, ack_min: Option<i64>, resolve_min: Option<i64>) -> Incident {
        let opened_at: DateTime<Utc> = opened.parse().unwrap();
        Incident {
            id: 1,
            status: if resolve_min.is_some() { Status::Resolved } else { Status::Triggered },
            services: vec![service.into()],
            acknowledged_at: ack_min.map(|m| opened_at + Duration::minutes(m)),
            resolved_at: resolve_min.map(|m| opened_at + Duration::minutes(m)),
            ..Incident::new("t", priority, "steward", opened_at)
        }
    }

    #[test]
    fn means_count_only_incidents_that_reached_the_state() {
        let list = vec![
            incident("api", Priority::P1, "2026-11-02T10:00:00Z", Some(2), Some(30)),
            incident("api", Priority::P2, "2026-11-03T10:00:00Z", Some(6), Some(90)),
            incident("api", Priority::P2, "2026-11-04T10:00:00Z", None, Some(5)),
            incident("db", Priority::P1, "2026-12-01T10:00:00Z", Some(1), None),
        ];
        let by_service = compute(&list, By::Service);
        assert_eq!(by_service.len(), 2);
        let api = &by_service[0];
        assert_eq!((api.group.as_str(), api.incidents, api.acknowledged, api.resolved, api.open), ("api", 3, 2, 3, 0));
        assert_eq!(api.mtta_seconds, Some(240.0));
        assert_eq!(api.mttr_seconds, Some((30.0 + 90.0 + 5.0) * 60.0 / 3.0));
        assert_eq!(api.max_tta_seconds, Some(360.0));
        let db = &by_service[1];
        assert_eq!((db.open, db.mttr_seconds), (1, None));
        let by_month = compute(&list, By::Month);
        assert_eq!(by_month.iter().map(|r| (r.group.as_str(), r.incidents)).collect::<Vec<_>>(), [("2026-11", 3), ("2026-12", 1)]);
        let by_priority = compute(&list, By::Priority);
        assert_eq!(by_priority[0].group, "P1");
        assert_eq!(by_priority[0].mtta_seconds, Some(90.0));
    }
}
