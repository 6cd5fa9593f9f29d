//! Checks: run one probe against a real target and judge the result.
//!
//! # Layout
//! - `condition`: the `<path> <op> <value>` language.
//! - one module per protocol (`http`, `tcp`, `tls`, `websocket`, `dns`, `sql`, `redis`,
//!   `mongodb`, `cql`, `nats`, `command`; `backup` and `heartbeat` read the store), each
//!   turning a target into an *observation*: a JSON object that conditions read.
//! - `state`: consecutive-result thresholds that turn runs into healthy/unhealthy.
//! - `scheduler`: runs every check on its own interval; `live`: the subsystem's
//!   context ([`Checks`]), which holds the live states and folds each run into them.
//!
//! **Architecture invariant:** a failing target is data. [`Prober::run`] always returns an
//! [`Outcome`] with a reason; no probe error escapes as `Err` or panic.

mod backup;
mod command;
mod cql;
mod dns;
mod heartbeat;
pub(crate) mod http;
mod live;
mod mongodb;
mod nats;
pub(crate) mod redis;
pub mod scheduler;
pub(crate) mod sql;
mod tcp;
mod tls;
mod wal;
mod websocket;

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value as Json};

pub use live::{Checks, ReloadedChecks};
/// Outcomes, states and the condition language: the model layer's.
pub use steward_model::checks::*;

use crate::config::secret::Redactor;
use crate::config::{CheckSpec, Probe};
use crate::store::{BackupStore, CheckStore};

/// Runs probes. Holds what probes share (HTTP connection pools, TLS roots) and is
/// rebuilt on reload together with the configuration.
pub struct Prober {
    http: http::Clients,
    redactor: Redactor,
    /// Where backup checks read backups from (the server's store).
    backups: Option<Arc<dyn BackupStore>>,
    /// Where heartbeat checks read the signals jobs sent (the server's store).
    heartbeats: Option<Arc<dyn CheckStore>>,
    /// The configuration in force: WAL checks open their policy's repository with it.
    config: Option<Arc<crate::config::Config>>,
}

impl Prober {
    pub fn new(redactor: Redactor) -> Prober {
        Prober { http: http::Clients::default(), redactor, backups: None, heartbeats: None, config: None }
    }

    /// A prober whose WAL checks find their policy's repository in `config`.
    pub fn with_config(mut self, config: Arc<crate::config::Config>) -> Prober {
        self.config = Some(config);
        self
    }

    /// A prober whose backup checks read `backups` and heartbeat checks `heartbeats`.
    pub fn with_stores(mut self, backups: Arc<dyn BackupStore>, heartbeats: Arc<dyn CheckStore>) -> Prober {
        self.backups = Some(backups);
        self.heartbeats = Some(heartbeats);
        self
    }

    /// Runs `spec` once: probe under the check's timeout, then every condition.
    pub async fn run(&self, spec: &CheckSpec) -> Outcome {
        let at = crate::clock::now();
        let started = Instant::now();
        let observed = tokio::time::timeout(spec.timeout, self.observe(spec)).await;
        let latency = started.elapsed();
        let mut values = std::collections::BTreeMap::new();
        let result = match observed {
            Err(_) => Err(format!("timed out after {}", crate::config::duration::format_duration(spec.timeout))),
            Ok(Err(reason)) => Err(reason),
            Ok(Ok(mut obs)) => {
                obs.insert("response_time".into(), Json::from(latency.as_secs_f64() * 1000.0));
                let obs = Json::Object(obs);
                values.extend(spec.record.iter().filter_map(|f| Some((f.source.clone(), f.read(&obs)?))));
                judge(spec, &obs)
            }
        };
        Outcome { healthy: result.is_ok(), latency, reason: result.err().map(|r| self.redactor.redact(&r).into_owned()), at, values }
    }

    async fn observe(&self, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
        match &spec.probe {
            Probe::Http(p) => http::observe(&self.http, p, spec).await,
            Probe::Tcp { address } => tcp::observe(address).await,
            Probe::Postgres(p) => sql::observe_postgres(p, spec).await,
            Probe::Mysql(p) => sql::observe_mysql(p, spec).await,
            Probe::Redis { url } => redis::observe(url, spec).await,
            Probe::Mongodb { url } => mongodb::observe(url, spec).await,
            Probe::Cql(p) => cql::observe(p, spec).await,
            Probe::Nats(p) => nats::observe(p, spec).await,
            Probe::Command(p) => command::observe(p, spec).await,
            Probe::Backup(p) => backup::observe(self.backups.as_ref(), p).await,
            Probe::Wal(p) => wal::observe(self.config.as_ref(), p).await,
            Probe::Heartbeat(p) => heartbeat::observe(self.heartbeats.as_ref(), &spec.name, p).await,
            Probe::Tls(p) => tls::observe(p).await,
            Probe::Websocket(p) => websocket::observe(p, spec).await,
            Probe::Dns(p) => dns::observe(p, spec).await,
        }
    }
}

/// Every condition must hold; the first that does not gives the reason.
fn judge(spec: &CheckSpec, obs: &Json) -> Result<(), String> {
    for c in &spec.conditions {
        c.evaluate(obs).map_err(|reason| explain_unsupported(reason, c, obs))?;
    }
    Ok(())
}

/// SQL probes list columns whose type conditions cannot read under `_unsupported`;
/// a condition that trips over one gets told how to fix the query.
fn explain_unsupported(reason: String, c: &condition::Condition, obs: &Json) -> String {
    if let (Some(condition::Segment::Key(col)), Some(Json::Object(unsupported))) = (c.path.get(1), obs.get("_unsupported"))
        && let Some(ty) = unsupported.get(col).and_then(Json::as_str)
    {
        return format!(
            "condition `{}` cannot be evaluated: column `{col}` has type {ty}, which conditions cannot read; cast it in the query (e.g. `{col}::text`, or EXTRACT(EPOCH FROM {col}) for times)",
            c.source
        );
    }
    reason
}

/// Reads at most `limit` bytes; the flag is true when the reader had more.
async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(mut reader: R, limit: usize) -> std::io::Result<(Vec<u8>, bool)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let mut truncated = false;
    loop {
        let n = reader.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        let room = limit.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
        if n > room {
            truncated = true;
            // Keep draining so the writer is not blocked on a full pipe.
        }
    }
    Ok((buf, truncated))
}
