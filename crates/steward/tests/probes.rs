//! Every probe kind against the real thing on loopback: the system PostgreSQL,
//! MariaDB, Redis and NATS (JetStream), HTTP and HTTPS servers started here, and
//! programs. Each test asserts both the healthy case and how failures read.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use steward::checks::{Outcome, Prober};
use steward::config;

/// Loads a one-check configuration and runs it once.
async fn run(yaml: &str) -> Outcome {
    common::install_crypto();
    let config = config::load_str("test.yaml", yaml).unwrap_or_else(|d| panic!("config should be valid:\n{d}"));
    let prober = Prober::new(config.redactor.clone());
    prober.run(&config.checks[0]).await
}

async fn http_server(app: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

fn app() -> Router {
    Router::new()
        .route("/health", get(|| async { axum::Json(serde_json::json!({"status": "ok", "items": [{"id": 7}]})) }))
        .route("/down", get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down") }))
        .route("/text", get(|| async { "plain words" }))
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route("/huge", get(|| async { "x".repeat(3 << 20) }))
}

#[tokio::test(flavor = "multi_thread")]
async fn http_json_conditions_pass_and_fail_with_reasons() {
    let port = http_server(app()).await;
    let ok = run(&format!(
        "checks:\n  - name: c\n    http:\n      url: http://127.0.0.1:{port}/health\n      conditions: ['body.status == \"ok\"', 'body.items[0].id == 7', 'response_time < 2s', 'headers.content-type =~ \"json\"']\n"
    ))
    .await;
    assert!(ok.healthy, "{ok:?}");

    let missing = run(&format!(
        "checks:\n  - name: c\n    http:\n      url: http://127.0.0.1:{port}/health\n      conditions: ['body.uptime > 1']\n"
    ))
    .await;
    assert!(!missing.healthy);
    assert!(missing.reason.as_deref().unwrap().contains("`body.uptime` is missing"), "{missing:?}");

    let status =
        run(&format!("checks:\n  - name: c\n    http:\n      url: http://127.0.0.1:{port}/down\n      expect_status: [200]\n")).await;
    assert_eq!(status.reason.as_deref(), Some("HTTP status 503, expected 200"));

    let not_json = run(&format!(
        "checks:\n  - name: c\n    http:\n      url: http://127.0.0.1:{port}/text\n      conditions: ['body.status == \"ok\"']\n"
    ))
    .await;
    assert!(not_json.reason.as_deref().unwrap().contains("not JSON"), "{not_json:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn http_timeouts_huge_bodies_and_closed_ports_are_data() {
    let port = http_server(app()).await;
    let slow = run(&format!("checks:\n  - name: c\n    timeout: 300ms\n    http:\n      url: http://127.0.0.1:{port}/slow\n")).await;
    assert!(!slow.healthy);
    assert!(slow.reason.as_deref().unwrap().contains("timed out"), "{slow:?}");
    assert!(slow.latency < Duration::from_secs(2), "the timeout must bound the run: {slow:?}");

    let huge = run(&format!(
        "checks:\n  - name: c\n    http:\n      url: http://127.0.0.1:{port}/huge\n      conditions: ['body contains \"y\"']\n"
    ))
    .await;
    assert!(huge.reason.as_deref().unwrap().contains("larger than 1048576 bytes"), "{huge:?}");

    let closed = common::free_port();
    let refused = run(&format!("checks:\n  - name: c\n    http:\n      url: http://127.0.0.1:{closed}/health\n")).await;
    assert!(refused.reason.as_deref().unwrap().starts_with("connection failed"), "{refused:?}");
}

/// A TLS server with a fresh self-signed certificate valid for 30 days.
async fn https_server() -> (u16, tempfile::TempDir) {
    let (acceptor, dir) = tls_acceptor();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let body = r#"{"status":"ok"}"#;
                    let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if tls.write_all(resp.as_bytes()).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, dir)
}

/// TLS with a fresh self-signed certificate for localhost and 127.0.0.1, valid for 30
/// days; the directory holds it as `ca.pem`.
fn tls_acceptor() -> (tokio_rustls::TlsAcceptor, tempfile::TempDir) {
    common::install_crypto();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    // Half a day of slack keeps `days_left` at exactly 30 whatever the clock does mid-test.
    params.not_after = time_in_days(30) + time::Duration::hours(12);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap())
        .unwrap();
    (tokio_rustls::TlsAcceptor::from(Arc::new(config)), dir)
}

/// A WebSocket server (tokio-tungstenite), over TLS with `tls`: `ping` is answered with
/// a JSON pong, `close` with a close frame, `silence` with nothing, anything else is
/// echoed; `/private` refuses an upgrade without `Authorization: Bearer t0ken`.
async fn websocket_server(tls: Option<tokio_rustls::TlsAcceptor>) -> u16 {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
    async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: S) {
        // The signature tungstenite's handshake callback has.
        #[allow(clippy::result_large_err)]
        let check = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            let authorized = req.headers().get("authorization").is_some_and(|v| v == "Bearer t0ken");
            if req.uri().path() == "/private" && !authorized {
                let mut refused = ErrorResponse::new(Some("no".into()));
                *refused.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
                return Err(refused);
            }
            Ok(resp)
        };
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, check).await else { return };
        while let Some(Ok(msg)) = ws.next().await {
            let reply = match msg {
                Message::Text(t) if t.as_str() == "ping" => Message::text(r#"{"type":"pong","rooms":3}"#),
                Message::Text(t) if t.as_str() == "close" => Message::Close(None),
                Message::Text(t) if t.as_str() == "silence" => continue,
                Message::Text(t) => Message::Text(t),
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                return;
            }
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            serve(stream).await
                        }
                    }
                    None => serve(tcp).await,
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_upgrades_sends_and_reads_the_reply() {
    let port = websocket_server(None).await;
    let ws =
        |fields: &str| format!("checks:\n  - name: c\n    timeout: 1s\n    websocket: {{url: 'ws://127.0.0.1:{port}/chat', {fields}}}\n");
    let pong = run(&ws("send: ping, conditions: ['reply.type == \"pong\"', 'reply.rooms == 3', 'response_time < 1s']")).await;
    assert!(pong.healthy, "{pong:?}");
    assert!(run(&ws("conditions: []")).await.healthy, "the upgrade alone");
    let echo = run(&ws("send: hello, conditions: ['reply == \"hello\"']")).await;
    assert!(echo.healthy, "{echo:?}");

    let wrong = run(&ws("send: ping, conditions: ['reply.rooms > 3']")).await;
    assert!(wrong.reason.as_deref().unwrap().contains("reply.rooms is 3"), "{wrong:?}");
    let not_json = run(&ws("send: hello, conditions: ['reply.type == \"pong\"']")).await;
    assert!(not_json.reason.as_deref().unwrap().contains("the reply is not JSON"), "{not_json:?}");
    let closed = run(&ws("send: close")).await;
    assert!(closed.reason.as_deref().unwrap().contains("closed the connection"), "{closed:?}");
    let silent = run(&ws("send: silence")).await;
    assert!(silent.reason.as_deref().unwrap().contains("timed out after 1s"), "{silent:?}");
    let too_big = run(&ws("send: 'a long message', max_reply_bytes: 4")).await;
    assert!(too_big.reason.as_deref().unwrap().contains("max_reply_bytes"), "{too_big:?}");

    let private = format!("checks:\n  - name: c\n    websocket: {{url: 'ws://127.0.0.1:{port}/private'}}\n");
    let refused = run(&private).await;
    assert!(refused.reason.as_deref().unwrap().contains("answered the upgrade with HTTP 401"), "{refused:?}");
    let authorized = run(&format!(
        "checks:\n  - name: c\n    websocket: {{url: 'ws://127.0.0.1:{port}/private', headers: {{Authorization: Bearer t0ken}}}}\n"
    ))
    .await;
    assert!(authorized.healthy, "{authorized:?}");

    let http = http_server(app()).await;
    let plain = run(&format!("checks:\n  - name: c\n    websocket: {{url: 'ws://127.0.0.1:{http}/health'}}\n")).await;
    assert!(plain.reason.as_deref().unwrap().contains("answered the upgrade with HTTP 200"), "{plain:?}");
    let free = common::free_port();
    let nobody = run(&format!("checks:\n  - name: c\n    websocket: {{url: 'ws://127.0.0.1:{free}/'}}\n")).await;
    assert!(nobody.reason.as_deref().unwrap().contains("cannot connect"), "{nobody:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn websocket_over_tls_trusts_like_https() {
    let (acceptor, dir) = tls_acceptor();
    let port = websocket_server(Some(acceptor)).await;
    let untrusted = run(&format!("checks:\n  - name: c\n    websocket: {{url: 'wss://localhost:{port}/', send: ping}}\n")).await;
    assert!(untrusted.reason.as_deref().unwrap().contains("UnknownIssuer"), "{untrusted:?}");
    let trusted = run(&format!(
        "checks:\n  - name: c\n    websocket: {{url: 'wss://localhost:{port}/', send: ping, tls: {{ca_file: {}}}, conditions: ['reply.type == \"pong\"']}}\n",
        dir.path().join("ca.pem").display()
    ))
    .await;
    assert!(trusted.healthy, "{trusted:?}");
}

fn time_in_days(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_verifies_certificates_and_reports_days_left() {
    let (port, dir) = https_server().await;
    let untrusted = run(&format!("checks:\n  - name: c\n    http:\n      url: https://127.0.0.1:{port}/\n")).await;
    assert!(!untrusted.healthy);
    assert!(untrusted.reason.as_deref().unwrap().to_lowercase().contains("certificate"), "{untrusted:?}");

    let ca = dir.path().join("ca.pem");
    let trusted = run(&format!(
        "checks:\n  - name: c\n    http:\n      url: https://127.0.0.1:{port}/\n      tls: {{ca_file: {}}}\n      conditions: ['cert.days_left > 25', 'cert.days_left < 31', 'body.status == \"ok\"']\n",
        ca.display()
    ))
    .await;
    assert!(trusted.healthy, "{trusted:?}");

    let expiring = run(&format!(
        "checks:\n  - name: c\n    http:\n      url: https://127.0.0.1:{port}/\n      tls: {{insecure_skip_verify: true}}\n      conditions: ['cert.days_left > 60']\n"
    ))
    .await;
    assert!(expiring.reason.as_deref().unwrap().contains("cert.days_left is 30"), "{expiring:?}");
}

/// Any TLS endpoint: the chain verified like a client would, the name checked, and a
/// certificate expiring within `min_days_left` failing the check with its date.
#[tokio::test(flavor = "multi_thread")]
async fn tls_verifies_the_chain_and_fails_weeks_before_expiry() {
    let (port, dir) = https_server().await;
    let ca = dir.path().join("ca.pem");
    let tls = |fields: &str| format!("checks:\n  - name: c\n    tls: {{address: '127.0.0.1:{port}', {fields}}}\n");

    let untrusted = run(&tls("min_days_left: 1")).await;
    let reason = untrusted.reason.unwrap();
    assert!(reason.contains("TLS handshake") && reason.contains("UnknownIssuer"), "{reason}");

    let ok = run(&tls(&format!(
        "ca_file: {}, server_name: localhost, conditions: ['cert.days_left == 30', 'chain == 1', 'protocol == \"TLSv1_3\"']",
        ca.display()
    )))
    .await;
    assert!(ok.healthy, "{ok:?}");
    assert!(run(&tls(&format!("ca_file: {}", ca.display()))).await.healthy, "by IP address, 30 days left is over the default 14");

    let expiring = run(&tls(&format!("ca_file: {}, min_days_left: 45", ca.display()))).await;
    let reason = expiring.reason.unwrap();
    assert!(reason.contains("expires in 30 day(s)") && reason.contains("fewer than min_days_left (45)"), "{reason}");

    let wrong_name = run(&tls(&format!("ca_file: {}, server_name: db.example.com", ca.display()))).await;
    let reason = wrong_name.reason.unwrap();
    assert!(reason.contains("(db.example.com) failed") && reason.contains("not valid for name"), "{reason}");

    let insecure = run(&tls("insecure_skip_verify: true, conditions: ['cert.days_left > 60']")).await;
    assert!(insecure.reason.as_deref().unwrap().contains("cert.days_left is 30"), "expiry is read without trust: {insecure:?}");

    let closed = common::free_port();
    let refused = run(&format!("checks:\n  - name: c\n    tls: {{address: '127.0.0.1:{closed}'}}\n")).await;
    assert!(refused.reason.as_deref().unwrap().contains("cannot connect"), "{refused:?}");
}

/// A private dnsmasq on a free port, authoritative for `.test` (unknown names there are
/// NXDOMAIN, nothing is forwarded), killed on drop.
struct Dnsmasq {
    child: std::process::Child,
    port: u16,
}

impl Dnsmasq {
    fn start() -> Dnsmasq {
        let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let program = if std::path::Path::new("/usr/sbin/dnsmasq").exists() { "/usr/sbin/dnsmasq" } else { "dnsmasq" };
        let child = std::process::Command::new(program)
            .args(["-k", "--conf-file=/dev/null", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts"])
            .args(["--pid-file=", "--user=root", "--local=/test/", "--local-ttl=60"])
            .arg(format!("--port={port}"))
            .args(["--address=/chat.test/10.1.2.3", "--host-record=db.test,10.0.0.5", "--mx-host=chat.test,mail.chat.test,10"])
            .arg("--txt-record=chat.test,v=spf1 -all")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base) must be installed: bash scripts/test-services.sh");
        // Ready when it answers over TCP (it listens on both).
        common::wait_for("dnsmasq to listen", Duration::from_secs(10), || common::port_open(port).then_some(()));
        Dnsmasq { child, port }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Queries to a real DNS server: answers, TTL and count read by conditions, `expect`,
/// NXDOMAIN and a missing record type said in words, a silent server timed out.
#[tokio::test(flavor = "multi_thread")]
async fn dns_answers_expectations_and_missing_names() {
    let dns = Dnsmasq::start();
    let port = dns.port;
    let query = |fields: &str| format!("checks:\n  - name: c\n    timeout: 2s\n    dns: {{server: '127.0.0.1:{port}', {fields}}}\n");
    let a =
        run(&query("name: chat.test, expect: [10.1.2.3], conditions: ['answers contains \"10.1.2.3\"', 'count == 1', 'ttl == 60']")).await;
    assert!(a.healthy, "{a:?}");
    let mx = run(&query("name: chat.test, type: mx, conditions: ['answers contains \"10 mail.chat.test.\"']")).await;
    assert!(mx.healthy, "{mx:?}");
    let txt = run(&query("name: chat.test, type: TXT, expect: ['v=spf1 -all']")).await;
    assert!(txt.healthy, "{txt:?}");

    let moved = run(&query("name: db.test, expect: [10.0.0.9]")).await;
    assert_eq!(moved.reason.as_deref(), Some(format!("A db.test at 127.0.0.1:{port} answered 10.0.0.5, not 10.0.0.9").as_str()));
    let missing = run(&query("name: missing.test")).await;
    assert!(missing.reason.as_deref().unwrap().ends_with("no such name (NXDOMAIN)"), "{missing:?}");
    let no_aaaa = run(&query("name: db.test, type: AAAA")).await;
    assert!(no_aaaa.reason.as_deref().unwrap().contains("has no AAAA record"), "{no_aaaa:?}");

    drop(dns);
    let silent = run(&query("name: chat.test")).await;
    assert_eq!(silent.reason.as_deref(), Some("timed out after 2s"), "nobody answers any more: {silent:?}");
}

/// A MongoDB server at the protocol level (OP_MSG over TCP, BSON), for the official
/// driver: no MongoDB installs here. It answers the handshake (`isMaster`/`hello`),
/// `ping`, `buildInfo` (version 7.0.14), `endSessions`, and `replSetGetStatus` with
/// `members` when given some (three members: a primary, a secondary `lag` seconds
/// behind, a second one down), or as a standalone server does without.
async fn mongodb_server(members: Option<f64>) -> u16 {
    use mongodb::bson::{Bson, DateTime, Document, doc};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fn answer(command: &Document, replica_lag: Option<f64>) -> Document {
        let name = command.keys().next().map(String::as_str).unwrap_or("");
        match name {
            "isMaster" | "ismaster" | "hello" => doc! {
                "helloOk": true, "ismaster": true, "isWritablePrimary": true, "maxBsonObjectSize": 16_777_216,
                "maxMessageSizeBytes": 48_000_000, "maxWriteBatchSize": 100_000, "localTime": DateTime::now(),
                "logicalSessionTimeoutMinutes": 30, "connectionId": 1, "minWireVersion": 0, "maxWireVersion": 21,
                "readOnly": false, "ok": 1.0,
            },
            "ping" | "endSessions" => doc! { "ok": 1.0 },
            "buildInfo" | "buildinfo" => doc! { "version": "7.0.14", "ok": 1.0 },
            "replSetGetStatus" => match replica_lag {
                None => doc! { "ok": 0.0, "errmsg": "not running with --replSet", "code": 76, "codeName": "NoReplicationEnabled" },
                Some(lag) => {
                    let now = DateTime::now().timestamp_millis();
                    let at = |ms: i64| Bson::DateTime(DateTime::from_millis(ms));
                    doc! {
                        "set": "rs0", "ok": 1.0,
                        "members": [
                            { "name": "db-1:27017", "health": 1.0, "stateStr": "PRIMARY", "optimeDate": at(now) },
                            { "name": "db-2:27017", "health": 1.0, "stateStr": "SECONDARY", "optimeDate": at(now - (lag * 1000.0) as i64) },
                            { "name": "db-3:27017", "health": 0.0, "stateStr": "(not reachable/healthy)", "optimeDate": at(now - 3_600_000) },
                        ],
                    }
                }
            },
            other => doc! { "ok": 0.0, "errmsg": format!("no such command: '{other}'"), "code": 59, "codeName": "CommandNotFound" },
        }
    }
    serve_each(move |mut tcp| async move {
        loop {
            let mut header = [0u8; 16];
            if tcp.read_exact(&mut header).await.is_err() {
                return;
            }
            let int = |i: usize| i32::from_le_bytes(header[i..i + 4].try_into().unwrap());
            let (length, request_id, op_code) = (int(0) as usize, int(4), int(12));
            let mut body = vec![0u8; length - 16];
            tcp.read_exact(&mut body).await.unwrap();
            assert_eq!(op_code, 2013, "the driver speaks OP_MSG");
            // flagBits, then sections: kind 0 is the command document.
            let mut at = 4;
            let mut command = Document::new();
            while at < body.len() {
                let kind = body[at];
                let size = i32::from_le_bytes(body[at + 1..at + 5].try_into().unwrap()) as usize;
                if kind == 0 {
                    command = Document::from_reader(&mut &body[at + 1..at + 1 + size]).unwrap();
                }
                at += 1 + size;
            }
            let mut reply = Vec::new();
            answer(&command, members).to_writer(&mut reply).unwrap();
            let total = 16 + 4 + 1 + reply.len();
            let mut out = Vec::with_capacity(total);
            for v in [total as i32, request_id + 1_000_000, request_id, 2013] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&0u32.to_le_bytes());
            out.push(0);
            out.extend_from_slice(&reply);
            if tcp.write_all(&out).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// Listens on a free loopback port and runs `serve` on each connection in a task of
/// its own: the protocol-level servers below.
async fn serve_each<F, Fut>(serve: F) -> u16
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(serve(tcp));
        }
    });
    port
}

/// The official MongoDB driver against a protocol-level server (no MongoDB installs
/// here): version, replica set members, primary and lag read by conditions; a standalone
/// server asked about replication and a closed port said in words, within the timeout.
#[tokio::test(flavor = "multi_thread")]
async fn mongodb_ping_version_and_replica_set_lag() {
    let check = |port: u16, conditions: &str| {
        format!(
            "checks:\n  - name: c\n    timeout: 2s\n    mongodb: {{url: 'mongodb://127.0.0.1:{port}/?directConnection=true', conditions: [{conditions}]}}\n"
        )
    };
    let standalone = mongodb_server(None).await;
    let ok = run(&check(standalone, "'server.version == \"7.0.14\"', 'response_time < 2s'")).await;
    assert!(ok.healthy, "{ok:?}");
    let no_set = run(&check(standalone, "'replication.members >= 3'")).await;
    assert!(no_set.reason.as_deref().unwrap().contains("not running with --replSet"), "{no_set:?}");

    let set = mongodb_server(Some(3.0)).await;
    let healthy = run(&check(
        set,
        "'replication.members == 3', 'replication.healthy_members == 2', 'replication.primary == \"db-1:27017\"', 'replication.lag_seconds < 10', 'replication.set == \"rs0\"'",
    ))
    .await;
    assert!(healthy.healthy, "{healthy:?}");
    let lagging = run(&check(set, "'replication.lag_seconds < 1'")).await;
    let reason = lagging.reason.unwrap();
    assert!(reason.contains("replication.lag_seconds is 3"), "the unhealthy member is not counted: {reason}");

    let closed = common::free_port();
    let refused = run(&check(closed, "")).await;
    let reason = refused.reason.unwrap();
    let expected = format!(
        "MongoDB at mongodb://127.0.0.1:{closed}/?directConnection=true: no server could be selected within the timeout (127.0.0.1:{closed}: I/O error: Connection refused (os error 111))"
    );
    assert_eq!(reason, expected);
    assert!(refused.latency < Duration::from_secs(3), "{:?}", refused.latency);
}

/// A Cassandra node at the protocol level (CQL v4 frames), for the ScyllaDB driver: no
/// Cassandra or ScyllaDB installs here. It answers OPTIONS, STARTUP, REGISTER, and the
/// queries the driver reads topology with (`system.local`, `system.peers` — `peers`
/// other nodes in dc1 —, `system_schema.keyspaces`), and the probe's default query on
/// `system.local`; any other query is an Invalid error naming it.
async fn cql_server(peers: u8) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // [string], [option] for text, and a column spec.
    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u16).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    #[derive(Clone, Copy)]
    enum Type {
        Text,
        Uuid,
        Inet,
        Boolean,
        TextSet,
        TextMap,
    }
    fn option(out: &mut Vec<u8>, t: Type) {
        let ids: &[u16] = match t {
            Type::Text => &[0x000D],
            Type::Uuid => &[0x000C],
            Type::Inet => &[0x0010],
            Type::Boolean => &[0x0004],
            Type::TextSet => &[0x0022, 0x000D],
            Type::TextMap => &[0x0021, 0x000D, 0x000D],
        };
        for id in ids {
            out.extend_from_slice(&id.to_be_bytes());
        }
    }
    fn cell(out: &mut Vec<u8>, v: Option<&[u8]>) {
        match v {
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                out.extend_from_slice(b);
            }
        }
    }
    fn text_set(items: &[&str]) -> Vec<u8> {
        let mut b = (items.len() as i32).to_be_bytes().to_vec();
        for i in items {
            cell(&mut b, Some(i.as_bytes()));
        }
        b
    }
    /// A Rows result in two parts: its metadata (global table spec, the columns) and its
    /// rows; a PREPARE is answered with the metadata alone.
    fn rows(table: (&str, &str), columns: &[(&str, Type)], rows: &[Vec<Option<Vec<u8>>>]) -> Answer {
        let mut metadata = 1i32.to_be_bytes().to_vec();
        metadata.extend_from_slice(&(columns.len() as i32).to_be_bytes());
        string(&mut metadata, table.0);
        string(&mut metadata, table.1);
        for (name, t) in columns {
            string(&mut metadata, name);
            option(&mut metadata, *t);
        }
        let mut data = (rows.len() as i32).to_be_bytes().to_vec();
        for row in rows {
            for v in row {
                cell(&mut data, v.as_deref());
            }
        }
        Answer::Rows(metadata, data)
    }
    enum Answer {
        Rows(Vec<u8>, Vec<u8>),
        Error(Vec<u8>),
    }
    impl Answer {
        fn frame(self) -> (u8, Vec<u8>) {
            match self {
                Answer::Rows(metadata, data) => (0x08, [2i32.to_be_bytes().to_vec(), metadata, data].concat()),
                Answer::Error(b) => (0x00, b),
            }
        }
    }
    fn answer(query: &str, peers: u8) -> Answer {
        let uuid = |n: u8| Some(vec![n; 16]);
        let ip = |n: u8| Some(vec![127, 0, 0, n]);
        let text = |s: &str| Some(s.as_bytes().to_vec());
        let q = query.to_ascii_lowercase();
        let node = [
            ("host_id", Type::Uuid),
            ("rpc_address", Type::Inet),
            ("data_center", Type::Text),
            ("rack", Type::Text),
            ("tokens", Type::TextSet),
        ];
        if q.starts_with("select host_id, rpc_address, data_center, rack, tokens, cluster_name from system.local") {
            let mut columns = node.to_vec();
            columns.push(("cluster_name", Type::Text));
            let row = vec![uuid(1), ip(1), text("dc1"), text("rack1"), Some(text_set(&["-9000000000000000000"])), text("chat")];
            rows(("system", "local"), &columns, &[row])
        } else if q.starts_with("select host_id, rpc_address, data_center, rack, tokens from system.peers") {
            let all: Vec<_> = (0..peers)
                .map(|i| {
                    vec![
                        uuid(i + 2),
                        ip(i + 2),
                        text("dc1"),
                        text("rack1"),
                        Some(text_set(&[&format!("{}", i64::from(i) * 1_000_000_000)])),
                    ]
                })
                .collect();
            rows(("system", "peers"), &node, &all)
        } else if q.starts_with("select keyspace_name, replication, durable_writes from system_schema.keyspaces") {
            let columns = [("keyspace_name", Type::Text), ("replication", Type::TextMap), ("durable_writes", Type::Boolean)];
            rows(("system_schema", "keyspaces"), &columns, &[])
        } else if q == "select release_version, cluster_name, data_center from system.local" {
            let columns = [("release_version", Type::Text), ("cluster_name", Type::Text), ("data_center", Type::Text)];
            rows(("system", "local"), &columns, &[vec![text("4.1.5"), text("chat"), text("dc1")]])
        } else {
            let mut b = 0x2200i32.to_be_bytes().to_vec();
            string(&mut b, &format!("unconfigured table or unknown query: {query}"));
            Answer::Error(b)
        }
    }
    serve_each(move |mut tcp| async move {
        // Prepared statements of this connection: the id is the index.
        let mut prepared: Vec<String> = Vec::new();
        loop {
            let mut header = [0u8; 9];
            if tcp.read_exact(&mut header).await.is_err() {
                return;
            }
            let (version, stream, opcode) = (header[0], [header[2], header[3]], header[4]);
            let length = i32::from_be_bytes(header[5..9].try_into().unwrap()) as usize;
            let mut body = vec![0u8; length];
            if tcp.read_exact(&mut body).await.is_err() {
                return;
            }
            let (reply_op, reply) = match opcode {
                0x05 => {
                    // SUPPORTED: a string multimap.
                    let mut b = 2u16.to_be_bytes().to_vec();
                    string(&mut b, "CQL_VERSION");
                    b.extend_from_slice(&1u16.to_be_bytes());
                    string(&mut b, "3.4.5");
                    string(&mut b, "COMPRESSION");
                    b.extend_from_slice(&0u16.to_be_bytes());
                    (0x06, b)
                }
                0x01 | 0x0B => (0x02, Vec::new()),
                0x07 => {
                    let n = i32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
                    answer(&String::from_utf8_lossy(&body[4..4 + n]), peers).frame()
                }
                0x09 => {
                    // PREPARE: kind Prepared, the id, no bind markers, and the
                    // result's columns (from the answer's Rows metadata).
                    let n = i32::from_be_bytes(body[0..4].try_into().unwrap()) as usize;
                    let query = String::from_utf8_lossy(&body[4..4 + n]).into_owned();
                    match answer(&query, peers) {
                        Answer::Rows(metadata, _) => {
                            let mut b = 4i32.to_be_bytes().to_vec();
                            b.extend_from_slice(&2u16.to_be_bytes());
                            b.extend_from_slice(&(prepared.len() as u16).to_be_bytes());
                            prepared.push(query);
                            b.extend_from_slice(&[0; 12]); // flags, no bind markers, no partition key
                            b.extend_from_slice(&metadata);
                            (0x08, b)
                        }
                        error => error.frame(),
                    }
                }
                0x0A => {
                    let id = u16::from_be_bytes(body[2..4].try_into().unwrap()) as usize;
                    match prepared.get(id) {
                        Some(query) => answer(query, peers).frame(),
                        None => {
                            let mut b = 0x2500i32.to_be_bytes().to_vec();
                            string(&mut b, "unprepared");
                            b.extend_from_slice(&body[0..4]);
                            (0x00, b)
                        }
                    }
                }
                _ => {
                    let mut b = 0x000Ai32.to_be_bytes().to_vec();
                    string(&mut b, "not supported by this test server");
                    (0x00, b)
                }
            };
            let mut out = vec![0x80 | (version & 0x7f), 0, stream[0], stream[1], reply_op];
            out.extend_from_slice(&(reply.len() as i32).to_be_bytes());
            out.extend_from_slice(&reply);
            if tcp.write_all(&out).await.is_err() {
                return;
            }
        }
    })
    .await
}

/// The ScyllaDB driver against a CQL node at the protocol level (neither Cassandra nor
/// ScyllaDB installs here): the cluster's nodes and datacenters and the query's first
/// row read by conditions; a query the node refuses and a closed port said in words.
#[tokio::test(flavor = "multi_thread")]
async fn cql_topology_and_a_query_on_a_cassandra_node() {
    let port = cql_server(2).await;
    let check = |extra: &str| format!("checks:\n  - name: c\n    timeout: 3s\n    cql: {{hosts: ['127.0.0.1:{port}']{extra}}}\n");
    let ok = run(&check(", conditions: ['cluster.nodes == 3', 'cluster.datacenters == 1', 'row.release_version =~ \"^4\\\\.\"', 'row.cluster_name == \"chat\"', 'rows == 1']")).await;
    assert!(ok.healthy, "{ok:?}");
    let short = run(&check(", conditions: ['cluster.nodes >= 5']")).await;
    assert!(short.reason.as_deref().unwrap().contains("cluster.nodes is 3"), "{short:?}");
    let refused = run(&check(", query: 'SELECT * FROM chat.messages'")).await;
    let reason = refused.reason.unwrap();
    assert!(reason.starts_with("the query failed on 127.0.0.1:") && reason.contains("chat.messages"), "{reason}");
    let closed = common::free_port();
    let nobody = run(&format!("checks:\n  - name: c\n    timeout: 2s\n    cql: {{hosts: ['127.0.0.1:{closed}']}}\n")).await;
    assert!(nobody.reason.as_deref().unwrap().starts_with(&format!("cannot connect to 127.0.0.1:{closed}")), "{nobody:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tcp_open_and_closed() {
    let port = http_server(app()).await;
    assert!(run(&format!("checks:\n  - name: c\n    tcp: {{address: '127.0.0.1:{port}'}}\n")).await.healthy);
    let closed = common::free_port();
    let r = run(&format!("checks:\n  - name: c\n    tcp: {{address: '127.0.0.1:{closed}'}}\n")).await;
    assert!(r.reason.as_deref().unwrap().contains("cannot connect"), "{r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_rows_numeric_columns_and_errors() {
    let ok = run("checks:\n  - name: c\n    postgres:\n      url: postgres://postgres@127.0.0.1:5432/postgres\n      query: \"SELECT 1 AS one, 2.5::numeric AS lag_seconds, 'primary' AS role, true AS up, COALESCE(EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), 0) AS replica_lag\"\n      conditions: ['row.one == 1', 'row.lag_seconds < 30', 'row.role == \"primary\"', 'row.up == true', 'row.replica_lag < 30']\n").await;
    assert!(ok.healthy, "{ok:?}");
    let bad = run("checks:\n  - name: c\n    postgres:\n      url: postgres://postgres@127.0.0.1:5432/postgres\n      query: SELECT * FROM no_such_table\n").await;
    assert!(bad.reason.as_deref().unwrap().contains("no_such_table"), "{bad:?}");
    let ts = run("checks:\n  - name: c\n    postgres:\n      url: postgres://postgres@127.0.0.1:5432/postgres\n      query: SELECT now() AS t\n      conditions: ['row.t > 1']\n").await;
    assert!(ts.reason.as_deref().unwrap().contains("cast it in the query"), "{ts:?}");
    let closed = common::free_port();
    let down = run(&format!("checks:\n  - name: c\n    postgres:\n      url: postgres://postgres@127.0.0.1:{closed}/postgres\n")).await;
    assert!(down.reason.as_deref().unwrap().starts_with("cannot connect"), "{down:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_against_mariadb() {
    let ok = run("checks:\n  - name: c\n    mysql:\n      url: mysql://root@127.0.0.1:3306/mysql\n      query: \"SELECT 1 AS one, 'x' AS s, 1.5 AS d, @@read_only AS ro\"\n      conditions: ['row.one == 1', 'row.s == \"x\"', 'row.d > 1', 'row.ro == 0']\n").await;
    assert!(ok.healthy, "{ok:?}");
    let bad = run("checks:\n  - name: c\n    mysql:\n      url: mysql://root@127.0.0.1:3306/mysql\n      query: SELEC 1\n").await;
    assert!(bad.reason.as_deref().unwrap().starts_with("query failed"), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_ping_and_info_fields() {
    let ok = run("checks:\n  - name: c\n    redis:\n      url: redis://127.0.0.1:6379\n      conditions: ['info.role == \"master\"', 'info.connected_slaves >= 0']\n").await;
    assert!(ok.healthy, "{ok:?}");
    let wrong =
        run("checks:\n  - name: c\n    redis:\n      url: redis://127.0.0.1:6379\n      conditions: ['info.role == \"slave\"']\n").await;
    assert!(wrong.reason.as_deref().unwrap().contains("info.role is \"master\""), "{wrong:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_jetstream_stream_and_consumer_state() {
    let nats = common::PrivateNats::start();
    let client = async_nats::connect(format!("nats://127.0.0.1:{}", nats.port)).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "MESSAGES".into(),
            subjects: vec!["msg.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config { durable_name: Some("fanout".into()), ..Default::default() })
        .await
        .unwrap();
    for i in 0..3 {
        js.publish("msg.a", format!("m{i}").into()).await.unwrap().await.unwrap();
    }
    let yaml = |cond: &str| {
        format!(
            "checks:\n  - name: c\n    nats:\n      url: nats://127.0.0.1:{}\n      stream: MESSAGES\n      consumer: fanout\n      conditions: ['{cond}']\n",
            nats.port
        )
    };
    assert!(run(&yaml("stream.messages == 3")).await.healthy);
    assert!(run(&yaml("consumer.num_pending == 3")).await.healthy);
    let backlog = run(&yaml("stream.messages < 2")).await;
    assert!(backlog.reason.as_deref().unwrap().contains("stream.messages is 3"), "{backlog:?}");
    let missing = run(&format!("checks:\n  - name: c\n    nats:\n      url: nats://127.0.0.1:{}\n      stream: NOPE\n", nats.port)).await;
    assert!(missing.reason.as_deref().unwrap().contains("stream `NOPE`"), "{missing:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn commands_exit_codes_output_and_timeouts() {
    assert!(run("checks:\n  - name: c\n    command: {argv: [sh, -c, 'echo 42'], conditions: ['stdout < 85']}\n").await.healthy);
    let code = run("checks:\n  - name: c\n    command: {argv: [sh, -c, 'echo broken >&2; exit 3']}\n").await;
    assert_eq!(code.reason.as_deref(), Some("`sh` exited with code 3: broken"));
    let missing = run("checks:\n  - name: c\n    command: {argv: [/no/such/program]}\n").await;
    assert!(missing.reason.as_deref().unwrap().starts_with("cannot start"), "{missing:?}");

    // The timeout kills the whole process group, grandchildren included.
    let marker = tempfile::tempdir().unwrap();
    let file = marker.path().join("survivor");
    let slow = run(&format!(
        "checks:\n  - name: c\n    timeout: 300ms\n    command: {{argv: [sh, -c, 'sh -c \"sleep 1; touch {}\" & sleep 5']}}\n",
        file.display()
    ))
    .await;
    assert!(slow.reason.as_deref().unwrap().contains("timed out"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!file.exists(), "a grandchild outlived the timeout");
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_passed_to_targets_and_redacted_from_reasons() {
    // SAFETY: this variable is used by this test only.
    unsafe { std::env::set_var("STEWARD_TEST_PROBE_SECRET", "s3cr3t-value") };
    let r = run("checks:\n  - name: c\n    command:\n      argv: [sh, -c, 'echo \"token=$TOKEN\" >&2; exit 1']\n      env: {TOKEN: '${env:STEWARD_TEST_PROBE_SECRET}'}\n").await;
    let reason = r.reason.unwrap();
    assert!(reason.contains("token=***"), "the program must receive the secret and the reason must hide it: {reason}");
    assert!(!reason.contains("s3cr3t-value"));
}
