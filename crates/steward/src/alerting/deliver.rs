//! The outbox → receivers. One worker per receiver, so a slow, failing or hanging
//! receiver only ever delays its own notifications. Each attempt is bounded by the
//! receiver's timeout; failures retry with exponential backoff and full jitter until
//! delivered, or until the notification is older than [`MAX_AGE`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

use super::Alerting;
use super::Notification;
use super::render;
use crate::config::{EmailReceiver, Receiver, ReceiverKind, SmtpTls};
use crate::telemetry::DeliveryLabels;

/// After this long undelivered, a notification is marked expired (visible in the API
/// and metrics) instead of retried forever.
pub const MAX_AGE: Duration = Duration::from_secs(24 * 3600);
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// Notifications one worker claims and sends per pass.
const BATCH: u32 = 16;
/// Added to a claim beyond the batch's attempts' timeouts.
const CLAIM_MARGIN: Duration = Duration::from_secs(30);

/// Keeps one worker per configured receiver; call [`Workers::sync`] after each reload.
pub struct Workers {
    running: HashMap<String, CancellationToken>,
    client: reqwest::Client,
}

impl Workers {
    pub fn new() -> Workers {
        let client = crate::checks::http::build_client(&Default::default(), false).expect("a default HTTP client builds");
        Workers { running: HashMap::new(), client }
    }

    pub fn sync(&mut self, alerting: &Arc<Alerting>, stop: &CancellationToken) {
        let config = alerting.config.get();
        self.running.retain(|name, cancel| {
            let keep = config.receiver(name).is_some();
            if !keep {
                cancel.cancel();
            }
            keep
        });
        for r in &config.receivers {
            if !self.running.contains_key(&r.name) {
                let cancel = stop.child_token();
                let (alerting, client, name, stop) = (alerting.clone(), self.client.clone(), r.name.clone(), cancel.clone());
                crate::telemetry::supervise("delivery", alerting.metrics.clone(), move || {
                    worker(alerting.clone(), client.clone(), name.clone(), stop.clone())
                });
                self.running.insert(r.name.clone(), cancel);
            }
        }
    }
}

/// Workers stop with the set that started them (also when its owner unwinds).
impl Drop for Workers {
    fn drop(&mut self) {
        for cancel in self.running.values() {
            cancel.cancel();
        }
    }
}

impl Default for Workers {
    fn default() -> Self {
        Workers::new()
    }
}

/// Claims held by a steward that ran on this host and is gone (a crash, a kill -9) are
/// released at start, so its notifications go out now rather than when the claims end.
/// Claims of other hosts' processes end on their own.
pub async fn release_claims_of_gone_processes(alerting: &Alerting) {
    let owners = match alerting.store.claim_owners().await {
        Ok(o) => o,
        Err(e) => return tracing::warn!(error = %e, "cannot read outbox claims; claims of a stopped steward end on their own"),
    };
    for owner in owners.iter().filter(|o| crate::telemetry::owner_gone(o)) {
        match alerting.store.release_claims(owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(owner = %owner, notifications = n, "released the outbox claims of a stopped steward"),
            Err(e) => tracing::warn!(owner = %owner, error = %e, "cannot release outbox claims; they end on their own"),
        }
    }
}

async fn worker(alerting: Arc<Alerting>, client: reqwest::Client, receiver: String, stop: CancellationToken) {
    let owner = crate::telemetry::process_owner();
    loop {
        // Registered before reading the outbox, so an enqueue that lands while this
        // pass runs still wakes the sleep below (notify_waiters keeps no permit).
        let woken = alerting.wake_delivery.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let now = crate::clock::now();
        let Some(timeout) = alerting.config.get().receiver(&receiver).map(|r| r.timeout) else { return };
        // Long enough for every attempt of the batch to run to its timeout; a worker that
        // dies lets its claim end and the rows go to the next worker that asks.
        let claim = timeout.saturating_mul(BATCH).saturating_add(CLAIM_MARGIN);
        let until = now + chrono::Duration::from_std(claim).unwrap_or(chrono::Duration::hours(1));
        let due = match alerting.store.claim_due(&receiver, &owner, now, until, BATCH).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(receiver = %receiver, error = %e, "cannot read the outbox; retrying");
                Vec::new()
            }
        };
        for n in &due {
            // Re-read the receiver each time: a reload may have changed its URL.
            let Some(r) = alerting.config.get().receiver(&receiver).cloned() else { return };
            let attempt = n.attempts + 1;
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = send(&client, &r, n) => r,
            };
            let labels = |result: &str| DeliveryLabels { receiver: receiver.clone(), result: result.into() };
            let recorded = match result {
                Ok(()) => {
                    alerting.metrics.notifications.get_or_create(&labels("delivered")).inc();
                    tracing::info!(receiver = %receiver, id = n.id, attempt, status = %n.status, "notification delivered");
                    alerting.store.mark_delivered(n.id, crate::clock::now(), attempt).await.map(|()| true)
                }
                Err(failure) => {
                    let error = alerting.config.get().redactor.redact(&failure.message).into_owned();
                    let age = (crate::clock::now() - n.created_at).to_std().unwrap_or_default();
                    if !failure.retryable || age >= MAX_AGE {
                        alerting.metrics.notifications.get_or_create(&labels("expired")).inc();
                        tracing::error!(receiver = %receiver, id = n.id, attempt, error = %error, "notification given up");
                        alerting.store.mark_expired(n.id, &owner, attempt, &error).await
                    } else {
                        alerting.metrics.notifications.get_or_create(&labels("retried")).inc();
                        let delay = backoff(attempt);
                        tracing::warn!(receiver = %receiver, id = n.id, attempt, retry_in = ?delay, error = %error, "notification failed; will retry");
                        let next = crate::clock::now() + chrono::Duration::from_std(delay).unwrap_or_default();
                        alerting.store.mark_retry(n.id, &owner, attempt, next, &error).await
                    }
                }
            };
            match recorded {
                Ok(true) => {}
                // The claim ended while the attempt ran (a receiver slower than its
                // timeout, a stalled process) and another worker owns the row now.
                Ok(false) => {
                    tracing::warn!(receiver = %receiver, id = n.id, "the claim on a notification ended during its attempt; its new owner decides")
                }
                // The attempt's outcome is lost; the row stays pending and is sent again
                // when the claim ends: at least once, and the dedup key lets the receiver
                // drop the repeat.
                Err(e) => tracing::error!(receiver = %receiver, id = n.id, error = %e, "could not record a delivery attempt"),
            }
        }
        if due.len() == BATCH as usize {
            continue;
        }
        let next = alerting.store.next_due(&receiver).await.ok().flatten();
        let sleep =
            next.map_or(Duration::from_secs(60), |t| (t - crate::clock::now()).to_std().unwrap_or_default()).min(Duration::from_secs(60));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = &mut woken => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// A key naming the group rather than one notification: PagerDuty uses it to update
/// and resolve the incident its first trigger opened.
fn group_dedup_key(n: &Notification) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(n.receiver.as_bytes());
    h.update([0]);
    h.update(n.group_key.as_bytes());
    hex::encode(&h.finalize()[..16])
}

async fn send_email(e: &EmailReceiver, timeout: Duration, n: &Notification) -> Result<(), Failure> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let invalid = |m: String| Failure { message: m, retryable: false };
    let (subject, body) = render::email(&n.payload_value());
    let from: Mailbox = e.from.parse().map_err(|err| invalid(format!("from address: {err}")))?;
    // The notification's dedup key as Message-ID: a redelivery is recognisably the same mail.
    let mut message = Message::builder().from(from).subject(subject).message_id(Some(format!("<{}@steward>", n.dedup_key)));
    for to in &e.to {
        message = message.to(to.parse::<Mailbox>().map_err(|err| invalid(format!("to address: {err}")))?);
    }
    let message = message.header(ContentType::TEXT_PLAIN).body(body).map_err(|err| invalid(format!("cannot build the email: {err}")))?;
    let (host, port) = &e.smarthost;
    let builder = match e.tls {
        SmtpTls::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
        SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)),
    }
    .map_err(|err| invalid(format!("SMTP TLS setup for {host}: {err}")))?;
    let mut builder = builder.port(*port).timeout(Some(timeout));
    if let Some((user, password)) = &e.auth {
        builder = builder.credentials(Credentials::new(user.clone(), password.expose().to_string()));
    }
    builder.build().send(message).await.map(|_| ()).map_err(|err| Failure {
        message: format!("SMTP {host}:{port}: {err}"),
        // 5xx replies (unknown mailbox, refused sender) will not change by retrying.
        retryable: !err.is_permanent(),
    })
}

/// Exponential from 1 s, capped at 5 min, with full jitter over its upper half.
pub fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(BACKOFF_CAP);
    exp.mul_f64(rand::rng().random_range(0.5..=1.0))
}

struct Failure {
    message: String,
    retryable: bool,
}

async fn send(client: &reqwest::Client, r: &Receiver, n: &Notification) -> Result<(), Failure> {
    // JSON text: a webhook gets the stored payload as it is, not parsed and written again.
    let (url, body, headers) = match &r.kind {
        ReceiverKind::Webhook { url, headers } => (url, n.payload.clone(), headers.as_slice()),
        ReceiverKind::Slack { url, channel } => (url, render::slack_body(&n.payload_value(), channel.as_deref()).to_string(), &[][..]),
        ReceiverKind::PagerDuty { routing_key, url } => {
            (url, render::pagerduty_event(&n.payload_value(), routing_key.expose(), &group_dedup_key(n)).to_string(), &[][..])
        }
        ReceiverKind::Email(e) => {
            return match tokio::time::timeout(r.timeout, send_email(e, r.timeout, n)).await {
                Ok(result) => result,
                Err(_) => Err(Failure { message: format!("the SMTP exchange took longer than {:?}", r.timeout), retryable: true }),
            };
        }
    };
    let mut req = client
        .post(url.expose())
        .timeout(r.timeout)
        .header("Idempotency-Key", &n.dedup_key)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v.expose());
    }
    let resp = req.send().await.map_err(|e| Failure {
        message: if e.is_timeout() { format!("no answer within {:?}", r.timeout) } else { format!("request failed: {e}") },
        retryable: true,
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let text = resp.text().await.unwrap_or_default();
    let snippet: String = text.chars().take(200).collect();
    // 4xx other than 408/429 means the receiver rejects this payload: retrying cannot help.
    let retryable = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
    Err(Failure { message: format!("receiver answered {status}: {snippet}"), retryable })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        for attempt in 1..30 {
            let d = backoff(attempt);
            let ceiling = BACKOFF_BASE.saturating_mul(1u32 << (attempt - 1).min(16)).min(BACKOFF_CAP);
            assert!(d <= ceiling && d >= ceiling / 2, "attempt {attempt}: {d:?} vs {ceiling:?}");
        }
        assert!(backoff(30) <= BACKOFF_CAP);
    }
}
