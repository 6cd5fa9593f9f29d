//! Acknowledge links: a page carries a URL that acknowledges its incident, so the
//! person woken at 3 a.m. acts from the message itself, without a token or a CLI.
//!
//! A link grants exactly one thing — acknowledging one incident, as the person (or
//! receiver) it was sent to — until it expires. It is `ID.WHO.EXPIRES.MAC`: the
//! incident id, the recipient's name in hex, the expiry in Unix seconds, and an
//! HMAC-SHA256 over those with a server key kept in the store. Opening the link (GET)
//! only shows a button: chat apps and mail scanners fetch links on their own, and a
//! fetch must never acknowledge; the button POSTs.

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

/// How long a page's link works.
pub const VALID_FOR: Duration = Duration::hours(24);
/// The name of the signing key in the store (`steward keys rotate acknowledge-links`).
pub const KEY_NAME: &str = "acknowledge-links";
/// Clock differences tolerated on top of [`VALID_FOR`] when capping a link's expiry.
const SKEW: Duration = Duration::minutes(5);

#[derive(Debug, PartialEq, Eq)]
pub enum LinkError {
    /// Malformed, or not signed by this server's key.
    Invalid,
    Expired,
}

/// The recipient and incident a valid link names.
#[derive(Debug, PartialEq, Eq)]
pub struct Grant {
    pub incident: i64,
    pub who: String,
}

/// HMAC-SHA256 (RFC 2104); also signs the calendar feeds' URLs.
pub(crate) fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.map(|b| b ^ byte);
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(message).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().into()
}

fn payload(incident: i64, who: &str, expires: i64) -> String {
    format!("{incident}.{}.{expires}", hex::encode(who))
}

/// A link token acknowledging `incident` as `who`, valid until `expires`.
pub fn sign(key: &[u8], incident: i64, who: &str, expires: DateTime<Utc>) -> String {
    let p = payload(incident, who, expires.timestamp());
    let mac = hmac(key, p.as_bytes());
    format!("{p}.{}", hex::encode(mac))
}

/// Checks a token; the MAC is compared in constant time.
pub fn verify(key: &[u8], token: &str, now: DateTime<Utc>) -> Result<Grant, LinkError> {
    let parts: Vec<&str> = token.split('.').collect();
    let [id, who_hex, expires, mac] = parts[..] else { return Err(LinkError::Invalid) };
    let incident: i64 = id.parse().map_err(|_| LinkError::Invalid)?;
    let expires: i64 = expires.parse().map_err(|_| LinkError::Invalid)?;
    let who = hex::decode(who_hex).ok().and_then(|b| String::from_utf8(b).ok()).ok_or(LinkError::Invalid)?;
    let given = hex::decode(mac).map_err(|_| LinkError::Invalid)?;
    let expected = hmac(key, payload(incident, &who, expires).as_bytes());
    let same = given.len() == expected.len() && given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if !same {
        return Err(LinkError::Invalid);
    }
    if now.timestamp() >= expires {
        return Err(LinkError::Expired);
    }
    // The server caps what a link may claim: no link it signs lives longer than
    // VALID_FOR, so one that claims more was not made by this code — even with the key.
    if expires > (now + VALID_FOR + SKEW).timestamp() {
        return Err(LinkError::Invalid);
    }
    Ok(Grant { incident, who })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex::encode(mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }

    #[test]
    fn a_link_grants_its_incident_until_it_expires_and_not_after_tampering() {
        let key = [7u8; 32];
        let now: DateTime<Utc> = "2026-11-22T03:00:00Z".parse().unwrap();
        let token = sign(&key, 42, "alice", now + VALID_FOR);
        assert_eq!(verify(&key, &token, now), Ok(Grant { incident: 42, who: "alice".into() }));
        assert_eq!(verify(&key, &token, now + VALID_FOR), Err(LinkError::Expired));
        assert_eq!(verify(&[8u8; 32], &token, now), Err(LinkError::Invalid), "another server's key");
        let other_incident = token.replacen("42.", "43.", 1);
        assert_eq!(verify(&key, &other_incident, now), Err(LinkError::Invalid));
        let later = sign(&key, 42, "alice", now + VALID_FOR * 10);
        let extended = format!("{}.{}", later.rsplit_once('.').unwrap().0, token.rsplit_once('.').unwrap().1);
        assert_eq!(verify(&key, &extended, now), Err(LinkError::Invalid), "the expiry is signed");
        let forever = sign(&key, 42, "mallory", DateTime::<Utc>::MAX_UTC);
        assert_eq!(verify(&key, &forever, now), Err(LinkError::Invalid), "an expiry past the cap is refused even when signed");
        let i64_max = format!("42.{}.{}.", hex::encode("mallory"), i64::MAX);
        let mac = hex::encode(hmac(&key, i64_max.trim_end_matches('.').as_bytes()));
        assert_eq!(verify(&key, &format!("{i64_max}{mac}"), now), Err(LinkError::Invalid));
        for junk in ["", "1.2.3", "x.616c696365.1.00", "42.zz.1.00", &format!("{token}.extra")] {
            assert_eq!(verify(&key, junk, now), Err(LinkError::Invalid), "{junk}");
        }
    }
}
