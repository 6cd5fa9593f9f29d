//! `receivers`: where notifications go. One kind per receiver: `webhook`
//! (Alertmanager's JSON), `slack`, `email` (SMTP) or `pagerduty` (Events API v2).

use std::time::Duration;

use super::alerting::AlertingRefs;
use super::decode::{self as de, Fields};
use super::diagnostics::{Diagnostic, Diagnostics, Pos};
use super::secret::SecretString;
use super::sections::{env_map, secret_text, url};
use super::yaml::Node;

pub(super) const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";
const RECEIVER_KINDS: &[&str] = &["webhook", "slack", "email", "pagerduty"];

#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub kind: ReceiverKind,
    /// Whether resolved notifications are sent (Alertmanager's `send_resolved`).
    pub send_resolved: bool,
    /// One delivery attempt may take this long; a hanging receiver is cut off here.
    pub timeout: Duration,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub enum ReceiverKind {
    /// Alertmanager's webhook payload (version 4), so existing receivers work unchanged.
    Webhook {
        url: SecretString,
        headers: Vec<(String, SecretString)>,
    },
    /// A Slack-compatible incoming webhook (`{"text": …}`).
    Slack {
        url: SecretString,
        channel: Option<String>,
    },
    Email(EmailReceiver),
    /// PagerDuty Events API v2: one PagerDuty incident per alert group.
    PagerDuty {
        routing_key: SecretString,
        url: SecretString,
    },
}

impl ReceiverKind {
    pub fn name(&self) -> &'static str {
        match self {
            ReceiverKind::Webhook { .. } => "webhook",
            ReceiverKind::Slack { .. } => "slack",
            ReceiverKind::Email(_) => "email",
            ReceiverKind::PagerDuty { .. } => "pagerduty",
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmailReceiver {
    pub to: Vec<String>,
    pub from: String,
    /// `host:port` of the SMTP server.
    pub smarthost: (String, u16),
    pub auth: Option<(String, SecretString)>,
    pub tls: SmtpTls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: for a relay on localhost only.
    None,
}

pub(super) fn receiver(node: &Node, d: &mut Diagnostics, secrets: &mut Vec<String>, refs: &mut AlertingRefs) -> Option<Receiver> {
    let mut f = Fields::of(node, "a receiver", d)?;
    let name = f.require("name", d).and_then(|n| {
        let s = de::string(n, "the receiver name", d)?;
        refs.receivers.push((s.clone(), n.pos.clone()));
        Some(s)
    });
    let what = name.as_ref().map_or("the receiver".to_string(), |n| format!("receiver `{n}`"));
    let send_resolved = f.take("send_resolved").map_or(Some(true), |n| de::boolean(n, &format!("{what} send_resolved"), d));
    let timeout = f.take("timeout").map_or(Some(Duration::from_secs(10)), |n| de::duration(n, &format!("{what} timeout"), d));
    let present: Vec<&str> = RECEIVER_KINDS.iter().copied().filter(|k| f.has(k)).collect();
    let kind = match present.as_slice() {
        [kind] => {
            let body = f.take(kind).expect("present");
            Fields::of(body, format!("the `{kind}` settings of {what}"), d).and_then(|mut k| {
                let kind = match *kind {
                    "webhook" => {
                        let url = k.require("url", d).and_then(|n| url(n, &format!("{what} url"), &["http", "https"], d, secrets));
                        let headers = k.take("headers").map_or(Some(vec![]), |n| env_map(n, &format!("{what} headers"), d, secrets));
                        k.finish(&["url", "headers"], d);
                        ReceiverKind::Webhook { url: url?, headers: headers? }
                    }
                    "slack" => {
                        let url = k.require("url", d).and_then(|n| url(n, &format!("{what} url"), &["http", "https"], d, secrets));
                        let channel = k.take("channel").and_then(|n| de::string(n, &format!("{what} channel"), d));
                        k.finish(&["url", "channel"], d);
                        ReceiverKind::Slack { url: url?, channel }
                    }
                    "email" => ReceiverKind::Email(email(&mut k, &what, d, secrets)?),
                    _ => {
                        let routing_key = k.require("routing_key", d).and_then(|n| {
                            let key = secret_text(n, &format!("{what} routing_key"), d, secrets)?;
                            if key.expose().len() != 32 {
                                d.push(
                                    Diagnostic::error(n.pos.clone(), format!("{what} routing_key must be 32 characters")).with_hint(
                                        "use the Integration Key of an Events API v2 integration, e.g. \"${env:PAGERDUTY_KEY}\"",
                                    ),
                                );
                                return None;
                            }
                            Some(key)
                        });
                        let events_url = match k.take("url") {
                            Some(n) => url(n, &format!("{what} url"), &["http", "https"], d, secrets),
                            None => Some(SecretString::plain(PAGERDUTY_EVENTS_URL)),
                        };
                        k.finish(&["routing_key", "url"], d);
                        ReceiverKind::PagerDuty { routing_key: routing_key?, url: events_url? }
                    }
                };
                Some(kind)
            })
        }
        [] => {
            d.push(
                Diagnostic::error(f.pos().clone(), format!("{what} says nowhere to send"))
                    .with_hint(format!("add exactly one of: {}", RECEIVER_KINDS.join(", "))),
            );
            None
        }
        many => {
            for k in many {
                f.take(k);
            }
            d.push(
                Diagnostic::error(f.pos().clone(), format!("{what} has several kinds ({})", many.join(", ")))
                    .with_hint("a receiver sends one way; define one receiver per destination"),
            );
            None
        }
    };
    let mut known = vec!["name", "send_resolved", "timeout"];
    known.extend(RECEIVER_KINDS);
    f.finish(&known, d);
    Some(Receiver { name: name?, kind: kind?, send_resolved: send_resolved?, timeout: timeout?, pos: node.pos.clone() })
}

fn email(k: &mut Fields<'_>, what: &str, d: &mut Diagnostics, secrets: &mut Vec<String>) -> Option<EmailReceiver> {
    let address = |n: &Node, key: &str, d: &mut Diagnostics| -> Option<String> {
        let s = de::string(n, &format!("{what} {key}"), d)?;
        match s.parse::<lettre::Address>() {
            Ok(_) => Some(s),
            Err(e) => {
                d.push(Diagnostic::error(n.pos.clone(), format!("{what} {key}: `{s}` is not an email address ({e})")));
                None
            }
        }
    };
    let to = k.require("to", d).and_then(|n| match &n.value {
        super::yaml::Value::Seq(items) if !items.is_empty() => items.iter().map(|i| address(i, "to", d)).collect::<Option<Vec<_>>>(),
        super::yaml::Value::Seq(_) => {
            d.push(Diagnostic::error(n.pos.clone(), format!("{what} to: the list is empty")));
            None
        }
        _ => address(n, "to", d).map(|a| vec![a]),
    });
    let from = k.require("from", d).and_then(|n| address(n, "from", d));
    let smarthost = k.require("smarthost", d).and_then(|n| {
        let s = de::string(n, &format!("{what} smarthost"), d)?;
        let parsed = s.rsplit_once(':').and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?))).filter(|(h, _)| !h.is_empty());
        if parsed.is_none() {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} smarthost `{s}` is not HOST:PORT"))
                    .with_hint("e.g. smtp.example.com:587 (STARTTLS) or smtp.example.com:465 (tls: tls)"),
            );
        }
        parsed
    });
    let username = k.take("auth_username").and_then(|n| de::string(n, &format!("{what} auth_username"), d));
    let password = k.take("auth_password").and_then(|n| secret_text(n, &format!("{what} auth_password"), d, secrets));
    let auth = match (username, password) {
        (Some(u), Some(p)) => Some(Some((u, p))),
        (None, None) => Some(None),
        _ => {
            d.push(Diagnostic::error(k.pos().clone(), format!("{what}: give both auth_username and auth_password, or neither")));
            None
        }
    };
    let tls = k.take("tls").map_or(Some(SmtpTls::StartTls), |n| match de::string(n, &format!("{what} tls"), d)?.as_str() {
        "starttls" => Some(SmtpTls::StartTls),
        "tls" => Some(SmtpTls::Tls),
        "none" => Some(SmtpTls::None),
        other => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} tls `{other}` is not known"))
                    .with_hint("use starttls (the default), tls, or none for a relay on localhost"),
            );
            None
        }
    });
    k.finish(&["to", "from", "smarthost", "auth_username", "auth_password", "tls"], d);
    Some(EmailReceiver { to: to?, from: from?, smarthost: smarthost?, auth: auth?, tls: tls? })
}
