//! PostgreSQL, physically: a base backup of the whole cluster (`pg_basebackup`) plus
//! the WAL archived by `steward wal push`, restored to any point in between.
//!
//! **Backup.** `pg_basebackup -D - -Ft -X none` streams one tar (with PostgreSQL's
//! `backup_label` and `backup_manifest` inside) straight through the pipeline as
//! `base.tar`; nothing is spooled. The backup takes no WAL of its own: the server
//! waits until the WAL the backup needs is archived before pg_basebackup returns, and
//! steward then checks that it is in *this policy's* archive — the backup history file
//! (`…backup`, which says where the backup stopped) and every segment from the start
//! to the stop. A backup whose WAL is not archived here is a failed backup, never a
//! successful one that cannot be restored.
//!
//! **Restore.** The tar is unpacked into the target directory and checked with
//! `pg_verifybackup` against PostgreSQL's own manifest; the cluster is started with
//! `restore_command = steward wal fetch` and the recovery target, privately (a Unix
//! socket in a directory of ours, trust only there, its own configuration file,
//! archiving deferred), until it promotes at the target or stops short of it; its log
//! says which, and where it stopped. Then it is shut down cleanly, ready to be started
//! with its own configuration.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use sqlx::{Connection, PgConnection};

use super::postgres::conninfo;
use super::process::{Running, hand_over, run_into, unprivileged_user, version};
use super::{BackupCx, Produced, SourceError, store_object};
use crate::backups::wal::{WalArchive, parse_lsn, segment_name};
use crate::config::backups::PostgresSource;

/// The object a physical backup stores.
pub const BASE_TAR: &str = "base.tar";

/// Where a point-in-time restore should stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    /// Just before the first transaction that committed after this time.
    Time(DateTime<Utc>),
    /// At this WAL position.
    Lsn(u64),
    /// The end of the archive.
    Latest,
    /// The end of the base backup: the earliest consistent point.
    Immediate,
}

impl RecoveryTarget {
    pub fn describe(&self) -> String {
        match self {
            RecoveryTarget::Time(t) => format!("time {}", t.format("%Y-%m-%d %H:%M:%S%.6f UTC")),
            RecoveryTarget::Lsn(l) => format!("LSN {}", lsn_text(*l)),
            RecoveryTarget::Latest => "the end of the archived WAL".into(),
            RecoveryTarget::Immediate => "the end of the base backup (its earliest consistent point)".into(),
        }
    }

    /// The recovery settings PostgreSQL reads for this target.
    fn settings(&self) -> Vec<(&'static str, String)> {
        match self {
            RecoveryTarget::Time(t) => vec![("recovery_target_time", t.format("%Y-%m-%d %H:%M:%S%.6f+00").to_string())],
            RecoveryTarget::Lsn(l) => vec![("recovery_target_lsn", lsn_text(*l))],
            RecoveryTarget::Latest => vec![],
            RecoveryTarget::Immediate => vec![("recovery_target", "immediate".into())],
        }
    }
}

pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// `KEY: value` lines of a backup label or a backup history file.
pub fn label_fields(text: &str) -> BTreeMap<String, String> {
    text.lines().filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect()
}

/// The LSN in a `START WAL LOCATION: 0/2000028 (file 000000010000000000000002)` value.
fn label_lsn(fields: &BTreeMap<String, String>, key: &str) -> Option<u64> {
    parse_lsn(fields.get(key)?.split_whitespace().next()?)
}

/// Passes a tar stream through while keeping one small member's content (PostgreSQL's
/// `backup_label`), read from the tar headers as the bytes go by.
struct Catch<'a> {
    inner: &'a mut dyn Write,
    want: &'static str,
    /// Bytes of the current header, until it has 512.
    header: Vec<u8>,
    /// Bytes left in the current member's data, padding included.
    skip: u64,
    /// How many of those are the wanted member's content.
    keep: u64,
    caught: Option<Vec<u8>>,
    done: bool,
}

impl<'a> Catch<'a> {
    fn new(inner: &'a mut dyn Write, want: &'static str) -> Catch<'a> {
        Catch { inner, want, header: Vec::with_capacity(512), skip: 0, keep: 0, caught: None, done: false }
    }

    fn parse(&mut self, mut buf: &[u8]) {
        while !buf.is_empty() && !self.done {
            if self.skip > 0 {
                let n = buf.len().min(self.skip as usize);
                if self.keep > 0 {
                    let k = n.min(self.keep as usize);
                    self.caught.get_or_insert_with(Vec::new).extend_from_slice(&buf[..k]);
                    self.keep -= k as u64;
                    if self.keep == 0 {
                        self.done = true;
                    }
                }
                self.skip -= n as u64;
                buf = &buf[n..];
                continue;
            }
            let n = buf.len().min(512 - self.header.len());
            self.header.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.header.len() < 512 {
                return;
            }
            let h = std::mem::take(&mut self.header);
            if h.iter().all(|b| *b == 0) {
                continue;
            }
            let name = String::from_utf8_lossy(h[..100].split(|b| *b == 0).next().unwrap_or_default()).into_owned();
            let size = std::str::from_utf8(&h[124..136])
                .ok()
                .and_then(|s| u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok());
            let Some(size) = size else {
                // Not a header this catcher understands: stop looking, keep passing bytes.
                self.done = true;
                return;
            };
            self.skip = size.div_ceil(512) * 512;
            if name.trim_start_matches("./") == self.want && size <= 64 * 1024 {
                self.keep = size;
                self.caught = Some(Vec::new());
                if size == 0 {
                    self.done = true;
                }
            }
        }
    }
}

impl Write for Catch<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.parse(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn source_error(e: sqlx::Error) -> SourceError {
    SourceError::Source(e.to_string())
}

/// A physical base backup (see the module's docs).
pub async fn backup(cx: &BackupCx, src: &PostgresSource, archive: &WalArchive, running: &Running) -> Result<Produced, SourceError> {
    let info = conninfo(src.url.expose())?;
    let mut conn = PgConnection::connect(src.url.expose())
        .await
        .map_err(|e| SourceError::Unreachable(format!("cannot connect to PostgreSQL: {e}")))?;
    let (server_version, version_num, archive_mode, segment_size, sysid): (String, i32, String, i64, i64) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int, current_setting('archive_mode'), \
         (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), (SELECT system_identifier FROM pg_control_system())",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(source_error)?;
    let _ = conn.close().await;
    if archive_mode == "off" {
        return Err(SourceError::Invalid(format!(
            "archive_mode is off on this server: a physical backup restores only with its WAL archived. Set archive_mode = on and \
             archive_command = 'steward wal push %p --policy {} -c CONFIG', then restart PostgreSQL",
            cx.policy
        )));
    }
    let segment_size = segment_size as u64;

    cx.progress.set_phase("copying the cluster");
    let started_at = crate::clock::now();
    let tool = info
        .tool("pg_basebackup")
        .arg("--pgdata=-")
        .arg("--format=tar")
        .arg("--wal-method=none")
        .arg("--checkpoint=fast")
        .arg(format!("--label=steward {}", cx.id))
        .arg("--no-password")
        .arg(format!("--dbname={}", info.url));
    let r = running.clone();
    let (object, label) = store_object(cx, BASE_TAR, move |w| {
        let mut catch = Catch::new(w, "backup_label");
        run_into(&tool, &mut catch, &r)?;
        Ok(catch.caught)
    })
    .await?;
    let stopped_at = crate::clock::now();
    let label = label.map(|b| String::from_utf8_lossy(&b).into_owned()).ok_or_else(|| {
        SourceError::Tool("pg_basebackup's output has no backup_label: it is not a base backup steward can restore".into())
    })?;
    let fields = label_fields(&label);
    let start_lsn = label_lsn(&fields, "START WAL LOCATION")
        .ok_or_else(|| SourceError::Tool(format!("the backup label has no START WAL LOCATION: {label:?}")))?;
    let timeline: u32 = fields
        .get("START TIMELINE")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| SourceError::Tool(format!("the backup label has no START TIMELINE: {label:?}")))?;

    // The backup's WAL, in this policy's archive.
    cx.progress.set_phase("checking the backup's WAL is archived");
    let start_file = segment_name(timeline, start_lsn / segment_size, segment_size);
    let history_file = format!("{start_file}.{:08X}.backup", start_lsn % segment_size);
    let not_archived = |what: String| {
        SourceError::Invalid(format!(
            "{what} is not in the WAL archive of policy `{}`: the backup cannot be restored without it. \
             PostgreSQL's archive_command must be 'steward wal push %p --policy {} -c CONFIG'",
            cx.policy, cx.policy
        ))
    };
    let history = match archive.read(&history_file).await {
        Ok((_, text)) => label_fields(&String::from_utf8_lossy(&text)),
        Err(crate::backups::wal::WalError::NotArchived(_)) => {
            return Err(not_archived(format!("the backup history file {history_file}")));
        }
        Err(e) => return Err(SourceError::Repository(format!("reading {history_file} from the WAL archive: {e}"))),
    };
    let stop_lsn = label_lsn(&history, "STOP WAL LOCATION")
        .ok_or_else(|| SourceError::Repository(format!("{history_file} in the archive has no STOP WAL LOCATION")))?;
    let stop_timeline: u32 = history.get("STOP TIMELINE").and_then(|t| t.parse().ok()).unwrap_or(timeline);
    if stop_timeline != timeline {
        return Err(SourceError::Source(format!(
            "the server changed timeline during the backup ({timeline} to {stop_timeline}: a promotion); take it again"
        )));
    }
    // The stop position is the first byte after the backup's last record.
    let last_segno = stop_lsn.saturating_sub(1) / segment_size;
    let mut missing = Vec::new();
    for segno in start_lsn / segment_size..=last_segno.max(start_lsn / segment_size) {
        let name = segment_name(timeline, segno, segment_size);
        match archive.record(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => missing.push(name),
            Err(e) => return Err(SourceError::Repository(format!("reading the WAL archive: {e}"))),
        }
    }
    if !missing.is_empty() {
        return Err(not_archived(format!("WAL segment {}", missing.join(", "))));
    }
    let stop_file = segment_name(timeline, last_segno.max(start_lsn / segment_size), segment_size);
    Ok(Produced {
        objects: vec![object],
        facts: json!({
            "mode": "physical",
            "database": info.database,
            "server_version": server_version,
            "server_version_num": version_num,
            "system_identifier": sysid.to_string(),
            "segment_size": segment_size,
            "timeline": timeline,
            "start_lsn": lsn_text(start_lsn),
            "stop_lsn": lsn_text(stop_lsn),
            "start_wal_file": start_file,
            "stop_wal_file": stop_file,
            "backup_history_file": history_file,
            "started_at": started_at,
            "stopped_at": stopped_at,
            "label": label,
        }),
        tool: version("pg_basebackup"),
    })
}

/// The role steward connects as to a recovered cluster: the policy's.
pub fn connect_user(src: &PostgresSource) -> Result<String, SourceError> {
    let u = url::Url::parse(src.url.expose()).map_err(|e| SourceError::Invalid(format!("the PostgreSQL URL is not valid: {e}")))?;
    Ok(if u.username().is_empty() { "postgres".to_string() } else { u.username().to_string() })
}

/// The facts of a physical backup a restore plans with.
#[derive(Debug, Clone, Serialize)]
pub struct BaseFacts {
    pub timeline: u32,
    pub start_lsn: u64,
    pub stop_lsn: u64,
    pub stopped_at: DateTime<Utc>,
    pub segment_size: u64,
    pub major: i32,
}

impl BaseFacts {
    pub fn of(facts: &serde_json::Value) -> Option<BaseFacts> {
        if facts["mode"] != "physical" {
            return None;
        }
        Some(BaseFacts {
            timeline: facts["timeline"].as_u64()? as u32,
            start_lsn: parse_lsn(facts["start_lsn"].as_str()?)?,
            stop_lsn: parse_lsn(facts["stop_lsn"].as_str()?)?,
            stopped_at: facts["stopped_at"].as_str()?.parse().ok()?,
            segment_size: facts["segment_size"].as_u64()?,
            major: (facts["server_version_num"].as_i64()? / 10000) as i32,
        })
    }
}

/// Whether a base backup can serve `target`: a recovery must replay at least to the
/// backup's stop to be consistent.
pub fn serves(base: &BaseFacts, target: &RecoveryTarget) -> bool {
    match target {
        RecoveryTarget::Time(t) => base.stopped_at <= *t,
        RecoveryTarget::Lsn(l) => base.stop_lsn <= *l,
        RecoveryTarget::Latest | RecoveryTarget::Immediate => true,
    }
}

/// How a recovery ended, from the server's log.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Recovery {
    /// The target was reached and the cluster promoted.
    pub reached: bool,
    /// `recovery stopping before commit of transaction 750, time …`, when a target stopped it.
    pub stopped: Option<String>,
    /// Where replay ended (`redo done at 0/3000100`).
    pub redo_done_at: Option<String>,
    /// The commit time of the last transaction replayed.
    pub last_transaction_at: Option<String>,
    /// The timeline the promoted cluster writes on.
    pub new_timeline: Option<u32>,
    /// The server's own words when it stopped short (`FATAL: recovery ended before …`).
    pub error: Option<String>,
}

/// Reads what the server logged about its recovery.
pub fn read_recovery_log(log: &str) -> Recovery {
    let mut r = Recovery::default();
    for line in log.lines() {
        let msg = line.split_once(": ").map_or(line, |(_, m)| m).trim();
        // Lines look like `2026-12-06 06:26:36.123 UTC [42] LOG:  redo done at 0/3000100 …`.
        let msg = msg.trim_start_matches("LOG:").trim_start_matches("FATAL:").trim();
        if let Some(rest) = line.split("recovery stopping ").nth(1) {
            r.stopped = Some(format!("recovery stopping {}", rest.trim()));
        } else if let Some(rest) = line.split("redo done at ").nth(1) {
            r.redo_done_at = rest.split_whitespace().next().map(str::to_string);
        } else if let Some(rest) = line.split("last completed transaction was at log time ").nth(1) {
            r.last_transaction_at = Some(rest.trim().to_string());
        } else if let Some(rest) = line.split("selected new timeline ID: ").nth(1) {
            r.new_timeline = rest.split_whitespace().next().and_then(|t| t.parse().ok());
        } else if (line.contains("FATAL:") || line.contains("PANIC:")) && !msg.starts_with("the database system is") {
            // (Connections refused while it recovers are logged as FATAL too: not its end.)
            r.error.get_or_insert_with(|| msg.to_string());
        }
    }
    r.reached = r.new_timeline.is_some() && r.error.is_none();
    r
}

/// A cluster restored into `dir`, started privately to recover to its target.
pub struct Recovering {
    child: std::process::Child,
    pub socket_dir: tempfile::TempDir,
    pub port: u16,
    pub log: PathBuf,
}

/// The restore_command recovery runs: this very binary's `wal fetch`.
pub fn restore_command(config_path: &Path, policy: &str) -> Result<String, SourceError> {
    let exe = std::env::current_exe().map_err(|e| SourceError::Local(format!("cannot find steward's own binary: {e}")))?;
    let config = std::path::absolute(config_path).map_err(|e| SourceError::Local(e.to_string()))?;
    Ok(fetch_command(&exe.display().to_string(), &config.display().to_string(), policy))
}

/// `EXE wal fetch %f %p --policy POLICY -c CONFIG` as PostgreSQL runs it: through `sh
/// -c` after replacing `%f`, `%p` and `%%`. Each word is single-quoted, so nothing in a
/// path or name is ever shell syntax, and a `%` in one is doubled, so PostgreSQL leaves it.
fn fetch_command(exe: &str, config: &str, policy: &str) -> String {
    let word = |s: &str| format!("'{}'", s.replace('%', "%%").replace('\'', "'\\''"));
    format!("{} wal fetch %f %p --policy {} -c {}", word(exe), word(policy), word(config))
}

impl Recovering {
    /// Starts the restored cluster in `data` for recovery to `target`.
    pub fn start(data: &Path, major: i32, restore_command: &str, target: &RecoveryTarget) -> Result<Recovering, SourceError> {
        let bindir = super::postgres::server_bindir(major)?;
        let user = unprivileged_user();
        let socket_dir = tempfile::Builder::new()
            .prefix("steward-recovery-")
            .tempdir()
            .map_err(|e| SourceError::Local(format!("a private directory for the recovering server: {e}")))?;
        let port = 20000 + (rand::random::<u16>() % 40000);
        // Every setting on the command line, which outranks both postgresql.conf and the
        // cluster's postgresql.auto.conf (where ALTER SYSTEM put its archive_command):
        // only a private socket, trust only there, hot standby off (recovery then does
        // not need the primary's connection limits), archiving deferred (archive_mode on,
        // no command or library: the new timeline's files wait, marked ready, for the
        // cluster's own archive_command when it is started for real — never pushed into
        // the archive by this run).
        let conf = "# steward's recovery run: its settings are on the command line; the cluster's own files are untouched\n";
        let mut settings: Vec<(&str, String)> = vec![
            ("listen_addresses", String::new()),
            ("port", port.to_string()),
            ("unix_socket_directories", socket_dir.path().display().to_string()),
            ("hba_file", socket_dir.path().join("pg_hba.conf").display().to_string()),
            ("ident_file", socket_dir.path().join("pg_ident.conf").display().to_string()),
            ("hot_standby", "off".into()),
            ("archive_mode", "on".into()),
            ("archive_command", String::new()),
            ("archive_library", String::new()),
            ("logging_collector", "off".into()),
            ("log_destination", "stderr".into()),
            ("restore_command", restore_command.to_string()),
            ("recovery_target_timeline", "latest".into()),
            ("recovery_target_action", "promote".into()),
        ];
        settings.extend(target.settings());
        let local = |e: io::Error| SourceError::Local(format!("preparing the recovery: {e}"));
        std::fs::write(socket_dir.path().join("postgresql.conf"), conf).map_err(local)?;
        std::fs::write(socket_dir.path().join("pg_hba.conf"), "local all all trust\n").map_err(local)?;
        std::fs::write(socket_dir.path().join("pg_ident.conf"), "").map_err(local)?;
        std::fs::write(data.join("recovery.signal"), "").map_err(local)?;
        for p in [socket_dir.path().to_path_buf(), data.join("recovery.signal")] {
            hand_over(&p, user).map_err(local)?;
        }
        for f in ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"] {
            hand_over(&socket_dir.path().join(f), user).map_err(local)?;
        }
        let log = socket_dir.path().join("server.log");
        let out = std::fs::File::create(&log).map_err(local)?;
        hand_over(&log, user).map_err(local)?;
        let mut cmd = std::process::Command::new(bindir.join("postgres"));
        cmd.arg("-D").arg(data).arg("-c").arg(format!("config_file={}", socket_dir.path().join("postgresql.conf").display()));
        for (k, v) in &settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(std::process::Stdio::null()).stdout(out.try_clone().map_err(local)?).stderr(out);
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
            if let Some((uid, gid)) = user {
                cmd.uid(uid).gid(gid);
            }
            // If steward dies (kill -9), the recovering server stops with it (SIGQUIT:
            // immediate shutdown) instead of running on, orphaned, in a directory the
            // next restore clears. Set here, after the user change that would clear it.
            // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().map_err(|e| SourceError::Tool(format!("cannot start postgres for the recovery: {e}")))?;
        Ok(Recovering { child, socket_dir, port, log })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn options(&self, user: &str, database: &str) -> sqlx::postgres::PgConnectOptions {
        sqlx::postgres::PgConnectOptions::new().socket(self.socket_dir.path()).port(self.port).username(user).database(database)
    }

    /// Waits until the server promoted (`Ok(true)`), or exited, which it does when the
    /// WAL ran out before the target (`Ok(false)`), or `timeout` passed.
    pub async fn wait(&mut self, user: &str, timeout: Duration) -> Result<bool, SourceError> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.child.try_wait().map_err(|e| SourceError::Local(e.to_string()))?.is_some() {
                return Ok(false);
            }
            if let Ok(mut c) = PgConnection::connect_with(&self.options(user, "postgres")).await {
                let in_recovery: Result<bool, _> = sqlx::query_scalar("SELECT pg_is_in_recovery()").fetch_one(&mut c).await;
                let _ = c.close().await;
                if in_recovery.is_ok_and(|r| !r) {
                    return Ok(true);
                }
            }
            if Instant::now() > deadline {
                return Err(SourceError::TimedOut(format!(
                    "the recovery did not finish within {}",
                    crate::config::duration::format_duration(timeout)
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A connection to the recovered cluster.
    pub async fn connect(&self, user: &str, database: &str) -> Result<PgConnection, SourceError> {
        PgConnection::connect_with(&self.options(user, database))
            .await
            .map_err(|e| SourceError::Tool(format!("cannot connect to the recovered cluster: {e}")))
    }

    /// A clean (fast) shutdown, so the directory is ready to start with its own settings.
    pub fn stop(mut self) -> Result<(), SourceError> {
        if self.child.try_wait().ok().flatten().is_some() {
            return Ok(());
        }
        // SAFETY: signalling our own child; SIGINT is PostgreSQL's fast shutdown.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(SourceError::Tool("the recovered cluster did not shut down within 2 minutes; it was killed".into()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }
}

impl Drop for Recovering {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: signalling our own child's process group (immediate shutdown).
            unsafe {
                libc::kill(-(self.child.id() as i32), libc::SIGQUIT);
            }
            let _ = self.child.wait();
        }
    }
}

/// Stops a server left running in `dir` (a recovery whose steward was killed before
/// its server noticed): immediate shutdown, then waits for it to go.
pub fn stop_leftover(dir: &Path) {
    let Some(pid) = std::fs::read_to_string(dir.join("postmaster.pid")).ok().and_then(|t| t.lines().next()?.trim().parse::<i32>().ok())
    else {
        return;
    };
    // Only the postgres started on this directory: a stale pid may be anyone's by now.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = String::from_utf8_lossy(&cmdline).split('\0').any(|arg| Path::new(arg) == dir);
    if !ours {
        return;
    }
    // SAFETY: SIGQUIT is PostgreSQL's immediate shutdown, sent to the server on `dir`.
    unsafe {
        libc::kill(pid, libc::SIGQUIT);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    // SAFETY: as above.
    while unsafe { libc::kill(pid, 0) } == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Unpacks a base backup's tar into `dir` (created, 0700, handed to the user that
/// runs PostgreSQL) and checks it against PostgreSQL's manifest with pg_verifybackup.
pub fn unpack(input: &mut dyn io::Read, dir: &Path) -> io::Result<()> {
    super::directory::unpack_tar(input, dir)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

/// Hands a restored data directory, recursively, to the user PostgreSQL runs as.
pub fn hand_over_tree(dir: &Path) -> io::Result<()> {
    let user = unprivileged_user();
    if user.is_none() {
        return Ok(());
    }
    hand_over(dir, user)?;
    let (uid, gid) = user.map_or((None, None), |(u, g)| (Some(u), Some(g)));
    for rel in super::directory::walk(dir)? {
        // lchown: a symlink in the backup is handed over itself, never what it points at.
        std::os::unix::fs::lchown(dir.join(rel), uid, gid)?;
    }
    Ok(())
}

/// `pg_verifybackup` over a restored directory, against the `backup_manifest` in it
/// (WAL is checked by recovery itself: `--no-parse-wal`).
pub fn verify_files(dir: &Path, major: i32) -> Result<String, SourceError> {
    let bindir = super::postgres::server_bindir(major)?;
    let tool = super::process::Tool::new(bindir.join("pg_verifybackup").display().to_string())
        .arg("--no-parse-wal")
        .arg("--quiet")
        .arg(dir.display().to_string());
    super::process::output(&tool).map_err(|e| SourceError::Repository(format!("pg_verifybackup found the restored files damaged: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            h.set_cksum();
            b.append_data(&mut h, name, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// The label is caught whatever the chunking, and the bytes pass unchanged.
    #[test]
    fn the_backup_label_is_caught_as_the_tar_streams_by() {
        let big = vec![7u8; 5000];
        let label = b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n";
        let tar = tar_with(&[("PG_VERSION", b"15\n"), ("base/1/1259", &big), ("backup_label", label), ("global/pg_control", &big)]);
        for chunk in [1, 7, 511, 512, 513, 4096, tar.len()] {
            let mut out = Vec::new();
            let mut c = Catch::new(&mut out, "backup_label");
            for piece in tar.chunks(chunk) {
                c.write_all(piece).unwrap();
            }
            assert_eq!(c.caught.as_deref(), Some(&label[..]), "chunks of {chunk}");
            assert_eq!(out, tar);
        }
        let fields = label_fields(std::str::from_utf8(label).unwrap());
        assert_eq!(label_lsn(&fields, "START WAL LOCATION"), Some(0x2000028));
        let mut out = Vec::new();
        let mut c = Catch::new(&mut out, "backup_label");
        c.write_all(&tar_with(&[("PG_VERSION", b"15\n")])).unwrap();
        assert_eq!(c.caught, None);
    }

    #[test]
    fn the_log_says_whether_the_target_was_reached_and_where_replay_stopped() {
        let reached = "2026-12-06 06:30:01.100 UTC [71] LOG:  starting point-in-time recovery to 2026-12-06 06:30:00+00\n\
            2026-12-06 06:30:01.300 UTC [71] LOG:  recovery stopping before commit of transaction 761, time 2026-12-06 06:30:00.5+00\n\
            2026-12-06 06:30:01.300 UTC [71] LOG:  redo done at 0/3000A10 system usage: CPU: user: 0.00 s\n\
            2026-12-06 06:30:01.300 UTC [71] LOG:  last completed transaction was at log time 2026-12-06 06:29:59.9+00\n\
            2026-12-06 06:30:01.400 UTC [71] LOG:  selected new timeline ID: 2\n";
        let r = read_recovery_log(reached);
        assert!(r.reached, "{r:?}");
        assert_eq!(r.redo_done_at.as_deref(), Some("0/3000A10"));
        assert_eq!(r.new_timeline, Some(2));
        assert_eq!(r.last_transaction_at.as_deref(), Some("2026-12-06 06:29:59.9+00"));
        assert!(r.stopped.unwrap().contains("transaction 761"));
        let short = "2026-12-06 06:30:01.300 UTC [71] LOG:  redo done at 0/5000060 system usage: CPU\n\
            2026-12-06 06:30:01.300 UTC [71] FATAL:  recovery ended before configured recovery target was reached\n";
        let r = read_recovery_log(short);
        assert!(!r.reached);
        assert_eq!(r.error.as_deref(), Some("recovery ended before configured recovery target was reached"));
        assert_eq!(r.redo_done_at.as_deref(), Some("0/5000060"));
    }

    /// Paths and names reach `sh -c` only as single-quoted words, with `%` doubled.
    #[test]
    fn the_restore_command_quotes_every_word_for_the_shell_and_for_postgres() {
        assert_eq!(
            fetch_command("/usr/bin/steward", "/etc/steward/steward.yaml", "orders"),
            "'/usr/bin/steward' wal fetch %f %p --policy 'orders' -c '/etc/steward/steward.yaml'"
        );
        assert_eq!(
            fetch_command("/opt/it's $(rm -rf x)/steward", "/etc/100%/s.yaml", "pg"),
            "'/opt/it'\\''s $(rm -rf x)/steward' wal fetch %f %p --policy 'pg' -c '/etc/100%%/s.yaml'"
        );
    }

    #[test]
    fn a_base_backup_serves_only_targets_at_or_after_its_stop() {
        let base = BaseFacts {
            timeline: 1,
            start_lsn: 0x2000028,
            stop_lsn: 0x2000100,
            stopped_at: "2026-12-06T06:00:00Z".parse().unwrap(),
            segment_size: 16 << 20,
            major: 15,
        };
        assert!(serves(&base, &RecoveryTarget::Time("2026-12-06T06:00:00Z".parse().unwrap())));
        assert!(!serves(&base, &RecoveryTarget::Time("2026-12-06T05:59:59Z".parse().unwrap())));
        assert!(serves(&base, &RecoveryTarget::Lsn(0x2000100)));
        assert!(!serves(&base, &RecoveryTarget::Lsn(0x20000FF)));
        assert!(serves(&base, &RecoveryTarget::Latest));
        assert_eq!(RecoveryTarget::Lsn(0x16_B374_D848).settings(), vec![("recovery_target_lsn", "16/B374D848".to_string())]);
    }
}
