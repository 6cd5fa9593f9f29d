//! Email (SMTP), PagerDuty (Events API v2) and a hanging webhook, side by side: local
//! servers that speak each protocol and validate what they receive, and a receiver that
//! never answers and must not delay the others (gatus#786).

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::alerting::{FakePagerDuty, FakeSmtp, HangingReceiver, file_check, request};
use common::{Server, create_token, wait_for};

#[test]
fn email_and_pagerduty_are_delivered_while_a_hanging_receiver_times_out_alone() {
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("api-up");
    std::fs::write(&up, "").unwrap();
    let smtp = FakeSmtp::start(1);
    let pagerduty = FakePagerDuty::start();
    let hanging = HangingReceiver::start();
    let key = "0123456789abcdef0123456789abcdef";
    std::fs::write(dir.path().join("pd-key"), key).unwrap();
    std::fs::write(dir.path().join("smtp-password"), "s3cret-pw").unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            r#"services:
  - name: api
checks:
{}alerts:
  - name: ApiDown
    when: check api-health unhealthy
    severity: P1
    annotations: {{summary: "the API fails its health check"}}
receivers:
  - name: mail
    email:
      to: [oncall@example.com, lead@example.com]
      from: steward@example.com
      smarthost: 127.0.0.1:{}
      tls: none
      auth_username: steward
      auth_password: "${{file:{}}}"
  - name: pager
    pagerduty: {{routing_key: "${{file:{}}}", url: '{}'}}
  - name: stuck
    timeout: 1s
    webhook: {{url: '{}'}}
route:
  receiver: mail
  group_by: [alertname]
  group_wait: 0s
  group_interval: 300ms
  routes:
    - {{matchers: ['severity=~"P1|critical"'], receiver: stuck, continue: true}}
    - {{matchers: ['severity=~"P1|critical"'], receiver: pager, continue: true}}
    - {{matchers: ['alertname="ApiDown"'], receiver: mail}}
"#,
            file_check("api-health", Some("api"), &up),
            smtp.port,
            dir.path().join("smtp-password").display(),
            dir.path().join("pd-key").display(),
            pagerduty.url,
            hanging.url,
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "v", "viewer");
    let server = Server::start(&config, &data);
    std::thread::sleep(Duration::from_millis(600));

    std::fs::remove_file(&up).unwrap();
    let failed_at = Instant::now();
    let trigger = wait_for("the PagerDuty trigger", Duration::from_secs(5), || pagerduty.events().first().cloned());
    let pd_latency = failed_at.elapsed();
    // The first MAIL is deferred with 451: delivered on the retry about a second later.
    let mail = wait_for("the email", Duration::from_secs(8), || smtp.mails().first().cloned());
    let mail_latency = failed_at.elapsed();
    assert!(hanging.connections.load(Ordering::SeqCst) >= 1, "the hanging receiver was tried");
    assert!(pd_latency < Duration::from_secs(3), "PagerDuty waited for the hanging receiver: {pd_latency:?}");
    assert!(mail_latency < Duration::from_secs(6), "email waited for the hanging receiver: {mail_latency:?}");

    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(trigger["routing_key"], key);
    assert_eq!(trigger["payload"]["severity"], "critical", "P1 pages as critical");
    assert_eq!(trigger["payload"]["source"], "api");
    assert_eq!(trigger["payload"]["summary"], "[FIRING:1] ApiDown: the API fails its health check");
    assert!(pagerduty.rejected.lock().unwrap().is_empty(), "{:?}", pagerduty.rejected.lock().unwrap());

    assert!(smtp.protocol_errors.lock().unwrap().is_empty(), "{:?}", smtp.protocol_errors.lock().unwrap());
    assert_eq!(mail.from, "<steward@example.com>");
    assert_eq!(mail.to, ["<oncall@example.com>", "<lead@example.com>"]);
    // AUTH PLAIN carries "\0user\0password", base64-encoded.
    assert_eq!(mail.auth.as_deref(), Some("AHN0ZXdhcmQAczNjcmV0LXB3"));
    assert!(mail.data.contains("Subject: [FIRING:1] ApiDown\n"), "{}", mail.data);
    assert!(mail.data.contains("@steward>"), "Message-ID from the dedup key: {}", mail.data);
    assert!(mail.data.contains("summary: the API fails its health check"), "{}", mail.data);

    // Recovery: PagerDuty resolves the same incident, email says resolved.
    std::fs::write(&up, "").unwrap();
    let resolve = wait_for("the PagerDuty resolve", Duration::from_secs(8), || pagerduty.events().get(1).cloned());
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], trigger["dedup_key"], "one PagerDuty incident per alert group");
    let resolved = wait_for("the resolved email", Duration::from_secs(8), || smtp.mails().get(1).cloned());
    assert!(resolved.data.contains("Subject: [RESOLVED] ApiDown\n"), "{}", resolved.data);

    // The hanging receiver's notifications say why they are late.
    // (Its first attempt times out 1 s after it starts, possibly after recovery.)
    let n = wait_for("the hanging receiver's first timeout to be recorded", Duration::from_secs(5), || {
        let (_, n) = request("GET", &format!("{}/api/v1/notifications", server.base), &token, None);
        let timed_out = n["notifications"].as_array()?.iter().any(|x| x["receiver"] == "stuck" && x["last_error"].is_string());
        timed_out.then_some(n)
    });
    let stuck: Vec<_> = n["notifications"].as_array().unwrap().iter().filter(|n| n["receiver"] == "stuck").collect();
    assert!(!stuck.is_empty());
    assert!(stuck.iter().all(|n| n["state"] == "pending"), "{stuck:?}");
    assert!(stuck.iter().any(|n| n["last_error"].as_str().is_some_and(|e| e.contains("no answer within 1s"))), "{stuck:?}");
    let mail_rows: Vec<_> = n["notifications"].as_array().unwrap().iter().filter(|n| n["receiver"] == "mail").collect();
    assert!(mail_rows.iter().all(|n| n["state"] == "delivered"), "{mail_rows:?}");
    assert!(mail_rows.iter().any(|n| n["attempts"] == 2), "the 451 was retried: {mail_rows:?}");
    // The SMTP password never appears in what the API shows.
    assert!(!n.to_string().contains("s3cret-pw"));
}
