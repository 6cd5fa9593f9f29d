//! Redis: an RDB snapshot taken over the replication protocol (`redis-cli --rdb`, a
//! SYNC as a replica would), checked with `redis-check-rdb` before it is stored. The
//! key count comes from that check, i.e. from the snapshot itself. A restore test
//! loads the file into a scratch redis-server and counts the keys there.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::process::{Running, Tool, hand_over, output, run_into, unprivileged_user, version};
use super::{BackupCx, Comparison, Produced, Progress, SourceError, compare_counts, read_object, stopped, store_object};
use crate::backups::manifest::Manifest;
use crate::backups::repository::Repo;

/// `redis-cli` for `url`, the password in REDISCLI_AUTH (never argv).
fn cli(url: &str) -> Result<Tool, SourceError> {
    let mut u = url::Url::parse(url).map_err(|e| SourceError::Invalid(format!("the Redis URL is not valid: {e}")))?;
    let password = u.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().to_string());
    let _ = u.set_password(None);
    let mut t = Tool::new("redis-cli").arg("-u").arg(u.to_string());
    if let Some(p) = password {
        t = t.env("REDISCLI_AUTH", p);
    }
    Ok(t)
}

/// Parses `redis-check-rdb` output: the key and expire counts it read.
fn check_counts(text: &str) -> Option<(i64, i64)> {
    let ok = text.contains("RDB looks OK");
    let count = |what: &str| {
        text.lines().find_map(|l| l.strip_prefix("[info] ").and_then(|r| r.strip_suffix(what)).and_then(|n| n.trim().parse::<i64>().ok()))
    };
    ok.then(|| Some((count(" keys read")?, count(" expires").unwrap_or(0))))?
}

/// Checks an RDB file; the key and expire counts, or why it is not valid.
fn check_rdb(path: &Path) -> Result<(i64, i64), SourceError> {
    let text = output(&Tool::new("redis-check-rdb").arg(path.display().to_string()))
        .map_err(|e| SourceError::Tool(format!("redis-check-rdb: {e}")))?;
    // A snapshot the checker refuses is a damaged backup (or a source that sent one).
    check_counts(&text).ok_or_else(|| {
        SourceError::Repository(format!("redis-check-rdb did not accept the snapshot: {}", text.lines().last().unwrap_or("")))
    })
}

pub async fn backup(cx: &BackupCx, url: &str, running: &Running) -> Result<Produced, SourceError> {
    let rdb = cx.spool.join("dump.rdb");
    cx.progress.set_phase("taking an RDB snapshot");
    let tool = cli(url)?.arg("--rdb").arg(rdb.display().to_string());
    let r = running.clone();
    tokio::task::spawn_blocking(move || run_into(&tool, &mut std::io::sink(), &r))
        .await
        .map_err(stopped)?
        .map_err(|e| super::io_error(e).context("redis-cli --rdb"))?;
    cx.progress.set_phase("checking the snapshot");
    let checked = rdb.clone();
    let (keys, expires) = tokio::task::spawn_blocking(move || check_rdb(&checked)).await.map_err(stopped)??;
    cx.progress.set_phase("storing");
    let file = rdb.clone();
    let (object, _) = store_object(cx, "dump.rdb", move |w| {
        let mut f = std::fs::File::open(&file)?;
        std::io::copy(&mut f, w)
    })
    .await?;
    Ok(Produced { objects: vec![object], facts: json!({ "keys": { "all": keys }, "expires": expires }), tool: version("redis-cli") })
}

/// Writes the snapshot to `path` (a file) and checks it with redis-check-rdb.
pub async fn restore_file(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    path: &Path,
    progress: &Arc<Progress>,
) -> Result<Comparison, SourceError> {
    let object = manifest.object("dump.rdb").ok_or_else(no_rdb)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| SourceError::Local(format!("cannot create {}: {e}", parent.display())))?;
    }
    let partial = path.with_extension("rdb.partial");
    let into = partial.clone();
    read_object(repo, manifest, object, identity, progress, move |input| {
        let mut f = std::fs::File::create(&into)?;
        std::io::copy(input, &mut f)?;
        f.sync_all()
    })
    .await
    .map_err(|e| {
        let _ = std::fs::remove_file(&partial);
        SourceError::from(e)
    })?;
    // Renamed into place only once complete and checked: never a half-written dump.rdb.
    let checked = partial.clone();
    let (keys, _) = tokio::task::spawn_blocking(move || check_rdb(&checked)).await.map_err(stopped)??;
    std::fs::rename(&partial, path).map_err(|e| SourceError::Local(e.to_string()))?;
    let mut c = Comparison::default();
    compare_counts("keys", &manifest.facts["keys"], &BTreeMap::from([("all".to_string(), keys)]), &mut c);
    Ok(c)
}

fn no_rdb() -> SourceError {
    SourceError::Invalid("the manifest names no dump.rdb object".into())
}

/// Level 2: load the snapshot into a scratch redis-server and count the keys there.
pub async fn restore_test(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    progress: &Arc<Progress>,
) -> Result<(Comparison, Duration), SourceError> {
    let user = unprivileged_user();
    let dir = tempfile::Builder::new().prefix("steward-scratch-redis-").tempdir().map_err(|e| SourceError::Local(e.to_string()))?;
    let started = Instant::now();
    progress.set_phase("restoring");
    let object = manifest.object("dump.rdb").ok_or_else(no_rdb)?;
    let file = dir.path().join("dump.rdb");
    let into = file.clone();
    read_object(repo, manifest, object, identity, progress, move |input| {
        let mut f = std::fs::File::create(&into)?;
        std::io::copy(input, &mut f).map(|_| ())
    })
    .await?;
    hand_over(dir.path(), user).map_err(|e| SourceError::Local(e.to_string()))?;
    hand_over(&file, user).map_err(|e| SourceError::Local(e.to_string()))?;
    progress.set_phase("loading into a scratch redis-server");
    let socket = dir.path().join("redis.sock");
    let mut cmd = std::process::Command::new("redis-server");
    cmd.arg("--port")
        .arg("0")
        .arg("--unixsocket")
        .arg(&socket)
        .arg("--dir")
        .arg(dir.path())
        .arg("--dbfilename")
        .arg("dump.rdb")
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    {
        use std::os::unix::process::CommandExt;
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
    }
    let mut child = cmd.spawn().map_err(|e| SourceError::Tool(format!("cannot start a scratch redis-server: {e}")))?;
    let result = async {
        let client = ::redis::Client::open(format!("redis+unix://{}", socket.display())).map_err(|e| SourceError::Local(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut conn = loop {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => break c,
                Err(e) if Instant::now() > deadline => {
                    return Err(SourceError::Tool(format!("the scratch redis-server did not start: {e}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        // LOADING replies until the snapshot is in memory.
        let keys = loop {
            let info: Result<String, _> = ::redis::cmd("INFO").arg("keyspace").query_async(&mut conn).await;
            match info {
                Ok(text) => break keyspace_keys(&text),
                Err(e) if Instant::now() > deadline => {
                    return Err(SourceError::Tool(format!("the scratch redis-server did not load the snapshot: {e}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        Ok(keys)
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let keys = result?;
    let restore_time = started.elapsed();
    let mut c = Comparison::default();
    compare_loaded_keys(&manifest.facts, keys, &mut c);
    Ok((c, restore_time))
}

/// A server loading a snapshot drops the keys whose TTL has passed since it was taken,
/// so fewer keys than recorded is expected — down to the number without a TTL. Fewer
/// than that, or more than recorded, is a difference.
fn compare_loaded_keys(facts: &serde_json::Value, loaded: i64, c: &mut Comparison) {
    let (Some(recorded), expires) = (facts["keys"]["all"].as_i64(), facts["expires"].as_i64().unwrap_or(0)) else {
        c.differences.push("the backup recorded no key count".into());
        return;
    };
    if loaded == recorded {
        c.matched.push(format!("all: {recorded} keys"));
    } else if loaded < recorded && loaded >= recorded - expires {
        c.matched.push(format!(
            "all: {loaded} keys loaded of {recorded} at backup; the other {} had a TTL that has passed since ({expires} keys had one)",
            recorded - loaded
        ));
    } else {
        c.differences.push(format!("all: {recorded} keys at backup ({expires} with a TTL), {loaded} loaded"));
    }
}

/// The sum of `keys=` over every database in INFO keyspace.
fn keyspace_keys(info: &str) -> i64 {
    info.lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| l.split([':', ',']).find_map(|kv| kv.strip_prefix("keys=")).and_then(|n| n.parse::<i64>().ok()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_redis_check_rdb_and_info() {
        let text = "[offset 165] Selecting DB ID 0\n[offset 186] Checksum OK\n[offset 186] \\o/ RDB looks OK! \\o/\n[info] 12 keys read\n[info] 3 expires\n[info] 0 already expired\n";
        assert_eq!(check_counts(text), Some((12, 3)));
        assert_eq!(check_counts("--- RDB ERROR DETECTED ---\n[info] 3 keys read\n"), None);
        assert_eq!(keyspace_keys("# Keyspace\r\ndb0:keys=10,expires=0,avg_ttl=0\r\ndb3:keys=5,expires=1,avg_ttl=9\r\n"), 15);
    }

    #[test]
    fn keys_whose_ttl_passed_since_the_backup_are_not_a_difference() {
        let facts = json!({ "keys": { "all": 100 }, "expires": 10 });
        let compare = |loaded| {
            let mut c = Comparison::default();
            compare_loaded_keys(&facts, loaded, &mut c);
            c
        };
        assert!(compare(100).passed() && compare(100).matched[0] == "all: 100 keys");
        assert!(compare(90).passed() && compare(90).matched[0].contains("other 10 had a TTL"), "{:?}", compare(90));
        assert!(!compare(89).passed(), "more missing than had a TTL");
        assert!(!compare(101).passed(), "more than recorded");
        let mut c = Comparison::default();
        compare_loaded_keys(&json!(null), 5, &mut c);
        assert!(!c.passed());
    }
}
