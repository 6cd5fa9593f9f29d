//! `tls`: a TLS handshake with any TLS endpoint (a database, a broker, a mail server, an
//! HTTPS port nobody requests): the chain is verified against the system's roots and
//! `ca_file` like any client would, and the leaf certificate's expiry is read, so a
//! certificate that expires in fewer than `min_days_left` days fails the check weeks
//! before its clients do.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use serde_json::{Map, Value as Json};
use tokio::net::TcpStream;

use crate::config::TlsProbe;

pub(super) async fn observe(p: &TlsProbe) -> Result<Map<String, Json>, String> {
    let host = p.address.rsplit_once(':').map_or(p.address.as_str(), |(h, _)| h);
    let name = p.server_name.as_deref().unwrap_or(host.trim_start_matches('[').trim_end_matches(']'));
    let server_name = ServerName::try_from(name.to_string()).map_err(|e| format!("`{name}` is not a valid TLS server name: {e}"))?;
    let config = super::http::client_config(&p.tls)?;
    let tcp = TcpStream::connect(&p.address).await.map_err(|e| format!("cannot connect to {}: {e}", p.address))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {} ({name}) failed: {e}", p.address))?;
    let (_, session) = tls.get_ref();
    let chain = session.peer_certificates().unwrap_or_default();
    let leaf = chain.first().ok_or_else(|| format!("{} sent no certificate", p.address))?;
    let cert = super::http::certificate(leaf)?;
    let days_left = cert["days_left"].as_i64().unwrap_or(i64::MIN);
    if days_left < p.min_days_left {
        return Err(format!(
            "the certificate of {} ({name}) expires in {days_left} day(s), on {}: fewer than min_days_left ({})",
            p.address,
            cert["not_after"].as_str().unwrap_or("?"),
            p.min_days_left
        ));
    }
    let mut obs = Map::new();
    obs.insert("cert".into(), cert);
    obs.insert("chain".into(), Json::from(chain.len()));
    obs.insert("protocol".into(), Json::from(session.protocol_version().map_or("unknown".to_string(), |v| format!("{v:?}"))));
    Ok(obs)
}
