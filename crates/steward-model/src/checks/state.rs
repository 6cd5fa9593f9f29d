//! From single runs to a verdict: `failure_threshold` consecutive failures make a check
//! unhealthy, `success_threshold` consecutive successes make it healthy again. Pure
//! logic, no IO: the scheduler owns the state and the store persists it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Not enough runs yet to reach either threshold.
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(s: &str) -> Option<Health> {
        match s {
            "unknown" => Some(Health::Unknown),
            "healthy" => Some(Health::Healthy),
            "unhealthy" => Some(Health::Unhealthy),
            _ => None,
        }
    }
}

/// What the store keeps per check so a restart resumes where it left off.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckState {
    pub check: String,
    pub health: Health,
    /// When `health` last changed (or the first run, for `unknown`).
    pub since: DateTime<Utc>,
    pub consecutive_successes: u32,
    pub consecutive_failures: u32,
    pub last_run: Option<DateTime<Utc>>,
    pub last_latency_ms: Option<f64>,
    pub last_reason: Option<String>,
}

impl CheckState {
    pub fn new(check: &str, now: DateTime<Utc>) -> CheckState {
        CheckState {
            check: check.to_string(),
            health: Health::Unknown,
            since: now,
            consecutive_successes: 0,
            consecutive_failures: 0,
            last_run: None,
            last_latency_ms: None,
            last_reason: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    pub check: String,
    pub from: Health,
    pub to: Health,
    pub at: DateTime<Utc>,
    pub reason: Option<String>,
}

/// Folds one run into the state; returns the transition if the verdict changed.
pub fn apply(
    state: &mut CheckState,
    healthy: bool,
    reason: Option<&str>,
    at: DateTime<Utc>,
    failure_threshold: u32,
    success_threshold: u32,
) -> Option<Transition> {
    state.last_run = Some(at);
    state.last_reason = reason.map(str::to_string);
    let target = if healthy {
        state.consecutive_successes = state.consecutive_successes.saturating_add(1);
        state.consecutive_failures = 0;
        (state.consecutive_successes >= success_threshold).then_some(Health::Healthy)
    } else {
        state.consecutive_failures = state.consecutive_failures.saturating_add(1);
        state.consecutive_successes = 0;
        (state.consecutive_failures >= failure_threshold).then_some(Health::Unhealthy)
    };
    match target {
        Some(to) if to != state.health => {
            let t = Transition { check: state.check.clone(), from: state.health, to, at, reason: reason.map(str::to_string) };
            state.health = to;
            state.since = at;
            Some(t)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(results: &[bool], f: u32, s: u32) -> (CheckState, Vec<Health>) {
        let mut st = CheckState::new("c", crate::clock::now());
        let mut seen = vec![];
        for &ok in results {
            if let Some(t) = apply(&mut st, ok, (!ok).then_some("down"), crate::clock::now(), f, s) {
                seen.push(t.to);
            }
        }
        (st, seen)
    }

    #[test]
    fn needs_consecutive_failures_to_turn_unhealthy() {
        let (st, seen) = run(&[true, false, true, false, false], 2, 1);
        assert_eq!(seen, vec![Health::Healthy, Health::Unhealthy]);
        assert_eq!(st.consecutive_failures, 2);
        assert_eq!(st.last_reason.as_deref(), Some("down"));
    }

    #[test]
    fn needs_consecutive_successes_to_recover() {
        let (st, seen) = run(&[false, false, true, false, true, true, true], 2, 3);
        assert_eq!(seen, vec![Health::Unhealthy, Health::Healthy]);
        assert_eq!(st.health, Health::Healthy);
    }

    #[test]
    fn stays_unknown_below_thresholds() {
        let (st, seen) = run(&[false], 2, 2);
        assert!(seen.is_empty());
        assert_eq!(st.health, Health::Unknown);
    }

    /// Exhaustive over every sequence of 10 runs and small thresholds: the verdict is
    /// unhealthy exactly when the last change came from `f` failures in a row.
    #[test]
    fn verdict_matches_the_definition_for_every_short_history() {
        for f in 1..=3 {
            for s in 1..=3 {
                for bits in 0u32..(1 << 10) {
                    let results: Vec<bool> = (0..10).map(|i| bits & (1 << i) != 0).collect();
                    let (st, _) = run(&results, f, s);
                    // Replay: the verdict is set by the latest position where a run of
                    // exactly-threshold length completed.
                    let mut expected = Health::Unknown;
                    let (mut ok_run, mut bad_run) = (0, 0);
                    for &ok in &results {
                        if ok {
                            ok_run += 1;
                            bad_run = 0
                        } else {
                            bad_run += 1;
                            ok_run = 0
                        }
                        if ok && ok_run >= s {
                            expected = Health::Healthy
                        }
                        if !ok && bad_run >= f {
                            expected = Health::Unhealthy
                        }
                    }
                    assert_eq!(st.health, expected, "f={f} s={s} results={results:?}");
                }
            }
        }
    }
}
