//! The `repositories:` and `backups:` sections: where backups are kept, and what is
//! backed up when, how it is kept, pruned and proven restorable.

use std::path::PathBuf;
use std::time::Duration;

use super::decode::{self as de, Fields};
use super::diagnostics::{Diagnostic, Diagnostics, Pos};
use super::secret::SecretString;
use super::sections::{name_of, secret_text, url};
use super::yaml::{Node, Value};

const REPOSITORY_KEYS: &[&str] = &["name", "path", "s3"];
const S3_KEYS: &[&str] = &["bucket", "prefix", "endpoint", "region", "access_key_id", "secret_access_key", "allow_http"];
const POLICY_KEYS: &[&str] = &[
    "name",
    "postgres",
    "mysql",
    "redis",
    "nats",
    "directory",
    "schedule",
    "timezone",
    "repository",
    "compression",
    "encryption",
    "retention",
    "verify",
    "timeout",
];
const SOURCE_KINDS: &[&str] = &["postgres", "mysql", "redis", "nats", "directory"];
const RETENTION_KEYS: &[&str] = &["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_within", "min_keep"];
const VERIFY_KEYS: &[&str] = &["schedule", "restore_test", "assertions", "max_age"];
const ASSERTION_KEYS: &[&str] = &["name", "query"];

/// Where backups are kept.
#[derive(Debug, Clone)]
pub struct Repository {
    pub name: String,
    pub kind: RepositoryKind,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub enum RepositoryKind {
    /// A directory on this machine (or a mounted file system).
    Local { path: PathBuf },
    /// An S3-compatible bucket.
    S3(S3Repository),
}

#[derive(Debug, Clone)]
pub struct S3Repository {
    pub bucket: String,
    /// Every object key starts with this (no leading or trailing `/`).
    pub prefix: String,
    /// For S3-compatible servers (MinIO, Ceph, R2...); AWS when absent.
    pub endpoint: Option<String>,
    pub region: String,
    /// Credentials; when absent the usual AWS environment variables are read.
    pub access_key_id: Option<SecretString>,
    pub secret_access_key: Option<SecretString>,
    pub allow_http: bool,
}

impl Repository {
    /// Where it is, for people (never a credential).
    pub fn location(&self) -> String {
        match &self.kind {
            RepositoryKind::Local { path } => path.display().to_string(),
            RepositoryKind::S3(s) => {
                let base = s.endpoint.clone().unwrap_or_else(|| "s3://".into());
                if s.prefix.is_empty() { format!("{base} bucket {}", s.bucket) } else { format!("{base} bucket {}/{}", s.bucket, s.prefix) }
            }
        }
    }
}

/// One backup policy: a source, when, where, and how long.
#[derive(Debug, Clone)]
pub struct BackupPolicy {
    pub name: String,
    pub source: BackupSource,
    pub schedule: Option<CronSchedule>,
    pub repository: String,
    /// zstd level, 1 (fastest) to 19.
    pub compression_level: i32,
    /// An age X25519 identity (`AGE-SECRET-KEY-1...`); objects are encrypted to its recipient.
    pub encryption_key: Option<SecretString>,
    /// `None`: nothing is ever pruned (and `prune` says so).
    pub retention: Option<Retention>,
    pub verify: VerifyPolicy,
    /// A backup still running after this is stopped and recorded as failed.
    pub timeout: Duration,
    pub pos: Pos,
}

#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub cron: String,
    pub parsed: croner::Cron,
    pub timezone: chrono_tz::Tz,
}

#[derive(Debug, Clone)]
pub enum BackupSource {
    Postgres(PostgresSource),
    Mysql { url: SecretString },
    Redis { url: SecretString },
    Nats { url: SecretString, streams: Vec<String> },
    Directory { path: PathBuf },
}

#[derive(Debug, Clone)]
pub struct PostgresSource {
    /// One database, as in the URL's path (a physical backup copies the whole cluster;
    /// the database is where steward connects, and where restore tests write markers).
    pub url: SecretString,
    pub mode: PgMode,
    pub format: PgFormat,
    /// Parallel dump/restore jobs (directory format only).
    pub jobs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgMode {
    /// pg_dump of one database: portable across versions, restores what was dumped.
    Logical,
    /// pg_basebackup of the whole cluster plus its archived WAL (`steward wal push`):
    /// restores to any point in time the archive covers.
    Physical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgFormat {
    /// `pg_dump -Fc`, streamed straight into the repository.
    Custom,
    /// `pg_dump -Fd -j N` into a spool directory, then stored as one archive.
    Directory,
}

impl BackupSource {
    pub fn kind(&self) -> &'static str {
        match self {
            BackupSource::Postgres(_) => "postgres",
            BackupSource::Mysql { .. } => "mysql",
            BackupSource::Redis { .. } => "redis",
            BackupSource::Nats { .. } => "nats",
            BackupSource::Directory { .. } => "directory",
        }
    }

    /// What is backed up, for people: passwords are never part of it.
    pub fn target(&self) -> String {
        use super::secret::redact_url_password;
        match self {
            BackupSource::Postgres(p) => redact_url_password(p.url.written()).into_owned(),
            BackupSource::Mysql { url } | BackupSource::Redis { url } => redact_url_password(url.written()).into_owned(),
            BackupSource::Nats { url, streams } => format!("{} streams {}", redact_url_password(url.written()), streams.join(",")),
            BackupSource::Directory { path } => path.display().to_string(),
        }
    }
}

/// How many backups to keep; a backup is kept when any rule keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_within: Option<Duration>,
    /// Whatever the rules say, never fewer successful backups than this.
    pub min_keep: u32,
}

impl Retention {
    /// Whether any rule keeps anything (a policy that keeps nothing is refused).
    pub fn keeps_something(&self) -> bool {
        [self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly].iter().any(|k| k.is_some_and(|n| n > 0))
            || self.keep_within.is_some_and(|d| !d.is_zero())
            || self.min_keep > 0
    }
}

#[derive(Debug, Clone, Default)]
pub struct VerifyPolicy {
    pub schedule: Option<CronSchedule>,
    /// Scheduled verification restores into a scratch instance (level 2), not only checksums.
    pub restore_test: bool,
    /// Queries run against the restored scratch database; each must return true.
    pub assertions: Vec<Assertion>,
    /// The freshness bound: the latest verified backup must be younger than this.
    pub max_age: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Assertion {
    pub name: String,
    pub query: String,
}

/// Names declared and referenced in `repositories:` and `backups:`, kept even when the
/// entry that declares or references them has other errors: one pass reports every
/// problem, and an entry with a typo elsewhere is not also called "not defined".
#[derive(Default)]
pub struct BackupRefs {
    pub repositories: Vec<String>,
    pub policies: Vec<String>,
    /// (policy, repository, where the repository is named)
    pub uses: Vec<(String, String, Pos)>,
}

pub fn repository(node: &Node, d: &mut Diagnostics, secrets: &mut Vec<String>, refs: &mut BackupRefs) -> Option<Repository> {
    let mut f = Fields::of(node, "a repository", d)?;
    let name = name_of(&mut f, "repository", d);
    refs.repositories.extend(name.as_ref().map(|(n, _)| n.clone()));
    let what = name.as_ref().map_or("the repository".to_string(), |(n, _)| format!("repository `{n}`"));
    let path = f.take("path");
    let s3 = f.take("s3");
    let kind = match (path, s3) {
        (Some(p), None) => {
            let path = PathBuf::from(de::string(p, &format!("{what} path"), d)?);
            if !path.is_absolute() {
                d.push(
                    Diagnostic::error(p.pos.clone(), format!("{what} path `{}` is relative", path.display()))
                        .with_hint("write an absolute path, e.g. /var/lib/steward/backups"),
                );
                return None;
            }
            Some(RepositoryKind::Local { path })
        }
        (None, Some(s)) => s3_repository(s, &what, d, secrets).map(RepositoryKind::S3),
        (Some(_), Some(s)) => {
            d.push(
                Diagnostic::error(s.pos.clone(), format!("{what} has both `path` and `s3`"))
                    .with_hint("a repository is one place: keep one"),
            );
            None
        }
        (None, None) => {
            d.push(
                Diagnostic::error(f.pos().clone(), format!("{what} says neither where (`path`) nor which bucket (`s3`)"))
                    .with_hint("add `path: /var/lib/steward/backups` or `s3: { bucket: NAME, ... }`"),
            );
            None
        }
    };
    f.finish(REPOSITORY_KEYS, d);
    let (name, pos) = name?;
    Some(Repository { name, kind: kind?, pos })
}

fn s3_repository(node: &Node, what: &str, d: &mut Diagnostics, secrets: &mut Vec<String>) -> Option<S3Repository> {
    let mut f = Fields::of(node, format!("{what} s3"), d)?;
    let bucket = f.require("bucket", d).and_then(|n| de::string(n, &format!("{what} bucket"), d));
    let prefix = f.take("prefix").map_or(Some(String::new()), |n| de::string(n, &format!("{what} prefix"), d));
    let endpoint = f
        .take("endpoint")
        .and_then(|n| url(n, &format!("{what} endpoint"), &["http", "https"], d, secrets).map(|u| u.written().to_string()));
    let region = f.take("region").map_or(Some("us-east-1".to_string()), |n| de::string(n, &format!("{what} region"), d));
    let access_key_id = f.take("access_key_id").and_then(|n| secret_text(n, &format!("{what} access_key_id"), d, secrets));
    let secret_access_key = f.take("secret_access_key").and_then(|n| secret_text(n, &format!("{what} secret_access_key"), d, secrets));
    if let Some(s) = &secret_access_key
        && s.written() == s.expose()
    {
        d.push(
            Diagnostic::error(node.pos.clone(), format!("{what} secret_access_key is written inline"))
                .with_hint("secrets are never written inline: use `${env:NAME}` or `${file:/path}`"),
        );
    }
    if access_key_id.is_some() != secret_access_key.is_some() {
        d.push(
            Diagnostic::error(node.pos.clone(), format!("{what} needs both `access_key_id` and `secret_access_key`, or neither"))
                .with_hint("without both, the AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY environment variables are used"),
        );
    }
    let allow_http = f.take("allow_http").map_or(Some(false), |n| de::boolean(n, &format!("{what} allow_http"), d));
    f.finish(S3_KEYS, d);
    let endpoint_is_http = endpoint.as_deref().is_some_and(|e| e.starts_with("http://"));
    if endpoint_is_http && allow_http == Some(false) {
        d.push(Diagnostic::error(node.pos.clone(), format!("{what} endpoint is plain http")).with_hint(
            "credentials and data would cross the network in the clear; use https, or set `allow_http: true` for a local server",
        ));
        return None;
    }
    Some(S3Repository {
        bucket: bucket?,
        prefix: prefix?.trim_matches('/').to_string(),
        endpoint,
        region: region?,
        access_key_id,
        secret_access_key,
        allow_http: allow_http?,
    })
}

pub fn policy(node: &Node, d: &mut Diagnostics, secrets: &mut Vec<String>, refs: &mut BackupRefs) -> Option<BackupPolicy> {
    let mut f = Fields::of(node, "a backup", d)?;
    let name = name_of(&mut f, "backup", d);
    refs.policies.extend(name.as_ref().map(|(n, _)| n.clone()));
    let what = name.as_ref().map_or("the backup".to_string(), |(n, _)| format!("backup `{n}`"));
    let sources: Vec<&str> = SOURCE_KINDS.iter().copied().filter(|k| f.has(k)).collect();
    let source = match sources.as_slice() {
        [kind] => {
            let n = f.take(kind)?;
            source(kind, n, &what, d, secrets)
        }
        [] => {
            d.push(
                Diagnostic::error(f.pos().clone(), format!("{what} has no source"))
                    .with_hint(format!("add one of: {}", SOURCE_KINDS.join(", "))),
            );
            None
        }
        [first, second, ..] => {
            let n = f.take(second)?;
            f.take(first);
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} has two sources, `{first}` and `{second}`"))
                    .with_hint("each backup policy backs up one source; write a second policy for the other"),
            );
            None
        }
    };
    let timezone = f.take("timezone").map_or(Some(chrono_tz::Tz::UTC), |n| {
        let s = de::string(n, &format!("{what} timezone"), d)?;
        s.parse::<chrono_tz::Tz>().ok().or_else(|| {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} timezone `{s}` is not an IANA time zone"))
                    .with_hint("e.g. Europe/Berlin, America/New_York, UTC"),
            );
            None
        })
    });
    let schedule = f.take("schedule").map(|n| cron(n, &format!("{what} schedule"), timezone.unwrap_or(chrono_tz::Tz::UTC), d));
    let repository = f.require("repository", d).and_then(|n| {
        let r = de::string(n, &format!("{what} repository"), d)?;
        refs.uses.push((name.as_ref().map_or_else(String::new, |(n, _)| n.clone()), r.clone(), n.pos.clone()));
        Some(r)
    });
    let compression_level = f.take("compression").map_or(Some(3), |n| compression(n, &what, d));
    let encryption_key = f.take("encryption").map_or(Some(None), |n| encryption(n, &what, d, secrets).map(Some));
    let retention = f.take("retention").map_or(Some(None), |n| retention(n, &what, d).map(Some));
    let verify = f.take("verify").map_or(Some(VerifyPolicy::default()), |n| verify(n, &what, timezone.unwrap_or(chrono_tz::Tz::UTC), d));
    let timeout = f.take("timeout").map_or(Some(Duration::from_secs(6 * 3600)), |n| de::duration(n, &format!("{what} timeout"), d));
    f.finish(POLICY_KEYS, d);
    let (name, pos) = name?;
    Some(BackupPolicy {
        name,
        source: source?,
        schedule: present(schedule)?,
        repository: repository?,
        compression_level: compression_level?,
        encryption_key: encryption_key?,
        retention: retention?,
        verify: verify?,
        timeout: timeout?,
        pos,
    })
}

/// An optional value that was present: `None` when it was there but invalid.
fn present<T>(v: Option<Option<T>>) -> Option<Option<T>> {
    match v {
        None => Some(None),
        Some(inner) => inner.map(Some),
    }
}

fn source(kind: &str, node: &Node, what: &str, d: &mut Diagnostics, secrets: &mut Vec<String>) -> Option<BackupSource> {
    let mut f = Fields::of(node, format!("{what} {kind}"), d)?;
    let source = match kind {
        "postgres" => {
            let url = f.require("url", d).and_then(|n| url(n, &format!("{what} url"), &["postgres", "postgresql"], d, secrets));
            let format = f.take("format").map_or(Some(PgFormat::Custom), |n| match de::string(n, &format!("{what} format"), d)?.as_str() {
                "custom" => Some(PgFormat::Custom),
                "directory" => Some(PgFormat::Directory),
                other => {
                    d.push(
                        Diagnostic::error(n.pos.clone(), format!("{what} format `{other}` is not a pg_dump format steward uses"))
                            .with_hint("`custom` (streamed) or `directory` (parallel with `jobs`)"),
                    );
                    None
                }
            });
            let format_given = f.has("format") || f.has("jobs");
            let jobs = f.take("jobs").map_or(Some(1), |n| de::integer(n, &format!("{what} jobs"), 1..=64, d).map(|j| j as u32));
            let mode = f.take("mode").map_or(Some(PgMode::Logical), |n| match de::string(n, &format!("{what} mode"), d)?.as_str() {
                "logical" => Some(PgMode::Logical),
                "physical" => Some(PgMode::Physical),
                other => {
                    d.push(Diagnostic::error(n.pos.clone(), format!("{what} mode `{other}` is not a backup mode")).with_hint(
                        "`logical` (pg_dump of the database) or `physical` (pg_basebackup plus WAL archiving, for point-in-time restores)",
                    ));
                    None
                }
            });
            f.finish(&["url", "mode", "format", "jobs"], d);
            if mode == Some(PgMode::Physical) && format_given {
                d.push(
                    Diagnostic::error(node.pos.clone(), format!("{what} sets `format` or `jobs` with `mode: physical`"))
                        .with_hint("those are pg_dump's; a physical backup is pg_basebackup's copy of the cluster: remove them"),
                );
                return None;
            }
            if format == Some(PgFormat::Custom) && jobs.is_some_and(|j| j > 1) {
                d.push(
                    Diagnostic::error(node.pos.clone(), format!("{what} asks for {} jobs with the custom format", jobs.unwrap_or(1)))
                        .with_hint("pg_dump dumps in parallel only in the directory format: add `format: directory`"),
                );
                return None;
            }
            BackupSource::Postgres(PostgresSource { url: url?, mode: mode?, format: format?, jobs: jobs? })
        }
        "mysql" => {
            let url = f.require("url", d).and_then(|n| url(n, &format!("{what} url"), &["mysql", "mariadb"], d, secrets));
            f.finish(&["url"], d);
            BackupSource::Mysql { url: url? }
        }
        "redis" => {
            let url = f.require("url", d).and_then(|n| url(n, &format!("{what} url"), &["redis"], d, secrets));
            f.finish(&["url"], d);
            BackupSource::Redis { url: url? }
        }
        "nats" => {
            let url = f.require("url", d).and_then(|n| url(n, &format!("{what} url"), &["nats"], d, secrets));
            let streams = f.require("streams", d).and_then(|n| de::string_list(n, &format!("{what} streams"), d));
            f.finish(&["url", "streams"], d);
            BackupSource::Nats { url: url?, streams: streams? }
        }
        _ => {
            let p = f.require("path", d)?;
            let path = PathBuf::from(de::string(p, &format!("{what} path"), d)?);
            f.finish(&["path"], d);
            if !path.is_absolute() {
                d.push(
                    Diagnostic::error(p.pos.clone(), format!("{what} path `{}` is relative", path.display()))
                        .with_hint("write an absolute path"),
                );
                return None;
            }
            BackupSource::Directory { path }
        }
    };
    Some(source)
}

fn cron(node: &Node, what: &str, timezone: chrono_tz::Tz, d: &mut Diagnostics) -> Option<CronSchedule> {
    let cron = de::string(node, what, d)?;
    match crate::cron::parse_cron(&cron) {
        Ok(parsed) => Some(CronSchedule { cron, parsed, timezone }),
        Err(e) => {
            d.push(
                Diagnostic::error(node.pos.clone(), format!("{what} `{cron}` is invalid: {e}"))
                    .with_hint("five fields: minute hour day-of-month month day-of-week, e.g. \"0 2 * * *\""),
            );
            None
        }
    }
}

/// `compression: 3`, `compression: zstd:3` or `compression: { level: 3 }`.
fn compression(node: &Node, what: &str, d: &mut Diagnostics) -> Option<i32> {
    let level = match &node.value {
        Value::Int(i) => Some(*i),
        Value::Str { text, .. } => text.strip_prefix("zstd:").unwrap_or(text).parse::<i64>().ok(),
        Value::Map(_) => {
            let mut f = Fields::of(node, format!("{what} compression"), d)?;
            let level = f.take("level").and_then(|n| de::integer(n, &format!("{what} compression level"), i64::MIN..=i64::MAX, d));
            f.finish(&["level"], d);
            level
        }
        _ => None,
    };
    match level {
        Some(l) if (1..=19).contains(&l) => Some(l as i32),
        _ => {
            d.push(
                Diagnostic::error(node.pos.clone(), format!("{what} compression must be a zstd level from 1 to 19"))
                    .with_hint("3 is fast and compresses better than gzip -6; 19 is small and slow"),
            );
            None
        }
    }
}

fn encryption(node: &Node, what: &str, d: &mut Diagnostics, secrets: &mut Vec<String>) -> Option<SecretString> {
    let mut f = Fields::of(node, format!("{what} encryption"), d)?;
    let key_node = f.require("key", d);
    f.finish(&["key"], d);
    let key_node = key_node?;
    let key = secret_text(key_node, &format!("{what} encryption key"), d, secrets)?;
    if key.written() == key.expose() {
        d.push(
            Diagnostic::error(key_node.pos.clone(), format!("{what} encryption key is written inline")).with_hint(
                "keep the key outside the config: `key: ${file:/etc/steward/backup.key}` (make one with `steward backup keygen`)",
            ),
        );
        return None;
    }
    Some(key)
}

fn retention(node: &Node, what: &str, d: &mut Diagnostics) -> Option<Retention> {
    let mut f = Fields::of(node, format!("{what} retention"), d)?;
    let count = |f: &mut Fields<'_>, key: &str, d: &mut Diagnostics| -> Option<Option<u32>> {
        match f.take(key) {
            None => Some(None),
            Some(n) => de::integer(n, &format!("{what} retention {key}"), 0..=100_000, d).map(|v| Some(v as u32)),
        }
    };
    let keep_last = count(&mut f, "keep_last", d);
    let keep_hourly = count(&mut f, "keep_hourly", d);
    let keep_daily = count(&mut f, "keep_daily", d);
    let keep_weekly = count(&mut f, "keep_weekly", d);
    let keep_monthly = count(&mut f, "keep_monthly", d);
    let min_keep = count(&mut f, "min_keep", d);
    let keep_within = f.take("keep_within").map_or(Some(None), |n| de::duration(n, &format!("{what} retention keep_within"), d).map(Some));
    f.finish(RETENTION_KEYS, d);
    let r = Retention {
        keep_last: keep_last?,
        keep_hourly: keep_hourly?,
        keep_daily: keep_daily?,
        keep_weekly: keep_weekly?,
        keep_monthly: keep_monthly?,
        keep_within: keep_within?,
        min_keep: min_keep?.unwrap_or(1),
    };
    if !r.keeps_something() {
        d.push(
            Diagnostic::error(node.pos.clone(), format!("{what} retention keeps nothing"))
                .with_hint("a policy that keeps nothing would delete every backup; set e.g. `keep_daily: 7` and `min_keep: 3`"),
        );
        return None;
    }
    Some(r)
}

fn verify(node: &Node, what: &str, timezone: chrono_tz::Tz, d: &mut Diagnostics) -> Option<VerifyPolicy> {
    let mut f = Fields::of(node, format!("{what} verify"), d)?;
    let schedule = f.take("schedule").map(|n| cron(n, &format!("{what} verify schedule"), timezone, d));
    let restore_test = f.take("restore_test").map_or(Some(false), |n| de::boolean(n, &format!("{what} verify restore_test"), d));
    let max_age = f.take("max_age").map_or(Some(None), |n| de::duration(n, &format!("{what} verify max_age"), d).map(Some));
    let assertions = match f.take("assertions") {
        None => Some(vec![]),
        Some(n) => de::list(n, &format!("{what} verify assertions"), d).map(|items| {
            items
                .iter()
                .filter_map(|item| {
                    let mut a = Fields::of(item, format!("{what} assertion"), d)?;
                    let query = a.require("query", d).and_then(|n| de::string(n, &format!("{what} assertion query"), d));
                    let name = a.take("name").and_then(|n| de::string(n, &format!("{what} assertion name"), d));
                    a.finish(ASSERTION_KEYS, d);
                    let query = query?;
                    Some(Assertion { name: name.unwrap_or_else(|| query.clone()), query })
                })
                .collect()
        }),
    };
    f.finish(VERIFY_KEYS, d);
    Some(VerifyPolicy { schedule: present(schedule)?, restore_test: restore_test?, assertions: assertions?, max_age: max_age? })
}

/// Rules across policies and repositories.
pub fn cross_check(repositories: &[Repository], policies: &[BackupPolicy], refs: &BackupRefs, d: &mut Diagnostics) {
    for (i, r) in repositories.iter().enumerate() {
        if let Some(first) = repositories[..i].iter().find(|o| o.name == r.name) {
            d.push(
                Diagnostic::error(r.pos.clone(), format!("repository `{}` is defined twice", r.name))
                    .with_hint(format!("the first is at {}", first.pos)),
            );
        }
    }
    for (policy, repository, pos) in &refs.uses {
        if refs.repositories.contains(repository) {
            continue;
        }
        let known = refs.repositories.iter().map(String::as_str);
        let hint = match super::diagnostics::closest(repository, known.clone()) {
            Some(c) => format!("did you mean `{c}`?"),
            None if refs.repositories.is_empty() => {
                "add a `repositories:` section, e.g. `- { name: local, path: /var/lib/steward/backups }`".into()
            }
            None => format!("known repositories: {}", known.collect::<Vec<_>>().join(", ")),
        };
        let whose = if policy.is_empty() { "a backup".to_string() } else { format!("backup `{policy}`") };
        d.push(Diagnostic::error(pos.clone(), format!("{whose} uses repository `{repository}`, which is not defined")).with_hint(hint));
    }
    for (i, p) in policies.iter().enumerate() {
        if let Some(first) = policies[..i].iter().find(|o| o.name == p.name) {
            d.push(
                Diagnostic::error(p.pos.clone(), format!("backup `{}` is defined twice", p.name))
                    .with_hint(format!("the first is at {}", first.pos)),
            );
        }
        if !p.verify.assertions.is_empty() && !matches!(p.source, BackupSource::Postgres(_) | BackupSource::Mysql { .. }) {
            d.push(
                Diagnostic::error(
                    p.pos.clone(),
                    format!("backup `{}` has assertion queries, but its source is {}", p.name, p.source.kind()),
                )
                .with_hint("assertion queries run in the restored scratch database: PostgreSQL and MySQL/MariaDB sources only"),
            );
        }
    }
}
