//! `nats`: connect and round-trip; optionally JetStream stream and consumer state
//! (`stream.messages`, `consumer.num_pending`, …) for backlog checks.

use serde_json::{Map, Value as Json};

use crate::config::{CheckSpec, NatsProbe};

pub(super) async fn observe(p: &NatsProbe, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
    let client = crate::backups::sources::nats::options(p.url.expose())
        .connection_timeout(spec.timeout)
        .name("steward")
        .connect(crate::config::secret::split_credentials(p.url.expose()).0)
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    client.flush().await.map_err(|e| format!("round trip to the server failed: {e}"))?;
    let info = client.server_info();
    let mut obs = Map::new();
    let mut server = Map::new();
    server.insert("version".into(), Json::from(info.version.clone()));
    server.insert("jetstream".into(), Json::from(info.jetstream));
    obs.insert("server".into(), Json::Object(server));
    if let Some(stream_name) = &p.stream {
        let js = async_nats::jetstream::new(client.clone());
        let mut stream = js.get_stream(stream_name).await.map_err(|e| format!("stream `{stream_name}`: {e}"))?;
        let state = stream.info().await.map_err(|e| format!("stream `{stream_name}` info: {e}"))?.state.clone();
        let mut s = Map::new();
        s.insert("messages".into(), Json::from(state.messages));
        s.insert("bytes".into(), Json::from(state.bytes));
        s.insert("first_seq".into(), Json::from(state.first_sequence));
        s.insert("last_seq".into(), Json::from(state.last_sequence));
        s.insert("consumer_count".into(), Json::from(state.consumer_count));
        obs.insert("stream".into(), Json::Object(s));
        if let Some(consumer_name) = &p.consumer {
            let c = stream
                .consumer_info(consumer_name)
                .await
                .map_err(|e| format!("consumer `{consumer_name}` of stream `{stream_name}`: {e}"))?;
            let mut m = Map::new();
            m.insert("num_pending".into(), Json::from(c.num_pending));
            m.insert("num_ack_pending".into(), Json::from(c.num_ack_pending));
            m.insert("num_redelivered".into(), Json::from(c.num_redelivered));
            m.insert("num_waiting".into(), Json::from(c.num_waiting));
            m.insert("delivered_seq".into(), Json::from(c.delivered.stream_sequence));
            m.insert("ack_floor_seq".into(), Json::from(c.ack_floor.stream_sequence));
            obs.insert("consumer".into(), Json::Object(m));
        }
    }
    Ok(obs)
}
