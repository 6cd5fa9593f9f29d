//! `dns`: one query, to the system's resolvers or a named server, with no cache in
//! between (every run asks the server). Conditions read `answers` (each record's data as
//! text: `10.0.0.1`, `10 mail.example.com.`), `count`, `ttl` (the smallest) and
//! `response_time`; `expect` lists answers that must all be present. A name with no
//! such record (NXDOMAIN, or no data) fails the check: a DNS check asks for something
//! that must exist.

use hickory_resolver::config::{NameServerConfigGroup, ResolveHosts, ResolverConfig};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::{ResolveErrorKind, Resolver};
use serde_json::{Map, Value as Json};

use crate::config::{CheckSpec, DnsProbe};

pub(super) async fn observe(p: &DnsProbe, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
    let record_type: RecordType = p.record_type.parse().map_err(|e| format!("record type {}: {e}", p.record_type))?;
    let provider = TokioConnectionProvider::default();
    let mut builder = match p.server {
        Some(server) => {
            let servers = NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true);
            Resolver::builder_with_config(ResolverConfig::from_parts(None, vec![], servers), provider)
        }
        None => Resolver::builder(provider).map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
    };
    let options = builder.options_mut();
    // The check measures the server, not a cache or /etc/hosts; the check's own timeout
    // bounds the whole query, so one attempt per server.
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    options.attempts = 1;
    options.timeout = spec.timeout;
    let resolver = builder.build();
    let asked = match p.server {
        Some(server) => format!("{} {} at {server}", p.record_type, p.name),
        None => format!("{} {}", p.record_type, p.name),
    };
    let lookup = resolver.lookup(p.name.as_str(), record_type).await.map_err(|e| match e.kind() {
        ResolveErrorKind::Proto(proto) if proto.is_nx_domain() => format!("{asked}: no such name (NXDOMAIN)"),
        ResolveErrorKind::Proto(proto) if proto.is_no_records_found() => format!("{asked}: the name has no {} record", p.record_type),
        _ => format!("{asked}: {e}"),
    })?;
    let records: Vec<_> = lookup.records().iter().filter(|r| r.record_type() == record_type).collect();
    if records.is_empty() {
        return Err(format!("{asked}: the name has no {} record", p.record_type));
    }
    let answers: Vec<String> = records.iter().map(|r| r.data().to_string()).collect();
    if let Some(missing) = p.expect.iter().find(|e| !answers.iter().any(|a| a == *e)) {
        return Err(format!("{asked} answered {}, not {missing}", answers.join(", ")));
    }
    let mut obs = Map::new();
    obs.insert("count".into(), Json::from(answers.len()));
    obs.insert("ttl".into(), Json::from(records.iter().map(|r| r.ttl()).min().unwrap_or(0)));
    obs.insert("answers".into(), Json::from(answers));
    Ok(obs)
}
