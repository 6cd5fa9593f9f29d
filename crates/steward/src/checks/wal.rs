//! `wal`: a PostgreSQL policy's WAL archive, read from its repository — the archive
//! lag (age of the newest archived segment) and its continuity (no segment missing
//! between the oldest and the newest, across timelines). A stalled or failing
//! `archive_command` shows as lag; a lost segment as a gap, which no recovery crosses.
//! Conditions can read `wal.*`.

use std::sync::Arc;

use serde_json::{Map, Value as Json, json};

use crate::backups::wal::WalArchive;
use crate::config::duration::format_duration;
use crate::config::{Config, WalProbe};

pub(super) async fn observe(config: Option<&Arc<Config>>, probe: &WalProbe) -> Result<Map<String, Json>, String> {
    let config = config.ok_or("wal checks read the policy's repository: run them with the configuration that defines it")?;
    let archive = WalArchive::open(config, &probe.policy).map_err(|e| e.to_string())?;
    let (c, newest) = archive.status().await.map_err(|e| format!("cannot read the WAL archive of `{}`: {e}", probe.policy))?;
    let now = crate::clock::now();
    let age = newest.as_ref().map(|r| (now - r.archived_at).num_seconds().max(0));
    let wal = json!({
        "policy": probe.policy,
        "timeline": c.timeline,
        "newest": c.last,
        "age_seconds": age,
        "segments": c.expected,
        "missing_count": c.missing_count,
        "first_missing": c.missing.first(),
        "continuous": c.continuous,
    });
    let max = format_duration(probe.max_age);
    let (Some(newest), Some(age)) = (newest, age) else {
        return Err(format!("the WAL archive of `{}` holds no segment yet (max_age {max}); is archive_command set?", probe.policy));
    };
    let old = std::time::Duration::from_secs(age.unsigned_abs());
    if old > probe.max_age {
        return Err(format!(
            "the newest archived WAL segment of `{}` ({}) is {} old, more than max_age {max}: archiving is stalled or failing (see pg_stat_archiver)",
            probe.policy,
            newest.file,
            format_duration(old)
        ));
    }
    if !c.continuous {
        return Err(format!(
            "{} WAL segment(s) missing in the archive of `{}`, the first {}: recovery cannot cross them (steward wal verify lists them)",
            c.missing_count,
            probe.policy,
            c.missing.first().map_or("?", String::as_str)
        ));
    }
    let mut obs = Map::new();
    obs.insert("wal".into(), wal);
    Ok(obs)
}
