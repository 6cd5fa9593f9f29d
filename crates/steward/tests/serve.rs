//! `steward serve` end to end, as a user runs it: the binary, a data directory,
//! tokens from the CLI, real targets, signals.

mod common;

use std::time::Duration;

use common::{PrivateRedis, Server, create_token, wait_for};
use serde_json::Value;

fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    ureq_like(url, "GET", token).send()
}

fn post(url: &str, token: Option<&str>) -> (u16, Value) {
    ureq_like(url, "POST", token).send()
}

/// A tiny blocking HTTP client over reqwest's async one, so tests read linearly.
struct Req {
    url: String,
    method: &'static str,
    token: Option<String>,
}

fn ureq_like(url: &str, method: &'static str, token: Option<&str>) -> Req {
    Req { url: url.to_string(), method, token: token.map(str::to_string) }
}

impl Req {
    fn send(&self) -> (u16, Value) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let client = reqwest::Client::builder().build().unwrap();
            let mut r = client.request(self.method.parse().unwrap(), &self.url);
            if let Some(t) = &self.token {
                r = r.bearer_auth(t);
            }
            let resp = r.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
        })
    }
}

fn health_of(base: &str, token: &str, check: &str) -> String {
    get(&format!("{base}/api/v1/checks/{check}"), Some(token)).1["health"].as_str().unwrap_or("").to_string()
}

#[test]
fn serve_watches_real_targets_enforces_tokens_reloads_and_persists() {
    common::install_crypto();
    let mut redis = PrivateRedis::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("steward.yaml");
    let yaml = format!(
        "services:\n  - name: cache\n    tier: 2\n    owner: team-cache\nchecks:\n  - name: cache-ping\n    service: cache\n    interval: 300ms\n    timeout: 250ms\n    failure_threshold: 2\n    redis: {{url: 'redis://127.0.0.1:{}'}}\n",
        redis.port
    );
    std::fs::write(&config, &yaml).unwrap();
    std::fs::create_dir_all(&data).unwrap();
    let admin = create_token(&data, "admin", "admin");
    let viewer = create_token(&data, "dash", "viewer");
    let mut server = Server::start(&config, &data);
    let base = server.base.clone();

    // Public endpoints answer without a token; the API does not.
    assert_eq!(get(&format!("{base}/health"), None).0, 200);
    assert_eq!(get(&format!("{base}/health/ready"), None).1["status"], "ready");
    let (status, body) = get(&format!("{base}/api/v1/checks"), None);
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("unauthorized")));
    assert_eq!(get(&format!("{base}/api/v1/checks"), Some("stw_not_a_real_token")).0, 401);
    let (status, body) = post(&format!("{base}/api/v1/config/reload"), Some(&viewer));
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(post(&format!("{base}/api/v1/checks/cache-ping/run"), Some(&viewer)).0, 403);
    assert_eq!(get(&format!("{base}/api/v1/checks/nope"), Some(&viewer)).1["error"]["code"], "not_found");
    assert_eq!(get(&format!("{base}/api/v1/checks/cache-ping/history?limit=0"), Some(&viewer)).1["error"]["code"], "bad_request");
    assert_eq!(get(&format!("{base}/api/v1/openapi.json"), Some(&viewer)).1["openapi"], "3.1.0");

    wait_for("cache-ping healthy", Duration::from_secs(10), || (health_of(&base, &viewer, "cache-ping") == "healthy").then_some(()));

    // Stop the component: unhealthy after the threshold, with a reason.
    redis.stop();
    wait_for("cache-ping unhealthy", Duration::from_secs(10), || (health_of(&base, &viewer, "cache-ping") == "unhealthy").then_some(()));
    let check = get(&format!("{base}/api/v1/checks/cache-ping"), Some(&viewer)).1;
    assert!(check["consecutive_failures"].as_u64().unwrap() >= 2);
    assert!(check["reason"].as_str().unwrap().contains("connect"), "{check}");
    let (_, services) = get(&format!("{base}/api/v1/services"), Some(&viewer));
    assert_eq!(services["services"][0]["health"], "unhealthy");
    let metrics = get(&format!("{base}/metrics"), None).1;
    assert!(metrics.as_str().unwrap().contains(r#"steward_check_up{check="cache-ping",service="cache",kind="redis"} 0"#));

    // Restart it: healthy again, and both transitions are on record.
    redis.restart();
    wait_for("cache-ping healthy again", Duration::from_secs(10), || (health_of(&base, &viewer, "cache-ping") == "healthy").then_some(()));
    // Transitions reach the store with the next batch (within ~50ms) after the live state.
    let tos: Vec<String> = wait_for("three stored transitions", Duration::from_secs(5), || {
        let transitions = get(&format!("{base}/api/v1/checks/cache-ping/transitions"), Some(&viewer)).1;
        let tos: Vec<String> =
            transitions["transitions"].as_array().unwrap().iter().map(|t| t["to"].as_str().unwrap().to_string()).collect();
        (tos.len() >= 3).then_some(tos)
    });
    assert_eq!(&tos[..3], &["healthy", "unhealthy", "healthy"]);
    // Results reach the store in batches (within ~50ms), so wait for the page to fill.
    let history = wait_for("at least 5 stored results", Duration::from_secs(5), || {
        let h = get(&format!("{base}/api/v1/checks/cache-ping/history?limit=1000"), Some(&viewer)).1;
        (h["results"].as_array().unwrap().len() >= 5).then_some(h)
    });
    assert!(history["results"].as_array().unwrap().iter().any(|r| r["healthy"] == false), "the outage must be in the history: {history}");

    // An invalid reload is refused with every error, and the old configuration stays.
    std::fs::write(&config, "checks:\n  - name: x\n    intervl: 1s\n").unwrap();
    let (status, body) = post(&format!("{base}/api/v1/config/reload"), Some(&admin));
    assert_eq!((status, body["error"]["code"].as_str()), (422, Some("invalid_config")));
    assert!(body["error"]["details"].as_array().unwrap().iter().any(|d| d["message"].as_str().unwrap().contains("intervl")));
    assert_eq!(get(&format!("{base}/api/v1/checks"), Some(&viewer)).1["checks"].as_array().unwrap().len(), 1);

    // A valid reload by SIGHUP adds a check.
    let port = common::free_port();
    std::fs::write(&config, format!("{yaml}  - name: closed-port\n    interval: 200ms\n    tcp: {{address: '127.0.0.1:{port}'}}\n"))
        .unwrap();
    server.signal(libc::SIGHUP);
    wait_for("closed-port unhealthy after SIGHUP reload", Duration::from_secs(10), || {
        (health_of(&base, &viewer, "closed-port") == "unhealthy").then_some(())
    });

    // Graceful stop, then a restart resumes the stored state.
    assert_eq!(server.stop(), Some(0));
    let server = Server::start(&config, &data);
    let check = get(&format!("{}/api/v1/checks/closed-port", server.base), Some(&viewer)).1;
    assert_eq!(check["health"], "unhealthy", "state must survive a restart: {check}");
}

/// The public status page in a real browser at a phone's width: it says what is
/// failing, shows nothing internal, and fits the screen (no sideways scrolling).
#[test]
fn status_page_renders_in_a_real_browser_at_phone_width() {
    common::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let closed = common::free_port();
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!("services:\n  - name: payments-and-settlement-for-every-merchant-region\n    tier: 1\n    owner: team-pay\nchecks:\n  - name: payments-port\n    service: payments-and-settlement-for-every-merchant-region\n    interval: 200ms\n    tcp: {{address: '127.0.0.1:{closed}'}}\n"),
    )
    .unwrap();
    let server = Server::start(&config, &dir.path().join("data"));
    // The uptime history read at start predates the check's first run; a visitor finding
    // it stale (after 5 s on a store this small) has the next one read behind it.
    wait_for("today's failed runs in the status page's uptime history", Duration::from_secs(20), || {
        let public = get(&format!("{}/status.json", server.base), None).1;
        (public["services"][0]["uptime_90d"]["days"][89]["percent"] == 0.0).then_some(())
    });
    let browser = common::browser::Browser::phone();
    browser.open(&format!("{}/", server.base));
    let dom = browser.html();
    assert!(dom.contains("<title>Steward status</title>"), "chromium did not render the page: {dom}");
    assert!(dom.contains("Tier 1"));
    assert!(dom.contains(r#"data-service="payments-and-settlement-for-every-merchant-region""#));
    assert!(dom.contains(r#"class="banner degraded""#), "the banner must say something is failing: {dom}");
    assert!(dom.contains(r#"class="badge degraded""#), "{dom}");
    // 90 days of bars: nothing ran before today (grey, never green), and today's bar is
    // red — every run of the one check failed — with the figure in words beside it.
    assert_eq!(dom.matches("<i class=").count(), 90, "{dom}");
    assert_eq!(dom.matches(r#"<i class="none""#).count(), 89, "{dom}");
    // (The day the page was rendered: the test reads it back, so a run across midnight
    // UTC cannot fail it.)
    let last = dom.rsplit(r#"<i class=""#).next().unwrap();
    let today = last.split(r#"title=""#).nth(1).unwrap().split(':').next().unwrap().to_string();
    let around = [0, 1].map(|d| (chrono::Utc::now() - chrono::Duration::days(d)).date_naive().to_string());
    assert!(around.contains(&today), "the last bar must be today's, not {today}");
    assert!(last.starts_with(&format!(r#"down" title="{today}: 0% up"></i></div>"#)), "today's bar must be red: {dom}");
    assert!(dom.contains("0% uptime over the last 90 days"), "{dom}");
    let bar_width = "return document.querySelector('.bars i').getBoundingClientRect().width";
    assert!(browser.eval(bar_width).as_f64().unwrap() >= 2.0, "a day's bar must be visible at phone width");
    // The public page shows nothing internal: no check names, targets, reasons or owners.
    for internal in ["payments-port", "127.0.0.1", &closed.to_string(), "cannot connect", "team-pay"] {
        assert!(!dom.contains(internal), "the public page shows `{internal}`: {dom}");
    }
    // A phone's width, and nothing wider than it (a long service name included).
    let fits = "return [window.innerWidth, document.documentElement.scrollWidth]";
    let [width, scroll] = [0, 1].map(|i| browser.eval(fits)[i].as_u64().unwrap());
    assert_eq!(width, u64::from(common::browser::PHONE_WIDTH), "the page is seen at a phone's width");
    assert!(scroll <= width, "the page scrolls sideways at {width} px: {scroll} px wide");
    // The measure can tell: something wider than the screen makes it scroll.
    browser.eval("document.body.insertAdjacentHTML('beforeend', '<div style=\"width:800px\">wide</div>'); return null");
    assert!(browser.eval(fits)[1].as_u64().unwrap() > width, "an 800 px element must widen the page");
    let public = get(&format!("{}/status.json", server.base), None).1;
    let text = public.to_string();
    for internal in ["payments-port", "127.0.0.1", "cannot connect", "team-pay"] {
        assert!(!text.contains(internal), "status.json shows `{internal}`: {text}");
    }
    assert_eq!(public["services"][0]["status"], "degraded", "{public}");
    let days = public["services"][0]["uptime_90d"]["days"].as_array().unwrap();
    assert_eq!(days.len(), 90);
    assert_eq!(days[89], serde_json::json!({"date": today, "percent": 0.0}), "{public}");
    assert_eq!(public["services"][0]["uptime_90d"]["percent"], 0.0);
}

/// A push check end to end: a job signals over HTTP with the check's own token (API
/// tokens, wrong tokens and other checks' names all refused alike); the check follows
/// the signals — a failure fails it at once, the next success clears it — a check
/// whose last signal is older than its period and grace is late, and signals survive
/// a restart.
#[test]
fn heartbeat_checks_follow_the_jobs_signals_and_go_late_without_them() {
    common::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token_file = dir.path().join("jobs.token");
    std::fs::write(&token_file, "s3cret-heartbeat-token-0123\n").unwrap();
    let config = dir.path().join("steward.yaml");
    let hb = |name: &str| {
        format!(
            "  - name: {name}\n    interval: 200ms\n    failure_threshold: 1\n    success_threshold: 1\n    heartbeat: {{period: 1h, grace: 10m, token: '${{file:{}}}'}}\n",
            token_file.display()
        )
    };
    std::fs::write(&config, format!("checks:\n{}{}  - name: plain\n    tcp: {{address: '127.0.0.1:1'}}\n", hb("nightly"), hb("weekly")))
        .unwrap();
    // "weekly" last signalled two hours ago, before this server started.
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        use steward::store::CheckStore;
        let store = steward::store::SqliteStore::open(&data).await.unwrap();
        store.record_heartbeat("weekly", chrono::Utc::now() - chrono::Duration::hours(2), true).await.unwrap();
    });
    let viewer = create_token(&data, "v", "viewer");
    let mut server = Server::start(&config, &data);
    let base = server.base.clone();
    let check = |name: &str| get(&format!("{base}/api/v1/checks/{name}"), Some(&viewer)).1;
    wait_for("weekly to be late", Duration::from_secs(10), || (check("weekly")["health"] == "unhealthy").then_some(()));
    let reason = check("weekly")["reason"].as_str().unwrap().to_string();
    assert!(reason.starts_with("no signal for 2h") && reason.ends_with("expected every 1h with 10m grace"), "{reason}");
    wait_for("nightly, just added, to be on time", Duration::from_secs(10), || (check("nightly")["health"] == "healthy").then_some(()));

    let signal = |path: &str, token: Option<&str>| post(&format!("{base}/api/v1/heartbeats/{path}"), token);
    let job = Some("s3cret-heartbeat-token-0123");
    let (code, refused) = signal("nightly", None);
    assert_eq!((code, refused["error"]["code"].as_str()), (401, Some("unauthorized")), "{refused}");
    for (path, token) in [("nightly", Some("wrong-token-of-sixteen")), ("nightly", Some(viewer.as_str())), ("plain", job), ("nope", job)] {
        let (code, body) = signal(path, token);
        assert_eq!((code, &body), (401, &refused), "{path}: the same refusal, whatever is wrong");
    }
    assert_eq!(check("nightly")["health"], "healthy", "refused signals change nothing");

    let (code, ok) = signal("nightly", job);
    assert_eq!(
        (code, &ok["signal"], &ok["signals"], &ok["healthy"]),
        (200, &Value::from("ok"), &Value::from(1), &Value::from(true)),
        "{ok}"
    );
    let (code, failed) = signal("nightly/fail", job);
    assert_eq!((code, &failed["signal"], &failed["healthy"]), (200, &Value::from("fail"), &Value::from(false)), "{failed}");
    let state = check("nightly");
    assert_eq!(state["health"], "unhealthy", "a failure signal fails the check at once: {state}");
    assert!(state["reason"].as_str().unwrap().starts_with("the job signalled a failure"), "{state}");
    assert_eq!(signal("nightly", job).1["healthy"], true, "the next success clears it");
    assert_eq!(signal("weekly", job).1["healthy"], true, "a late job's signal brings it back");

    // Signals are kept in the store: after a restart the count goes on.
    assert_eq!(server.stop(), Some(0));
    let server = Server::start(&config, &data);
    let again = post(&format!("{}/api/v1/heartbeats/nightly", server.base), job).1;
    assert_eq!((&again["signals"], &again["healthy"]), (&Value::from(4), &Value::from(true)), "{again}");
}

#[test]
fn a_hanging_target_never_delays_other_checks() {
    common::install_crypto();
    // A port that accepts connections and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_port = hang.local_addr().unwrap().port();
    let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    let mut yaml = String::from("checks:\n");
    for i in 0..20 {
        yaml.push_str(&format!(
            "  - name: hang-{i}\n    interval: 2s\n    timeout: 2s\n    http: {{url: 'http://127.0.0.1:{hang_port}/'}}\n"
        ));
    }
    yaml.push_str(&format!("  - name: fast\n    interval: 100ms\n    tcp: {{address: '127.0.0.1:{open_port}'}}\n"));
    std::fs::write(&config, yaml).unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let viewer = create_token(&data, "v", "viewer");
    let server = Server::start(&config, &data);
    std::thread::sleep(Duration::from_millis(3000));
    let history = get(&format!("{}/api/v1/checks/fast/history?limit=1000", server.base), Some(&viewer)).1;
    let runs = history["results"].as_array().unwrap().len();
    // 3 s at 100 ms is 30 slots; allow for start-up phase and batching, not for blocking.
    assert!(runs >= 20, "the fast check ran only {runs} times next to 20 hanging ones");
    let hanging = get(&format!("{}/api/v1/checks/hang-0", server.base), Some(&viewer)).1;
    assert!(hanging["last_run"].is_null() || hanging["reason"].as_str().is_some_and(|r| r.contains("timed out")), "{hanging}");
    drop(hang);
}

/// A self-signed certificate for 127.0.0.1 named `name`: (cert PEM, key PEM, cert DER).
fn self_signed(name: &str) -> (String, String, Vec<u8>) {
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

/// Connects over TLS trusting `roots`, GETs `path`; returns the server's certificate
/// (DER) and the status line.
fn tls_get(port: u16, roots: &[&[u8]], path: &str) -> Result<(Vec<u8>, String), String> {
    use std::io::{Read, Write};
    common::install_crypto();
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add(rustls::pki_types::CertificateDer::from(r.to_vec())).unwrap();
    }
    let config = std::sync::Arc::new(rustls::ClientConfig::builder().with_root_certificates(store).with_no_client_auth());
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let mut tls = rustls::Stream::new(&mut conn, &mut tcp);
    tls.write_all(format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n").as_bytes()).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    let _ = tls.read_to_string(&mut answer);
    let peer = conn.peer_certificates().and_then(|c| c.first()).map(|c| c.to_vec()).ok_or("no certificate")?;
    Ok((peer, answer.lines().next().unwrap_or("").to_string()))
}

/// `serve --tls-cert --tls-key` answers HTTPS only, and SIGHUP swaps in a renewed
/// certificate without a restart; a broken one leaves the current one served.
#[test]
fn serve_speaks_tls_and_reloads_its_certificate_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(&config, "checks:\n  - {name: c, interval: 1h, tcp: {address: '127.0.0.1:1'}}\n").unwrap();
    let (cert_a, key_a, der_a) = self_signed("steward-a");
    let (cert_b, key_b, der_b) = self_signed("steward-b");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &cert_a).unwrap();
    std::fs::write(&key, &key_a).unwrap();
    let port = common::free_port();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let child = common::steward()
        .args(["serve", "-c"])
        .arg(&config)
        .arg("--data")
        .arg(&data)
        .args(["--listen", &format!("127.0.0.1:{port}"), "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    // Killed if the test fails half-way, so no server outlives it.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Killed(child);
    let log = || std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    common::wait_for("steward to serve TLS", Duration::from_secs(15), || tls_get(port, &[&der_a], "/health/ready").ok());
    let (peer, status) = tls_get(port, &[&der_a], "/health/ready").unwrap();
    assert_eq!((peer == der_a, status.as_str()), (true, "HTTP/1.1 200 OK"), "{}", log());
    // Plain HTTP on the TLS port gets no HTTP answer.
    {
        use std::io::{Read, Write};
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let _ = tcp.read_to_end(&mut answer);
        assert!(!answer.starts_with(b"HTTP/"), "plain HTTP was answered: {}", String::from_utf8_lossy(&answer));
    }
    // Renewed: served after SIGHUP, no restart.
    std::fs::write(&cert, &cert_b).unwrap();
    std::fs::write(&key, &key_b).unwrap();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    common::wait_for("the renewed certificate", Duration::from_secs(10), || {
        tls_get(port, &[&der_a, &der_b], "/health").ok().filter(|(peer, _)| *peer == der_b)
    });
    // Broken: the renewed one stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    unsafe { libc::kill(child.0.id() as i32, libc::SIGHUP) };
    common::wait_for("the failed reload in the log", Duration::from_secs(10), || {
        log().contains("TLS certificate reload failed").then_some(())
    });
    let (peer, status) = tls_get(port, &[&der_b], "/health").unwrap();
    assert_eq!((peer == der_b, status.as_str()), (true, "HTTP/1.1 200 OK"));
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    assert_eq!(child.0.wait().unwrap().code(), Some(0), "{}", log());
}
