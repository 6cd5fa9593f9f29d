//! The validated configuration: what the rest of Steward reads. Every value here has
//! passed validation, so downstream code never re-checks it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use super::alerting::{AlertCondition, AlertRule, Cmp, GroupBy, InhibitRule, Route};
pub use super::backups::{BackupPolicy, BackupSource, PgFormat, PgMode, Repository, RepositoryKind, Retention};
use super::diagnostics::Pos;
pub use super::incidents::{EscalationLevel, EscalationPolicy, IncidentPolicy, IncidentsConfig, Person};
pub use super::prometheus::PrometheusSource;
pub use super::receivers::{EmailReceiver, Receiver, ReceiverKind, SmtpTls};
pub use super::runbooks::Runbook;
use super::secret::{Redactor, SecretString};
pub use crate::alerting::time_interval::{MaintenanceWindow, TimeInterval};
use crate::checks::condition::Condition;

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub services: Vec<Service>,
    pub checks: Vec<CheckSpec>,
    pub alerts: Vec<AlertRule>,
    pub receivers: Vec<Receiver>,
    /// The routing tree; `None` when no receiver is configured (alerts are only recorded).
    pub route: Option<Route>,
    pub inhibit_rules: Vec<InhibitRule>,
    pub time_intervals: Vec<TimeInterval>,
    pub maintenance_windows: Vec<MaintenanceWindow>,
    /// The server PromQL rules are evaluated by.
    pub prometheus: Option<PrometheusSource>,
    /// Incident policies, escalation, on-call; empty when not configured.
    pub incidents: IncidentsConfig,
    pub runbooks: Vec<Runbook>,
    pub repositories: Vec<Repository>,
    pub backups: Vec<BackupPolicy>,
    /// Service level objectives; their burn-rate alert rules are among `alerts`.
    pub slos: Vec<super::slos::Slo>,
    /// Where the state is kept when not in the data directory's SQLite file. Read when
    /// the server starts (a reload cannot move a running server's store).
    pub store: Option<StoreSpec>,
    /// Things worth knowing that are not errors (e.g. skipped recording rules).
    pub notes: Vec<super::diagnostics::Diagnostic>,
    /// Scrubs every resolved secret from text that leaves the process.
    pub redactor: Redactor,
    /// The files read, for `validate` output and reload logs.
    pub files: Vec<PathBuf>,
}

/// A shared store: a PostgreSQL URL, its password by secret reference.
#[derive(Debug, Clone)]
pub struct StoreSpec {
    pub url: SecretString,
    pub pos: Pos,
}

impl Config {
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn check(&self, name: &str) -> Option<&CheckSpec> {
        self.checks.iter().find(|c| c.name == name)
    }

    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }

    pub fn alert(&self, name: &str) -> Option<&AlertRule> {
        self.alerts.iter().find(|r| r.name == name)
    }

    pub fn runbook(&self, name: &str) -> Option<&Runbook> {
        self.runbooks.iter().find(|r| r.name == name)
    }

    pub fn backup(&self, name: &str) -> Option<&BackupPolicy> {
        self.backups.iter().find(|b| b.name == name)
    }

    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories.iter().find(|r| r.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    /// Criticality, 1 (most critical) to 4, as in the chat-platform guide's tiers.
    pub tier: u8,
    pub owner: Option<String>,
    /// Services this one needs; later used to suppress alerts whose cause is upstream.
    pub depends_on: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct CheckSpec {
    pub name: String,
    pub service: Option<String>,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive failures before the check turns unhealthy.
    pub failure_threshold: u32,
    /// Consecutive successes before an unhealthy check is healthy again.
    pub success_threshold: u32,
    pub labels: BTreeMap<String, String>,
    pub probe: Probe,
    /// Every condition must hold for a run to succeed.
    pub conditions: Vec<Condition>,
    /// Fields of the observation recorded with each run, because a forecast reads them
    /// (derived from the `forecast:` rules over this check, not written by hand).
    pub record: Vec<crate::checks::condition::Field>,
    pub pos: Pos,
}

impl CheckSpec {
    /// Whether any condition reads below `root` (e.g. the HTTP body, Redis INFO).
    pub fn reads(&self, root: &str) -> bool {
        self.conditions.iter().any(|c| c.root() == root) || self.record.iter().any(|f| f.root() == root)
    }

    /// Whether `other` would run exactly like this one, so a reload can keep its
    /// schedule (and not re-probe everything at once) when nothing changed.
    pub fn runs_like(&self, other: &CheckSpec) -> bool {
        self.interval == other.interval
            && self.timeout == other.timeout
            && self.probe == other.probe
            && self.failure_threshold == other.failure_threshold
            && self.success_threshold == other.success_threshold
            && self.service == other.service
            && self.labels == other.labels
            && self.conditions.iter().map(|c| &c.source).eq(other.conditions.iter().map(|c| &c.source))
            && self.record == other.record
    }
}

/// What a check talks to, one variant per protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    Http(HttpProbe),
    Tcp {
        address: String,
    },
    Postgres(SqlProbe),
    Mysql(SqlProbe),
    Redis {
        url: SecretString,
    },
    Nats(NatsProbe),
    Command(CommandProbe),
    /// Backup freshness, read from the store: is the newest (verified) backup of a
    /// policy younger than `max_age`?
    Backup(BackupProbe),
    /// PostgreSQL's WAL archive of a backup policy: lag and continuity.
    Wal(WalProbe),
    /// A TLS handshake with any TLS endpoint: chain verified, certificate expiry read.
    Tls(TlsProbe),
    /// A WebSocket upgrade, optionally a message sent and the first reply read.
    Websocket(WebsocketProbe),
    /// A DNS query: the answers, their count and TTL, and how long the server took.
    Dns(DnsProbe),
    /// A push check: a job signals `POST /api/v1/heartbeats/NAME` each time it runs;
    /// the check fails when none arrived within its period plus grace, or when the
    /// last signal said the job failed.
    Heartbeat(HeartbeatProbe),
    /// MongoDB: `ping` and the server's version, and the replica set's members and
    /// replication lag when a condition reads `replication`.
    Mongodb {
        url: SecretString,
    },
    /// Cassandra or ScyllaDB over CQL: the nodes the cluster knows, the local node, and
    /// a query's first row.
    Cql(CqlProbe),
}

impl Probe {
    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Http(_) => "http",
            Probe::Tcp { .. } => "tcp",
            Probe::Postgres(_) => "postgres",
            Probe::Mysql(_) => "mysql",
            Probe::Redis { .. } => "redis",
            Probe::Nats(_) => "nats",
            Probe::Command(_) => "command",
            Probe::Backup(_) => "backup",
            Probe::Wal(_) => "wal",
            Probe::Tls(_) => "tls",
            Probe::Websocket(_) => "websocket",
            Probe::Dns(_) => "dns",
            Probe::Heartbeat(_) => "heartbeat",
            Probe::Mongodb { .. } => "mongodb",
            Probe::Cql(_) => "cql",
        }
    }

    /// The fields conditions may read for this kind of probe.
    pub fn condition_roots(kind: &str) -> &'static [&'static str] {
        match kind {
            "http" => &["status", "body", "headers", "response_time", "cert"],
            "tcp" => &["response_time"],
            "postgres" | "mysql" => &["row", "rows", "response_time"],
            "redis" => &["info", "response_time"],
            "nats" => &["stream", "consumer", "server", "response_time"],
            "command" => &["exit_code", "stdout", "stderr", "response_time"],
            "backup" => &["backup", "response_time"],
            "wal" => &["wal", "response_time"],
            "tls" => &["cert", "chain", "protocol", "response_time"],
            "websocket" => &["reply", "response_time"],
            "dns" => &["answers", "count", "ttl", "response_time"],
            "heartbeat" => &["heartbeat", "response_time"],
            "mongodb" => &["server", "replication", "response_time"],
            "cql" => &["cluster", "row", "rows", "response_time"],
            _ => &[],
        }
    }

    /// The target for display; passwords are never part of it.
    pub fn target(&self) -> String {
        use super::secret::redact_url_password;
        match self {
            Probe::Http(h) => redact_url_password(h.url.written()).into_owned(),
            Probe::Tcp { address } => address.clone(),
            Probe::Postgres(s) | Probe::Mysql(s) => redact_url_password(s.url.written()).into_owned(),
            Probe::Redis { url } => redact_url_password(url.written()).into_owned(),
            Probe::Nats(n) => redact_url_password(n.url.written()).into_owned(),
            Probe::Command(c) => c.argv.iter().map(|a| a.written()).collect::<Vec<_>>().join(" "),
            Probe::Backup(b) => format!("backup policy {}", b.policy),
            Probe::Wal(w) => format!("WAL archive of policy {}", w.policy),
            Probe::Tls(t) => t.address.clone(),
            Probe::Websocket(w) => redact_url_password(w.url.written()).into_owned(),
            Probe::Mongodb { url } => redact_url_password(url.written()).into_owned(),
            Probe::Cql(c) => c.hosts.join(","),
            Probe::Heartbeat(h) => format!(
                "a signal every {} (+{} grace)",
                super::duration::format_duration(h.period),
                super::duration::format_duration(h.grace)
            ),
            Probe::Dns(q) => match &q.server {
                Some(server) => format!("{} {} @{server}", q.record_type, q.name),
                None => format!("{} {}", q.record_type, q.name),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpProbe {
    pub url: SecretString,
    pub method: String,
    pub headers: Vec<(String, SecretString)>,
    pub body: Option<SecretString>,
    /// Accepted status codes; empty means any 2xx.
    pub expect_status: Vec<u16>,
    pub follow_redirects: bool,
    /// A body larger than this fails the check instead of filling memory.
    pub max_body_bytes: usize,
    pub tls: TlsOptions,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TlsOptions {
    /// Accept any certificate. For lab targets only; `cert.days_left` still works.
    pub insecure_skip_verify: bool,
    /// A PEM bundle of extra roots to trust (a private CA).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WebsocketProbe {
    /// `ws://` or `wss://`.
    pub url: SecretString,
    /// Sent with the upgrade request (an `Authorization`, a cookie).
    pub headers: Vec<(String, SecretString)>,
    /// A text message sent once connected; the first reply is then read.
    pub send: Option<SecretString>,
    /// Wait for a first message even without `send` (a server that greets) — implied
    /// when a condition reads `reply`.
    pub expect_reply: bool,
    /// A reply larger than this fails the check.
    pub max_reply_bytes: usize,
    pub tls: TlsOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CqlProbe {
    /// `host:port` of the nodes to contact first (the driver finds the others).
    pub hosts: Vec<String>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    /// Run as written, never templated; its first row is `row`.
    pub query: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HeartbeatProbe {
    /// How often the job runs.
    pub period: Duration,
    /// How late a signal may be before the check fails (a job's run time varies).
    pub grace: Duration,
    /// What the job sends as `Authorization: Bearer …`: this check's own secret, so a
    /// job holds no API token.
    pub token: SecretString,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsProbe {
    pub name: String,
    /// One of [`DNS_RECORD_TYPES`].
    pub record_type: String,
    /// `ip:port` of the server to ask; the system's resolvers when unset.
    pub server: Option<std::net::SocketAddr>,
    /// Answers that must all be among those returned (`10.0.0.1`, `10 mail.example.com.`).
    pub expect: Vec<String>,
}

/// The record types a `dns` probe asks for.
pub const DNS_RECORD_TYPES: &[&str] = &["A", "AAAA", "CNAME", "MX", "NS", "TXT", "SRV", "CAA", "PTR", "SOA"];

#[derive(Debug, Clone, PartialEq)]
pub struct TlsProbe {
    /// `host:port` of the endpoint.
    pub address: String,
    /// The name the certificate must be valid for; the address's host when unset.
    pub server_name: Option<String>,
    /// The check fails when the certificate expires in fewer days than this.
    pub min_days_left: i64,
    pub tls: TlsOptions,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqlProbe {
    pub url: SecretString,
    pub query: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BackupProbe {
    pub policy: String,
    pub max_age: Duration,
    /// Count only backups whose last verification passed (default), not merely taken.
    pub verified: bool,
}

/// `wal: {policy, max_age}`: the newest archived segment is younger than `max_age`
/// (archiving keeps up) and none is missing between the oldest and the newest.
#[derive(Debug, Clone, PartialEq)]
pub struct WalProbe {
    pub policy: String,
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NatsProbe {
    pub url: SecretString,
    pub stream: Option<String>,
    pub consumer: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CommandProbe {
    /// Program and arguments, run without a shell.
    pub argv: Vec<SecretString>,
    pub env: Vec<(String, SecretString)>,
    pub workdir: Option<PathBuf>,
}
