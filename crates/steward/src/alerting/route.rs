//! Alertmanager's routing: an alert descends the tree depth-first; the deepest matching
//! routes take it; `continue: true` lets later siblings match too; a node none of whose
//! children match takes the alert itself.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::matcher::{Labels, matches_all};
use super::time_interval::TimeInterval;
use crate::config::{GroupBy, Route};

/// The routes that take an alert with `labels`, in tree order.
pub fn matching<'r>(root: &'r Route, labels: &Labels) -> Vec<&'r Route> {
    let mut out = Vec::new();
    descend(root, labels, &mut out);
    out
}

fn descend<'r>(route: &'r Route, labels: &Labels, out: &mut Vec<&'r Route>) -> bool {
    if !matches_all(&route.matchers, labels) {
        return false;
    }
    let mut child_matched = false;
    for child in &route.routes {
        if descend(child, labels, out) {
            child_matched = true;
            if !child.continue_ {
                break;
            }
        }
    }
    if !child_matched {
        out.push(route);
    }
    true
}

/// Why `route` sends nothing at `now`: a mute time interval in force, or being
/// outside all of its active time intervals. `None` when it may send.
pub fn time_muted(route: &Route, intervals: &[TimeInterval], now: DateTime<Utc>) -> Option<String> {
    let active = |name: &String| intervals.iter().find(|i| &i.name == name).is_some_and(|i| i.contains(now));
    if let Some(name) = route.mute_time_intervals.iter().find(|n| active(n)) {
        return Some(format!("in mute time interval `{name}`"));
    }
    if !route.active_time_intervals.is_empty() && !route.active_time_intervals.iter().any(active) {
        return Some(format!("outside its active time intervals ({})", route.active_time_intervals.join(", ")));
    }
    None
}

/// The labels an alert is grouped by on `route`.
pub fn group_labels(route: &Route, labels: &Labels) -> Labels {
    match &route.group_by {
        GroupBy::All => labels.clone(),
        GroupBy::Labels(names) => names.iter().filter_map(|n| labels.get(n).map(|v| (n.clone(), v.clone()))).collect(),
    }
}

/// Alertmanager's group key shape: `{route-id}:{label="value",...}`; one notification
/// stream per (receiver, group key).
pub fn group_key(route: &Route, group: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = group.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{{{}}}:{{{}}}", route.id, pairs.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn config(text: &str) -> config::Config {
        config::load_str("t.yaml", text).unwrap_or_else(|d| panic!("{d}"))
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const TREE: &str = r#"
receivers:
  - {name: default, webhook: {url: "http://127.0.0.1:9/d"}}
  - {name: pager, webhook: {url: "http://127.0.0.1:9/p"}}
  - {name: chat-team, webhook: {url: "http://127.0.0.1:9/c"}}
  - {name: audit, webhook: {url: "http://127.0.0.1:9/a"}}
route:
  receiver: default
  group_by: [alertname]
  group_wait: 10s
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      group_wait: 0s
      continue: true
    - matchers: ['team=~"chat|messaging"']
      receiver: chat-team
      group_by: [alertname, service]
      routes:
        - matchers: ['severity="info"']
          receiver: audit
"#;

    #[test]
    fn descends_like_alertmanager() {
        let c = config(TREE);
        let root = c.route.as_ref().unwrap();
        let names = |l: &[(&str, &str)]| matching(root, &labels(l)).iter().map(|r| r.receiver.clone()).collect::<Vec<_>>();
        // Critical + chat: pager (continue) and chat-team.
        assert_eq!(names(&[("severity", "critical"), ("team", "chat")]), ["pager", "chat-team"]);
        // Critical alone: pager, and since pager continues but nothing else matches, not default.
        assert_eq!(names(&[("severity", "critical")]), ["pager"]);
        // Nothing matches: the root takes it.
        assert_eq!(names(&[("severity", "warning")]), ["default"]);
        // Grandchild.
        assert_eq!(names(&[("severity", "info"), ("team", "messaging")]), ["audit"]);
    }

    #[test]
    fn children_inherit_and_override() {
        let c = config(TREE);
        let root = c.route.as_ref().unwrap();
        let pager = &root.routes[0];
        assert_eq!(pager.group_wait, std::time::Duration::ZERO);
        assert_eq!(pager.group_by, GroupBy::Labels(vec!["alertname".into()]));
        let audit = &root.routes[1].routes[0];
        assert_eq!(audit.group_wait, std::time::Duration::from_secs(10));
        assert_eq!(audit.group_by, GroupBy::Labels(vec!["alertname".into(), "service".into()]));
        assert_eq!(audit.id, "0.1.0");
        let l = labels(&[("alertname", "Down"), ("service", "api"), ("x", "y")]);
        assert_eq!(group_key(audit, &group_labels(audit, &l)), r#"{0.1.0}:{alertname="Down",service="api"}"#);
    }
}
