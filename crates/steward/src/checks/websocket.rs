//! `websocket`: the upgrade handshake over TCP (or TLS for `wss://`, trusted like the
//! `http` probe), then optionally a message sent and the first reply read — what a chat
//! client does first. Conditions read `reply` (as JSON when a condition looks inside
//! it) and `response_time`; the connection is closed politely after.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use serde_json::{Map, Value as Json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::config::{CheckSpec, WebsocketProbe};

pub(super) async fn observe(p: &WebsocketProbe, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
    let url = url::Url::parse(p.url.expose()).map_err(|e| format!("the url is not valid: {e}"))?;
    let host = url.host_str().ok_or("the url has no host")?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = url.port_or_known_default().ok_or("the url has no port")?;
    let shown = crate::config::secret::redact_url_password(p.url.written()).into_owned();
    let tcp = TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    if url.scheme() == "wss" {
        let name = ServerName::try_from(host.clone()).map_err(|e| format!("`{host}` is not a valid TLS server name: {e}"))?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(super::http::client_config(&p.tls)?))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?;
        talk(p, spec, &shown, tls).await
    } else {
        talk(p, spec, &shown, tcp).await
    }
}

async fn talk<S: AsyncRead + AsyncWrite + Unpin>(
    p: &WebsocketProbe,
    spec: &CheckSpec,
    shown: &str,
    stream: S,
) -> Result<Map<String, Json>, String> {
    let mut request = p.url.expose().into_client_request().map_err(|e| format!("the url is not a WebSocket url: {e}"))?;
    for (k, v) in &p.headers {
        let name = HeaderName::from_bytes(k.as_bytes()).map_err(|e| format!("header `{k}`: {e}"))?;
        let value = HeaderValue::from_str(v.expose()).map_err(|e| format!("header `{k}` has a value that cannot be sent: {e}"))?;
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig::default().max_message_size(Some(p.max_reply_bytes)).max_frame_size(Some(p.max_reply_bytes));
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await.map_err(|e| match e {
        WsError::Http(resp) => format!("{shown} answered the upgrade with HTTP {}, not 101 Switching Protocols", resp.status().as_u16()),
        e => format!("WebSocket handshake with {shown} failed: {e}"),
    })?;
    let mut obs = Map::new();
    if let Some(message) = &p.send {
        ws.send(Message::text(message.expose())).await.map_err(|e| format!("sending the message failed: {e}"))?;
    }
    if p.send.is_some() || p.expect_reply || spec.reads("reply") {
        let reply = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => break t.as_str().to_string(),
                Some(Ok(Message::Binary(b))) => break String::from_utf8_lossy(&b).into_owned(),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(frame))) => {
                    let why = frame.map(|f| format!(" ({} {})", u16::from(f.code), f.reason)).unwrap_or_default();
                    return Err(format!("{shown} closed the connection{why} instead of replying"));
                }
                Some(Err(WsError::Capacity(e))) => {
                    return Err(format!("the reply is larger than {} bytes (max_reply_bytes): {e}", p.max_reply_bytes));
                }
                Some(Err(e)) => return Err(format!("reading the reply failed: {e}")),
                None => return Err(format!("{shown} closed the connection instead of replying")),
            }
        };
        let structured = spec.conditions.iter().any(|c| c.root() == "reply" && c.path.len() > 1);
        let value = if structured {
            serde_json::from_str(&reply).map_err(|e| {
                let start: String = reply.chars().take(80).collect();
                format!("the reply is not JSON ({e}); it starts with {start:?}")
            })?
        } else {
            Json::from(reply)
        };
        obs.insert("reply".into(), value);
    }
    // A polite close; a server that does not answer it is not the check's concern.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), ws.close(None)).await;
    Ok(obs)
}
