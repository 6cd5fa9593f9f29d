//! Carrying an incident from the first alert to the written review.
//!
//! # Data flow
//! firing alerts (from [`crate::alerting::Live`]) → [`policy`] (which alerts open
//! incidents, at which priority, grouped how) → [`manager`] (opens incidents, attaches
//! later alerts, resolves when they all resolve, runs escalation levels) → the outbox
//! (escalation notifications go through the same receivers and delivery workers as
//! alerts). People act through the API: acknowledge, note, mitigate, resolve, close,
//! assign roles, change priority, add action items. [`stats`] measures it,
//! [`postmortem`] writes it up.
//!
//! **Invariants.**
//! - Every change to an incident — its row, its timeline entries, the alerts it holds,
//!   the notifications an escalation level sends, the escalation's next step — is one
//!   store transaction ([`crate::store::IncidentWrite`]). A crash therefore never
//!   leaves a level sent but not recorded (it would repeat) or recorded but not sent
//!   (it would be skipped).
//! - The timeline is append-only: entries are inserted, never updated or deleted.
//! - Changes are serialized by [`Incidents::lock`] and checked against the row's
//!   `version`, so an acknowledgement racing an escalation cannot be lost.

pub mod ack_link;
pub mod manager;
pub mod policy;
pub mod stats;

use std::sync::Arc;

use tokio::sync::Notify;

/// Incidents, timelines, on-call and postmortems as data: the model layer's.
pub use steward_model::incidents::*;

/// The incidents subsystem's context, shared by the manager task and the API. Other
/// subsystems reach incidents only through its methods (for example
/// [`Incidents::append_to_timeline`]), never through its lock.
pub struct Incidents {
    pub(super) store: Arc<dyn crate::store::IncidentStore>,
    /// Acknowledge links are signed with a server key.
    pub(super) keys: Arc<dyn crate::store::KeyStore>,
    pub(super) metrics: Arc<crate::telemetry::Metrics>,
    pub(super) config: crate::config::ConfigView,
    /// Alerts open incidents; mutes decide which do.
    pub(super) alerting: Arc<crate::alerting::Alerting>,
    pub(super) checks: Arc<crate::checks::Checks>,
    /// Every incident change happens under this lock (see the module invariants).
    pub(super) lock: tokio::sync::Mutex<()>,
    /// An alert changed state or a person acted: run a pass now (alerting holds the
    /// other end).
    pub(super) wake: Arc<Notify>,
}

impl Incidents {
    /// `alert_changed` is the signal alerting gives whenever an alert changes state.
    pub fn new(
        store: Arc<dyn crate::store::IncidentStore>,
        keys: Arc<dyn crate::store::KeyStore>,
        metrics: Arc<crate::telemetry::Metrics>,
        config: crate::config::ConfigView,
        alerting: Arc<crate::alerting::Alerting>,
        checks: Arc<crate::checks::Checks>,
        alert_changed: Arc<Notify>,
    ) -> Arc<Incidents> {
        Arc::new(Incidents { store, keys, metrics, config, alerting, checks, lock: tokio::sync::Mutex::new(()), wake: alert_changed })
    }

    /// Appends `entry` to incident `id`'s timeline under the incidents lock (another
    /// subsystem's news, such as a runbook run ending). Returns false, writing
    /// nothing, when there is no incident `id`.
    pub async fn append_to_timeline(&self, id: i64, entry: TimelineEntry) -> Result<bool, crate::store::StoreError> {
        let _guard = self.lock.lock().await;
        let Some(incident) = self.store.incident(id).await? else { return Ok(false) };
        let mut w = crate::store::IncidentWrite::of(incident);
        w.timeline.push(entry);
        self.store.write_incident(&w).await?;
        Ok(true)
    }

    /// The newest incident that holds or held alert `fingerprint`, if any.
    pub async fn holding(&self, fingerprint: &str) -> Result<Option<i64>, crate::store::StoreError> {
        let list = self.store.attachments(&[fingerprint.to_string()]).await?;
        Ok(list.into_iter().map(|a| a.incident_id).max())
    }
}
