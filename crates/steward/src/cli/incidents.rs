//! `steward incident …`, `steward action-items` and `steward oncall`: incidents
//! through a running server's API.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Value, json};

use super::alerts::{Remote, ago, fail, get_for_table};
use super::{Output, RemoteArgs, exit, print_table};

#[derive(Subcommand, Debug)]
pub enum IncidentAction {
    /// List incidents: open ones by default.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
        /// open, all, or one status (triggered, acknowledged, mitigated, resolved, closed).
        #[arg(long, default_value = "open")]
        status: String,
        /// Only incidents touching this service.
        #[arg(long)]
        service: Option<String>,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One incident: state, times, roles, alerts, action items and the whole timeline.
    Show {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The incident's number, as `steward incident list` shows it.
        id: i64,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Declare an incident no alert opened (a customer report, a security event).
    ///
    /// Example: steward incident declare --title "Checkout errors reported" --priority P2 --service api --escalation platform
    Declare {
        #[command(flatten)]
        remote: RemoteArgs,
        /// One line saying what is wrong; pages and the timeline show it.
        #[arg(long)]
        title: String,
        /// P0 (complete outage, data loss) … P4 (no user impact).
        #[arg(long, default_value = "P3")]
        priority: String,
        /// Affected service (repeatable).
        #[arg(long = "service")]
        services: Vec<String>,
        /// Page through this escalation policy until someone acknowledges.
        #[arg(long)]
        escalation: Option<String>,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Acknowledge: "I am on it". Stops the escalation.
    Ack(StatusChange),
    /// The impact is contained (rolled back, failed over) though the cause may remain.
    Mitigate(StatusChange),
    /// Resolved: the service is back to normal. Tells everyone who was paged.
    Resolve(StatusChange),
    /// Close after the review: the postmortem is written and action items recorded.
    Close(StatusChange),
    /// Add a note to the timeline; `--public` also shows it on the status page.
    Note {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The incident's number, as `steward incident list` shows it.
        id: i64,
        /// The note (quote it to keep it one argument).
        text: String,
        /// Also show the note on the public status page: write it for customers.
        #[arg(long)]
        public: bool,
    },
    /// Change the priority, with the reason in the timeline.
    Priority {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The incident's number, as `steward incident list` shows it.
        id: i64,
        /// P0 … P4.
        priority: String,
        /// Why the priority changes; goes into the timeline.
        #[arg(long)]
        reason: String,
    },
    /// Give someone a role: commander, scribe or liaison.
    AssignRole {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The incident's number, as `steward incident list` shows it.
        id: i64,
        /// commander, scribe or liaison.
        role: String,
        /// Who takes the role.
        person: String,
    },
    /// Fire the next escalation level now instead of waiting.
    EscalateNow {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The incident's number, as `steward incident list` shows it.
        id: i64,
    },
    /// Record an action item (follow-up work) on the incident.
    ActionItem {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The incident's number, as `steward incident list` shows it.
        id: i64,
        /// What needs doing.
        text: String,
        /// Who will do it.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Mark an action item done.
    ActionDone {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The incident's number, as `steward incident list` shows it.
        id: i64,
        /// The action item's number, as `steward incident show ID` lists it.
        item: i64,
    },
    /// Write the post-incident review (Markdown), pre-filled from the incident.
    Postmortem {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The incident's number, as `steward incident list` shows it.
        id: i64,
        /// Write to this file instead of stdout.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Mean time to acknowledge, mitigate and resolve, grouped.
    ///
    /// Example: steward incident stats --by service --since 90d
    Stats {
        #[command(flatten)]
        remote: RemoteArgs,
        /// service, priority, week, month or all.
        #[arg(long, default_value = "all")]
        by: String,
        /// How far back (e.g. 30d) or an RFC 3339 time.
        #[arg(long, default_value = "30d")]
        since: String,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(clap::Args, Debug)]
pub struct StatusChange {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The incident's number, as `steward incident list` shows it.
    id: i64,
    /// Why, or what was done; goes into the timeline.
    #[arg(long)]
    note: Option<String>,
}

pub async fn run(action: IncidentAction) -> u8 {
    use IncidentAction as A;
    match action {
        A::List { remote, status, service, output } => {
            let mut path = format!("/incidents?status={status}");
            if let Some(s) = service {
                path.push_str(&format!("&service={s}"));
            }
            list(&remote.remote(), &path, output).await
        }
        A::Show { remote, id, output } => show(&remote.remote(), id, output).await,
        A::Declare { remote, title, priority, services, escalation, output } => {
            let body = json!({"title": title, "priority": priority, "services": services, "escalation": escalation});
            post(&remote.remote(), "/incidents", body, output, "declared").await
        }
        A::Ack(t) => transition(t, "acknowledge").await,
        A::Mitigate(t) => transition(t, "mitigate").await,
        A::Resolve(t) => transition(t, "resolve").await,
        A::Close(t) => transition(t, "close").await,
        A::Note { remote, id, text, public } => {
            post(&remote.remote(), &format!("/incidents/{id}/notes"), json!({"text": text, "public": public}), Output::Table, "noted").await
        }
        A::Priority { remote, id, priority, reason } => {
            let body = json!({"priority": priority, "reason": reason});
            post(&remote.remote(), &format!("/incidents/{id}/priority"), body, Output::Table, "priority changed").await
        }
        A::AssignRole { remote, id, role, person } => {
            let body = json!({"role": role, "person": person});
            post(&remote.remote(), &format!("/incidents/{id}/roles"), body, Output::Table, "role assigned").await
        }
        A::EscalateNow { remote, id } => {
            post(&remote.remote(), &format!("/incidents/{id}/escalate"), json!({}), Output::Table, "escalated").await
        }
        A::ActionItem { remote, id, text, owner } => {
            let body = json!({"text": text, "owner": owner});
            post(&remote.remote(), &format!("/incidents/{id}/action-items"), body, Output::Table, "action item recorded").await
        }
        A::ActionDone { remote, id, item } => {
            post(&remote.remote(), &format!("/incidents/{id}/action-items/{item}/done"), json!({}), Output::Table, "action item done").await
        }
        A::Postmortem { remote, id, file } => postmortem(&remote.remote(), id, file).await,
        A::Stats { remote, by, since, output } => stats(&remote.remote(), &by, &since, output).await,
    }
}

async fn transition(t: StatusChange, verb: &str) -> u8 {
    let past = match verb {
        "acknowledge" => "acknowledged",
        "mitigate" => "mitigated",
        "resolve" => "resolved",
        _ => "closed",
    };
    post(&t.remote.remote(), &format!("/incidents/{}/{verb}", t.id), json!({"note": t.note}), Output::Table, past).await
}

async fn post(remote: &Remote, path: &str, body: Value, output: Output, done: &str) -> u8 {
    match remote.call("POST", path, Some(body)).await {
        Ok(v) if output == Output::Json => {
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
            exit::OK
        }
        Ok(v) => {
            let i = &v["incident"];
            if i.is_object() {
                println!("incident {} {done}: {} ({}, {})", i["id"], text(&i["title"]), text(&i["priority"]), text(&i["status"]));
            } else {
                println!("{done}");
            }
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

/// `4m 10s`, from seconds.
fn seconds(v: &Value) -> String {
    v.as_f64().map_or("-".into(), |s| crate::incidents::postmortem::human(chrono::Duration::seconds(s.round() as i64)))
}

fn since_opened(i: &Value, field: &str) -> String {
    let (Some(a), Some(b)) = (
        i["opened_at"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
        i[field].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()),
    ) else {
        return "-".into();
    };
    crate::incidents::postmortem::human(b - a)
}

async fn list(remote: &Remote, path: &str, output: Output) -> u8 {
    let v = match get_for_table(remote, path, output).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let rows: Vec<Vec<String>> = v["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            vec![
                i["id"].to_string(),
                text(&i["priority"]),
                text(&i["status"]),
                ago(&i["opened_at"]),
                since_opened(i, "acknowledged_at"),
                since_opened(i, "resolved_at"),
                i["services"].as_array().map(|s| s.iter().map(text).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                text(&i["title"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no incidents");
    } else {
        print_table(&["ID", "PRI", "STATUS", "OPENED", "TTA", "TTR", "SERVICES", "TITLE"], &rows);
    }
    exit::OK
}

fn clock(t: &Value) -> String {
    t.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or("-".into(), |t| t.with_timezone(&Utc).format("%Y-%m-%d %H:%M:%S").to_string())
}

async fn show(remote: &Remote, id: i64, output: Output) -> u8 {
    let v = match get_for_table(remote, &format!("/incidents/{id}"), output).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let i = &v["incident"];
    println!("Incident #{}: {}", i["id"], text(&i["title"]));
    println!("  priority  {}    status  {}", text(&i["priority"]), text(&i["status"]));
    let services = i["services"].as_array().map(|s| s.iter().map(text).collect::<Vec<_>>().join(", ")).unwrap_or_default();
    println!("  services  {}", if services.is_empty() { "-".into() } else { services });
    println!("  opened    {} by {}", clock(&i["opened_at"]), text(&i["opened_by"]));
    let t = &v["times"];
    println!(
        "  times     acknowledge {} · mitigate {} · resolve {}",
        seconds(&t["time_to_acknowledge_seconds"]),
        seconds(&t["time_to_mitigate_seconds"]),
        seconds(&t["time_to_resolve_seconds"])
    );
    if let Some(roles) = i["roles"].as_object().filter(|r| !r.is_empty()) {
        println!("  roles     {}", roles.iter().map(|(k, v)| format!("{k} {}", text(v))).collect::<Vec<_>>().join(", "));
    }
    if let Some(e) = i["escalation"].as_object() {
        let next = e.get("next_at").filter(|n| !n.is_null()).map_or("stopped".to_string(), |n| format!("next level at {}", clock(n)));
        println!("  escalation {} ({next})", e.get("policy").map(text).unwrap_or_default());
    }
    let alerts: Vec<Vec<String>> = v["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| vec![text(&a["rule"]), text(&a["state"]), super::alerts::labels_text(&a["labels"])])
        .collect();
    if !alerts.is_empty() {
        println!("\nALERTS");
        print_table(&["ALERT", "STATE", "LABELS"], &alerts);
    }
    let items: Vec<Vec<String>> = v["action_items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| vec![a["id"].to_string(), text(&a["state"]), a["owner"].as_str().unwrap_or("-").to_string(), text(&a["text"])])
        .collect();
    if !items.is_empty() {
        println!("\nACTION ITEMS");
        print_table(&["ID", "STATE", "OWNER", "TEXT"], &items);
    }
    println!("\nTIMELINE (UTC)");
    let rows: Vec<Vec<String>> = v["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let public = if e["public"] == true { " [public]" } else { "" };
            vec![clock(&e["at"]), text(&e["kind"]), text(&e["actor"]), format!("{}{public}", text(&e["text"]))]
        })
        .collect();
    print_table(&["AT", "WHAT", "WHO", "DETAIL"], &rows);
    exit::OK
}

async fn postmortem(remote: &Remote, id: i64, file: Option<PathBuf>) -> u8 {
    let markdown = match remote.get_text(&format!("/incidents/{id}/postmortem")).await {
        Ok(t) => t,
        Err(e) => return fail(&e),
    };
    match file {
        None => {
            print!("{markdown}");
            exit::OK
        }
        Some(path) => match std::fs::write(&path, markdown) {
            Ok(()) => {
                eprintln!("wrote {}", path.display());
                exit::OK
            }
            Err(e) => fail(&format!("cannot write {}: {e}", path.display())),
        },
    }
}

async fn stats(remote: &Remote, by: &str, since: &str, output: Output) -> u8 {
    let v = match get_for_table(remote, &format!("/incidents/stats?by={by}&since={since}"), output).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let rows: Vec<Vec<String>> = v["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                text(&r["group"]),
                r["incidents"].to_string(),
                r["open"].to_string(),
                seconds(&r["mtta_seconds"]),
                seconds(&r["mttm_seconds"]),
                seconds(&r["mttr_seconds"]),
                seconds(&r["max_tta_seconds"]),
            ]
        })
        .collect();
    println!("since {}", clock(&v["since"]));
    if rows.is_empty() {
        println!("no incidents");
    } else {
        print_table(&[&by.to_uppercase(), "INCIDENTS", "OPEN", "MTTA", "MTTM", "MTTR", "SLOWEST ACK"], &rows);
    }
    exit::OK
}

pub async fn action_items(remote: &Remote, state: &str, output: Output) -> u8 {
    let v = match get_for_table(remote, &format!("/action-items?state={state}"), output).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let rows: Vec<Vec<String>> = v["action_items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                a["id"].to_string(),
                format!("#{}", a["incident_id"]),
                text(&a["state"]),
                a["owner"].as_str().unwrap_or("-").to_string(),
                ago(&a["created_at"]),
                text(&a["text"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        println!("no action items");
    } else {
        print_table(&["ID", "INCIDENT", "STATE", "OWNER", "CREATED", "TEXT"], &rows);
    }
    exit::OK
}

pub async fn oncall(remote: &Remote, schedule: Option<&str>, at: Option<&str>, output: Output) -> u8 {
    let mut path = "/oncall?".to_string();
    if let Some(s) = schedule {
        path.push_str(&format!("schedule={s}&"));
    }
    if let Some(t) = at {
        path.push_str(&format!("at={}", t.replace(' ', "T").replace('+', "%2B")));
    }
    let v = match get_for_table(remote, &path, output).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let mut rows = Vec::new();
    for s in v["schedules"].as_array().into_iter().flatten() {
        let on = &s["on_call"];
        let who = if on.is_null() { "nobody (rotation not started)".to_string() } else { text(&on["person"]) };
        let kind = if on["is_override"] == true { "override" } else { "rotation" };
        let next = s["next_shifts"]
            .as_array()
            .and_then(|n| n.first())
            .map_or("-".into(), |n| format!("{} at {}", text(&n["person"]), clock(&n["from"])));
        rows.push(vec![text(&s["schedule"]), who, kind.into(), clock(&on["until"]), next, text(&s["time_zone"])]);
    }
    println!("at {} UTC", clock(&v["at"]));
    if rows.is_empty() {
        println!("no schedules are configured (incidents.schedules)");
    } else {
        print_table(&["SCHEDULE", "ON CALL", "BY", "UNTIL (UTC)", "NEXT", "ZONE"], &rows);
    }
    exit::OK
}

pub async fn add_override(remote: &Remote, schedule: &str, person: &str, from: &str, until: &str) -> u8 {
    let body = json!({"person": person, "from": from, "until": until});
    match remote.call("POST", &format!("/schedules/{schedule}/overrides"), Some(body)).await {
        Ok(v) => {
            let o = &v["override"];
            println!("{person} is on call for {schedule} from {} until {} (UTC)", clock(&o["from"]), clock(&o["until"]));
            exit::OK
        }
        Err(e) => fail(&e),
    }
}
