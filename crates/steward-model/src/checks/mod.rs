//! A check's result as data: one run's outcome, the thresholded state, and the
//! `<path> <op> <value>` condition language.

pub mod condition;
pub mod state;

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

/// The result of running a check once.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Outcome {
    pub healthy: bool,
    /// Wall time of the probe, including connection set-up.
    #[serde(serialize_with = "ser_ms", rename = "latency_ms")]
    pub latency: Duration,
    /// Why the run failed; `None` when healthy. Secrets are already redacted.
    pub reason: Option<String>,
    pub at: DateTime<Utc>,
    /// The observation's fields the check records for forecasts, by path; fields
    /// missing or not numbers on this run are left out.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, f64>,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}
