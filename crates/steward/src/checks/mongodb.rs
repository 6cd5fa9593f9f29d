//! `mongodb`: the official driver connects (server selection bounded by the check's
//! timeout), runs `ping` and `buildInfo` — `server.version` — and, when a condition
//! reads `replication`, `replSetGetStatus`: the set's name, its members (how many, how
//! many healthy), the primary, and the replication lag — how far the furthest healthy
//! secondary's last applied operation is behind the primary's, in seconds.

use std::time::Duration;

use mongodb::bson::{Bson, Document, doc};
use mongodb::options::ClientOptions;
use serde_json::{Map, Value as Json, json};

use crate::config::CheckSpec;
use crate::config::secret::SecretString;

pub(super) async fn observe(url: &SecretString, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
    let shown = crate::config::secret::redact_url_password(url.written()).into_owned();
    let mut options =
        ClientOptions::parse(url.expose()).await.map_err(|e| format!("the url {shown} is not a MongoDB connection string: {e}"))?;
    // Fail inside the check's own timeout, saying why, rather than be cut off by it.
    let budget = spec.timeout.saturating_sub(Duration::from_millis(100)).max(Duration::from_millis(100));
    options.server_selection_timeout = Some(budget);
    options.connect_timeout = Some(budget);
    options.app_name = Some("steward".into());
    options.max_pool_size = Some(1);
    let client = mongodb::Client::with_options(options).map_err(|e| format!("cannot set up a MongoDB client for {shown}: {e}"))?;
    let result = talk(&client, spec).await;
    // Stops the client's monitors now rather than when they next wake.
    client.shutdown().await;
    result.map_err(|e| format!("MongoDB at {shown}: {e}"))
}

async fn talk(client: &mongodb::Client, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
    let admin = client.database("admin");
    admin.run_command(doc! { "ping": 1 }).await.map_err(|e| describe(&e))?;
    let build = admin.run_command(doc! { "buildInfo": 1 }).await.map_err(|e| describe(&e))?;
    let mut obs = Map::new();
    obs.insert("server".into(), json!({ "version": build.get_str("version").unwrap_or("unknown") }));
    if spec.reads("replication") {
        let status = admin.run_command(doc! { "replSetGetStatus": 1 }).await.map_err(|e| describe(&e))?;
        obs.insert("replication".into(), replication(&status));
    }
    Ok(obs)
}

/// What conditions read of `replSetGetStatus`.
fn replication(status: &Document) -> Json {
    let members: Vec<&Document> = status.get_array("members").map(|m| m.iter().filter_map(Bson::as_document).collect()).unwrap_or_default();
    let healthy = |m: &Document| match m.get("health") {
        Some(Bson::Double(h)) => *h == 1.0,
        Some(Bson::Int32(h)) => *h == 1,
        Some(Bson::Int64(h)) => *h == 1,
        _ => false,
    };
    let applied = |m: &Document| m.get_datetime("optimeDate").ok().map(|d| d.timestamp_millis());
    let primary = members.iter().find(|m| m.get_str("stateStr") == Ok("PRIMARY"));
    let lag_seconds = primary.and_then(|p| applied(p)).map(|at| {
        members
            .iter()
            .filter(|m| healthy(m) && m.get_str("stateStr") == Ok("SECONDARY"))
            .filter_map(|m| applied(m))
            .map(|s| (at - s).max(0) as f64 / 1000.0)
            .fold(0.0, f64::max)
    });
    json!({
        "set": status.get_str("set").ok(),
        "members": members.len(),
        "healthy_members": members.iter().filter(|m| healthy(m)).count(),
        "primary": primary.and_then(|p| p.get_str("name").ok()),
        "lag_seconds": lag_seconds,
    })
}

/// The driver's error in a line: a selection timeout says which server failed how
/// (from the topology dump the driver appends), other errors lose their label lists.
fn describe(e: &mongodb::error::Error) -> String {
    static SERVER: std::sync::LazyLock<regex::Regex> =
        std::sync::LazyLock::new(|| regex::Regex::new(r"Address: ([^,]+), Type: \w+, Error: Kind: (.+?), labels").expect("valid"));
    let text = e.to_string();
    if text.contains("Server selection timeout") {
        let servers: Vec<String> = SERVER.captures_iter(&text).map(|c| format!("{}: {}", &c[1], &c[2])).collect();
        return if servers.is_empty() {
            "no server could be selected within the timeout".to_string()
        } else {
            format!("no server could be selected within the timeout ({})", servers.join("; "))
        };
    }
    let text = text.strip_prefix("Kind: ").unwrap_or(&text);
    text.split(", labels: ").next().unwrap_or(text).to_string()
}
