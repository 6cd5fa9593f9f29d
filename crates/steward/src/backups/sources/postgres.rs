//! PostgreSQL, logically: `pg_dump` in the custom format (streamed) or the directory
//! format (parallel jobs, spooled then archived).
//!
//! Row counts are taken in the very snapshot pg_dump dumps: steward opens a
//! repeatable-read transaction, exports its snapshot, hands it to pg_dump with
//! `--snapshot`, and counts every table in that transaction while the dump runs. A
//! restore test restores into a temporary cluster (initdb) and compares the counts
//! exactly, then runs the policy's assertion queries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value as Json, json};
use sqlx::{Connection, PgConnection, Row};

use super::process::{Running, Tool, hand_over, run_from, run_into, unprivileged_user, version};
use super::{
    BackupCx, Comparison, Produced, Progress, SourceError, compare_counts, directory, io_error, read_object, stopped, store_object,
};
use crate::backups::manifest::Manifest;
use crate::backups::repository::Repo;
use crate::config::backups::{Assertion, PgFormat, PostgresSource};

/// A connection URL split for tools: the URL without its password, and the password
/// (which goes in PGPASSWORD, never argv).
pub struct Conninfo {
    pub url: String,
    pub password: Option<String>,
    pub database: String,
}

pub fn conninfo(url: &str) -> Result<Conninfo, SourceError> {
    let mut u = url::Url::parse(url).map_err(|e| SourceError::Invalid(format!("the PostgreSQL URL is not valid: {e}")))?;
    let password = u.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().to_string());
    let _ = u.set_password(None);
    let database = u.path().trim_start_matches('/').to_string();
    let database = if database.is_empty() { u.username().to_string() } else { database };
    Ok(Conninfo { url: u.to_string(), password, database })
}

impl Conninfo {
    pub(crate) fn tool(&self, program: &str) -> Tool {
        let t = Tool::new(program).env("PGAPPNAME", "steward-backup").env("PGCONNECT_TIMEOUT", "10");
        match &self.password {
            Some(p) => t.env("PGPASSWORD", p.clone()),
            None => t,
        }
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Ordinary tables outside the system schemas, as (schema, table).
async fn user_tables(conn: &mut PgConnection) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%' ORDER BY 1, 2",
    )
    .fetch_all(conn)
    .await
}

async fn count_rows(conn: &mut PgConnection, tables: &[(String, String)]) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let mut counts = BTreeMap::new();
    for (schema, table) in tables {
        let sql = format!("SELECT count(*) FROM {}.{}", quote_ident(schema), quote_ident(table));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *conn).await?;
        counts.insert(format!("{schema}.{table}"), n);
    }
    Ok(counts)
}

pub async fn backup(cx: &BackupCx, src: &PostgresSource, running: &Running) -> Result<Produced, SourceError> {
    let info = conninfo(src.url.expose())?;
    let mut conn = PgConnection::connect(src.url.expose())
        .await
        .map_err(|e| SourceError::Unreachable(format!("cannot connect to PostgreSQL: {e}")))?;
    let server_version: String =
        sqlx::query_scalar("SHOW server_version").fetch_one(&mut conn).await.map_err(|e| SourceError::Source(e.to_string()))?;
    let version_num: i32 = sqlx::query_scalar("SELECT current_setting('server_version_num')::int")
        .fetch_one(&mut conn)
        .await
        .map_err(|e| SourceError::Source(e.to_string()))?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .await
        .map_err(|e| SourceError::Source(e.to_string()))?;
    let snapshot: String =
        sqlx::query_scalar("SELECT pg_export_snapshot()").fetch_one(&mut conn).await.map_err(|e| SourceError::Source(e.to_string()))?;
    let tables = user_tables(&mut conn).await.map_err(|e| SourceError::Source(e.to_string()))?;

    cx.progress.set_phase("dumping");
    let dump = async {
        match src.format {
            PgFormat::Custom => {
                let tool = info
                    .tool("pg_dump")
                    .arg("--format=custom")
                    .arg("--compress=0")
                    .arg(format!("--snapshot={snapshot}"))
                    .arg("--no-password")
                    .arg(format!("--dbname={}", info.url));
                let running = running.clone();
                store_object(cx, "dump.pgdump", move |w| run_into(&tool, w, &running)).await.map(|(o, _)| vec![o])
            }
            PgFormat::Directory => {
                let dir = cx.spool.join("dump");
                let tool = info
                    .tool("pg_dump")
                    .arg("--format=directory")
                    .arg("--compress=0")
                    .arg(format!("--jobs={}", src.jobs))
                    .arg(format!("--snapshot={snapshot}"))
                    .arg("--no-password")
                    .arg(format!("--file={}", dir.display()))
                    .arg(format!("--dbname={}", info.url));
                let r = running.clone();
                tokio::task::spawn_blocking(move || run_into(&tool, &mut std::io::sink(), &r)).await.map_err(stopped)?.map_err(io_error)?;
                cx.progress.set_phase("storing");
                let (object, _) = store_object(cx, "dump.dir.tar", move |w| directory::write_tar(&dir, w)).await?;
                Ok(vec![object])
            }
        }
    };
    // Counted in the snapshot pg_dump dumps, while it dumps.
    let (objects, counts) = tokio::join!(dump, count_rows(&mut conn, &tables));
    let objects = objects?;
    let counts = counts.map_err(|e| SourceError::Source(format!("counting rows: {e}")))?;
    let _ = sqlx::query("COMMIT").execute(&mut conn).await;
    let _ = conn.close().await;
    Ok(Produced {
        objects,
        facts: json!({
            "database": info.database,
            "server_version": server_version,
            "server_version_num": version_num,
            "format": match src.format { PgFormat::Custom => "custom", PgFormat::Directory => "directory" },
            "jobs": src.jobs,
            "tables": counts,
        }),
        tool: version("pg_dump"),
    })
}

/// A throwaway PostgreSQL cluster in a temporary directory, reached over a Unix
/// socket only; stopped and deleted on drop.
pub struct ScratchPostgres {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub bindir: PathBuf,
    child: std::process::Child,
    user: Option<(u32, u32)>,
}

/// The newest server binaries at least as new as the dump's server (`major`).
pub(crate) fn server_bindir(major: i32) -> Result<PathBuf, SourceError> {
    let mut found: Vec<(i32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse::<i32>().ok()?, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").exists())
        .collect();
    found.sort();
    if let Some((_, p)) = found.iter().find(|(v, _)| *v == major).or_else(|| found.iter().rev().find(|(v, _)| *v >= major)) {
        return Ok(p.clone());
    }
    if let Ok(out) = super::process::output(&Tool::new("pg_config").arg("--bindir")) {
        let p = PathBuf::from(out.trim());
        if p.join("initdb").exists() {
            return Ok(p);
        }
    }
    Err(SourceError::Tool(format!(
        "no PostgreSQL server binaries (initdb) of version {major} or newer were found for a scratch cluster; install the postgresql package"
    )))
}

impl ScratchPostgres {
    pub async fn start(major: i32) -> Result<ScratchPostgres, SourceError> {
        let bindir = server_bindir(major)?;
        let user = unprivileged_user();
        let dir = tempfile::Builder::new()
            .prefix("steward-scratch-pg-")
            .tempdir()
            .map_err(|e| SourceError::Local(format!("scratch directory: {e}")))?;
        hand_over(dir.path(), user).map_err(|e| SourceError::Local(format!("scratch directory: {e}")))?;
        let data = dir.path().join("data");
        let initdb = Tool::new(bindir.join("initdb").display().to_string())
            .arg("-D")
            .arg(data.display().to_string())
            .arg("-U")
            .arg("steward")
            .arg("-A")
            .arg("trust")
            .arg("-E")
            .arg("UTF8")
            .arg("--no-sync")
            .arg("--locale=C")
            .user(user);
        tokio::task::spawn_blocking(move || super::process::output(&initdb))
            .await
            .map_err(stopped)?
            .map_err(|e| SourceError::Tool(format!("initdb: {e}")))?;
        let port = 20000 + (rand::random::<u16>() % 40000);
        let log = std::fs::File::create(dir.path().join("server.log")).map_err(|e| SourceError::Local(e.to_string()))?;
        hand_over(&dir.path().join("server.log"), user).map_err(|e| SourceError::Local(e.to_string()))?;
        let mut cmd = std::process::Command::new(bindir.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(dir.path())
            .arg("-p")
            .arg(port.to_string())
            .args(["-c", "listen_addresses=", "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"])
            .args(["-c", "wal_level=minimal", "-c", "max_wal_senders=0", "-c", "max_wal_size=4GB", "-c", "autovacuum=off"])
            .args(["-c", "maintenance_work_mem=256MB", "-c", "shared_buffers=128MB"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().map_err(|e| SourceError::Local(e.to_string()))?)
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
            if let Some((uid, gid)) = user {
                cmd.uid(uid).gid(gid);
            }
        }
        let child = cmd.spawn().map_err(|e| SourceError::Tool(format!("cannot start a scratch postgres: {e}")))?;
        let scratch = ScratchPostgres { dir, port, bindir, child, user };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match PgConnection::connect_with(&scratch.options("postgres")).await {
                Ok(c) => {
                    let _ = c.close().await;
                    break;
                }
                Err(e) if Instant::now() > deadline => {
                    let log = std::fs::read_to_string(scratch.dir.path().join("server.log")).unwrap_or_default();
                    return Err(SourceError::Tool(format!(
                        "the scratch postgres did not start: {e}; its log ends: {}",
                        log.lines().last().unwrap_or("")
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        Ok(scratch)
    }

    pub fn options(&self, database: &str) -> sqlx::postgres::PgConnectOptions {
        sqlx::postgres::PgConnectOptions::new().socket(self.dir.path()).port(self.port).username("steward").database(database)
    }

    /// A libpq connection string for tools.
    pub fn conninfo(&self, database: &str) -> String {
        format!("host={} port={} user=steward dbname={database}", self.dir.path().display(), self.port)
    }

    pub async fn create_database(&self, name: &str) -> Result<(), SourceError> {
        let mut c = PgConnection::connect_with(&self.options("postgres")).await.map_err(|e| SourceError::Tool(e.to_string()))?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", quote_ident(name))))
            .execute(&mut c)
            .await
            .map_err(|e| SourceError::Source(e.to_string()))?;
        let _ = c.close().await;
        Ok(())
    }
}

impl Drop for ScratchPostgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; the cluster is thrown away anyway.
        // SAFETY: signalling our own child's process group.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGQUIT);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.user;
    }
}

/// Restores a backup into `conninfo` (a libpq connection string or URL) with pg_restore.
async fn pg_restore(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    progress: &Arc<Progress>,
    running: &Running,
    base: Tool,
    scratch_dir: &Path,
) -> Result<(), SourceError> {
    let jobs = manifest.facts["jobs"].as_u64().unwrap_or(1).max(1);
    if let Some(object) = manifest.object("dump.pgdump") {
        let tool = base.arg("--exit-on-error");
        let r = running.clone();
        Ok(read_object(repo, manifest, object, identity, progress, move |input| run_from(&tool, input, &r).map(|_| ())).await?)
    } else if let Some(object) = manifest.object("dump.dir.tar") {
        let dir = scratch_dir.join("dump");
        let into = dir.clone();
        read_object(repo, manifest, object, identity, progress, move |input| directory::unpack_tar(input, &into).map(|_| ())).await?;
        let tool = base.arg("--exit-on-error").arg(format!("--jobs={jobs}")).arg(dir.display().to_string());
        let r = running.clone();
        tokio::task::spawn_blocking(move || run_from(&tool, &mut std::io::empty(), &r)).await.map_err(stopped)?.map_err(io_error)?;
        Ok(())
    } else {
        Err(SourceError::Invalid("the manifest names no PostgreSQL dump object".into()))
    }
}

/// Level 2: restore into a scratch cluster, compare row counts, run assertions.
pub async fn restore_test(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    assertions: &[Assertion],
    progress: &Arc<Progress>,
    running: &Running,
) -> Result<(Comparison, Duration), SourceError> {
    let major = manifest.facts["server_version_num"].as_i64().unwrap_or(0) as i32 / 10000;
    progress.set_phase("starting a scratch PostgreSQL");
    let scratch = ScratchPostgres::start(major).await?;
    scratch.create_database("restore_test").await?;
    progress.set_phase("restoring");
    let started = Instant::now();
    let tool = Tool::new(scratch.bindir.join("pg_restore").display().to_string())
        .arg("--no-owner")
        .arg("--no-acl")
        .arg(format!("--dbname={}", scratch.conninfo("restore_test")));
    pg_restore(repo, manifest, identity, progress, running, tool, scratch.dir.path()).await?;
    let restore_time = started.elapsed();
    progress.set_phase("comparing");
    let mut conn = PgConnection::connect_with(&scratch.options("restore_test")).await.map_err(|e| SourceError::Tool(e.to_string()))?;
    let tables = user_tables(&mut conn).await.map_err(|e| SourceError::Source(e.to_string()))?;
    let counts = count_rows(&mut conn, &tables).await.map_err(|e| SourceError::Source(e.to_string()))?;
    let mut comparison = Comparison::default();
    compare_counts("rows", &manifest.facts["tables"], &counts, &mut comparison);
    run_assertions(&mut conn, assertions, &mut comparison).await;
    let _ = conn.close().await;
    Ok((comparison, restore_time))
}

/// Runs the policy's assertion queries in a restored database; each must return true.
pub(crate) async fn run_assertions(conn: &mut PgConnection, assertions: &[Assertion], comparison: &mut Comparison) {
    for a in assertions {
        match sqlx::query(sqlx::AssertSqlSafe(a.query.clone())).fetch_optional(&mut *conn).await {
            Ok(Some(row)) => match row.try_get::<bool, _>(0) {
                Ok(true) => comparison.matched.push(format!("assertion `{}` holds", a.name)),
                Ok(false) => comparison.differences.push(format!("assertion `{}` is false", a.name)),
                Err(_) => comparison.differences.push(format!("assertion `{}` must return one boolean column", a.name)),
            },
            Ok(None) => comparison.differences.push(format!("assertion `{}` returned no row", a.name)),
            Err(e) => comparison.differences.push(format!("assertion `{}` failed: {e}", a.name)),
        }
    }
}

/// What a restore to a real database would do, checked before doing it.
pub async fn inspect_target(url: &str) -> Result<(String, usize), SourceError> {
    let info = conninfo(url)?;
    let mut conn = PgConnection::connect(url).await.map_err(|e| SourceError::Unreachable(format!("cannot connect to the target: {e}")))?;
    let tables = user_tables(&mut conn).await.map_err(|e| SourceError::Source(e.to_string()))?;
    let _ = conn.close().await;
    Ok((info.database, tables.len()))
}

/// Restores into the target database; `clean` drops what the dump recreates first.
pub async fn restore_to(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    url: &str,
    clean: bool,
    progress: &Arc<Progress>,
    running: &Running,
) -> Result<Json, SourceError> {
    let info = conninfo(url)?;
    let mut tool = info.tool("pg_restore").arg("--no-password").arg(format!("--dbname={}", info.url));
    if clean {
        tool = tool.arg("--clean").arg("--if-exists");
    }
    let spool = tempfile::Builder::new().prefix("steward-restore-").tempdir().map_err(|e| SourceError::Local(e.to_string()))?;
    pg_restore(repo, manifest, identity, progress, running, tool, spool.path()).await?;
    let mut conn = PgConnection::connect(url).await.map_err(|e| SourceError::Unreachable(format!("cannot connect to the target: {e}")))?;
    let tables = user_tables(&mut conn).await.map_err(|e| SourceError::Source(e.to_string()))?;
    let counts = count_rows(&mut conn, &tables).await.map_err(|e| SourceError::Source(e.to_string()))?;
    let _ = conn.close().await;
    let mut comparison = Comparison::default();
    compare_counts("rows", &manifest.facts["tables"], &counts, &mut comparison);
    Ok(json!({ "database": info.database, "tables": counts.len(), "comparison": comparison }))
}
