//! `steward demo`, the first thing a new user runs: the fleet, the printed instructions,
//! and alerting with dependencies — breaking `auth` fails every service's check but
//! notifies once, for the cause.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::alerting::{alert_named, alerts, request};
use common::{free_port, wait_for};
use serde_json::Value;

struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn after<'a>(text: &'a str, marker: &str) -> &'a str {
    let start = text.find(marker).unwrap_or_else(|| panic!("{marker:?} not in {text}")) + marker.len();
    text[start..].split_whitespace().next().unwrap()
}

/// Starts `steward demo` with its data in `dir`; the process, its banner and its
/// server's base URL.
fn start_demo(dir: &std::path::Path) -> (Demo, String, String) {
    let port = free_port();
    let mut child = common::steward()
        .args(["demo", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.join("demo"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let demo = Demo(child);
    let mut banner = String::new();
    let mut lines = BufReader::new(stdout).lines();
    while let Some(Ok(line)) = lines.next() {
        banner.push_str(&line);
        banner.push('\n');
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    (demo, banner, format!("http://127.0.0.1:{port}"))
}

#[test]
fn the_demo_breaks_auth_and_notifies_once_for_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, banner, base) = start_demo(dir.path());
    let token = after(&banner, "Admin token").to_string();
    let control = after(&banner, "curl http://").trim_end_matches("/demo/notifications").to_string();
    assert!(banner.contains(&format!("steward alerts --server {base} --token {token}")), "{banner}");
    assert!(banner.contains(&format!("steward incident list --server {base} --token {token}")), "{banner}");

    // Everything healthy first: no alerts, nothing sent.
    wait_for("the demo checks to be healthy", Duration::from_secs(15), || {
        let (_, checks) = request("GET", &format!("{base}/api/v1/checks"), &token, None);
        checks["checks"].as_array()?.iter().all(|c| c["health"] == "healthy").then_some(())
    });
    let notifications = || request("GET", &format!("http://{control}/demo/notifications"), "", None).1["notifications"].clone();
    assert_eq!(notifications(), Value::Array(vec![]));

    let (status, _) = request("POST", &format!("http://{control}/demo/auth/fail"), "", None);
    assert_eq!(status, 200);
    let all = wait_for("every demo alert firing", Duration::from_secs(20), || {
        let all = alerts(&base, &token);
        (all.iter().filter(|a| a["state"] == "firing").count() == 4).then_some(all)
    });
    std::thread::sleep(Duration::from_secs(2));
    let sent = notifications();
    let names: Vec<&str> =
        sent.as_array().unwrap().iter().map(|n| n["alert"].as_str().unwrap()).filter(|n| !n.starts_with("Incident")).collect();
    assert_eq!(names, ["AuthDown"], "only the cause pages: {sent}");
    assert_eq!(sent.as_array().unwrap().iter().find(|n| n["alert"] == "AuthDown").unwrap()["severity"], "P1");
    let messaging = &alert_named(&all, "MessagingDown").unwrap()["muted_by"][0];
    assert_eq!((messaging["kind"].as_str(), messaging["service"].as_str()), (Some("dependency"), Some("auth")));

    // The storm is one incident holding all four alerts, and it pages the on-call person.
    let incident = wait_for("one incident with the four alerts", Duration::from_secs(10), || {
        let (_, list) = request("GET", &format!("{base}/api/v1/incidents"), &token, None);
        let id = list["incidents"].as_array()?.first()?["id"].as_i64()?;
        let (_, detail) = request("GET", &format!("{base}/api/v1/incidents/{id}"), &token, None);
        (detail["alerts"].as_array()?.len() == 4).then_some(detail)
    });
    let (_, all_incidents) = request("GET", &format!("{base}/api/v1/incidents?status=all"), &token, None);
    assert_eq!(all_incidents["incidents"].as_array().unwrap().len(), 1, "{all_incidents}");
    assert_eq!(incident["incident"]["priority"], "P1");
    assert_eq!(incident["incident"]["services"][0], "auth");
    let id = incident["incident"]["id"].as_i64().unwrap();
    wait_for("the on-call page", Duration::from_secs(10), || {
        notifications().as_array()?.iter().any(|n| n["alert"] == format!("Incident #{id}")).then_some(())
    });

    // Heal: every alert resolves, the receiver hears AuthDown resolve, the incident resolves.
    request("POST", &format!("http://{control}/demo/auth/heal"), "", None);
    wait_for("AuthDown resolved at the receiver", Duration::from_secs(30), || {
        notifications().as_array()?.iter().any(|n| n["alert"] == "AuthDown" && n["status"] == "resolved").then_some(())
    });
    wait_for("the incident to resolve", Duration::from_secs(30), || {
        let (_, d) = request("GET", &format!("{base}/api/v1/incidents/{id}"), &token, None);
        (d["incident"]["status"] == "resolved").then_some(())
    });
    drop(demo);
}

/// The two pillars a new user could not see before: the demo's data set is backed up
/// and restore-tested at start (the freshness check passes), and the runbook that
/// MessagingDown names restarts messaging after an operator approves — the run waits,
/// is approved, succeeds, and the check is healthy again.
#[test]
fn the_demo_restarts_messaging_with_its_runbook_and_shows_a_tested_backup() {
    let dir = tempfile::tempdir().unwrap();
    let (demo, banner, base) = start_demo(dir.path());
    let token = after(&banner, "Admin token").to_string();
    let control = after(&banner, "curl http://").trim_end_matches("/demo/notifications").to_string();
    let backup = after(&banner, "The first one was taken and restore-tested at start:").to_string();

    let (_, list) = request("GET", &format!("{base}/api/v1/backups"), &token, None);
    let backups = list["backups"].as_array().unwrap();
    assert_eq!(backups.len(), 1, "{list}");
    assert_eq!(
        (&backups[0]["id"], &backups[0]["policy"], &backups[0]["status"]),
        (&Value::from(backup.as_str()), &Value::from("messaging-history"), &Value::from("succeeded")),
        "{list}"
    );
    let (_, shown) = request("GET", &format!("{base}/api/v1/backups/{backup}"), &token, None);
    let verification = &shown["verifications"][0];
    assert_eq!((&verification["result"], &verification["level"]), (&Value::from("passed"), &Value::from(2)), "restore-tested: {shown}");
    wait_for("every demo check healthy, the backup's freshness included", Duration::from_secs(15), || {
        let (_, checks) = request("GET", &format!("{base}/api/v1/checks"), &token, None);
        let checks = checks["checks"].as_array()?;
        (checks.iter().any(|c| c["name"] == "messaging-history-backup") && checks.iter().all(|c| c["health"] == "healthy")).then_some(())
    });

    request("POST", &format!("http://{control}/demo/messaging/fail"), "", None);
    let alert = wait_for("MessagingDown firing", Duration::from_secs(20), || {
        alert_named(&alerts(&base, &token), "MessagingDown").filter(|a| a["state"] == "firing").cloned()
    });
    assert_eq!(alert["annotations"]["runbook"], "steward run restart-messaging", "{alert}");

    let (code, started) = request("POST", &format!("{base}/api/v1/runbooks/restart-messaging/runs"), &token, Some(serde_json::json!({})));
    assert_eq!(code, 201, "{started}");
    let id = started["run"]["id"].as_i64().unwrap();
    let run = |id: i64| request("GET", &format!("{base}/api/v1/runs/{id}"), &token, None).1;
    wait_for("the run to wait for its approval", Duration::from_secs(10), || (run(id)["run"]["status"] == "waiting").then_some(()));
    let health = || request("GET", &format!("{base}/api/v1/checks/messaging-health"), &token, None).1["health"].clone();
    assert_eq!(health(), "unhealthy", "nothing restarts before the approval");
    let (code, approved) =
        request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &token, Some(serde_json::json!({"comment": "users warned"})));
    assert_eq!(code, 200, "{approved}");
    wait_for("the run to succeed", Duration::from_secs(30), || (run(id)["run"]["status"] == "succeeded").then_some(()));
    assert_eq!(health(), "healthy", "the run waited for the check to pass");
    drop(demo);
}

/// Was: `steward demo` left `/tmp/steward-demo-PID` behind. A directory it made for
/// itself is removed when it stops; one the user named stays (the test above).
#[test]
fn the_demo_removes_the_directory_it_made_when_it_stops() {
    let port = free_port();
    let tmp = tempfile::tempdir().unwrap();
    let mut child = common::steward()
        .args(["demo", "--listen", &format!("127.0.0.1:{port}")])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let made = tmp.path().join(format!("steward-demo-{}", child.id()));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    assert!(made.join("steward.db").exists(), "the demo keeps its data in {}", made.display());
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(!made.exists(), "{} was left behind", made.display());
}
