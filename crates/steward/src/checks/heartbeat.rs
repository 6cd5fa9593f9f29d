//! `heartbeat`: a push check. A job (cron, a backup script) signals each run with
//! `POST /api/v1/heartbeats/NAME` (or `…/fail` when it failed); the signals are kept in
//! the store, so any replica can take them and they survive restarts. Each run of the
//! check reads them: it fails when the last signal said the job failed, or when none
//! arrived within the period plus grace — counted from the last success, or from when
//! the check began waiting, so a check just added is not late at once.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json, json};

use crate::config::HeartbeatProbe;
use crate::config::duration::format_duration;
use crate::store::{CheckStore, Heartbeat};

pub(super) async fn observe(store: Option<&Arc<dyn CheckStore>>, check: &str, p: &HeartbeatProbe) -> Result<Map<String, Json>, String> {
    let store = store.ok_or("heartbeat checks read the signals the server received: run them under `steward serve` (or give --data)")?;
    let now = crate::clock::now();
    let hb = store.heartbeat_of(check, now).await.map_err(|e| format!("cannot read heartbeats from the store: {e}"))?;
    judge(&hb, p, now)
}

/// The verdict on a check's signals at `now`: the observation, or why it fails.
fn judge(hb: &Heartbeat, p: &HeartbeatProbe, now: DateTime<Utc>) -> Result<Map<String, Json>, String> {
    let ago = |t: DateTime<Utc>| format_duration((now - t).to_std().unwrap_or_default());
    let expected = format!("expected every {} with {} grace", format_duration(p.period), format_duration(p.grace));
    if let Some(fail) = hb.last_fail
        && hb.last_ok.is_none_or(|ok| fail > ok)
    {
        return Err(format!("the job signalled a failure {} ago ({}); no success since", ago(fail), fail.to_rfc3339()));
    }
    let since = hb.last_ok.unwrap_or(hb.watching_since);
    let due = p.period.saturating_add(p.grace);
    if (now - since).to_std().unwrap_or_default() > due {
        return Err(match hb.last_ok {
            Some(at) => format!("no signal for {} (the last at {}); {expected}", ago(at), at.to_rfc3339()),
            None => format!("no signal since this check began waiting {} ago; {expected}", ago(since)),
        });
    }
    let mut obs = Map::new();
    obs.insert(
        "heartbeat".into(),
        json!({
            "age_seconds": hb.last_ok.map(|t| (now - t).num_seconds().max(0)),
            "last_ok": hb.last_ok,
            "last_fail": hb.last_fail,
            "signals": hb.signals,
        }),
    );
    Ok(obs)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn late_failed_and_fresh_signals() {
        let t = |s: i64| DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap();
        let p = HeartbeatProbe {
            period: Duration::from_secs(3_600),
            grace: Duration::from_secs(600),
            token: crate::config::secret::SecretString::from_parts("${env:T}".into(), "x".repeat(16)),
        };
        let hb = |ok: Option<i64>, fail: Option<i64>| Heartbeat {
            check: "nightly".into(),
            watching_since: t(0),
            last_ok: ok.map(t),
            last_fail: fail.map(t),
            signals: u64::from(ok.is_some()) + u64::from(fail.is_some()),
        };
        // Never signalled: not late until the period and grace have passed since the watch began.
        assert!(judge(&hb(None, None), &p, t(4_200)).is_ok(), "exactly period + grace is still on time");
        let never = judge(&hb(None, None), &p, t(4_201)).unwrap_err();
        assert_eq!(never, "no signal since this check began waiting 1h10m1s ago; expected every 1h with 10m grace");
        // Signalled: counted from the last success.
        let obs = judge(&hb(Some(1_000), None), &p, t(5_000)).unwrap();
        assert_eq!(obs["heartbeat"]["age_seconds"], 4_000);
        assert_eq!(obs["heartbeat"]["signals"], 1);
        let late = judge(&hb(Some(1_000), None), &p, t(5_201)).unwrap_err();
        assert!(late.starts_with("no signal for 1h10m1s (the last at 2027-01-15T08:16:40+00:00)"), "{late}");
        // A failure after the last success fails at once; a success after it clears it.
        let failed = judge(&hb(Some(1_000), Some(2_000)), &p, t(2_060)).unwrap_err();
        assert!(failed.starts_with("the job signalled a failure 1m ago"), "{failed}");
        assert!(judge(&hb(Some(3_000), Some(2_000)), &p, t(3_060)).is_ok());
        assert!(judge(&hb(None, Some(2_000)), &p, t(2_001)).is_err(), "a failure with no success ever");
    }
}
