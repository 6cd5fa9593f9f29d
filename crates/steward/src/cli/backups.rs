//! `steward backup …`: backups are taken, verified, restored and pruned in this
//! process, with only the configuration, the data directory and the repository — so a
//! restore works at 3 a.m. when the server is down. A server on the same data
//! directory sees everything done here (same store), and the policy's lease keeps the
//! two from taking the same backup at once.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::Utc;
use clap::Subcommand;
use serde_json::{Value, json};

use super::{Output, exit, print_table};
use crate::backups::pitr::{PitrReport, PointRestore};
use crate::backups::service::{BackupError, Backups, PruneReport, RestoreOptions, RestoreReport};
use crate::backups::sources::Progress;
use crate::backups::sources::physical::{self, RecoveryTarget};
use crate::backups::wal::parse_lsn;
use crate::backups::{BackupQuery, BackupRecord, BackupStatus, RestoreRecord, Verification};
use crate::config::{self, Config};
use crate::store::{SqliteStore, Store};

/// Where the policies and the record live.
#[derive(clap::Args, Debug, Clone)]
pub struct Local {
    /// The configuration (its `backups:` and `repositories:` sections).
    #[arg(short, long, env = "STEWARD_CONFIG")]
    pub config: PathBuf,
    /// The data directory (the store where backups are recorded; the server's, if one runs).
    #[arg(short, long, env = "STEWARD_DATA")]
    pub data: PathBuf,
    /// How to print: `table` for people, `json` for scripts.
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Subcommand, Debug)]
pub enum BackupAction {
    /// Take a backup of POLICY now, with a progress bar on a terminal.
    ///
    /// Exit codes: 0 the backup succeeded, 1 it failed (the reason is printed and
    /// recorded), 3 another backup of the same source into the same repository
    /// holds its lease.
    Run {
        /// The backup policy, as named under `backups:`.
        policy: String,
        #[command(flatten)]
        local: Local,
    },
    /// Backups, newest first: age, size, duration, compression, last verification.
    List {
        /// Only this policy's.
        policy: Option<String>,
        /// running, succeeded, failed, interrupted or deleted.
        #[arg(long)]
        status: Option<String>,
        /// At most this many, newest first.
        #[arg(long, default_value = "50")]
        limit: u32,
        #[command(flatten)]
        local: Local,
    },
    /// One backup: what it recorded (row counts, key counts, files) and its verifications.
    Show {
        /// The backup's ID, as `steward backup list` shows it.
        id: String,
        #[command(flatten)]
        local: Local,
    },
    /// Prove a backup: read every object and check sizes and checksums, and with
    /// --restore-test restore it into a scratch instance and compare it with what was
    /// recorded at backup time (plus the policy's assertion queries).
    ///
    /// Exit codes: 0 verified, 1 verification failed (corrupt, missing, different).
    ///
    /// Examples:
    ///   steward backup verify 20261122T020000Z-7f3a
    ///   steward backup verify --latest --restore-test          every policy's newest
    ///   steward backup verify --latest --policy orders-db --restore-test
    #[command(verbatim_doc_comment)]
    Verify {
        /// The backup (see `steward backup list`).
        #[arg(required_unless_present = "latest", conflicts_with = "latest")]
        id: Option<String>,
        /// The newest successful backup of every policy (or of --policy).
        #[arg(long)]
        latest: bool,
        /// With --latest: only this policy's newest backup.
        #[arg(long, requires = "latest")]
        policy: Option<String>,
        /// Restore into a scratch instance (a temporary PostgreSQL cluster, a scratch
        /// database, a scratch redis-server) and compare.
        #[arg(long)]
        restore_test: bool,
        #[command(flatten)]
        local: Local,
    },
    /// Restore a backup into TARGET: a database URL (postgres://…, mysql://…), a file
    /// for Redis (the dump.rdb to write; the server loads it on restart) or a directory.
    ///
    /// A PostgreSQL cluster backed up physically (`mode: physical`, WAL archived by
    /// `steward wal push`) restores to a point in time: name the policy and one of
    /// --to-time, --to-lsn or --latest, and a data directory. Steward picks the newest
    /// base backup that ended before the target, unpacks and checks it
    /// (pg_verifybackup), recovers it with `steward wal fetch` until the target, and
    /// confirms from the server that it got there — or says how far it got and
    /// leaves the target untouched. The cluster is left shut down cleanly, on a new
    /// timeline, ready for `pg_ctl -D DIR start`. A physical backup's ID alone
    /// restores to the end of that backup.
    ///
    /// A target that holds data is refused unless --force (then it is replaced).
    /// On a terminal you are asked to confirm; elsewhere pass --yes. Every stored
    /// object is read and checked first: a damaged backup is refused before the
    /// target is touched. Each restore is recorded (who, where, how it ended) and
    /// shown by `steward backup show ID`.
    ///
    /// Exit codes: 0 restored and equal to what the backup recorded (point in time:
    /// the target reached), 1 failed, different or the target not reached, 2 a time
    /// or LSN that does not parse, 4 refused (target not empty, not confirmed).
    ///
    /// Examples:
    ///   steward backup restore 20261122T020000Z-7f3a --to postgres://127.0.0.1/orders_restored --dry-run
    ///   steward backup restore 20261122T020000Z-7f3a --to /srv/uploads --force --yes
    ///   steward backup restore orders-pg --to-time '2026-12-06 14:03:59' --to /srv/pg/restored --dry-run
    ///   steward backup restore orders-pg --latest --to /srv/pg/restored --yes
    #[command(verbatim_doc_comment)]
    Restore {
        /// The backup's ID, as `steward backup list` shows it; or, with --to-time,
        /// --to-lsn or --latest, a physical PostgreSQL policy's name.
        id: String,
        /// Recover to this time: RFC 3339 (2026-12-06T14:03:59+01:00) or
        /// `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC. Transactions committed after it are not restored.
        #[arg(long, value_name = "TIME", conflicts_with_all = ["to_lsn", "latest"])]
        to_time: Option<String>,
        /// Recover to this WAL position (as pg_current_wal_lsn() shows it, e.g. 16/B374D848).
        #[arg(long, value_name = "LSN", conflicts_with = "latest")]
        to_lsn: Option<String>,
        /// Recover everything the WAL archive holds.
        #[arg(long)]
        latest: bool,
        /// Where to restore: postgres://… or mysql://… (a database), the dump.rdb path for
        /// Redis, a directory, or a new PostgreSQL data directory (physical backups).
        #[arg(long)]
        to: String,
        /// Replace what the target holds.
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        yes: bool,
        /// Say what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not read the backup's objects once before restoring (faster; a damaged
        /// object is then found part-way, with the target already changed).
        #[arg(long)]
        skip_check: bool,
        #[command(flatten)]
        local: Local,
    },
    /// Apply retention: compute the plan (keep or delete, with the reason for each
    /// backup), print it, then delete. Never deletes the newest successful backup,
    /// anything running or being restored, or anything that would leave fewer than
    /// min_keep.
    Prune {
        /// Only this policy (default: every policy with retention rules).
        policy: Option<String>,
        /// Print the plan, delete nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        local: Local,
    },
    /// Make an encryption key: the secret identity goes to stdout (store it in a file
    /// or your secret store), its public recipient to stderr.
    ///
    ///   steward backup keygen > /etc/steward/backup.key && chmod 600 /etc/steward/backup.key
    ///   then: encryption: { key: "${file:/etc/steward/backup.key}" }
    #[command(verbatim_doc_comment)]
    Keygen,
}

pub async fn run(action: BackupAction) -> u8 {
    match action {
        BackupAction::Keygen => keygen(),
        BackupAction::Run { policy, local } => with_backups(&local, |cx| Box::pin(run_backup(cx, policy))).await,
        BackupAction::List { policy, status, limit, local } => with_backups(&local, |cx| Box::pin(list(cx, policy, status, limit))).await,
        BackupAction::Show { id, local } => with_backups(&local, |cx| Box::pin(show(cx, id))).await,
        BackupAction::Verify { id, latest: _, policy, restore_test, local } => {
            with_backups(&local, |cx| Box::pin(verify(cx, id, policy, restore_test))).await
        }
        BackupAction::Restore { id, to, to_time, to_lsn, latest, force, yes, dry_run, skip_check, local } => {
            let how = RestoreOptions { force, dry_run, skip_check, actor: "" };
            let point = match recovery_target(to_time.as_deref(), to_lsn.as_deref(), latest) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("error: {e}");
                    return exit::BAD_CONFIG;
                }
            };
            with_backups(&local, |cx| Box::pin(restore(cx, id, to, point, how, yes))).await
        }
        BackupAction::Prune { policy, dry_run, local } => with_backups(&local, |cx| Box::pin(prune(cx, policy, dry_run))).await,
    }
}

/// What every subcommand but keygen works with.
struct Cx {
    config: Config,
    /// The configuration as given: a restore's `restore_command` names it.
    config_path: PathBuf,
    backups: Backups,
    output: Output,
}

type Task<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = u8> + 'a>>;

/// Loads the configuration and the store, settles backups whose process died (their
/// lease expired), then runs `f`.
async fn with_backups(local: &Local, f: impl for<'a> FnOnce(&'a Cx) -> Task<'a>) -> u8 {
    let config = match config::load(&local.config) {
        Ok(c) => c,
        Err(d) => {
            super::print_diagnostics(&d);
            return exit::BAD_CONFIG;
        }
    };
    let store: Arc<dyn Store> = match SqliteStore::open(&local.data).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: {e}\n  hint: --data is the server's data directory (or any directory steward can write)");
            return exit::FAILED;
        }
    };
    let cx = Cx {
        backups: Backups::new(store, None, local.data.clone()).with_config_path(Some(local.config.clone())),
        config,
        config_path: local.config.clone(),
        output: local.output,
    };
    if let Err(e) = cx.backups.recover(&cx.config).await {
        eprintln!("warning: could not settle interrupted backups: {e}");
    }
    f(&cx).await
}

fn fail(e: &BackupError) -> u8 {
    eprintln!("error: {e}");
    match e {
        BackupError::Busy(_) => exit::BUSY,
        BackupError::TargetNotEmpty(_) => exit::REFUSED,
        BackupError::Invalid(_) | BackupError::NotFound(_) => exit::FAILED,
        BackupError::Failed(_) | BackupError::Store(_) => exit::FAILED,
    }
}

fn keygen() -> u8 {
    let identity = age::x25519::Identity::generate();
    use age::secrecy::ExposeSecret;
    println!("{}", identity.to_string().expose_secret());
    eprintln!("public recipient: {}", identity.to_public());
    eprintln!("keep the secret above safe and apart from the repository: without it no backup it encrypts can be restored");
    exit::OK
}

async fn run_backup(cx: &Cx, policy: String) -> u8 {
    let progress = Arc::new(Progress::default());
    // The previous backup's size is the best estimate of this one's.
    let estimate = cx.backups.latest(&policy).await.ok().map(|b| b.plain_bytes.max(0) as u64);
    let user = whoami();
    let work = cx.backups.run(&cx.config, &policy, "manual", &user, None, progress.clone());
    let result = show_progress(cx.output, &format!("backup {policy}"), &progress, estimate, work).await;
    match result {
        Ok(record) => {
            match cx.output {
                Output::Json => println!("{}", record.view()),
                Output::Table => print_record_summary(&record),
            }
            if record.status == BackupStatus::Succeeded { exit::OK } else { exit::FAILED }
        }
        Err(e) => fail(&e),
    }
}

fn print_record_summary(r: &BackupRecord) {
    match r.status {
        BackupStatus::Succeeded => println!(
            "backup {} of {} succeeded: {} ({} stored, {}) in {}",
            r.id,
            r.policy,
            bytes(r.plain_bytes),
            bytes(r.stored_bytes),
            ratio(r),
            duration(r.duration_ms())
        ),
        _ => println!("backup {} of {} {}: {}", r.id, r.policy, r.status.as_str(), r.error.as_deref().unwrap_or("no reason recorded")),
    }
}

async fn list(cx: &Cx, policy: Option<String>, status: Option<String>, limit: u32) -> u8 {
    let status = match status.as_deref().map(|s| (s, BackupStatus::parse(s))) {
        None => None,
        Some((_, Some(s))) => Some(s),
        Some((s, None)) => {
            eprintln!("error: unknown status `{s}`; use running, succeeded, failed, interrupted or deleted");
            return exit::FAILED;
        }
    };
    let q = BackupQuery { policy, status, limit };
    let list = match cx.backups.store.backups(&q).await {
        Ok(l) => l,
        Err(e) => return fail(&e.into()),
    };
    if cx.output == Output::Json {
        println!("{}", json!({ "backups": list.iter().map(BackupRecord::view).collect::<Vec<_>>() }));
        return exit::OK;
    }
    if list.is_empty() {
        println!("no backups recorded yet; take one with `steward backup run POLICY`");
        return exit::OK;
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.policy.clone(),
                r.status.as_str().to_string(),
                ago(r.started_at),
                if r.status == BackupStatus::Succeeded { bytes(r.plain_bytes) } else { "-".into() },
                if r.status == BackupStatus::Succeeded { ratio(r) } else { "-".into() },
                duration(r.duration_ms()),
                verified(r),
            ]
        })
        .collect();
    print_table(&["ID", "POLICY", "STATUS", "STARTED", "SIZE", "RATIO", "DURATION", "VERIFIED"], &rows);
    exit::OK
}

async fn show(cx: &Cx, id: String) -> u8 {
    let record = match cx.backups.store.backup(&id).await {
        Ok(Some(r)) => r,
        Ok(None) => return fail(&BackupError::NotFound(format!("no backup {id}; `steward backup list` shows them"))),
        Err(e) => return fail(&e.into()),
    };
    let verifications = cx.backups.store.verifications(Some(&id), 20).await.unwrap_or_default();
    let restores = cx.backups.store.restores(Some(&id), 20).await.unwrap_or_default();
    if cx.output == Output::Json {
        println!("{}", json!({ "backup": record.view(), "verifications": verifications, "restores": restores }));
        return exit::OK;
    }
    let r = &record;
    println!("backup      {}", r.id);
    println!("policy      {} ({} → repository {})", r.policy, r.source, r.repository);
    println!("status      {}{}", r.status.as_str(), r.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default());
    println!("started     {} ({}) by {} ({})", r.started_at.format("%Y-%m-%d %H:%M:%S UTC"), ago(r.started_at), r.started_by, r.trigger);
    println!("duration    {}", duration(r.duration_ms()));
    println!("size        {} plain, {} stored ({})", bytes(r.plain_bytes), bytes(r.stored_bytes), ratio(r));
    println!("verified    {}", verified(r));
    if let Some(ms) = r.restore_ms {
        println!("restore     {} (last restore test: the measured RTO)", duration(Some(ms)));
    }
    if !r.facts.is_null() {
        println!("recorded    {}", facts_line(&r.facts));
    }
    if !verifications.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = verifications
            .iter()
            .map(|v| {
                vec![
                    v.started_at.format("%Y-%m-%d %H:%M").to_string(),
                    format!("level {}", v.level),
                    v.result.clone(),
                    verification_detail(v),
                ]
            })
            .collect();
        print_table(&["VERIFIED", "LEVEL", "RESULT", "DETAIL"], &rows);
    }
    if !restores.is_empty() {
        println!();
        let rows: Vec<Vec<String>> = restores
            .iter()
            .map(|r| {
                vec![
                    r.started_at.format("%Y-%m-%d %H:%M").to_string(),
                    r.actor.clone(),
                    format!("{}{}", r.target, if r.replaced { " (replaced)" } else { "" }),
                    r.result.clone(),
                    restore_detail(r),
                ]
            })
            .collect();
        print_table(&["RESTORED", "BY", "TO", "RESULT", "DETAIL"], &rows);
    }
    exit::OK
}

fn restore_detail(r: &RestoreRecord) -> String {
    let d = &r.detail;
    if let Some(e) = d["error"].as_str().or(d["result"]["error"].as_str()) {
        return e.to_string();
    }
    let took = d["seconds"].as_f64().map(|s| format!("in {}: ", duration(Some((s * 1000.0) as i64)))).unwrap_or_default();
    format!("{took}{}", comparison_line(&d["result"]["comparison"]))
}

async fn verify(cx: &Cx, id: Option<String>, policy: Option<String>, restore_test: bool) -> u8 {
    let ids: Vec<String> = match id {
        Some(id) => vec![id],
        None => {
            let policies: Vec<String> = match &policy {
                Some(p) => vec![p.clone()],
                None => cx.config.backups.iter().map(|b| b.name.clone()).collect(),
            };
            if policies.is_empty() {
                eprintln!("error: the configuration defines no backup policies");
                return exit::FAILED;
            }
            let mut ids = Vec::new();
            for p in policies {
                match cx.backups.latest(&p).await {
                    Ok(r) => ids.push(r.id),
                    Err(e) => return fail(&e),
                }
            }
            ids
        }
    };
    let mut results = Vec::new();
    let mut code = exit::OK;
    for id in ids {
        let progress = Arc::new(Progress::default());
        let what = if restore_test { "restore test" } else { "verify" };
        let work = cx.backups.verify(&cx.config, &id, restore_test, "manual", None, progress.clone());
        match show_progress(cx.output, &format!("{what} {id}"), &progress, None, work).await {
            Ok(v) => {
                if v.result != "passed" {
                    code = exit::FAILED;
                }
                if cx.output == Output::Table {
                    let rto = v.restore_ms.map(|ms| format!(", restored in {}", duration(Some(ms)))).unwrap_or_default();
                    println!("{id}: level {} {}{rto}: {}", v.level, v.result.to_uppercase(), verification_detail(&v));
                }
                results.push(v);
            }
            Err(e) => return fail(&e),
        }
    }
    if cx.output == Output::Json {
        println!("{}", json!({ "verifications": results }));
    }
    code
}

/// A point-in-time target from --to-time, --to-lsn or --latest; `None` when none is given.
fn recovery_target(time: Option<&str>, lsn: Option<&str>, latest: bool) -> Result<Option<RecoveryTarget>, String> {
    if let Some(t) = time {
        return parse_target_time(t).map(|t| Some(RecoveryTarget::Time(t)));
    }
    if let Some(l) = lsn {
        return parse_lsn(l)
            .map(|l| Some(RecoveryTarget::Lsn(l)))
            .ok_or_else(|| format!("--to-lsn `{l}` is not a WAL position; they look like 16/B374D848"));
    }
    Ok(latest.then_some(RecoveryTarget::Latest))
}

/// RFC 3339, or `YYYY-MM-DD HH:MM:SS[.f]` with an optional offset (UTC without one).
fn parse_target_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    let t = text.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Ok(d.to_utc());
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f%:z", "%Y-%m-%d %H:%M:%S%.f%#z"] {
        if let Ok(d) = chrono::DateTime::parse_from_str(t, f) {
            return Ok(d.to_utc());
        }
    }
    for f in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(d) = chrono::NaiveDateTime::parse_from_str(t, f) {
            return Ok(d.and_utc());
        }
    }
    Err(format!("--to-time `{text}` is not a time; write 2026-12-06T14:03:59Z, 2026-12-06T14:03:59+01:00 or `2026-12-06 14:03:59` (UTC)"))
}

async fn restore(cx: &Cx, id: String, to: String, point: Option<RecoveryTarget>, how: RestoreOptions<'_>, yes: bool) -> u8 {
    let user = whoami();
    let how = RestoreOptions { actor: &user, ..how };
    // A policy with a target, or a physical backup: a point-in-time restore.
    let physical_policy = match cx.backups.store.backup(&id).await {
        Ok(Some(r)) if r.facts["mode"] == "physical" => Some(r.policy),
        _ => None,
    };
    let physical = physical_policy.is_some();
    if point.is_some() || physical {
        let policy = physical_policy.unwrap_or_else(|| id.clone());
        let what = PointRestore {
            policy: &policy,
            base: physical.then_some(id.as_str()),
            target: point.unwrap_or(RecoveryTarget::Immediate),
            directory: Path::new(&to),
            config_path: &cx.config_path,
        };
        return restore_point(cx, &what, how, yes).await;
    }
    // The plan first: it checks the backup, the key and the target without touching it.
    let plan = match cx
        .backups
        .restore(&cx.config, &id, &to, RestoreOptions { dry_run: true, ..how.clone() }, Arc::new(Progress::default()))
        .await
    {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    if how.dry_run {
        print_restore(cx.output, &plan);
        return exit::OK;
    }
    if !yes && !confirmed(&plan.target, || print_restore(Output::Table, &plan)) {
        return exit::REFUSED;
    }
    let progress = Arc::new(Progress::default());
    let work = cx.backups.restore(&cx.config, &id, &to, how, progress.clone());
    match show_progress(cx.output, &format!("restore {id}"), &progress, Some(plan.plain_bytes), work).await {
        Ok(report) => {
            print_restore(cx.output, &report);
            let differences = report.result["comparison"]["differences"].as_array().map_or(0, Vec::len);
            if differences > 0 {
                eprintln!("error: the restored data differs from what the backup recorded ({differences} differences above)");
                return exit::FAILED;
            }
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

/// Asks on the terminal before a restore changes `target`, after `show_plan`; says why
/// not when it cannot ask (stdin is not a terminal) or the answer is not `restore`.
fn confirmed(target: &str, show_plan: impl FnOnce()) -> bool {
    if !std::io::stdin().is_terminal() {
        eprintln!("error: restoring changes {target}; confirm with --yes (stdin is not a terminal to ask)");
        return false;
    }
    show_plan();
    eprint!("Type `restore` to go ahead: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() || answer.trim() != "restore" {
        eprintln!("not confirmed; nothing was changed");
        return false;
    }
    true
}

async fn restore_point(cx: &Cx, what: &PointRestore<'_>, how: RestoreOptions<'_>, yes: bool) -> u8 {
    let plan = match cx
        .backups
        .restore_point(&cx.config, what, RestoreOptions { dry_run: true, ..how.clone() }, Arc::new(Progress::default()))
        .await
    {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    if how.dry_run {
        print_point(cx.output, &plan);
        return exit::OK;
    }
    if !yes && !confirmed(&plan.directory, || print_point(Output::Table, &plan)) {
        return exit::REFUSED;
    }
    let progress = Arc::new(Progress::default());
    let work = cx.backups.restore_point(&cx.config, what, how, progress.clone());
    match show_progress(cx.output, &format!("restore {} to {}", what.policy, plan.target), &progress, Some(plan.plain_bytes), work).await {
        Ok(report) => {
            print_point(cx.output, &report);
            exit::OK
        }
        Err(e) => fail(&e),
    }
}

fn print_point(output: Output, r: &PitrReport) {
    if output == Output::Json {
        println!("{}", serde_json::to_value(r).unwrap_or(Value::Null));
        return;
    }
    let verb = if r.dry_run { "would restore" } else { "restored" };
    println!("{verb} policy {} to {} into {}", r.policy, r.target, r.directory);
    println!(
        "base backup {} (timeline {}, {} to {}, ended {}), {}",
        r.backup,
        r.base.timeline,
        physical::lsn_text(r.base.start_lsn),
        physical::lsn_text(r.base.stop_lsn),
        r.base.stopped_at.format("%Y-%m-%d %H:%M:%S UTC"),
        bytes(r.plain_bytes as i64)
    );
    println!(
        "WAL from {} to {} (newest archived {})",
        r.wal.from,
        r.wal.archived_to.as_deref().unwrap_or("nothing archived"),
        r.wal.newest_archived_at.map_or("never".into(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    );
    println!("target before: {}{}", r.target_state, if r.target_had_data { " (moved aside: --force)" } else { "" });
    for w in &r.warnings {
        println!("warning: {w}");
    }
    if r.dry_run {
        for (i, s) in r.steps.iter().enumerate() {
            println!("  {}. {s}", i + 1);
        }
    }
    if let Some(rec) = &r.recovery {
        println!(
            "recovery: {}{}{}",
            rec.stopped.as_deref().unwrap_or("replayed to the end of the archive"),
            rec.redo_done_at.as_deref().map(|a| format!("; replay ended at {a}")).unwrap_or_default(),
            rec.new_timeline.map(|t| format!("; promoted to timeline {t}")).unwrap_or_default()
        );
        if let Some(t) = &rec.last_transaction_at {
            println!("last transaction restored committed at {t}");
        }
    }
    if let Some(a) = &r.moved_aside {
        println!("the previous contents are kept in {a}");
    }
    if let Some(ms) = r.duration_ms {
        println!("took {}", duration(Some(ms as i64)));
    }
    if !r.dry_run {
        println!("the cluster is shut down cleanly; start it with: pg_ctl -D {} start", r.directory);
    }
}

fn print_restore(output: Output, r: &RestoreReport) {
    if output == Output::Json {
        println!("{}", serde_json::to_value(r).unwrap_or(Value::Null));
        return;
    }
    let verb = if r.dry_run { "would restore" } else { "restored" };
    println!(
        "{verb} backup {} ({} of {}, {} objects, {}) into {}",
        r.backup,
        r.source,
        r.policy,
        r.objects,
        bytes(r.plain_bytes as i64),
        r.target
    );
    println!("target before: {}{}", r.target_state, if r.target_had_data { " (replaced: --force)" } else { "" });
    if let Some(ms) = r.duration_ms {
        println!("took {}", duration(Some(ms as i64)));
    }
    if let Some(c) = r.result.get("comparison") {
        println!("compared with the backup: {}", comparison_line(c));
    } else if let Some(w) = r.result.get("would") {
        println!("would: {}", w.as_str().map(str::to_string).unwrap_or_else(|| w.to_string()));
    } else if !r.result.is_null() {
        println!("{}", facts_line(&r.result));
    }
}

async fn prune(cx: &Cx, policy: Option<String>, dry_run: bool) -> u8 {
    let policies: Vec<String> = match policy {
        Some(p) => vec![p],
        None => cx.config.backups.iter().filter(|b| b.retention.is_some()).map(|b| b.name.clone()).collect(),
    };
    if policies.is_empty() {
        eprintln!("error: no backup policy has retention rules; add `retention:` to a policy (e.g. keep_daily: 7, min_keep: 3)");
        return exit::FAILED;
    }
    let mut reports: Vec<PruneReport> = Vec::new();
    let mut code = exit::OK;
    for p in policies {
        match cx.backups.prune(&cx.config, &p, dry_run).await {
            Ok(r) => {
                if !r.errors.is_empty() {
                    code = exit::FAILED;
                }
                reports.push(r);
            }
            Err(e) => return fail(&e),
        }
    }
    if cx.output == Output::Json {
        println!("{}", json!({ "plans": reports }));
        return code;
    }
    for r in &reports {
        let deleting = r.items.iter().filter(|i| !i.keep).count();
        let verb = if r.dry_run { "would delete" } else { "deleted" };
        println!("policy {}: keep {}, {verb} {}", r.policy, r.items.len() - deleting, if r.dry_run { deleting } else { r.deleted.len() });
        let rows: Vec<Vec<String>> = r
            .items
            .iter()
            .map(|i| {
                vec![
                    if i.keep { "keep".into() } else { "delete".into() },
                    i.id.clone(),
                    i.status.as_str().to_string(),
                    ago(i.started_at),
                    if i.reasons.is_empty() { "matches no keep rule".into() } else { i.reasons.join(", ") },
                ]
            })
            .collect();
        print_table(&["ACTION", "ID", "STATUS", "STARTED", "WHY"], &rows);
        if let Some(w) = &r.wal {
            match &w.kept_from {
                None => println!("WAL: no physical backup is kept yet, so all archived WAL is kept"),
                Some(from) => {
                    let n = if r.dry_run { w.files.len() } else { w.removed };
                    let verb = if r.dry_run { "would remove" } else { "removed" };
                    let span = match (w.files.first(), w.files.last()) {
                        (Some(a), Some(b)) => format!(" ({a} to {b})"),
                        _ => String::new(),
                    };
                    println!("WAL: kept from {from} (the oldest kept base backup's start); {verb} {n} older file(s){span}");
                }
            }
        }
        for e in &r.errors {
            eprintln!("error: {e}");
        }
        println!();
    }
    code
}

/// Runs `work`, drawing a progress bar (bytes, throughput, phase) on a terminal.
async fn show_progress<T>(
    output: Output,
    label: &str,
    progress: &Arc<Progress>,
    estimate: Option<u64>,
    work: impl std::future::Future<Output = T>,
) -> T {
    if output == Output::Json || !std::io::stderr().is_terminal() {
        return work.await;
    }
    let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} {prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} {msg}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(label.to_string());
    tokio::pin!(work);
    let mut tick = tokio::time::interval(Duration::from_millis(150));
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => {
                let done = progress.plain.load(Ordering::Relaxed);
                let total = match progress.total.load(Ordering::Relaxed) {
                    0 => estimate.unwrap_or(0).max(done),
                    t => t.max(done),
                };
                bar.set_length(total);
                bar.set_position(done);
                bar.set_message(progress.phase());
            }
        }
    };
    bar.finish_and_clear();
    result
}

fn whoami() -> String {
    std::env::var("SUDO_USER").or_else(|_| std::env::var("USER")).unwrap_or_else(|_| "cli".into())
}

fn ago(t: chrono::DateTime<Utc>) -> String {
    let secs = (crate::clock::now() - t).num_seconds().max(0) as u64;
    format!("{} ago", crate::config::duration::format_duration(Duration::from_secs(secs)))
}

fn duration(ms: Option<i64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        Some(ms) => crate::incidents::postmortem::human(chrono::Duration::milliseconds(ms)),
    }
}

/// `1.4 GiB`.
pub fn bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

fn ratio(r: &BackupRecord) -> String {
    r.compression_ratio().map(|x| format!("{x:.1}x")).unwrap_or_else(|| "-".into())
}

fn verified(r: &BackupRecord) -> String {
    match (&r.verified_at, &r.verify_result) {
        (Some(at), Some(result)) => format!("{result} (level {}) {}", r.verify_level.unwrap_or(1), ago(*at)),
        _ => "never".into(),
    }
}

fn verification_detail(v: &Verification) -> String {
    if let Some(e) = v.detail["error"].as_str() {
        return e.to_string();
    }
    comparison_line(&v.detail)
}

/// `4 matched: public.orders: 120 rows, …` or the differences.
fn comparison_line(c: &Value) -> String {
    let list = |k: &str| -> Vec<&str> { c[k].as_array().map(|d| d.iter().filter_map(Value::as_str).collect()).unwrap_or_default() };
    let (matched, differences) = (list("matched"), list("differences"));
    if !differences.is_empty() {
        return format!("{} different: {}", differences.len(), differences.join("; "));
    }
    match matched.len() {
        0 => "nothing to compare".into(),
        n @ 1..=3 => format!("{n} matched: {}", matched.join(", ")),
        n => format!("{n} matched: {}, …", matched[..3].join(", ")),
    }
}

/// `tables: 12, rows: 5000000` from recorded facts: scalars as they are, objects and
/// lists by their size.
fn facts_line(facts: &Value) -> String {
    match facts {
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                Value::Object(o) => format!("{k}: {} entries", o.len()),
                Value::Array(a) => format!("{k}: {} entries", a.len()),
                Value::String(s) if s.contains('\n') => format!("{k}: {} lines", s.lines().count()),
                Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_time_is_read_in_the_forms_people_write_and_utc_without_an_offset() {
        let utc = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        assert_eq!(parse_target_time("2026-12-06T14:03:59Z"), Ok(utc("2026-12-06T14:03:59Z")));
        assert_eq!(parse_target_time("2026-12-06T14:03:59+01:00"), Ok(utc("2026-12-06T13:03:59Z")));
        assert_eq!(parse_target_time("2026-12-06 14:03:59"), Ok(utc("2026-12-06T14:03:59Z")));
        assert_eq!(parse_target_time(" 2026-12-06 14:03:59.250 "), Ok(utc("2026-12-06T14:03:59.25Z")));
        assert_eq!(parse_target_time("2026-12-06 14:03:59.123456+00"), Ok(utc("2026-12-06T14:03:59.123456Z")), "psql's clock_timestamp()");
        assert_eq!(parse_target_time("2026-12-06 14:03:59-05:00"), Ok(utc("2026-12-06T19:03:59Z")));
        for bad in ["yesterday", "2026-13-01 00:00:00", "2026-12-06", "14:03:59", ""] {
            let e = parse_target_time(bad).unwrap_err();
            assert!(e.contains("is not a time"), "{bad}: {e}");
        }
        assert_eq!(recovery_target(None, Some("16/B374D848"), false), Ok(Some(RecoveryTarget::Lsn(0x16_B374_D848))));
        assert!(recovery_target(None, Some("16-B374D848"), false).unwrap_err().contains("not a WAL position"));
        assert_eq!(recovery_target(None, None, true), Ok(Some(RecoveryTarget::Latest)));
        assert_eq!(recovery_target(None, None, false), Ok(None));
    }
}
