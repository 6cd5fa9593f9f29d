//! Decoders for the top-level sections, then the checks that span sections
//! (unique names, references, dependency cycles).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use super::alerting::{self, GroupBy, Route};
use super::decode::{self as de, Fields};
use super::diagnostics::{Diagnostic, Diagnostics, Pos, closest};
use super::incidents::{self as incidents_section, IncidentsConfig};
use super::model::*;
use super::prometheus::{self, PrometheusSource};
use super::receivers::{self, Receiver};
use super::secret::{self, Redactor, SecretString};
use super::time_intervals;
use super::yaml::{Node, Value};
use crate::checks::condition::{Condition, Literal};

const TOP_LEVEL: &[&str] = &[
    "services",
    "checks",
    "alerts",
    "rule_files",
    "prometheus",
    "receivers",
    "route",
    "inhibit_rules",
    "time_intervals",
    "maintenance_windows",
    "incidents",
    "runbooks",
    "repositories",
    "backups",
    "store",
    "slos",
];
/// Sections of the intended configuration that this version cannot act on yet.
const SERVICE_KEYS: &[&str] = &["name", "tier", "owner", "depends_on", "labels"];
const PROBE_KINDS: &[&str] = &[
    "http",
    "tcp",
    "postgres",
    "mysql",
    "redis",
    "nats",
    "command",
    "backup",
    "wal",
    "tls",
    "websocket",
    "dns",
    "heartbeat",
    "mongodb",
    "cql",
];
/// A check's own keys; its probe is one of [`PROBE_KINDS`].
const CHECK_KEYS: &[&str] = &["name", "service", "interval", "timeout", "failure_threshold", "success_threshold", "labels"];

pub(super) const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

pub(super) fn decode(docs: &[Node], d: &mut Diagnostics) -> Config {
    let mut secrets = Vec::new();
    let mut services = Vec::new();
    let mut checks = Vec::new();
    let mut refs = Vec::new();
    let mut alerts = Vec::new();
    let mut receivers = Vec::new();
    let mut route: Option<Route> = None;
    // Where `route:` was first written, valid or not: a second one is an error, and
    // an invalid one must not be replaced by the default route.
    let mut first_route: Option<Pos> = None;
    let mut inhibit_rules = Vec::new();
    let mut time_intervals = Vec::new();
    let mut maintenance_windows = Vec::new();
    let mut prometheus_source: Option<PrometheusSource> = None;
    let mut notes = Vec::new();
    let mut alerting_refs = alerting::AlertingRefs::default();
    let mut incidents: Option<(IncidentsConfig, Pos)> = None;
    let mut runbooks = Vec::new();
    let mut runbook_refs = super::runbooks::RunbookRefs::default();
    let mut repositories = Vec::new();
    let mut backups = Vec::new();
    let mut backup_refs = super::backups::BackupRefs::default();
    let mut store: Option<StoreSpec> = None;
    let mut slos = Vec::new();
    for doc in docs {
        if matches!(doc.value, Value::Null) {
            continue;
        }
        let Some(mut top) = Fields::of(doc, "the configuration file", d) else {
            continue;
        };
        if let Some(list) = top.take("services").and_then(|n| de::list(n, "`services`", d)) {
            services.extend(list.iter().filter_map(|n| service(n, d)));
        }
        if let Some(list) = top.take("checks").and_then(|n| de::list(n, "`checks`", d)) {
            checks.extend(list.iter().filter_map(|n| check(n, d, &mut secrets, &mut refs)));
        }
        if let Some(list) = top.take("alerts").and_then(|n| de::list(n, "`alerts`", d)) {
            alerts.extend(list.iter().filter_map(|n| alerting::rule(n, d, &mut alerting_refs)));
        }
        if let Some(node) = top.take("rule_files") {
            alerts.extend(prometheus::rule_files(node, d, &mut alerting_refs, &mut notes));
        }
        if let Some(node) = top.take("store") {
            match &store {
                Some(first) => d.push(
                    Diagnostic::error(node.pos.clone(), "`store` is defined twice")
                        .with_hint(format!("steward keeps its state in one store; the first is at {}", first.pos)),
                ),
                None => store = store_section(node, d, &mut secrets),
            }
        }
        if let Some(node) = top.take("prometheus") {
            match &prometheus_source {
                Some(first) => d.push(
                    Diagnostic::error(node.pos.clone(), "`prometheus` is defined twice")
                        .with_hint(format!("PromQL rules are evaluated by one server; the first is at {}", first.pos)),
                ),
                None => prometheus_source = prometheus::source(node, d, &mut secrets),
            }
        }
        if let Some(list) = top.take("receivers").and_then(|n| de::list(n, "`receivers`", d)) {
            receivers.extend(list.iter().filter_map(|n| receivers::receiver(n, d, &mut secrets, &mut alerting_refs)));
        }
        if let Some(node) = top.take("route") {
            match &first_route {
                Some(first) => d.push(
                    Diagnostic::error(node.pos.clone(), "`route` is defined twice")
                        .with_hint(format!("there is one routing tree; the first is at {first}")),
                ),
                None => {
                    first_route = Some(node.pos.clone());
                    route = alerting::route(node, d, &mut alerting_refs);
                }
            }
        }
        if let Some(list) = top.take("inhibit_rules").and_then(|n| de::list(n, "`inhibit_rules`", d)) {
            inhibit_rules.extend(list.iter().filter_map(|n| alerting::inhibit_rule(n, d)));
        }
        if let Some(list) = top.take("time_intervals").and_then(|n| de::list(n, "`time_intervals`", d)) {
            time_intervals.extend(list.iter().filter_map(|n| time_intervals::time_interval(n, d, &mut alerting_refs)));
        }
        if let Some(list) = top.take("maintenance_windows").and_then(|n| de::list(n, "`maintenance_windows`", d)) {
            maintenance_windows.extend(list.iter().filter_map(|n| time_intervals::maintenance_window(n, d, &mut alerting_refs)));
        }
        if let Some(node) = top.take("incidents") {
            match &incidents {
                Some((_, first)) => d.push(
                    Diagnostic::error(node.pos.clone(), "`incidents` is defined twice")
                        .with_hint(format!("keep one `incidents:` section; the first is at {first}")),
                ),
                None => {
                    if let Some(c) = incidents_section::section(node, d) {
                        incidents = Some((c, node.pos.clone()));
                    }
                }
            }
        }
        if let Some(list) = top.take("runbooks").and_then(|n| de::list(n, "`runbooks`", d)) {
            runbooks.extend(list.iter().filter_map(|n| super::runbooks::runbook(n, d, &mut secrets, &mut runbook_refs)));
        }
        if let Some(list) = top.take("repositories").and_then(|n| de::list(n, "`repositories`", d)) {
            repositories.extend(list.iter().filter_map(|n| super::backups::repository(n, d, &mut secrets, &mut backup_refs)));
        }
        if let Some(list) = top.take("backups").and_then(|n| de::list(n, "`backups`", d)) {
            backups.extend(list.iter().filter_map(|n| super::backups::policy(n, d, &mut secrets, &mut backup_refs)));
        }
        if let Some(list) = top.take("slos").and_then(|n| de::list(n, "`slos`", d)) {
            slos.extend(list.iter().filter_map(|n| super::slos::slo(n, d)));
        }
        top.finish(TOP_LEVEL, d);
    }
    cross_check(&services, &refs, d);
    let check_names: Vec<&str> = refs.iter().map(|c| c.name.as_str()).collect();
    alerting::cross_check(&alerting_refs, &check_names, d);
    let incidents = incidents.map(|(c, _)| c).unwrap_or_default();
    incidents_section::cross_check(&incidents, &receivers, &time_intervals, d);
    let receiver_names: Vec<&str> = receivers.iter().map(|r| r.name.as_str()).collect();
    super::runbooks::cross_check(&runbooks, &runbook_refs, &check_names, &receiver_names, d);
    alerting::check_runbook_links(&alerting_refs, &runbooks, &runbook_refs.declared, d);
    super::backups::cross_check(&repositories, &backups, &backup_refs, d);
    let service_names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    alerts.extend(super::slos::cross_check(&slos, &service_names, &check_names, prometheus_source.is_some(), d));
    for (name, pos) in &runbook_refs.slos {
        if !slos.iter().any(|s| &s.name == name) {
            let known = slos.iter().map(|s| s.name.as_str());
            let hint = closest(name, known).map_or("define it under `slos:`".to_string(), |c| format!("did you mean `{c}`?"));
            d.push(Diagnostic::error(pos.clone(), format!("a runbook step gates on SLO `{name}`, which is not defined")).with_hint(hint));
        }
    }
    for c in &checks {
        if let Probe::Wal(w) = &c.probe {
            match backups.iter().find(|b| b.name == w.policy) {
                Some(b) if !matches!(b.source, super::backups::BackupSource::Postgres(_)) => d.push(
                    Diagnostic::error(
                        c.pos.clone(),
                        format!("check `{}` watches the WAL archive of `{}`, which does not back up PostgreSQL", c.name, w.policy),
                    )
                    .with_hint("WAL archiving is PostgreSQL's: name a policy with a `postgres:` source"),
                ),
                Some(_) => {}
                None => {
                    let known = backups.iter().map(|b| b.name.as_str());
                    let hint = closest(&w.policy, known)
                        .map_or("define the policy under `backups:`".to_string(), |k| format!("did you mean `{k}`?"));
                    d.push(
                        Diagnostic::error(
                            c.pos.clone(),
                            format!("check `{}` watches the WAL archive of `{}`, which is not defined", c.name, w.policy),
                        )
                        .with_hint(hint),
                    );
                }
            }
        }
        if let Probe::Backup(b) = &c.probe
            && !backup_refs.policies.contains(&b.policy)
        {
            let known: Vec<&str> = backup_refs.policies.iter().map(String::as_str).collect();
            let hint = match super::diagnostics::closest(&b.policy, known.iter().copied()) {
                Some(k) => format!("did you mean `{k}`?"),
                None if known.is_empty() => "define the policy under `backups:`".into(),
                None => format!("backup policies: {}", known.join(", ")),
            };
            d.push(
                Diagnostic::error(c.pos.clone(), format!("check `{}` watches backup policy `{}`, which is not defined", c.name, b.policy))
                    .with_hint(hint),
            );
        }
    }
    // A forecast over a check reads fields of its observation: the check records them
    // with each run.
    for rule in &alerts {
        if let alerting::AlertCondition::Forecast(f) = &rule.when
            && let super::forecast::ForecastSource::Check { check, .. } = &f.source
            && let Some(spec) = checks.iter_mut().find(|c| &c.name == check)
        {
            for field in f.fields() {
                if !spec.record.contains(field) {
                    spec.record.push(field.clone());
                }
            }
        }
    }
    if first_route.is_none() {
        route = default_route(&receivers, d);
    }
    match &prometheus_source {
        Some(p) => {
            for rule in alerts.iter_mut().filter(|r| r.every.is_zero()) {
                rule.every = p.evaluation_interval;
            }
        }
        None => {
            if let Some(pos) = alerting_refs.first_query() {
                d.push(
                    Diagnostic::error(pos.clone(), "PromQL rules need a Prometheus server to evaluate them")
                        .with_hint("add a top-level `prometheus:` section with `url: http://HOST:9090`"),
                );
            }
        }
    }
    Config {
        services,
        checks,
        alerts,
        receivers,
        route,
        inhibit_rules,
        time_intervals,
        maintenance_windows,
        prometheus: prometheus_source,
        incidents,
        runbooks,
        repositories,
        backups,
        store,
        slos,
        notes,
        redactor: Redactor::new(secrets),
        files: Vec::new(),
    }
}

/// `store: {url: postgres://steward:${env:PGPASSWORD}@db:5432/steward}`: keep the state in
/// a shared PostgreSQL database (several replicas) instead of the data directory's SQLite.
fn store_section(node: &Node, d: &mut Diagnostics, secrets: &mut Vec<String>) -> Option<StoreSpec> {
    let mut f = Fields::of(node, "the `store` section", d)?;
    let url = f.require("url", d).and_then(|n| url(n, "store url", &["postgres", "postgresql"], d, secrets));
    f.finish(&["url"], d);
    Some(StoreSpec { url: url?, pos: node.pos.clone() })
}

/// Without a `route:`, a single receiver gets every alert; several need a route.
fn default_route(receivers: &[Receiver], d: &mut Diagnostics) -> Option<Route> {
    match receivers {
        [] => None,
        [only] => Some(Route {
            id: "0".into(),
            receiver: only.name.clone(),
            matchers: vec![],
            group_by: GroupBy::Labels(vec!["alertname".into()]),
            group_wait: alerting::DEFAULT_GROUP_WAIT,
            group_interval: alerting::DEFAULT_GROUP_INTERVAL,
            repeat_interval: alerting::DEFAULT_REPEAT_INTERVAL,
            continue_: false,
            mute_time_intervals: vec![],
            active_time_intervals: vec![],
            routes: vec![],
            pos: only.pos.clone(),
        }),
        [first, ..] => {
            d.push(
                Diagnostic::error(
                    first.pos.clone(),
                    format!("{} receivers are defined but no `route` says which gets what", receivers.len()),
                )
                .with_hint("add a `route:` with a default `receiver:` and child `routes:` with matchers"),
            );
            None
        }
    }
}

pub(super) fn name_of(fields: &mut Fields<'_>, kind: &str, d: &mut Diagnostics) -> Option<(String, Pos)> {
    let node = fields.require("name", d)?;
    let name = de::string(node, &format!("the {kind} name"), d)?;
    let valid = !name.is_empty()
        && name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        d.push(
            Diagnostic::error(node.pos.clone(), format!("`{name}` is not a valid {kind} name"))
                .with_hint("use letters, digits, `-`, `_` and `.`, starting with a letter or digit (it appears in URLs and metrics)"),
        );
        return None;
    }
    Some((name, node.pos.clone()))
}

fn labels(fields: &mut Fields<'_>, what: &str, d: &mut Diagnostics) -> BTreeMap<String, String> {
    fields
        .take("labels")
        .and_then(|n| de::string_map(n, &format!("{what} labels"), d))
        .map(|m| m.into_iter().map(|(k, (v, _))| (k, v)).collect())
        .unwrap_or_default()
}

fn service(node: &Node, d: &mut Diagnostics) -> Option<Service> {
    let mut f = Fields::of(node, "a service", d)?;
    let name = name_of(&mut f, "service", d);
    let what = name.as_ref().map_or("the service".to_string(), |(n, _)| format!("service `{n}`"));
    // Invalid fields fall back to defaults (the diagnostic already fails the load) so
    // cross-item rules — duplicates, references, cycles — are still reported in this pass.
    let tier = f.take("tier").map_or(Some(3), |n| de::integer(n, &format!("{what} tier"), 1..=4, d).map(|t| t as u8)).unwrap_or(3);
    let owner = f.take("owner").and_then(|n| de::string(n, &format!("{what} owner"), d));
    let depends_on =
        f.take("depends_on").map_or(Some(vec![]), |n| de::string_list(n, &format!("{what} depends_on"), d)).unwrap_or_default();
    let labels = labels(&mut f, &what, d);
    f.finish(SERVICE_KEYS, d);
    let (name, pos) = name?;
    Some(Service { name, tier, owner, depends_on, labels, pos })
}

/// Resolves secret references in a string value, reporting problems at the right column.
pub(super) fn secret_text(node: &Node, what: &str, d: &mut Diagnostics, secrets: &mut Vec<String>) -> Option<SecretString> {
    let text = de::text(node, what, d)?;
    match secret::resolve(&text, secrets) {
        Ok(s) => Some(s),
        Err((offset, message, hint)) => {
            // A quoted scalar starts one column before its text.
            let quote = usize::from(matches!(node.value, Value::Str { quoted: true, .. }));
            d.push(Diagnostic::error(node.pos.shifted(offset + quote), format!("{what}: {message}")).with_hint(hint));
            None
        }
    }
}

/// A URL whose scheme must be one of `schemes`, with passwords only by reference
/// (`${env:…}`/`${file:…}`, or the whole URL as one reference); see
/// [`secret::resolve_url`].
pub(super) fn url(node: &Node, what: &str, schemes: &[&str], d: &mut Diagnostics, secrets: &mut Vec<String>) -> Option<SecretString> {
    // Positions of unresolvable references are reported by secret_text.
    let value = secret_text(node, what, d, secrets)?;
    match secret::resolve_url(value.written(), secrets) {
        Ok((u, resolved)) => {
            if !schemes.contains(&u.scheme()) {
                d.push(
                    Diagnostic::error(node.pos.clone(), format!("{what} has scheme `{}`", u.scheme()))
                        .with_hint(format!("use {}", schemes.iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(" or "))),
                );
                return None;
            }
            Some(SecretString::from_parts(value.written().to_string(), resolved))
        }
        // `steward validate` without the secrets: the URL is checked when it is set.
        Err(secret::UrlError::Deferred) => Some(value),
        Err(secret::UrlError::InlinePassword) => {
            d.push(
                Diagnostic::error(node.pos.clone(), format!("{what} contains an inline password"))
                    .with_hint("secrets are never written inline: use `${env:NAME}` or `${file:/path}` in place of the password"),
            );
            None
        }
        Err(secret::UrlError::Reference(m, h)) => {
            d.push(Diagnostic::error(node.pos.clone(), format!("{what}: {m}")).with_hint(h));
            None
        }
        Err(secret::UrlError::Invalid(e)) => {
            d.push(
                Diagnostic::error(node.pos.clone(), format!("{what} is not a valid URL: {e}"))
                    .with_hint(format!("e.g. {}://127.0.0.1, or the whole URL by reference: ${{env:NAME}}", schemes[0])),
            );
            None
        }
    }
}

/// The identity of a check as far as it could be read, for rules across checks.
struct CheckRef {
    name: String,
    pos: Pos,
    service: Option<(String, Pos)>,
}

fn check(node: &Node, d: &mut Diagnostics, secrets: &mut Vec<String>, refs: &mut Vec<CheckRef>) -> Option<CheckSpec> {
    let mut f = Fields::of(node, "a check", d)?;
    let name = name_of(&mut f, "check", d);
    let what = name.as_ref().map_or("the check".to_string(), |(n, _)| format!("check `{n}`"));
    let service = f.take("service").and_then(|n| de::string(n, &format!("{what} service"), d).map(|s| (s, n.pos.clone())));
    if let Some((n, pos)) = &name {
        refs.push(CheckRef { name: n.clone(), pos: pos.clone(), service: service.clone() });
    }
    let interval_node = f.take("interval");
    let interval = interval_node.map_or(Some(DEFAULT_INTERVAL), |n| de::duration(n, &format!("{what} interval"), d));
    let timeout_node = f.take("timeout");
    let timeout = timeout_node.map_or(Some(DEFAULT_TIMEOUT), |n| de::duration(n, &format!("{what} timeout"), d));
    let failure_threshold =
        f.take("failure_threshold").map_or(Some(2), |n| de::integer(n, &format!("{what} failure_threshold"), 1..=1000, d));
    let success_threshold =
        f.take("success_threshold").map_or(Some(1), |n| de::integer(n, &format!("{what} success_threshold"), 1..=1000, d));
    let labels = labels(&mut f, &what, d);

    if let (Some(i), Some(n)) = (interval, interval_node)
        && i < Duration::from_millis(100)
    {
        d.push(Diagnostic::error(n.pos.clone(), format!("{what} interval must be at least 100ms")));
    }
    let timeout = match (interval, timeout, timeout_node) {
        // An unset timeout never exceeds a short interval: it shrinks to fit.
        (Some(i), Some(t), None) => Some(t.min(i)),
        (Some(i), Some(t), Some(n)) if t > i => {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} timeout ({t:?}) is longer than its interval ({i:?})"))
                    .with_hint("a run must finish before the next one is due: shorten the timeout or lengthen the interval"),
            );
            None
        }
        (_, t, _) => t,
    };

    let present: Vec<&str> = PROBE_KINDS.iter().copied().filter(|k| f.has(k)).collect();
    let probe = match present.as_slice() {
        [kind] => {
            let body = f.take(kind).expect("present");
            probe(kind, body, &what, d, secrets)
        }
        [] => {
            d.push(
                Diagnostic::error(f.pos().clone(), format!("{what} says nothing to probe"))
                    .with_hint(format!("add exactly one of: {}", PROBE_KINDS.join(", "))),
            );
            None
        }
        many => {
            let second = f.take(many[1]).expect("present");
            for kind in many {
                f.take(kind);
            }
            d.push(
                Diagnostic::error(second.pos.clone(), format!("{what} has several probes ({})", many.join(", ")))
                    .with_hint("a check has exactly one probe; split it into several checks"),
            );
            None
        }
    };
    let known: Vec<&str> = CHECK_KEYS.iter().chain(PROBE_KINDS).copied().collect();
    f.finish(&known, d);
    let (name, pos) = name?;
    let (probe, conditions) = probe?;
    Some(CheckSpec {
        name,
        service: service.map(|(s, _)| s),
        interval: interval?,
        timeout: timeout?,
        failure_threshold: failure_threshold? as u32,
        success_threshold: success_threshold? as u32,
        labels,
        probe,
        conditions,
        record: Vec::new(),
        pos,
    })
}

fn probe(kind: &str, node: &Node, what: &str, d: &mut Diagnostics, secrets: &mut Vec<String>) -> Option<(Probe, Vec<Condition>)> {
    let mut f = Fields::of(node, format!("the `{kind}` probe of {what}"), d)?;
    let conditions = conditions(&mut f, kind, what, d);
    let probe = match kind {
        "http" => http(&mut f, what, d, secrets),
        "tcp" => {
            let address = f.require("address", d).and_then(|n| host_port(n, what, d));
            f.finish(&["address", "conditions"], d);
            address.map(|address| Probe::Tcp { address })
        }
        "tls" => {
            let address = f.require("address", d).and_then(|n| host_port(n, what, d));
            let server_name = f.take("server_name").and_then(|n| de::string(n, &format!("{what} server_name"), d));
            let min_days_left = f.take("min_days_left").map_or(Some(14), |n| de::integer(n, &format!("{what} min_days_left"), 0..=3650, d));
            let tls = tls_options(&mut f, d);
            f.finish(&["address", "server_name", "min_days_left", "ca_file", "insecure_skip_verify", "conditions"], d);
            Some(Probe::Tls(TlsProbe { address: address?, server_name, min_days_left: min_days_left?, tls: tls? }))
        }
        "heartbeat" => {
            let period = f.require("period", d).and_then(|n| {
                let p = de::duration(n, &format!("{what} period"), d)?;
                if p < Duration::from_secs(60) {
                    d.push(
                        Diagnostic::error(n.pos.clone(), format!("{what} period is shorter than a minute"))
                            .with_hint("a heartbeat watches a job that runs every minute or less often (cron's finest step)"),
                    );
                    return None;
                }
                Some(p)
            });
            // By default a tenth of the period, between a minute and an hour: a nightly
            // job may run an hour late, a job every five minutes a minute late.
            let grace = f.take("grace").map_or_else(
                || period.map(|p| (p / 10).clamp(Duration::from_secs(60), Duration::from_secs(3600))),
                |n| de::duration(n, &format!("{what} grace"), d),
            );
            let token = f.require("token", d).and_then(|n| {
                let t = secret_text(n, &format!("{what} token"), d, secrets)?;
                if t.written() == t.expose() {
                    d.push(Diagnostic::error(n.pos.clone(), format!("{what} token is written inline")).with_hint(
                        "give it by reference, e.g. ${env:BACKUP_JOB_HEARTBEAT_TOKEN} or ${file:/etc/steward/backup-job.token}",
                    ));
                    return None;
                }
                if t.expose().trim().len() < 16 {
                    d.push(
                        Diagnostic::error(n.pos.clone(), format!("{what} token is shorter than 16 characters"))
                            .with_hint("use a random one, e.g. `openssl rand -hex 24`"),
                    );
                    return None;
                }
                Some(t)
            });
            f.finish(&["period", "grace", "token", "conditions"], d);
            Some(Probe::Heartbeat(HeartbeatProbe { period: period?, grace: grace?, token: token? }))
        }
        "dns" => {
            let name = f.require("name", d).and_then(|n| {
                let name = de::string(n, &format!("{what} name"), d)?;
                let labels_ok = name.trim_end_matches('.').split('.').all(|l| !l.is_empty() && l.len() <= 63);
                if name.is_empty() || name.len() > 253 || !labels_ok || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    d.push(
                        Diagnostic::error(n.pos.clone(), format!("{what} name `{name}` is not a domain name"))
                            .with_hint("write a name such as chat.example.com (labels of 1 to 63 characters, 253 in all)"),
                    );
                    return None;
                }
                Some(name)
            });
            let record_type = f.take("type").map_or(Some("A".to_string()), |n| {
                let t = de::string(n, &format!("{what} type"), d)?.to_ascii_uppercase();
                if !DNS_RECORD_TYPES.contains(&t.as_str()) {
                    d.push(
                        Diagnostic::error(n.pos.clone(), format!("{what} asks for record type `{t}`, which the dns probe does not know"))
                            .with_hint(format!("use one of: {}", DNS_RECORD_TYPES.join(", "))),
                    );
                    return None;
                }
                Some(t)
            });
            let server = f.take("server").map_or(Some(None), |n| {
                let text = de::string(n, &format!("{what} server"), d)?;
                let parsed =
                    text.parse::<std::net::SocketAddr>().ok().or_else(|| text.parse::<std::net::IpAddr>().ok().map(|ip| (ip, 53).into()));
                if parsed.is_none() {
                    d.push(
                        Diagnostic::error(n.pos.clone(), format!("{what} server `{text}` is not an IP address (with an optional port)"))
                            .with_hint("write e.g. 10.0.0.2 or 10.0.0.2:5353; a name would need DNS to find the DNS server"),
                    );
                }
                parsed.map(Some)
            });
            let expect = f.take("expect").map_or(Some(vec![]), |n| {
                de::list(n, &format!("{what} expect"), d)?.iter().map(|i| de::string(i, &format!("{what} expect item"), d)).collect()
            });
            f.finish(&["name", "type", "server", "expect", "conditions"], d);
            Some(Probe::Dns(DnsProbe { name: name?, record_type: record_type?, server: server?, expect: expect? }))
        }
        "websocket" => {
            let url = f.require("url", d).and_then(|n| url(n, &format!("{what} url"), &["ws", "wss"], d, secrets));
            let headers = f.take("headers").map_or(Some(vec![]), |n| env_map(n, &format!("{what} headers"), d, secrets));
            let send = f.take("send").and_then(|n| secret_text(n, &format!("{what} send"), d, secrets));
            let expect_reply = f.take("expect_reply").map_or(Some(false), |n| de::boolean(n, &format!("{what} expect_reply"), d));
            let max_reply_bytes = f
                .take("max_reply_bytes")
                .map_or(Some(1 << 20), |n| de::integer(n, &format!("{what} max_reply_bytes"), 1..=(64 << 20), d).map(|v| v as usize));
            let tls = nested_tls_options(&mut f, what, d);
            f.finish(&["url", "headers", "send", "expect_reply", "max_reply_bytes", "tls", "conditions"], d);
            Some(Probe::Websocket(WebsocketProbe {
                url: url?,
                headers: headers?,
                send,
                expect_reply: expect_reply?,
                max_reply_bytes: max_reply_bytes?,
                tls: tls?,
            }))
        }
        "postgres" | "mysql" => {
            let schemes: &[&str] = if kind == "postgres" { &["postgres", "postgresql"] } else { &["mysql", "mariadb"] };
            let url = f.require("url", d).and_then(|n| url(n, &format!("{what} url"), schemes, d, secrets));
            let query = f.take("query").map_or(Some("SELECT 1".to_string()), |n| de::string(n, &format!("{what} query"), d));
            f.finish(&["url", "query", "conditions"], d);
            let sql = SqlProbe { url: url?, query: query? };
            Some(if kind == "postgres" { Probe::Postgres(sql) } else { Probe::Mysql(sql) })
        }
        "cql" => {
            let hosts = f.require("hosts", d).and_then(|n| {
                let list = de::list(n, &format!("{what} hosts"), d)?;
                if list.is_empty() {
                    d.push(
                        Diagnostic::error(n.pos.clone(), format!("{what} hosts is empty"))
                            .with_hint("list at least one node, e.g. [10.0.0.5:9042]"),
                    );
                    return None;
                }
                list.iter().map(|h| host_port(h, what, d)).collect::<Option<Vec<_>>>()
            });
            let username = f.take("username").and_then(|n| de::string(n, &format!("{what} username"), d));
            let password = f.take("password").and_then(|n| {
                let p = secret_text(n, &format!("{what} password"), d, secrets)?;
                if p.written() == p.expose() {
                    d.push(
                        Diagnostic::error(n.pos.clone(), format!("{what} password is written inline"))
                            .with_hint("give it by reference: ${env:CASSANDRA_PASSWORD} or ${file:/etc/steward/cassandra.password}"),
                    );
                    return None;
                }
                Some(p)
            });
            let query =
                f.take("query").map_or(Some("SELECT release_version, cluster_name, data_center FROM system.local".to_string()), |n| {
                    de::string(n, &format!("{what} query"), d)
                });
            f.finish(&["hosts", "username", "password", "query", "conditions"], d);
            Some(Probe::Cql(CqlProbe { hosts: hosts?, username, password, query: query? }))
        }
        "mongodb" => {
            let url = f.require("url", d).and_then(|n| url(n, &format!("{what} url"), &["mongodb"], d, secrets));
            f.finish(&["url", "conditions"], d);
            url.map(|url| Probe::Mongodb { url })
        }
        "redis" => {
            let url = f.require("url", d).and_then(|n| url(n, &format!("{what} url"), &["redis", "rediss"], d, secrets));
            f.finish(&["url", "conditions"], d);
            url.map(|url| Probe::Redis { url })
        }
        "nats" => {
            let url = f.require("url", d).and_then(|n| url(n, &format!("{what} url"), &["nats", "tls"], d, secrets));
            let stream = f.take("stream").and_then(|n| de::string(n, &format!("{what} stream"), d));
            let consumer_node = f.take("consumer");
            let consumer = consumer_node.and_then(|n| de::string(n, &format!("{what} consumer"), d));
            if let (Some(n), None) = (consumer_node, &stream) {
                d.push(
                    Diagnostic::error(n.pos.clone(), format!("{what} names a consumer but no stream"))
                        .with_hint("add `stream:` with the consumer's stream"),
                );
            }
            f.finish(&["url", "stream", "consumer", "conditions"], d);
            Some(Probe::Nats(NatsProbe { url: url?, stream, consumer }))
        }
        "command" => {
            let argv = f.require("argv", d).and_then(|n| {
                let items = de::list(n, &format!("{what} argv"), d)?;
                if items.is_empty() {
                    d.push(
                        Diagnostic::error(n.pos.clone(), format!("{what} argv is empty"))
                            .with_hint("give the program and its arguments, e.g. [pg_isready, -h, 127.0.0.1]"),
                    );
                    return None;
                }
                items.iter().map(|i| secret_text(i, &format!("{what} argv item"), d, secrets)).collect::<Option<Vec<_>>>()
            });
            let env = f.take("env").map_or(Some(vec![]), |n| env_map(n, &format!("{what} env"), d, secrets));
            let workdir = f.take("workdir").and_then(|n| de::string(n, &format!("{what} workdir"), d)).map(PathBuf::from);
            f.finish(&["argv", "env", "workdir", "conditions"], d);
            Some(Probe::Command(CommandProbe { argv: argv?, env: env?, workdir }))
        }
        "backup" => {
            let policy = f.require("policy", d).and_then(|n| de::string(n, &format!("{what} policy"), d));
            let max_age = f.require("max_age", d).and_then(|n| de::duration(n, &format!("{what} max_age"), d));
            let verified = f.take("verified").map_or(Some(true), |n| de::boolean(n, &format!("{what} verified"), d));
            f.finish(&["policy", "max_age", "verified", "conditions"], d);
            Some(Probe::Backup(BackupProbe { policy: policy?, max_age: max_age?, verified: verified? }))
        }
        "wal" => {
            let policy = f.require("policy", d).and_then(|n| de::string(n, &format!("{what} policy"), d));
            let max_age = f.require("max_age", d).and_then(|n| de::duration(n, &format!("{what} max_age"), d));
            f.finish(&["policy", "max_age", "conditions"], d);
            Some(Probe::Wal(WalProbe { policy: policy?, max_age: max_age? }))
        }
        _ => unreachable!("kinds come from PROBE_KINDS"),
    };
    Some((probe?, conditions?))
}

/// `host:port`, the port a number.
fn host_port(n: &Node, what: &str, d: &mut Diagnostics) -> Option<String> {
    let a = de::string(n, &format!("{what} address"), d)?;
    if a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
        d.push(
            Diagnostic::error(n.pos.clone(), format!("{what} address `{a}` has no port")).with_hint("write host:port, e.g. 127.0.0.1:5432"),
        );
        return None;
    }
    Some(a)
}

/// `insecure_skip_verify` and `ca_file`, taken from `f` (an `http` probe's `tls:`, or a
/// `tls` probe itself).
fn tls_options(f: &mut Fields, d: &mut Diagnostics) -> Option<TlsOptions> {
    let insecure = f.take("insecure_skip_verify").map_or(Some(false), |n| de::boolean(n, "insecure_skip_verify", d));
    let ca_file = f.take("ca_file").and_then(|n| {
        let p = PathBuf::from(de::string(n, "ca_file", d)?);
        if !p.is_file() {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("ca_file `{}` does not exist", p.display()))
                    .with_hint("give the path of a PEM file of CA certificates"),
            );
        }
        Some(p)
    });
    Some(TlsOptions { insecure_skip_verify: insecure?, ca_file })
}

/// A probe's `tls:` mapping (`http`, `websocket`); the defaults without one.
fn nested_tls_options(f: &mut Fields, what: &str, d: &mut Diagnostics) -> Option<TlsOptions> {
    let Some(n) = f.take("tls") else { return Some(TlsOptions::default()) };
    let mut t = Fields::of(n, format!("{what} tls"), d)?;
    let tls = tls_options(&mut t, d);
    t.finish(&["insecure_skip_verify", "ca_file"], d);
    tls
}

pub(super) fn env_map(node: &Node, what: &str, d: &mut Diagnostics, secrets: &mut Vec<String>) -> Option<Vec<(String, SecretString)>> {
    let Value::Map(entries) = &node.value else {
        d.push(de::type_error(node, what, "a mapping"));
        return None;
    };
    entries
        .iter()
        .map(|(k, v)| {
            let key = k.scalar_text().unwrap_or_default();
            secret_text(v, &format!("{what}.{key}"), d, secrets).map(|v| (key, v))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .collect()
}

fn http(f: &mut Fields<'_>, what: &str, d: &mut Diagnostics, secrets: &mut Vec<String>) -> Option<Probe> {
    let url = f.require("url", d).and_then(|n| url(n, &format!("{what} url"), &["http", "https"], d, secrets));
    let method = f.take("method").map_or(Some("GET".to_string()), |n| {
        let m = de::string(n, &format!("{what} method"), d)?.to_ascii_uppercase();
        if !["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"].contains(&m.as_str()) {
            d.push(
                Diagnostic::error(n.pos.clone(), format!("{what} method `{m}` is not an HTTP method"))
                    .with_hint("use GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"),
            );
            return None;
        }
        Some(m)
    });
    let headers = f.take("headers").map_or(Some(vec![]), |n| env_map(n, &format!("{what} headers"), d, secrets));
    let body = f.take("body").and_then(|n| secret_text(n, &format!("{what} body"), d, secrets));
    let expect_status = f.take("expect_status").map_or(Some(vec![]), |n| {
        let codes = match &n.value {
            Value::Int(_) => vec![n.clone()],
            _ => de::list(n, &format!("{what} expect_status"), d)?.to_vec(),
        };
        codes.iter().map(|c| de::integer(c, &format!("{what} expect_status"), 100..=599, d).map(|c| c as u16)).collect()
    });
    let follow_redirects = f.take("follow_redirects").map_or(Some(false), |n| de::boolean(n, &format!("{what} follow_redirects"), d));
    let max_body_bytes = f
        .take("max_body_bytes")
        .map_or(Some(1 << 20), |n| de::integer(n, &format!("{what} max_body_bytes"), 1..=(256 << 20), d).map(|v| v as usize));
    let tls = nested_tls_options(f, what, d);
    f.finish(&["url", "method", "headers", "body", "expect_status", "follow_redirects", "max_body_bytes", "tls", "conditions"], d);
    Some(Probe::Http(HttpProbe {
        url: url?,
        method: method?,
        headers: headers?,
        body,
        expect_status: expect_status?,
        follow_redirects: follow_redirects?,
        max_body_bytes: max_body_bytes?,
        tls: tls?,
    }))
}

fn conditions(f: &mut Fields<'_>, kind: &str, what: &str, d: &mut Diagnostics) -> Option<Vec<Condition>> {
    let Some(node) = f.take("conditions") else {
        return Some(vec![]);
    };
    let items = de::list(node, &format!("{what} conditions"), d)?;
    let roots = Probe::condition_roots(kind);
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        let Some(text) = de::text(item, &format!("a condition of {what}"), d) else {
            ok = false;
            continue;
        };
        let quote = usize::from(matches!(item.value, Value::Str { quoted: true, .. }));
        match Condition::parse(&text) {
            Ok(c) if !roots.contains(&c.root()) => {
                ok = false;
                let hint = match super::diagnostics::closest(c.root(), roots.iter().copied()) {
                    Some(r) => format!("did you mean `{r}`? a {kind} check can test: {}", roots.join(", ")),
                    None => format!("a {kind} check can test: {}", roots.join(", ")),
                };
                d.push(
                    Diagnostic::error(
                        item.pos.shifted(quote),
                        format!("condition `{text}` tests `{}`, which a {kind} check does not produce", c.root()),
                    )
                    .with_hint(hint),
                );
            }
            Ok(c) if c.root() == "response_time" && matches!(c.expected, Literal::Num(_)) => {
                ok = false;
                d.push(
                    Diagnostic::error(item.pos.shifted(quote), format!("condition `{text}` compares response_time with a plain number"))
                        .with_hint("response_time is a duration: write a unit, e.g. `response_time < 500ms`"),
                );
            }
            Ok(c) => out.push(c),
            Err(e) => {
                ok = false;
                d.push(
                    Diagnostic::error(item.pos.shifted(quote + e.offset), format!("invalid condition `{text}`: {}", e.message))
                        .with_hint(e.hint),
                );
            }
        }
    }
    ok.then_some(out)
}

/// Rules that span items: unique names, references that resolve, no dependency cycles.
fn cross_check(services: &[Service], checks: &[CheckRef], d: &mut Diagnostics) {
    let mut seen: HashMap<&str, &Pos> = HashMap::new();
    for s in services {
        if let Some(first) = seen.insert(&s.name, &s.pos) {
            d.push(
                Diagnostic::error(s.pos.clone(), format!("service `{}` is defined twice", s.name))
                    .with_hint(format!("the first definition is at {first}; names are unique across all files")),
            );
        }
    }
    let mut seen_checks: HashMap<&str, &Pos> = HashMap::new();
    for c in checks {
        if let Some(first) = seen_checks.insert(&c.name, &c.pos) {
            d.push(
                Diagnostic::error(c.pos.clone(), format!("check `{}` is defined twice", c.name))
                    .with_hint(format!("the first definition is at {first}; names are unique across all files")),
            );
        }
        if let Some((svc, pos)) = &c.service
            && !seen.contains_key(svc.as_str())
        {
            let hint = match super::diagnostics::closest(svc, services.iter().map(|s| s.name.as_str())) {
                Some(n) => format!("did you mean `{n}`?"),
                None => "add it under `services:` or fix the name".into(),
            };
            d.push(
                Diagnostic::error(pos.clone(), format!("check `{}` names service `{svc}`, which is not defined", c.name)).with_hint(hint),
            );
        }
    }
    for s in services {
        for dep in &s.depends_on {
            if dep == &s.name {
                d.push(
                    Diagnostic::error(s.pos.clone(), format!("service `{}` depends on itself", s.name))
                        .with_hint("remove it from its own depends_on"),
                );
            } else if !seen.contains_key(dep.as_str()) {
                d.push(
                    Diagnostic::error(s.pos.clone(), format!("service `{}` depends on `{dep}`, which is not defined", s.name))
                        .with_hint("add that service under `services:` or fix the name"),
                );
            }
        }
    }
    for cycle in dependency_cycles(services) {
        let first = services.iter().find(|s| s.name == cycle[0]).expect("cycle members exist");
        d.push(
            Diagnostic::error(first.pos.clone(), format!("services depend on each other in a cycle: {}", cycle.join(" → ")))
                .with_hint("a dependency graph must have no cycles; remove one of these depends_on entries"),
        );
    }
}

/// Each cycle once, as the list of names along it (first name repeated at the end).
fn dependency_cycles(services: &[Service]) -> Vec<Vec<String>> {
    let index: HashMap<&str, &Service> = services.iter().map(|s| (s.name.as_str(), s)).collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state: HashMap<&str, u8> = HashMap::new();
    let mut cycles = Vec::new();
    fn visit<'a>(
        name: &'a str,
        index: &HashMap<&'a str, &'a Service>,
        state: &mut HashMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
        cycles: &mut Vec<Vec<String>>,
    ) {
        state.insert(name, 1);
        path.push(name);
        if let Some(s) = index.get(name) {
            for dep in &s.depends_on {
                match state.get(dep.as_str()).copied().unwrap_or(0) {
                    0 if index.contains_key(dep.as_str()) => visit(dep, index, state, path, cycles),
                    1 if dep != name => {
                        let start = path.iter().position(|p| p == dep).expect("on path");
                        let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
                        cycle.push(dep.clone());
                        cycles.push(cycle);
                    }
                    _ => {}
                }
            }
        }
        path.pop();
        state.insert(name, 2);
    }
    for s in services {
        if state.get(s.name.as_str()).copied().unwrap_or(0) == 0 {
            visit(&s.name, &index, &mut state, &mut Vec::new(), &mut cycles);
        }
    }
    cycles
}
