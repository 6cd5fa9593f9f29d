//! `steward route test` (offline, from the configuration) and `steward alerts` /
//! `steward silence …` (online, through a running server's API, like amtool).

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{Output, exit, print_table};
use crate::alerting::Labels;
use crate::alerting::route::{group_key, group_labels, matching};

/// Where a running server is and how to authenticate to it.
pub struct Remote {
    pub server: String,
    pub token: String,
}

impl Remote {
    pub(super) async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/api/v1{path}", self.server.trim_end_matches('/'));
        let client = crate::checks::http::build_client(&Default::default(), false)?;
        let mut req = client.request(method.parse().expect("literal method"), &url).bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| format!("cannot reach steward at {}: {e}", self.server))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            Err(format!("{}: {} ({status})", self.server, v["error"]["message"].as_str().unwrap_or("the server refused the request")))
        }
    }

    /// GETs a non-JSON document (a Markdown postmortem).
    pub(super) async fn get_text(&self, path: &str) -> Result<String, String> {
        let url = format!("{}/api/v1{path}", self.server.trim_end_matches('/'));
        let client = crate::checks::http::build_client(&Default::default(), false)?;
        let resp =
            client.get(&url).bearer_auth(&self.token).send().await.map_err(|e| format!("cannot reach steward at {}: {e}", self.server))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| format!("reading the answer: {e}"))?;
        if status.is_success() {
            Ok(text)
        } else {
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            Err(format!("{}: {} ({status})", self.server, v["error"]["message"].as_str().unwrap_or("the server refused the request")))
        }
    }
}

pub(super) fn fail(message: &str) -> u8 {
    eprintln!("error: {message}");
    exit::FAILED
}

/// GETs `path`; with `--output json` prints the answer as it is and returns the exit
/// code, otherwise returns the answer for a table.
pub(super) async fn get_for_table(remote: &Remote, path: &str, output: Output) -> Result<Value, u8> {
    let v = remote.call("GET", path, None).await.map_err(|e| fail(&e))?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
        return Err(exit::OK);
    }
    Ok(v)
}

pub(super) fn labels_text(v: &Value) -> String {
    v.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| *k != "alertname")
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn mute_text(m: &Value) -> String {
    match m["kind"].as_str() {
        Some("silence") => format!("silence {}", m["id"].as_str().unwrap_or("")),
        Some("inhibition") => format!("inhibited by {}", m["by_alert"].as_str().unwrap_or("")),
        Some("dependency") => format!("upstream {}: {}", m["service"].as_str().unwrap_or(""), m["cause"].as_str().unwrap_or("")),
        Some("maintenance") => format!("maintenance {}", m["window"].as_str().unwrap_or("")),
        Some("time_interval") => format!("{} {}", m["receiver"].as_str().unwrap_or(""), m["reason"].as_str().unwrap_or("")),
        _ => m.to_string(),
    }
}

pub(super) fn ago(t: &Value) -> String {
    let Some(t) = t.as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()) else { return "-".into() };
    let secs = (crate::clock::now() - t.with_timezone(&Utc)).num_seconds().max(0) as u64;
    format!("{} ago", crate::config::duration::format_duration(std::time::Duration::from_secs(secs)))
}

pub async fn list_alerts(remote: &Remote, output: Output) -> u8 {
    let v = match get_for_table(remote, "/alerts", output).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let rows: Vec<Vec<String>> = v["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|a| {
                    let since = if a["state"] == "firing" {
                        &a["fired_at"]
                    } else if a["state"] == "resolved" {
                        &a["resolved_at"]
                    } else {
                        &a["active_since"]
                    };
                    let muted: Vec<String> = a["muted_by"].as_array().map(|m| m.iter().map(mute_text).collect()).unwrap_or_default();
                    vec![
                        a["rule"].as_str().unwrap_or("").to_string(),
                        a["state"].as_str().unwrap_or("").to_string(),
                        ago(since),
                        if muted.is_empty() { "-".into() } else { muted.join("; ") },
                        a["fingerprint"].as_str().unwrap_or("").to_string(),
                        labels_text(&a["labels"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    if rows.is_empty() {
        println!("no alerts");
    } else {
        print_table(&["ALERT", "STATE", "SINCE", "MUTED BY", "FINGERPRINT", "LABELS"], &rows);
    }
    exit::OK
}

/// One alert: what it is, what mutes it, its state changes and its notifications.
pub async fn show_alert(remote: &Remote, fingerprint: &str, output: Output) -> u8 {
    let v = match get_for_table(remote, &format!("/alerts/{fingerprint}"), output).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let a = &v["alert"];
    if a.is_object() {
        println!("{} ({}) {}", a["rule"].as_str().unwrap_or(""), a["state"].as_str().unwrap_or(""), labels_text(&a["labels"]));
        for (k, text) in a["annotations"].as_object().into_iter().flatten() {
            println!("  {k}: {}", text.as_str().unwrap_or(""));
        }
        for m in a["muted_by"].as_array().into_iter().flatten() {
            println!("  muted: {}", mute_text(m));
        }
    }
    let text = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let events: Vec<Vec<String>> = v["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| vec![text(&e["at"]), format!("{} → {}", text(&e["from"]), text(&e["to"])), e["value"].to_string()])
        .collect();
    println!("\nHISTORY");
    print_table(&["AT", "CHANGE", "VALUE"], &events);
    let notes: Vec<Vec<String>> = v["notifications"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            vec![
                text(&n["created_at"]),
                text(&n["receiver"]),
                text(&n["status"]),
                text(&n["state"]),
                n["attempts"].to_string(),
                text(&n["last_error"]),
            ]
        })
        .collect();
    println!("\nNOTIFICATIONS");
    if notes.is_empty() {
        println!("none");
    } else {
        print_table(&["CREATED", "RECEIVER", "STATUS", "DELIVERY", "ATTEMPTS", "LAST ERROR"], &notes);
    }
    exit::OK
}

pub async fn create_silence(remote: &Remote, matchers: &[String], duration: &str, comment: &str, output: Output) -> u8 {
    let body = json!({"matchers": matchers, "duration": duration, "comment": comment});
    match remote.call("POST", "/silences", Some(body)).await {
        Ok(v) if output == Output::Json => {
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
            exit::OK
        }
        Ok(v) => {
            println!(
                "silence {} created, ends {}",
                v["silence"]["id"].as_str().unwrap_or(""),
                v["silence"]["ends_at"].as_str().unwrap_or("")
            );
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

pub async fn list_silences(remote: &Remote, output: Output) -> u8 {
    let v = match get_for_table(remote, "/silences", output).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let rows: Vec<Vec<String>> = v["silences"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| {
                    let matchers: Vec<String> = s["matchers"]
                        .as_array()
                        .map(|m| m.iter().filter_map(|m| m.as_str().map(str::to_string)).collect())
                        .unwrap_or_default();
                    vec![
                        s["id"].as_str().unwrap_or("").to_string(),
                        s["state"].as_str().unwrap_or("").to_string(),
                        s["ends_at"].as_str().unwrap_or("").to_string(),
                        s["created_by"].as_str().unwrap_or("").to_string(),
                        matchers.join(","),
                        s["comment"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    print_table(&["ID", "STATE", "ENDS", "BY", "MATCHERS", "COMMENT"], &rows);
    exit::OK
}

pub async fn expire_silence(remote: &Remote, id: &str) -> u8 {
    match remote.call("DELETE", &format!("/silences/{id}"), None).await {
        Ok(_) => {
            println!("silence {id} expired");
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

/// Which receivers an alert with these labels would reach, through which routes, in
/// which group — straight from the configuration, no server needed.
pub fn route_test(config_path: &Path, labels: &[String], output: Output) -> u8 {
    let config = match crate::config::load(config_path) {
        Ok(c) => c,
        Err(d) => {
            super::print_diagnostics(&d);
            return exit::BAD_CONFIG;
        }
    };
    let mut set = Labels::new();
    for l in labels {
        match l.split_once('=') {
            Some((k, v)) if crate::alerting::matcher::valid_label_name(k) => {
                set.insert(k.to_string(), v.trim_matches('"').to_string());
            }
            _ => return fail(&format!("`{l}` is not LABEL=VALUE (label names use letters, digits and `_`)")),
        }
    }
    let Some(root) = &config.route else {
        return fail("the configuration has no receivers, so alerts are recorded but notify nobody");
    };
    let routes = matching(root, &set);
    let hits: Vec<Value> = routes
        .iter()
        .map(|r| {
            let gl = group_labels(r, &set);
            json!({
                "receiver": r.receiver,
                "route": r.id,
                "at": r.pos.to_string(),
                "matchers": r.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>(),
                "group_key": group_key(r, &gl),
                "group_wait_ms": r.group_wait.as_millis() as u64,
                "group_interval_ms": r.group_interval.as_millis() as u64,
                "repeat_interval_ms": r.repeat_interval.as_millis() as u64,
            })
        })
        .collect();
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&json!({"labels": set, "routes": hits})).expect("JSON"));
        return exit::OK;
    }
    let rows: Vec<Vec<String>> = routes
        .iter()
        .map(|r| {
            let why = if r.matchers.is_empty() {
                "default (no child route matched)".to_string()
            } else {
                r.matchers.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
            };
            vec![
                r.receiver.clone(),
                format!("{} ({})", r.id, r.pos),
                why,
                format!("wait {}", crate::config::duration::format_duration(r.group_wait)),
                group_key(r, &group_labels(r, &set)),
            ]
        })
        .collect();
    print_table(&["RECEIVER", "ROUTE", "MATCHED BY", "TIMING", "GROUP"], &rows);
    exit::OK
}

fn percent(v: &Value, digits: usize) -> String {
    v.as_f64().map_or("no data".into(), |p| format!("{p:.digits$} %"))
}

fn burn_text(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |b| format!("{b:.2}×"))
}

/// `steward slo export --prometheus-rules`: the configuration's SLOs as a rule file on
/// standard output.
pub fn export_slos(path: &std::path::Path) -> u8 {
    let config = match crate::config::load_deferring_secrets(path) {
        Ok((c, _)) => c,
        Err(d) => {
            super::print_diagnostics(&d);
            return exit::BAD_CONFIG;
        }
    };
    if config.slos.is_empty() {
        eprintln!("error: {} configures no SLOs (slos:)", path.display());
        return exit::BAD_CONFIG;
    }
    match crate::slos::export::prometheus_rules(&config.slos) {
        Ok(text) => {
            print!("{text}");
            exit::OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            exit::BAD_CONFIG
        }
    }
}

/// `steward slo import FILE…`: OpenSLO documents as Steward's `slos:` on standard output.
pub fn import_slos(files: &[std::path::PathBuf]) -> u8 {
    let mut texts = Vec::new();
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(t) => texts.push((f.display().to_string(), t)),
            Err(e) => {
                eprintln!("error: cannot read {}: {e}", f.display());
                return exit::BAD_CONFIG;
            }
        }
    }
    match steward_model::config::openslo::import(&texts) {
        Ok(yaml) => {
            print!("{yaml}");
            exit::OK
        }
        Err(d) => {
            super::print_diagnostics(&d);
            exit::BAD_CONFIG
        }
    }
}

/// `steward slo list` and `steward slo show NAME`: every SLO (objective, SLI, budget left, the fastest burn, time
/// to exhaustion), or one with its burn per alert window.
pub async fn slos(remote: &Remote, name: Option<&str>, output: Output) -> u8 {
    let path = name.map_or("/slos".to_string(), |n| format!("/slos/{n}"));
    let v = match get_for_table(remote, &path, output).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let exhaustion = |s: &Value| match s["time_to_exhaustion_seconds"].as_u64() {
        Some(0) => "spent".to_string(),
        Some(secs) => steward_model::config::duration::format_duration(std::time::Duration::from_secs(secs)),
        None => "-".to_string(),
    };
    if name.is_some() {
        let s = &v["slo"];
        println!(
            "{}  (service {}, counting {})",
            s["name"].as_str().unwrap_or(""),
            s["service"].as_str().unwrap_or(""),
            s["counts"].as_str().unwrap_or("")
        );
        println!("  objective        {} over {}", percent(&s["objective_percent"], 3), s["window"].as_str().unwrap_or(""));
        println!("  SLI              {}  ({} good of {})", percent(&s["sli_percent"], 4), s["good"], s["total"]);
        println!("  budget left      {}", percent(&s["budget_remaining_percent"], 1));
        println!("  exhausted in     {}", exhaustion(s));
        let rows: Vec<Vec<String>> = s["burn"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| {
                let state = if b["firing_condition"] == true {
                    "burning"
                } else if b["too_little_traffic"] == true {
                    "too little traffic"
                } else {
                    "ok"
                };
                vec![
                    b["alert"].as_str().unwrap_or("").into(),
                    format!("{}/{}", b["long_window"].as_str().unwrap_or(""), b["short_window"].as_str().unwrap_or("")),
                    format!("{:.1}×", b["factor"].as_f64().unwrap_or(0.0)),
                    burn_text(&b["long_burn"]),
                    burn_text(&b["short_burn"]),
                    b["severity"].as_str().unwrap_or("").into(),
                    state.into(),
                ]
            })
            .collect();
        if !rows.is_empty() {
            println!();
            print_table(&["ALERT", "WINDOWS", "FIRES AT", "LONG", "SHORT", "SEVERITY", "NOW"], &rows);
        }
        return exit::OK;
    }
    let rows: Vec<Vec<String>> = v["slos"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let fastest = s["burn"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|b| b["short_burn"].as_f64())
                .fold(None, |m: Option<f64>, b| Some(m.map_or(b, |m| m.max(b))));
            vec![
                s["name"].as_str().unwrap_or("").into(),
                s["service"].as_str().unwrap_or("").into(),
                format!("{} / {}", percent(&s["objective_percent"], 3), s["window"].as_str().unwrap_or("")),
                percent(&s["sli_percent"], 4),
                percent(&s["budget_remaining_percent"], 1),
                fastest.map_or("-".into(), |b| format!("{b:.2}×")),
                exhaustion(s),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no SLOs are configured (slos:)");
    } else {
        print_table(&["SLO", "SERVICE", "OBJECTIVE", "SLI", "BUDGET LEFT", "BURN NOW", "EXHAUSTED IN"], &rows);
    }
    exit::OK
}
