//! `steward run`, `steward runs …` and `steward runbooks`: runbook runs through a
//! running server's API, with live progress from its event stream.

use clap::Subcommand;
use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::alerts::{Remote, ago, fail, get_for_table};
use super::{Output, RemoteArgs, exit, fancy, print_table};

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The runbook to run.
    pub name: String,
    /// A parameter, `key=value` (repeatable). Lists: `nodes=db-1,db-2`.
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,
    /// Show the plan — every step with its resolved command, environment (secrets
    /// masked), approvals and conditions — and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stay attached: stream step progress and output until the run ends. The exit
    /// code is then 0 only if the run succeeded.
    #[arg(short, long)]
    pub follow: bool,
    /// The incident this run works on (its number): the run's start and outcome land
    /// in that incident's timeline, as an alert-started run's do.
    #[arg(long, value_name = "ID")]
    pub incident: Option<i64>,
    #[command(flatten)]
    pub remote: RemoteArgs,
    /// How to print: `table` for people, `json` for scripts.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Subcommand, Debug)]
pub enum RunsAction {
    /// Runs, newest first.
    List {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Only runs of this runbook.
        #[arg(long)]
        runbook: Option<String>,
        /// running, waiting, succeeded, failed, cancelled, interrupted.
        #[arg(long)]
        status: Option<String>,
        /// At most this many, newest first.
        #[arg(long, default_value = "50")]
        limit: u32,
        /// Only runs with a smaller id (the next page).
        #[arg(long)]
        before: Option<i64>,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// One run: parameters, every step attempt with its status, error and output tail.
    Show {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The run's number, as `steward runs list` shows it.
        id: i64,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Attach to a run: its events so far, then live progress until it ends.
    Follow {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The run's number, as `steward runs list` shows it.
        id: i64,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Approve the approval step a run waits at.
    Approve(Decide),
    /// Deny it: the step fails, and with it the run (its on_failure steps run).
    Deny(Decide),
    /// Stop a live run (the running step's process group is killed), or abort an
    /// interrupted one.
    Cancel {
        #[command(flatten)]
        remote: RemoteArgs,
        /// The run's number, as `steward runs list` shows it.
        id: i64,
        /// Why; goes into the run's record.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Continue an interrupted run: steps that succeeded are kept, the step left
    /// `unknown` runs again — check first that running it again is safe.
    Resume(Continue),
    /// Run a failed run again from the step that failed (or --from a step).
    Retry(Continue),
    /// Who started, approved, denied, cancelled, resumed or retried what, and when.
    Audit {
        #[command(flatten)]
        remote: RemoteArgs,
        /// Only runs of this runbook.
        #[arg(long)]
        runbook: Option<String>,
        /// Only what this person or token did.
        #[arg(long)]
        actor: Option<String>,
        /// At most this many, newest first.
        #[arg(long, default_value = "100")]
        limit: u32,
        /// How to print: `table` for people, `json` for scripts.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(clap::Args, Debug)]
pub struct Decide {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The run's number, as `steward runs list` shows it.
    id: i64,
    /// The approval step, when the run waits at several.
    #[arg(long)]
    step: Option<String>,
    /// Why: recorded in the run's audit trail.
    #[arg(long, default_value = "")]
    comment: String,
}

#[derive(clap::Args, Debug)]
pub struct Continue {
    #[command(flatten)]
    remote: RemoteArgs,
    /// The run's number, as `steward runs list` shows it.
    id: i64,
    /// Run again from this top-level step on, even if later steps had succeeded.
    #[arg(long)]
    from: Option<String>,
    /// Then follow the run live until it ends (as `steward runs follow`).
    #[arg(short, long)]
    follow: bool,
    /// How to print: `table` for people, `json` for scripts.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
}

fn params(list: &[String]) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for p in list {
        let (k, v) = p.split_once('=').ok_or_else(|| format!("`{p}` is not KEY=VALUE"))?;
        if out.insert(k.trim().to_string(), Value::String(v.to_string())).is_some() {
            return Err(format!("parameter `{}` is given twice", k.trim()));
        }
    }
    Ok(out)
}

pub async fn run(args: RunArgs) -> u8 {
    let remote = args.remote.remote();
    let params = match params(&args.params) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let mut body = json!({"params": params, "dry_run": args.dry_run});
    if let Some(id) = args.incident {
        body["incident"] = json!(id);
    }
    let v = match remote.call("POST", &format!("/runbooks/{}/runs", args.name), Some(body)).await {
        Ok(v) => v,
        Err(e) => return fail(&e),
    };
    if args.dry_run {
        if args.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&v["plan"]).expect("JSON"));
        } else {
            print_plan(&v["plan"]);
        }
        return exit::OK;
    }
    let id = v["run"]["id"].as_i64().unwrap_or_default();
    if !args.follow {
        if args.output == Output::Json {
            println!("{}", serde_json::to_string_pretty(&v["run"]).expect("JSON"));
        } else {
            println!("started run {id} of {}", args.name);
            println!("  follow it: steward runs follow {id}");
        }
        return exit::OK;
    }
    follow(&remote, id, args.output).await
}

fn print_plan(plan: &Value) {
    println!("plan for runbook {} (dry run: nothing is executed)", plan["runbook"].as_str().unwrap_or(""));
    if let Some(p) = plan["params"].as_object().filter(|p| !p.is_empty()) {
        println!("  params: {}", p.iter().map(|(k, v)| format!("{k}={}", text(v))).collect::<Vec<_>>().join(" "));
    }
    if let Some(l) = plan["lock"].as_str() {
        println!("  lock: {l}");
    }
    if let Some(t) = plan["timeout"].as_str() {
        println!("  timeout: {t}");
    }
    println!();
    print_steps(plan["steps"].as_array().map(Vec::as_slice).unwrap_or_default(), 1);
    if let Some(rollback) = plan["on_failure"].as_array().filter(|r| !r.is_empty()) {
        println!("\non failure:");
        print_steps(rollback, 1);
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn print_steps(steps: &[Value], depth: usize) {
    let pad = "  ".repeat(depth);
    for (i, s) in steps.iter().enumerate() {
        let head = if depth == 1 { format!("{}. ", i + 1) } else { "- ".into() };
        println!("{pad}{head}{} [{}]", s["path"].as_str().unwrap_or(""), s["kind"].as_str().unwrap_or(""));
        if let Some(c) = s["condition"].as_str() {
            println!("{pad}     {c}");
        }
        let a = &s["action"];
        match s["kind"].as_str() {
            Some("shell") => {
                if let Some(script) = a["script"].as_str() {
                    for line in script.trim_end().lines() {
                        println!("{pad}     $ {line}");
                    }
                } else {
                    println!(
                        "{pad}     $ {}",
                        a["argv"]
                            .as_array()
                            .map(|x| crate::runbooks::actions::shell_words(&x.iter().map(text).collect::<Vec<_>>()))
                            .unwrap_or_default()
                    );
                }
                if let Some(env) = a["env"].as_object().filter(|e| !e.is_empty()) {
                    println!("{pad}     env: {}", env.iter().map(|(k, v)| format!("{k}={}", text(v))).collect::<Vec<_>>().join(" "));
                }
            }
            _ => {
                if let Some(m) = a.as_object() {
                    for (k, v) in m.iter().filter(|(_, v)| !v.is_null()) {
                        println!("{pad}     {k}: {}", text(v));
                    }
                }
            }
        }
        for n in s["notes"].as_array().into_iter().flatten() {
            println!("{pad}     ({})", n.as_str().unwrap_or(""));
        }
        if let Some(children) = s["children"].as_array().filter(|c| !c.is_empty()) {
            print_steps(children, depth + 2);
        }
    }
}

/// Streams a run's events until it ends; the exit code says how it ended.
pub async fn follow(remote: &Remote, id: i64, output: Output) -> u8 {
    let url = format!("{}/api/v1/runs/{id}/stream", remote.server.trim_end_matches('/'));
    let client = match crate::checks::http::build_client(&Default::default(), false) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let resp = match client.get(&url).bearer_auth(&remote.token).header("accept", "text/event-stream").send().await {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot reach steward at {}: {e}", remote.server)),
    };
    if !resp.status().is_success() {
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        return fail(&format!("{} ({status})", v["error"]["message"].as_str().unwrap_or("the server refused the request")));
    }
    let mut printer = Printer { fancy: fancy(), json: output == Output::Json, top_steps: 0, seen_top: Vec::new() };
    if let Ok(v) = remote.call("GET", &format!("/runs/{id}"), None).await
        && let Some(name) = v["run"]["runbook"].as_str()
        && let Ok(rb) = remote.call("GET", &format!("/runbooks/{name}"), None).await
    {
        printer.top_steps = rb["runbook"]["steps"].as_array().map_or(0, Vec::len);
    }
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return fail("the event stream broke off; the run goes on: `steward runs follow` to reattach");
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut kind = "message";
            let mut data = String::new();
            for line in block.lines() {
                if let Some(k) = line.strip_prefix("event:") {
                    kind = if k.trim() == "end" { "end" } else { "run_event" };
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            let Ok(v) = serde_json::from_str::<Value>(&data) else { continue };
            if kind == "end" {
                return printer.end(&v["run"]);
            }
            printer.event(&v);
        }
    }
    fail("the server closed the event stream before the run ended")
}

struct Printer {
    fancy: bool,
    json: bool,
    top_steps: usize,
    seen_top: Vec<String>,
}

impl Printer {
    fn event(&mut self, e: &Value) {
        if self.json {
            println!("{e}");
            return;
        }
        let kind = e["kind"].as_str().unwrap_or("");
        let msg = e["message"].as_str().unwrap_or("");
        let step = e["step"].as_str().unwrap_or("");
        let (dim, bold, red, green, yellow, reset) =
            if self.fancy { ("\x1b[2m", "\x1b[1m", "\x1b[31m", "\x1b[32m", "\x1b[33m", "\x1b[0m") } else { ("", "", "", "", "", "") };
        match kind {
            "output" => {
                let marker = if e["data"]["stream"] == "stderr" { "!" } else { "│" };
                println!("  {dim}{marker}{reset} {msg}");
            }
            "step_started" => {
                let top = !step.contains(['.', '[']);
                let counter = if top && self.top_steps > 0 && !self.seen_top.iter().any(|s| s == step) {
                    self.seen_top.push(step.to_string());
                    format!("[{}/{}] ", self.seen_top.len(), self.top_steps)
                } else {
                    String::new()
                };
                println!("{bold}▶ {counter}{msg}{reset}");
            }
            "step_succeeded" => println!("{green}✓{reset} {msg}"),
            "step_failed" => println!("{red}✗ {msg}{reset}"),
            "step_skipped" => println!("{dim}↷ {msg}{reset}"),
            "approval_requested" => {
                let run = e["run_id"].as_i64().unwrap_or_default();
                println!("{yellow}⏸ {msg}{reset}");
                println!("  approve: steward runs approve {run} --step {step}   deny: steward runs deny {run} --step {step}");
            }
            "approved" => println!("{green}✓ {msg}{reset}"),
            "denied" | "cancelled" | "run_interrupted" => println!("{red}■ {msg}{reset}"),
            "run_started" | "resumed" | "retried" => println!("{bold}{msg}{reset}"),
            _ => println!("{dim}· {msg}{reset}"),
        }
    }

    fn end(&self, run: &Value) -> u8 {
        let status = run["status"].as_str().unwrap_or("unknown");
        if self.json {
            println!("{}", json!({"kind": "end", "run": run}));
        } else {
            let id = run["id"].as_i64().unwrap_or_default();
            let detail = run["error"].as_str().map(|e| format!(": {e}")).unwrap_or_default();
            println!("run {id} {status}{detail}");
            if let Some(o) = run["outputs"].as_object().filter(|o| !o.is_empty()) {
                for (k, v) in o {
                    println!("  {k} = {}", text(v));
                }
            }
        }
        if status == "succeeded" { exit::OK } else { exit::FAILED }
    }
}

pub async fn runs(action: RunsAction) -> u8 {
    match action {
        RunsAction::List { remote, runbook, status, limit, before, output } => {
            let mut path = format!("/runs?limit={limit}");
            if let Some(r) = runbook {
                path.push_str(&format!("&runbook={}", url_encode(&r)));
            }
            if let Some(s) = status {
                path.push_str(&format!("&status={}", url_encode(&s)));
            }
            if let Some(b) = before {
                path.push_str(&format!("&before={b}"));
            }
            let v = match get_for_table(&remote.remote(), &path, output).await {
                Ok(v) => v,
                Err(code) => return code,
            };
            let rows: Vec<Vec<String>> = v["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        r["id"].to_string(),
                        r["runbook"].as_str().unwrap_or("").into(),
                        r["status"].as_str().unwrap_or("").into(),
                        ago(&r["created_at"]),
                        r["started_by"].as_str().unwrap_or("").into(),
                        r["trigger"].as_str().unwrap_or("").into(),
                        r["error"].as_str().unwrap_or("").chars().take(80).collect(),
                    ]
                })
                .collect();
            print_table(&["ID", "RUNBOOK", "STATUS", "STARTED", "BY", "TRIGGER", "ERROR"], &rows);
            if let Some(next) = v["next_before"].as_i64() {
                println!("more: --before {next}");
            }
            exit::OK
        }
        RunsAction::Show { remote, id, output } => show(&remote.remote(), id, output).await,
        RunsAction::Follow { remote, id, output } => follow(&remote.remote(), id, output).await,
        RunsAction::Approve(d) => decide(d, "approve").await,
        RunsAction::Deny(d) => decide(d, "deny").await,
        RunsAction::Cancel { remote, id, reason } => {
            match remote.remote().call("POST", &format!("/runs/{id}/cancel"), Some(json!({"reason": reason}))).await {
                Ok(v) => {
                    println!("run {id}: {}", v["run"]["status"].as_str().unwrap_or("cancelling"));
                    exit::OK
                }
                Err(e) => fail(&e),
            }
        }
        RunsAction::Resume(c) => continue_run(c, "resume").await,
        RunsAction::Retry(c) => continue_run(c, "retry").await,
        RunsAction::Audit { remote, runbook, actor, limit, output } => {
            let mut path = format!("/audit?limit={limit}");
            if let Some(r) = runbook {
                path.push_str(&format!("&runbook={}", url_encode(&r)));
            }
            if let Some(a) = actor {
                path.push_str(&format!("&actor={}", url_encode(&a)));
            }
            let v = match get_for_table(&remote.remote(), &path, output).await {
                Ok(v) => v,
                Err(code) => return code,
            };
            let rows: Vec<Vec<String>> = v["events"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    vec![
                        e["at"].as_str().unwrap_or("").chars().take(19).collect::<String>().replace('T', " "),
                        e["run_id"].to_string(),
                        e["kind"].as_str().unwrap_or("").into(),
                        e["actor"].as_str().unwrap_or("").into(),
                        e["message"].as_str().unwrap_or("").into(),
                    ]
                })
                .collect();
            print_table(&["AT (UTC)", "RUN", "WHAT", "WHO", "DETAIL"], &rows);
            exit::OK
        }
    }
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn show(remote: &Remote, id: i64, output: Output) -> u8 {
    let v = match get_for_table(remote, &format!("/runs/{id}"), output).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let r = &v["run"];
    println!("run {id} of {}: {}", r["runbook"].as_str().unwrap_or(""), r["status"].as_str().unwrap_or(""));
    println!("  started {} by {} ({})", ago(&r["created_at"]), r["started_by"].as_str().unwrap_or(""), r["trigger"].as_str().unwrap_or(""));
    if let Some(p) = r["params"].as_object().filter(|p| !p.is_empty()) {
        println!("  params: {}", p.iter().map(|(k, v)| format!("{k}={}", text(v))).collect::<Vec<_>>().join(" "));
    }
    if let Some(l) = r["lock"].as_str() {
        println!("  lock: {l}");
    }
    if let Some(e) = r["error"].as_str() {
        println!("  error: {e}");
    }
    for w in v["waiting_for_approval"].as_array().into_iter().flatten() {
        println!("  waits for approval at {}: steward runs approve {id} --step {}", text(w), text(w));
    }
    println!();
    let rows: Vec<Vec<String>> = v["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let took = match (s["started_at"].as_str(), s["finished_at"].as_str()) {
                (Some(a), Some(b)) => match (chrono::DateTime::parse_from_rfc3339(a), chrono::DateTime::parse_from_rfc3339(b)) {
                    (Ok(a), Ok(b)) => format!("{:.1}s", (b - a).num_milliseconds() as f64 / 1000.0),
                    _ => "-".into(),
                },
                _ => "-".into(),
            };
            vec![
                s["path"].as_str().unwrap_or("").into(),
                s["kind"].as_str().unwrap_or("").into(),
                s["attempt"].to_string(),
                s["status"].as_str().unwrap_or("").into(),
                took,
                s["error"].as_str().unwrap_or("").chars().take(100).collect(),
            ]
        })
        .collect();
    print_table(&["STEP", "KIND", "ATTEMPT", "STATUS", "TOOK", "ERROR"], &rows);
    if let Some(o) = r["outputs"].as_object().filter(|o| !o.is_empty()) {
        println!("\noutputs:");
        for (k, v) in o {
            println!("  {k} = {}", text(v));
        }
    }
    exit::OK
}

/// What a decision did, in words ("approve" → "approved", "deny" → "denied").
fn decided(verb: &str) -> &'static str {
    match verb {
        "approve" => "approved",
        "deny" => "denied",
        _ => "decided",
    }
}

async fn decide(d: Decide, verb: &str) -> u8 {
    let remote = d.remote.remote();
    match remote.call("POST", &format!("/runs/{}/{verb}", d.id), Some(json!({"step": d.step, "comment": d.comment}))).await {
        Ok(_) => {
            println!("run {}: {}", d.id, decided(verb));
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

async fn continue_run(c: Continue, verb: &str) -> u8 {
    let remote = c.remote.remote();
    match remote.call("POST", &format!("/runs/{}/{verb}", c.id), Some(json!({"from": c.from}))).await {
        Ok(_) if c.follow => follow(&remote, c.id, c.output).await,
        Ok(v) => {
            println!("run {}: {}", c.id, v["run"]["status"].as_str().unwrap_or("running"));
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

/// `steward runbooks [NAME]`: what can be run, with which parameters.
pub async fn list_runbooks(remote: &Remote, name: Option<&str>, output: Output) -> u8 {
    let path = match name {
        Some(n) => format!("/runbooks/{n}"),
        None => "/runbooks".into(),
    };
    let v = match get_for_table(remote, &path, output).await {
        Ok(v) => v,
        Err(code) => return code,
    };
    let list: Vec<Value> = match name {
        Some(_) => vec![v["runbook"].clone()],
        None => v["runbooks"].as_array().cloned().unwrap_or_default(),
    };
    if name.is_some() {
        let rb = &list[0];
        println!("{}: {}", rb["name"].as_str().unwrap_or(""), rb["description"].as_str().unwrap_or(""));
        for p in rb["params"].as_array().into_iter().flatten() {
            let req = if p["required"] == true { " (required)" } else { "" };
            let default = if p["default"].is_null() { String::new() } else { format!(" default {}", text(&p["default"])) };
            println!(
                "  -p {}=<{}>{req}{default}  {}",
                p["name"].as_str().unwrap_or(""),
                p["type"].as_str().unwrap_or(""),
                p["description"].as_str().unwrap_or("")
            );
        }
        for (i, s) in rb["steps"].as_array().into_iter().flatten().enumerate() {
            println!("  {}. {} [{}]", i + 1, s["name"].as_str().unwrap_or(""), s["kind"].as_str().unwrap_or(""));
        }
        return exit::OK;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|rb| {
            vec![
                rb["name"].as_str().unwrap_or("").into(),
                rb["params"]
                    .as_array()
                    .map(|p| p.iter().map(|p| p["name"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>().join(","))
                    .unwrap_or_default(),
                rb["steps"].as_array().map_or(0, Vec::len).to_string(),
                rb["schedules"]
                    .as_array()
                    .map(|s| s.iter().map(|s| s["cron"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>().join("; "))
                    .unwrap_or_default(),
                rb["description"].as_str().unwrap_or("").into(),
            ]
        })
        .collect();
    print_table(&["RUNBOOK", "PARAMS", "STEPS", "SCHEDULE", "DESCRIPTION"], &rows);
    exit::OK
}

#[cfg(test)]
mod tests {
    #[test]
    fn decisions_are_said_in_words() {
        assert_eq!(super::decided("approve"), "approved");
        assert_eq!(super::decided("deny"), "denied");
    }
}
