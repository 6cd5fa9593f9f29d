//! `redis`: PING, and INFO fields for conditions (`info.role`, `info.connected_slaves`).

use serde_json::{Map, Value as Json};

use crate::config::CheckSpec;
use crate::config::secret::SecretString;

pub(crate) async fn observe(url: &SecretString, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
    let client = redis::Client::open(url.expose()).map_err(|e| format!("invalid redis url: {e}"))?;
    let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| format!("cannot connect: {e}"))?;
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| format!("PING failed: {e}"))?;
    if pong != "PONG" {
        return Err(format!("PING answered {pong:?}, expected PONG"));
    }
    let mut obs = Map::new();
    if spec.reads("info") {
        let info: String = redis::cmd("INFO").query_async(&mut conn).await.map_err(|e| format!("INFO failed: {e}"))?;
        obs.insert("info".into(), Json::Object(parse_info(&info)));
    }
    Ok(obs)
}

/// `INFO` text (`key:value` lines, `# Section` headers) as a flat map of strings.
fn parse_info(text: &str) -> Map<String, Json> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), Json::from(v.trim().to_string())))
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn info_lines_become_fields() {
        let m = super::parse_info("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n# Keyspace\r\ndb0:keys=1,expires=0\r\n");
        assert_eq!(m["role"], "master");
        assert_eq!(m["connected_slaves"], "0");
        assert_eq!(m["db0"], "keys=1,expires=0");
    }
}
