//! The steps that touch the world, already rendered: a process, an HTTP request, a SQL
//! statement, a Redis command. Each returns a [`StepOutcome`]; none returns `Err` or
//! panics on a failing target — a failure is data the run records.
//!
//! Timeouts and cancellation are the caller's: dropping the future of
//! [`StepAction::perform`] stops it, and a process step's whole process group with it.

use std::process::Stdio;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{Map, Value as Json, json};
use sqlx::{Column, ConnectOptions, Connection, Row};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::config::runbooks::SqlEngine;

/// Bytes of stdout kept for `steps.NAME.stdout` and JSON parsing.
const STDOUT_LIMIT: usize = 1 << 20;
const STDERR_LIMIT: usize = 64 << 10;
/// Lines longer than this are cut (the rest of the line is dropped from the event
/// stream; the step's stdout keeps it). Not split: a secret across two pieces would
/// escape redaction, which works on whole pieces of text.
const LINE_LIMIT: usize = 16 << 10;
/// Marks a cut line; the collector masks what could be the start of a secret there.
pub const CUT: &str = " …(line cut)";
const ROW_LIMIT: usize = 10_000;
const BODY_LIMIT: usize = 1 << 20;

/// A line of output as it happens: (`stdout` or `stderr`, text).
pub type OutputLine = (&'static str, String);

/// A rendered action, ready to perform.
#[derive(Debug, Clone)]
pub enum StepAction {
    Process { argv: Vec<String>, env: Vec<(String, String)>, workdir: Option<std::path::PathBuf> },
    Http { method: String, url: String, headers: Vec<(String, String)>, body: Option<String>, expect_status: Vec<u16> },
    Sql { engine: SqlEngine, url: String, query: String, args: Vec<String> },
    Redis { url: String, command: Vec<String> },
}

/// How an action ended.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    pub ok: bool,
    /// What later steps read (`steps.NAME.…`): stdout/exit_code, http_status/json, rows…
    pub result: Map<String, Json>,
    pub error: Option<String>,
}

impl StepOutcome {
    fn failed(error: impl Into<String>) -> StepOutcome {
        StepOutcome { ok: false, result: Map::new(), error: Some(error.into()) }
    }
}

impl StepAction {
    /// What the record shows it was about to do (the caller redacts it). Environment
    /// values are shown for the names the runbook set, never the inherited ones.
    pub fn detail(&self) -> Json {
        match self {
            StepAction::Process { argv, env, workdir } => json!({
                "argv": argv,
                "env": env.iter().map(|(k, v)| (k.clone(), Json::from(v.clone()))).collect::<Map<_, _>>(),
                "workdir": workdir,
            }),
            StepAction::Http { method, url, headers, body, .. } => json!({
                "method": method, "url": url,
                "headers": headers.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                "body": body,
            }),
            StepAction::Sql { query, args, url, .. } => json!({
                "target": crate::config::secret::redact_url_password(url),
                "query": query, "args": args,
            }),
            StepAction::Redis { url, command } => json!({
                "target": crate::config::secret::redact_url_password(url),
                "command": command,
            }),
        }
    }

    /// One line for progress displays.
    /// One line for people: argv as a shell would need it typed (`sh -c 'sleep 1; echo x'`).
    pub fn summary(&self) -> String {
        match self {
            StepAction::Process { argv, .. } => {
                let line: String = shell_words(argv).chars().take(160).collect();
                line.replace('\n', " ⏎ ")
            }
            StepAction::Http { method, url, .. } => format!("{method} {}", crate::config::secret::redact_url_password(url)),
            StepAction::Sql { query, .. } => query.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(160).collect(),
            StepAction::Redis { command, .. } => command.join(" "),
        }
    }

    pub async fn perform(&self, output: &mpsc::UnboundedSender<OutputLine>) -> StepOutcome {
        match self {
            StepAction::Process { argv, env, workdir } => process(argv, env, workdir.as_deref(), output).await,
            StepAction::Http { method, url, headers, body, expect_status } => {
                http(method, url, headers, body.as_deref(), expect_status).await
            }
            StepAction::Sql { engine, url, query, args } => sql(*engine, url, query, args).await,
            StepAction::Redis { url, command } => redis(url, command).await,
        }
    }
}

/// Kills a process group when dropped (timeout, cancellation): SIGTERM, then SIGKILL
/// two seconds later for whatever ignored it.
struct ProcessGroup(i32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        let pgid = self.0;
        // SAFETY: kill(2) on a negative pid signals the process group we created with
        // process_group(0); it has no memory-safety preconditions.
        unsafe {
            libc::kill(-pgid, libc::SIGTERM);
        }
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(2));
            // SAFETY: as above.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        });
    }
}

/// The step's process is killed if steward dies (kill -9, OOM) while it runs, instead
/// of running on unwatched: another replica marks the run interrupted and an operator
/// may resume it, and the old process must not be racing the new attempt. (Under
/// systemd or in a container the service's cgroup is cleaned up too; a bare process is
/// not.) Linux's parent-death signal follows the thread that spawned the child, and
/// tokio's worker threads live as long as the runtime, so it fires only when steward
/// goes.
fn die_with_steward(cmd: &mut Command) {
    // SAFETY: getpid(2) has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the forked child before exec and calls only
    // async-signal-safe functions (prctl, getppid), allocating nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Steward died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("steward exited while starting the step"));
            }
            Ok(())
        });
    }
}

async fn process(
    argv: &[String],
    env: &[(String, String)],
    workdir: Option<&std::path::Path>,
    output: &mpsc::UnboundedSender<OutputLine>,
) -> StepOutcome {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        // Nothing inherited: steward's own environment holds the secrets its
        // configuration references, and a script must not see them unasked.
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = workdir {
        cmd.current_dir(dir);
    }
    die_with_steward(&mut cmd);
    let spawned = std::time::Instant::now();
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return StepOutcome::failed(format!("cannot start `{}`: {e}", argv[0])),
    };
    let group = child.id().map(|pid| ProcessGroup(pid as i32));
    let stdout = tokio::spawn(read_lines(child.stdout.take().expect("piped"), "stdout", STDOUT_LIMIT, output.clone()));
    let stderr = tokio::spawn(read_lines(child.stderr.take().expect("piped"), "stderr", STDERR_LIMIT, output.clone()));
    let status = child.wait().await;
    let command_ms = spawned.elapsed().as_secs_f64() * 1000.0;
    // The process is gone; its group stays alone unless the step is stopped. Whatever it
    // left in the background may hold the pipes open, so stop reading soon after.
    if let Some(g) = group {
        std::mem::forget(g);
    }
    let (mut out, mut err) = (String::new(), String::new());
    let drained = tokio::time::timeout(Duration::from_millis(500), async {
        if let Ok(s) = (&mut { stdout }).await {
            out = s;
        }
        if let Ok(s) = (&mut { stderr }).await {
            err = s;
        }
    })
    .await;
    if drained.is_err() {
        let _ = output.send(("stderr", "(output after the process exited is not captured: a background process holds its pipes)".into()));
    }
    let status = match status {
        Ok(s) => s,
        Err(e) => return StepOutcome::failed(format!("waiting for `{}` failed: {e}", argv[0])),
    };
    let mut result = Map::new();
    result.insert("exit_code".into(), status.code().map_or(Json::Null, Json::from));
    // The process's own time, spawn to exit: what the engine's overhead is measured against.
    result.insert("command_ms".into(), Json::from((command_ms * 1000.0).round() / 1000.0));
    let trimmed = out.trim_end().to_string();
    result.insert("json".into(), serde_json::from_str::<Json>(trimmed.trim()).unwrap_or(Json::Null));
    result.insert("stdout".into(), Json::from(trimmed));
    result.insert("stderr".into(), Json::from(err.trim_end().to_string()));
    match status.code() {
        Some(0) => StepOutcome { ok: true, result, error: None },
        Some(code) => {
            // The last thing said on stderr is usually the reason; else the last of stdout.
            let said = |text: &str| text.lines().rfind(|l| !l.trim().is_empty()).map(str::to_string);
            let last = said(&err).or_else(|| said(&out)).unwrap_or_default().chars().take(300).collect::<String>();
            let detail = if last.is_empty() { String::new() } else { format!(": {last}") };
            StepOutcome { ok: false, result, error: Some(format!("`{}` exited with code {code}{detail}", argv[0])) }
        }
        None => StepOutcome { ok: false, result, error: Some(format!("`{}` was killed by a signal", argv[0])) },
    }
}

/// Streams lines to `output` and returns the first `limit` bytes of the text.
async fn read_lines<R: tokio::io::AsyncRead + Unpin>(
    mut reader: R,
    stream: &'static str,
    limit: usize,
    output: mpsc::UnboundedSender<OutputLine>,
) -> String {
    let mut kept = Vec::new();
    let mut line = Vec::new();
    let mut cut = false;
    let mut chunk = [0u8; 8192];
    loop {
        let n = match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let room = limit.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
        for &b in &chunk[..n] {
            if b == b'\n' {
                let mut text = String::from_utf8_lossy(&line).into_owned();
                if cut {
                    text.push_str(CUT);
                }
                let _ = output.send((stream, text));
                line.clear();
                cut = false;
            } else if line.len() < LINE_LIMIT {
                line.push(b);
            } else {
                cut = true;
            }
        }
    }
    if !line.is_empty() {
        let mut text = String::from_utf8_lossy(&line).into_owned();
        if cut {
            text.push_str(CUT);
        }
        let _ = output.send((stream, text));
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn http_client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT.get_or_init(|| crate::checks::http::build_client(&Default::default(), true)).as_ref().map_err(Clone::clone)
}

async fn http(method: &str, url: &str, headers: &[(String, String)], body: Option<&str>, expect: &[u16]) -> StepOutcome {
    let client = match http_client() {
        Ok(c) => c,
        Err(e) => return StepOutcome::failed(e),
    };
    let method = reqwest::Method::from_str(method).unwrap_or(reqwest::Method::GET);
    let mut req = client.request(method, url);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(b) = body {
        if serde_json::from_str::<Json>(b).is_ok() && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            req = req.header("content-type", "application/json");
        }
        req = req.body(b.to_string());
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return StepOutcome::failed(crate::checks::http::describe(&e)),
    };
    let status = resp.status().as_u16();
    let mut bytes = Vec::new();
    let mut stream = resp;
    while let Ok(Some(chunk)) = stream.chunk().await {
        bytes.extend_from_slice(&chunk[..chunk.len().min(BODY_LIMIT.saturating_sub(bytes.len()))]);
        if bytes.len() >= BODY_LIMIT {
            break;
        }
    }
    let body = String::from_utf8_lossy(&bytes).into_owned();
    let mut result = Map::new();
    result.insert("http_status".into(), Json::from(status));
    result.insert("json".into(), serde_json::from_str::<Json>(&body).unwrap_or(Json::Null));
    result.insert("body".into(), Json::from(body.clone()));
    let ok = if expect.is_empty() { (200..300).contains(&status) } else { expect.contains(&status) };
    let error = (!ok).then(|| {
        let snippet: String = body.trim().chars().take(200).collect();
        let wanted = if expect.is_empty() { "2xx".to_string() } else { format!("{expect:?}") };
        format!("HTTP {status} (expected {wanted}){}", if snippet.is_empty() { String::new() } else { format!(": {snippet}") })
    });
    StepOutcome { ok, result, error }
}

/// Statements that return rows are fetched; others report the rows they changed.
fn returns_rows(query: &str) -> bool {
    let q = query.trim_start().to_ascii_lowercase();
    ["select", "with", "show", "values", "explain", "table"].iter().any(|k| q.starts_with(k)) || q.contains(" returning ")
}

async fn sql(engine: SqlEngine, url: &str, query: &str, args: &[String]) -> StepOutcome {
    use crate::checks::sql::{db_error, mysql_column, pg_column};
    macro_rules! run {
        ($opts:expr, $decode:expr) => {{
            let mut conn = match $opts.connect().await {
                Ok(c) => c,
                Err(e) => return StepOutcome::failed(format!("cannot connect: {}", db_error(&e))),
            };
            let mut q = sqlx::query(sqlx::AssertSqlSafe(query));
            for a in args {
                q = q.bind(a.as_str());
            }
            let mut result = Map::new();
            if returns_rows(query) {
                let rows = match q.fetch_all(&mut conn).await {
                    Ok(r) => r,
                    Err(e) => return StepOutcome::failed(format!("query failed: {}", db_error(&e))),
                };
                let decoded: Vec<Json> = rows
                    .iter()
                    .take(ROW_LIMIT)
                    .map(|row| {
                        Json::Object(
                            row.columns()
                                .iter()
                                .enumerate()
                                .map(|(i, c)| (c.name().to_string(), $decode(row, i).unwrap_or(Json::Null)))
                                .collect(),
                        )
                    })
                    .collect();
                result.insert("row".into(), decoded.first().cloned().unwrap_or(Json::Null));
                result.insert("row_count".into(), Json::from(rows.len()));
                result.insert("rows".into(), Json::Array(decoded));
            } else {
                match q.execute(&mut conn).await {
                    Ok(done) => {
                        result.insert("rows_affected".into(), Json::from(done.rows_affected()));
                    }
                    Err(e) => return StepOutcome::failed(format!("statement failed: {}", db_error(&e))),
                }
            }
            let _ = conn.close().await;
            StepOutcome { ok: true, result, error: None }
        }};
    }
    match engine {
        SqlEngine::Postgres => {
            let opts = match sqlx::postgres::PgConnectOptions::from_str(url) {
                Ok(o) => o.application_name("steward-runbook").statement_cache_capacity(0).log_statements(tracing::log::LevelFilter::Trace),
                Err(e) => return StepOutcome::failed(format!("invalid postgres url: {e}")),
            };
            run!(opts, pg_column)
        }
        SqlEngine::Mysql => {
            let opts = match sqlx::mysql::MySqlConnectOptions::from_str(url) {
                Ok(o) => o.statement_cache_capacity(0).log_statements(tracing::log::LevelFilter::Trace),
                Err(e) => return StepOutcome::failed(format!("invalid mysql url: {e}")),
            };
            run!(opts, mysql_column)
        }
    }
}

async fn redis(url: &str, command: &[String]) -> StepOutcome {
    let client = match redis::Client::open(url) {
        Ok(c) => c,
        Err(e) => return StepOutcome::failed(format!("invalid redis url: {e}")),
    };
    let mut conn = match client.get_multiplexed_async_connection().await {
        Ok(c) => c,
        Err(e) => return StepOutcome::failed(format!("cannot connect: {e}")),
    };
    let mut cmd = redis::cmd(&command[0]);
    for a in &command[1..] {
        cmd.arg(a);
    }
    match cmd.query_async::<redis::Value>(&mut conn).await {
        Ok(v) => {
            let mut result = Map::new();
            result.insert("reply".into(), redis_json(v));
            StepOutcome { ok: true, result, error: None }
        }
        Err(e) => StepOutcome::failed(format!("{} failed: {e}", command[0])),
    }
}

fn redis_json(v: redis::Value) -> Json {
    use redis::Value as V;
    match v {
        V::Nil => Json::Null,
        V::Int(i) => Json::from(i),
        V::BulkString(b) => Json::from(String::from_utf8_lossy(&b).into_owned()),
        V::SimpleString(s) => Json::from(s),
        V::Okay => Json::from("OK"),
        V::Double(f) => Json::from(f),
        V::Boolean(b) => Json::from(b),
        V::Array(items) | V::Set(items) => Json::Array(items.into_iter().map(redis_json).collect()),
        V::Map(pairs) => Json::Object(
            pairs
                .into_iter()
                .map(|(k, v)| {
                    let key = match redis_json(k) {
                        Json::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, redis_json(v))
                })
                .collect(),
        ),
        V::VerbatimString { text, .. } => Json::from(text),
        V::Attribute { data, .. } => redis_json(*data),
        other => Json::from(format!("{other:?}")),
    }
}

/// argv quoted for a POSIX shell, so what is shown can be read unambiguously and pasted.
pub fn shell_words(argv: &[String]) -> String {
    shlex::try_join(argv.iter().map(String::as_str)).unwrap_or_else(|_| format!("{argv:?}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn argv_is_shown_shell_quoted() {
        let argv: Vec<String> = ["sh", "-c", "sleep 1; echo restarted", "it's"].map(String::from).to_vec();
        assert_eq!(super::shell_words(&argv), r#"sh -c 'sleep 1; echo restarted' "it's""#);
    }

    use super::*;

    #[test]
    fn statements_that_return_rows() {
        assert!(returns_rows("  SELECT 1"));
        assert!(returns_rows("with x as (select 1) select * from x"));
        assert!(returns_rows("UPDATE t SET a = 1 RETURNING id"));
        assert!(!returns_rows("UPDATE t SET a = 1"));
        assert!(!returns_rows("CHECKPOINT"));
    }
}
