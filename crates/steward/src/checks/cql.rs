//! `cql`: Cassandra or ScyllaDB through the ScyllaDB driver (it speaks CQL to both). The
//! driver connects to the listed nodes and reads the cluster's topology (`system.local`,
//! `system.peers`); conditions read `cluster.nodes` and `cluster.datacenters`, the
//! query's first row (`row.release_version`) and its row count (`rows`). The query is
//! run as written, unprepared and never templated.

use std::collections::BTreeSet;

use scylla::client::session_builder::SessionBuilder;
use scylla::value::{CqlValue, Row};
use serde_json::{Map, Value as Json, json};

use crate::config::{CheckSpec, CqlProbe};

/// Rows read at most; `rows` says how many came.
const MAX_ROWS: usize = 1_000;

pub(super) async fn observe(p: &CqlProbe, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
    let mut builder = SessionBuilder::new().known_nodes(&p.hosts).connection_timeout(spec.timeout).fetch_schema_metadata(false);
    if let (Some(user), Some(password)) = (&p.username, &p.password) {
        builder = builder.user(user.clone(), password.expose().to_string());
    }
    let hosts = p.hosts.join(", ");
    let session = builder.build().await.map_err(|e| format!("cannot connect to {hosts}: {e}"))?;
    let state = session.get_cluster_state();
    let nodes = state.get_nodes_info();
    let datacenters: BTreeSet<String> = nodes.iter().filter_map(|n| n.datacenter.clone()).collect();
    let result = session.query_unpaged(p.query.as_str(), &[]).await.map_err(|e| format!("the query failed on {hosts}: {e}"))?;
    let mut obs = Map::new();
    obs.insert("cluster".into(), json!({ "nodes": nodes.len(), "datacenters": datacenters.len() }));
    match result.into_rows_result() {
        Ok(rows) => {
            let names: Vec<String> = rows.column_specs().iter().map(|c| c.name().to_string()).collect();
            let read: Vec<Row> = rows
                .rows::<Row>()
                .map_err(|e| format!("cannot read the rows: {e}"))?
                .take(MAX_ROWS)
                .collect::<Result<_, _>>()
                .map_err(|e| format!("cannot read a row: {e}"))?;
            obs.insert("rows".into(), Json::from(read.len()));
            if let Some(first) = read.first() {
                let row: Map<String, Json> =
                    names.iter().cloned().zip(first.columns.iter().map(|v| v.as_ref().map_or(Json::Null, value))).collect();
                obs.insert("row".into(), Json::Object(row));
            }
        }
        // A statement that returns no rows (an INSERT used as a write check).
        Err(_) => {
            obs.insert("rows".into(), Json::from(0));
        }
    }
    Ok(obs)
}

/// A CQL value as conditions read it: numbers, text, booleans; the rest as text.
fn value(v: &CqlValue) -> Json {
    match v {
        CqlValue::Ascii(s) | CqlValue::Text(s) => Json::from(s.as_str()),
        CqlValue::Boolean(b) => Json::from(*b),
        CqlValue::Int(i) => Json::from(*i),
        CqlValue::BigInt(i) => Json::from(*i),
        CqlValue::SmallInt(i) => Json::from(*i),
        CqlValue::TinyInt(i) => Json::from(*i),
        CqlValue::Counter(c) => Json::from(c.0),
        CqlValue::Float(f) => Json::from(*f),
        CqlValue::Double(f) => Json::from(*f),
        CqlValue::Timestamp(t) => Json::from(t.0),
        CqlValue::Uuid(u) => Json::from(u.to_string()),
        CqlValue::Timeuuid(u) => Json::from(u.to_string()),
        CqlValue::Inet(ip) => Json::from(ip.to_string()),
        CqlValue::List(items) | CqlValue::Set(items) | CqlValue::Vector(items) => Json::Array(items.iter().map(value).collect()),
        other => Json::from(format!("{other:?}")),
    }
}
