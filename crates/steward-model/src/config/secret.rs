//! Secrets by reference: `${env:NAME}` and `${file:/path}`, never inline.
//!
//! A [`SecretString`] keeps both what the user wrote (shown everywhere) and the resolved
//! value (handed only to the protocol client). Every resolved secret is also registered
//! with the [`Redactor`], which scrubs it from reasons, logs and API responses, because
//! client libraries love to echo URLs (with passwords) in their error messages.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A string that may contain secret references.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString {
    /// As written in the configuration, references unresolved: safe to show.
    written: String,
    /// With references replaced by their values: only for the wire.
    resolved: String,
}

impl SecretString {
    pub fn plain(s: impl Into<String>) -> SecretString {
        let s = s.into();
        SecretString { written: s.clone(), resolved: s }
    }

    /// A written text and its resolved value (see [`resolve_url`]).
    pub fn from_parts(written: String, resolved: String) -> SecretString {
        SecretString { written, resolved }
    }

    /// The value to send to the target. Never log or display this.
    pub fn expose(&self) -> &str {
        &self.resolved
    }

    /// The value as written, with references instead of secrets.
    pub fn written(&self) -> &str {
        &self.written
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.written, f)
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// Why a reference could not be resolved: (character offset in the string, message, hint).
pub type ResolveError = (usize, String, String);

/// What an unset reference reads as while [`deferring_unset`]: long enough for length
/// rules (a heartbeat token), safe in a header, a URL's password or an argument.
pub const UNSET_PLACEHOLDER: &str = "steward-unset-secret-placeholder";

thread_local! {
    /// The references found unset while [`deferring_unset`] runs on this thread; `None`
    /// outside it (every unset reference is then an error).
    static DEFERRED: std::cell::RefCell<Option<Vec<String>>> = const { std::cell::RefCell::new(None) };
}

/// Runs `load` with unset references (`${env:…}` not set, `${file:…}` unreadable) read
/// as [`UNSET_PLACEHOLDER`] instead of failing, and returns each reference so found, in
/// order: `steward validate` checks a configuration on a machine without production
/// secrets. A scope on this thread, not a flag passed down: the references are met deep
/// in every section's decoder (URLs, headers, templates in runbooks), all synchronous.
pub fn deferring_unset<T>(load: impl FnOnce() -> T) -> (T, Vec<String>) {
    let outer = DEFERRED.with(|d| d.borrow_mut().replace(Vec::new()));
    let out = load();
    let found = DEFERRED.with(|d| std::mem::replace(&mut *d.borrow_mut(), outer)).unwrap_or_default();
    (out, found)
}

/// Whether an unset reference is deferred here, recording it when it is.
fn defer(reference: &str) -> bool {
    DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(found) => {
            found.push(reference.to_string());
            true
        }
        None => false,
    })
}

/// Resolves every `${kind:arg}` in `text`; `secrets` collects the values for redaction.
pub fn resolve(text: &str, secrets: &mut Vec<String>) -> Result<SecretString, ResolveError> {
    let mut resolved = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        resolved.push_str(&rest[..start]);
        let offset = text.len() - rest.len() + start;
        let char_offset = text[..offset].chars().count();
        let Some(end) = rest[start..].find('}') else {
            return Err((char_offset, "unterminated secret reference".into(), "write `${env:NAME}` or `${file:/path}`".into()));
        };
        let inner = &rest[start + 2..start + end];
        let reference = &rest[start..start + end + 1];
        let value = match inner.split_once(':') {
            Some(("env", name)) if !name.is_empty() => match std::env::var(name) {
                Ok(v) => v,
                Err(_) if defer(reference) => UNSET_PLACEHOLDER.to_string(),
                Err(_) => {
                    let hint = format!("export {name}=... before starting steward");
                    return Err((char_offset, format!("environment variable `{name}` is not set"), hint));
                }
            },
            Some(("file", path)) if !path.is_empty() => match std::fs::read_to_string(path) {
                Ok(s) => s.trim_end_matches(['\n', '\r']).to_string(),
                Err(_) if defer(reference) => UNSET_PLACEHOLDER.to_string(),
                Err(e) => {
                    let hint = "check the path and that steward may read it".to_string();
                    return Err((char_offset, format!("cannot read secret file `{path}`: {e}"), hint));
                }
            },
            _ => {
                return Err((
                    char_offset,
                    format!("`${{{inner}}}` is not a secret reference"),
                    "write `${env:NAME}` or `${file:/path}`".into(),
                ));
            }
        };
        if !value.is_empty() && value != UNSET_PLACEHOLDER {
            secrets.push(value.clone());
        }
        resolved.push_str(&value);
        rest = &rest[start + end + 1..];
    }
    resolved.push_str(rest);
    Ok(SecretString { written: text.to_string(), resolved })
}

/// Replaces every known secret value in a text with `***`.
#[derive(Clone, Default)]
pub struct Redactor {
    secrets: Arc<Vec<String>>,
}

impl Redactor {
    pub fn new(mut secrets: Vec<String>) -> Redactor {
        // Percent-encoded copies too: URLs carry passwords encoded.
        // Both the form encoding and the userinfo encoding `resolve_url` uses.
        let mut encoded: Vec<String> = secrets.iter().map(|s| url::form_urlencoded::byte_serialize(s.as_bytes()).collect()).collect();
        encoded.extend(secrets.iter().map(|s| percent_encoding::utf8_percent_encode(s, USERINFO).to_string()));
        secrets.extend(encoded);
        // Longest first, so a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        // Very short values would shred ordinary text; they are too weak to be secrets anyway.
        secrets.retain(|s| s.len() >= 4);
        Redactor { secrets: Arc::new(secrets) }
    }

    /// Every string inside a JSON value, redacted.
    pub fn redact_json(&self, v: &serde_json::Value) -> serde_json::Value {
        use serde_json::Value as J;
        match v {
            J::String(s) => J::String(self.redact(s).into_owned()),
            J::Array(items) => J::Array(items.iter().map(|i| self.redact_json(i)).collect()),
            J::Object(m) => J::Object(m.iter().map(|(k, v)| (k.clone(), self.redact_json(v))).collect()),
            other => other.clone(),
        }
    }

    /// Like [`Redactor::redact`] for text cut short at its end: an end that could be
    /// the beginning of a secret is masked too.
    pub fn redact_cut(&self, text: &str) -> String {
        let mut out = self.redact(text).into_owned();
        for s in self.secrets.iter() {
            let longest = (1..s.len()).rev().filter(|k| s.is_char_boundary(*k)).find(|k| out.ends_with(&s[..*k]));
            if let Some(k) = longest {
                out.truncate(out.len() - k);
                out.push_str("***");
            }
        }
        out
    }

    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for s in self.secrets.iter() {
            if out.contains(s.as_str()) {
                out = Cow::Owned(out.replace(s.as_str(), "***"));
            }
        }
        out
    }
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

/// What a user or password value keeps unencoded in a URL (RFC 3986 unreserved).
const USERINFO: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// Stands in for the n-th reference while a written URL is parsed for its shape.
fn placeholder(n: usize) -> String {
    format!("stewardsecretref{n}x")
}

/// A URL as written, with every `${…}` replaced by a placeholder, and the references.
fn with_placeholders(written: &str) -> (String, Vec<String>) {
    let mut shape = String::with_capacity(written.len());
    let mut references = Vec::new();
    let mut rest = written;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start..].find('}') else { break };
        shape.push_str(&rest[..start]);
        shape.push_str(&placeholder(references.len()));
        references.push(rest[start..start + end + 1].to_string());
        rest = &rest[start + end + 1..];
    }
    shape.push_str(rest);
    (shape, references)
}

/// A URL with secret references, checked and resolved:
/// - the whole URL may be one reference (`${env:DATABASE_URL}`);
/// - a password must be a reference (or a template, in runbooks), never literal text;
/// - a reference in the user or password is percent-encoded there, so a password may
///   hold `@`, `/` or `:`; references elsewhere are inserted as they are.
///
/// Returns the parsed shape (for scheme checks) and the resolved URL. `secrets` collects
/// the resolved values for redaction.
pub fn resolve_url(written: &str, secrets: &mut Vec<String>) -> Result<(url::Url, String), UrlError> {
    let (shape, references) = with_placeholders(written);
    if references.len() == 1 && shape == placeholder(0) {
        let value = resolve(written, secrets).map_err(|(_, m, h)| UrlError::Reference(m, h))?;
        if value.expose() == UNSET_PLACEHOLDER {
            return Err(UrlError::Deferred);
        }
        let u = url::Url::parse(value.expose()).map_err(|e| UrlError::Invalid(format!("the URL in {written} is not valid: {e}")))?;
        // The password inside a URL given whole is a secret of its own: a client may
        // quote it without the rest.
        if let Some(pw) = u.password() {
            secrets.push(percent_encoding::percent_decode_str(pw).decode_utf8_lossy().to_string());
        }
        return Ok((u, value.expose().to_string()));
    }
    let parsed = url::Url::parse(&shape).map_err(|e| UrlError::Invalid(e.to_string()))?;
    let is_reference = |part: &str| part.is_empty() || part.contains("stewardsecretref") || part.contains("%7B%7B") || part.contains("{{");
    if let Some(pw) = parsed.password()
        && !is_reference(pw)
    {
        return Err(UrlError::InlinePassword);
    }
    let mut values = Vec::with_capacity(references.len());
    for r in &references {
        values.push(resolve(r, secrets).map_err(|(_, m, h)| UrlError::Reference(m, h))?.expose().to_string());
    }
    let fill = |part: &str| {
        let mut out = part.to_string();
        for (i, v) in values.iter().enumerate() {
            out = out.replace(&placeholder(i), v);
        }
        out
    };
    let mut resolved = parsed.clone();
    let user = percent_encoding::percent_decode_str(parsed.username()).decode_utf8_lossy().to_string();
    if user.contains("stewardsecretref") {
        let _ = resolved.set_username(&percent_encoding::utf8_percent_encode(&fill(&user), USERINFO).to_string());
    }
    if let Some(pw) = parsed.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().to_string())
        && pw.contains("stewardsecretref")
    {
        let _ = resolved.set_password(Some(&percent_encoding::utf8_percent_encode(&fill(&pw), USERINFO).to_string()));
    }
    Ok((parsed, fill(resolved.as_str())))
}

/// Why [`resolve_url`] refused a URL.
#[derive(Debug)]
pub enum UrlError {
    Invalid(String),
    InlinePassword,
    /// A reference that cannot be resolved: message and hint.
    Reference(String, String),
    /// The whole URL is a reference left unset while [`deferring_unset`]: nothing to check.
    Deferred,
}

/// A URL without its user and password, and those percent-decoded — for clients that
/// take credentials apart from the address (NATS would otherwise send `p%40ss`).
pub fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let Ok(mut u) = url::Url::parse(url) else { return (url.to_string(), None) };
    if u.username().is_empty() && u.password().is_none() {
        return (url.to_string(), None);
    }
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().to_string();
    let credentials = (decode(u.username()), decode(u.password().unwrap_or("")));
    let _ = u.set_username("");
    let _ = u.set_password(None);
    (u.to_string(), Some(credentials))
}

/// Strips the password from a URL for display (`postgres://u:***@host/db`).
pub fn redact_url_password(url: &str) -> Cow<'_, str> {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            Cow::Owned(u.to_string())
        }
        _ => Cow::Borrowed(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_env_and_file_references() {
        // SAFETY: unit tests in this module are the only users of this variable.
        unsafe { std::env::set_var("STEWARD_TEST_SECRET_A", "hunter22") };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "filesecret\n").unwrap();
        let mut secrets = vec![];
        let text = format!("a=${{env:STEWARD_TEST_SECRET_A}}&b=${{file:{}}}", path.display());
        let s = resolve(&text, &mut secrets).unwrap();
        assert_eq!(s.expose(), "a=hunter22&b=filesecret");
        assert_eq!(s.to_string(), text);
        assert_eq!(format!("{s:?}"), format!("{text:?}"));
        assert_eq!(secrets, vec!["hunter22", "filesecret"]);
    }

    #[test]
    fn unknown_or_missing_references_are_errors_with_offsets() {
        let mut secrets = vec![];
        let (off, msg, _) = resolve("xx${env:STEWARD_SURELY_UNSET_VAR}", &mut secrets).unwrap_err();
        assert_eq!(off, 2);
        assert!(msg.contains("not set"));
        assert!(resolve("${vault:x}", &mut secrets).unwrap_err().1.contains("not a secret reference"));
        assert!(resolve("${env:X", &mut secrets).unwrap_err().1.contains("unterminated"));
    }

    #[test]
    fn redactor_scrubs_plain_and_encoded_forms() {
        let r = Redactor::new(vec!["p@ss word".into(), "ab".into()]);
        assert_eq!(r.redact("pw=p@ss word!"), "pw=***!");
        assert_eq!(r.redact("url p%40ss+word"), "url ***");
        assert_eq!(r.redact("ab stays: too short to be a secret"), "ab stays: too short to be a secret");
    }

    #[test]
    fn url_passwords_by_reference_are_encoded_into_the_userinfo() {
        // SAFETY: only this test reads these variables.
        unsafe {
            std::env::set_var("STEWARD_URL_TEST_PW", "p@ss/w:rd");
            std::env::set_var("STEWARD_URL_TEST_URL", "redis://:hunter22@127.0.0.1:6379/0");
        }
        let mut found = vec![];
        let (_, resolved) = resolve_url("mysql://backup:${env:STEWARD_URL_TEST_PW}@127.0.0.1:3306/app", &mut found).unwrap();
        assert_eq!(resolved, "mysql://backup:p%40ss%2Fw%3Ard@127.0.0.1:3306/app");
        let u = url::Url::parse(&resolved).unwrap();
        assert_eq!(percent_encoding::percent_decode_str(u.password().unwrap()).decode_utf8_lossy(), "p@ss/w:rd");
        assert_eq!(found, vec!["p@ss/w:rd".to_string()]);
        let (shape, resolved) = resolve_url("${env:STEWARD_URL_TEST_URL}", &mut vec![]).unwrap();
        assert_eq!((shape.scheme(), resolved.as_str()), ("redis", "redis://:hunter22@127.0.0.1:6379/0"));
        assert!(matches!(resolve_url("postgres://u:literal@h/db", &mut vec![]), Err(UrlError::InlinePassword)));
        assert!(matches!(resolve_url("http://u:${env:STEWARD_URL_TEST_NOPE}@h/", &mut vec![]), Err(UrlError::Reference(..))));
        // The redactor knows the encoded form too.
        let r = Redactor::new(vec!["p@ss/w:rd".into()]);
        assert_eq!(r.redact(&resolved_for_log()), "conn mysql://backup:***@h failed");
        fn resolved_for_log() -> String {
            "conn mysql://backup:p%40ss%2Fw%3Ard@h failed".into()
        }
    }

    #[test]
    fn url_passwords_are_masked() {
        assert_eq!(redact_url_password("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url_password("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn a_secret_cut_at_the_end_of_a_text_is_masked() {
        let r = super::Redactor::new(vec!["hunter2-password".into()]);
        assert_eq!(r.redact_cut("login with hunter2-pass"), "login with ***");
        assert_eq!(r.redact_cut("password hunter2-password ok"), "password *** ok");
        assert_eq!(r.redact_cut("nothing here"), "nothing here");
    }
}
