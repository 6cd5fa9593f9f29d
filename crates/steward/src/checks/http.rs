//! `http`: a request, its status, headers, (JSON) body, timing and certificate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use reqwest::redirect::Policy;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Map, Value as Json};

use crate::config::{CheckSpec, HttpProbe, TlsOptions};

/// One connection pool per distinct TLS set-up, shared by all checks that use it:
/// keep-alive makes a probe cost a request, not a handshake.
#[derive(Default)]
pub(crate) struct Clients {
    pools: Mutex<HashMap<(TlsOptions, bool), reqwest::Client>>,
}

impl Clients {
    fn get(&self, tls: &TlsOptions, follow_redirects: bool) -> Result<reqwest::Client, String> {
        let mut pools = self.pools.lock().expect("http client map poisoned");
        if let Some(c) = pools.get(&(tls.clone(), follow_redirects)) {
            return Ok(c.clone());
        }
        let client = build_client(tls, follow_redirects)?;
        pools.insert((tls.clone(), follow_redirects), client.clone());
        Ok(client)
    }
}

pub(crate) fn build_client(tls: &TlsOptions, follow_redirects: bool) -> Result<reqwest::Client, String> {
    let mut config = client_config(tls)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .tls_info(true)
        .redirect(if follow_redirects { Policy::limited(10) } else { Policy::none() })
        .user_agent(concat!("steward/", env!("CARGO_PKG_VERSION")))
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .build()
        .map_err(|e| format!("HTTP client set-up failed: {e}"))
}

/// A TLS client set-up trusting the system's roots and `ca_file`, or any certificate
/// with `insecure_skip_verify`: what `http`, `tls` and `websocket` probes connect with.
pub(crate) fn client_config(tls: &TlsOptions) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))?;
    let config = if tls.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider))).with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        if let Some(path) = &tls.ca_file {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read ca_file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("ca_file {} is not valid PEM: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("ca_file {} holds an unusable certificate: {e}", path.display()))?;
            }
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    Ok(config)
}

pub(crate) async fn observe(clients: &Clients, p: &HttpProbe, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
    let client = clients.get(&p.tls, p.follow_redirects)?;
    let method = reqwest::Method::from_bytes(p.method.as_bytes()).map_err(|e| e.to_string())?;
    let mut req = client.request(method, p.url.expose()).timeout(spec.timeout);
    for (k, v) in &p.headers {
        req = req.header(k, v.expose());
    }
    if let Some(body) = &p.body {
        req = req.body(body.expose().to_string());
    }
    let mut resp = req.send().await.map_err(|e| describe(&e))?;
    let status = resp.status().as_u16();
    let mut obs = Map::new();
    obs.insert("status".into(), Json::from(status));
    let headers: Map<String, Json> = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_ascii_lowercase(), Json::from(String::from_utf8_lossy(v.as_bytes()).into_owned())))
        .collect();
    obs.insert("headers".into(), Json::Object(headers));
    if let Some(info) = resp.extensions().get::<reqwest::tls::TlsInfo>()
        && let Some(der) = info.peer_certificate()
    {
        obs.insert("cert".into(), certificate(der)?);
    }
    let status_ok = if p.expect_status.is_empty() { (200..300).contains(&status) } else { p.expect_status.contains(&status) };
    if !status_ok {
        let expected = if p.expect_status.is_empty() {
            "2xx".to_string()
        } else {
            p.expect_status.iter().map(u16::to_string).collect::<Vec<_>>().join(" or ")
        };
        return Err(format!("HTTP status {status}, expected {expected}"));
    }
    if spec.reads("body") {
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading the body failed: {}", describe(&e)))? {
            if body.len() + chunk.len() > p.max_body_bytes {
                return Err(format!(
                    "response body is larger than {} bytes (max_body_bytes); raise the limit or probe a smaller endpoint",
                    p.max_body_bytes
                ));
            }
            body.extend_from_slice(&chunk);
        }
        let structured = spec.conditions.iter().any(|c| c.root() == "body" && c.path.len() > 1);
        let value = if structured {
            serde_json::from_slice(&body).map_err(|e| {
                let start: String = String::from_utf8_lossy(&body).chars().take(80).collect();
                format!("response body is not JSON ({e}); it starts with {start:?}")
            })?
        } else {
            Json::from(String::from_utf8_lossy(&body).into_owned())
        };
        obs.insert("body".into(), value);
    }
    Ok(obs)
}

/// What conditions read of a certificate: `days_left`, `not_after`, `subject`, `issuer`.
pub(crate) fn certificate(der: &[u8]) -> Result<Json, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| format!("cannot parse the server certificate: {e}"))?;
    let not_after = cert.validity().not_after.timestamp();
    let now = crate::clock::now().timestamp();
    let days_left = (not_after - now).div_euclid(86_400);
    let mut m = Map::new();
    m.insert("days_left".into(), Json::from(days_left));
    m.insert("not_after".into(), Json::from(cert.validity().not_after.to_string()));
    m.insert("subject".into(), Json::from(cert.subject().to_string()));
    m.insert("issuer".into(), Json::from(cert.issuer().to_string()));
    Ok(Json::Object(m))
}

/// reqwest's messages repeat the URL (which may carry a token); we say what failed.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut root: &dyn Error = e;
    let mut chain = Vec::new();
    while let Some(src) = root.source() {
        chain.push(src.to_string());
        root = src;
    }
    let kind = if e.is_timeout() {
        "request timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_redirect() {
        "too many redirects"
    } else if e.is_body() || e.is_decode() {
        "reading the response failed"
    } else {
        "request failed"
    };
    match chain.last() {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_string(),
    }
}

/// `tls.insecure_skip_verify`: accept any certificate, but still check signatures so
/// the handshake is a real one.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
