//! MySQL / MariaDB: `mariadb-dump --single-transaction` (or `mysqldump`), streamed.
//!
//! Row counts come from the same point in time as the dump: steward takes
//! `FLUSH TABLES WITH READ LOCK`, opens its own consistent-snapshot transaction, starts
//! the dump, and releases the lock as soon as the dump's output shows its transaction
//! has begun (its first `CREATE TABLE`, or its end). Writers wait for those
//! milliseconds, as with `mysqldump --master-data`. Counts are exact for InnoDB tables;
//! MyISAM tables are not transactional. A restore test restores into a scratch
//! database on the same server (`steward_restore_<id>`), compares, and drops it.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, MySqlConnection};
use tokio::sync::oneshot;

use super::process::{Running, Tool, run_from, run_into, version};
use super::{BackupCx, Comparison, Produced, Progress, SourceError, compare_counts, read_object, store_object};
use crate::backups::manifest::Manifest;
use crate::backups::repository::Repo;

struct Target {
    url: url::Url,
    database: String,
    password: Option<String>,
}

fn target(url: &str) -> Result<Target, SourceError> {
    let u = url::Url::parse(url).map_err(|e| SourceError::Invalid(format!("the MySQL URL is not valid: {e}")))?;
    let database = u.path().trim_start_matches('/').to_string();
    if database.is_empty() {
        return Err(SourceError::Invalid("the MySQL URL names no database (mysql://user@host:3306/DATABASE)".into()));
    }
    let password = u.password().map(|p| percent_encoding::percent_decode_str(p).decode_utf8_lossy().to_string());
    Ok(Target { url: u, database, password })
}

/// The first of `names` found in PATH.
fn program(names: &[&str]) -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names.iter().find(|n| std::env::split_paths(&path).any(|d| d.join(n).is_file())).unwrap_or(&names[0]).to_string()
}

impl Target {
    /// A client tool with connection options; the password in MYSQL_PWD, never argv.
    fn tool(&self, program: &str) -> Tool {
        let mut t = Tool::new(program)
            .arg(format!("--host={}", self.url.host_str().unwrap_or("127.0.0.1")))
            .arg(format!("--port={}", self.url.port().unwrap_or(3306)))
            .arg(format!("--user={}", if self.url.username().is_empty() { "root" } else { self.url.username() }));
        if let Some(p) = &self.password {
            t = t.env("MYSQL_PWD", p.clone());
        }
        t
    }

    fn with_database(&self, db: &str) -> String {
        let mut u = self.url.clone();
        u.set_path(&format!("/{db}"));
        u.to_string()
    }
}

fn quote_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

async fn count_rows(conn: &mut MySqlConnection, database: &str) -> Result<BTreeMap<String, i64>, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .bind(database)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = BTreeMap::new();
    for t in tables {
        let sql = format!("SELECT COUNT(*) FROM {}.{}", quote_ident(database), quote_ident(&t));
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql)).fetch_one(&mut *conn).await?;
        counts.insert(t, n);
    }
    Ok(counts)
}

/// Passes bytes through and says once when the dump's transaction has surely begun.
struct Begun<'a> {
    inner: &'a mut dyn Write,
    seen: Vec<u8>,
    tx: Option<oneshot::Sender<()>>,
}

impl Begun<'_> {
    fn signal(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(());
        }
    }
}

impl Write for Begun<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if self.tx.is_some() {
            self.seen.extend_from_slice(&buf[..n]);
            if self.seen.windows(12).any(|w| w == b"CREATE TABLE") {
                self.signal();
            } else if self.seen.len() > 64 {
                self.seen.drain(..self.seen.len() - 16);
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

pub async fn backup(cx: &BackupCx, url: &str, running: &Running) -> Result<Produced, SourceError> {
    let t = target(url)?;
    let connect = |u: &str| {
        let u = u.to_string();
        async move { MySqlConnection::connect(&u).await.map_err(|e| SourceError::Unreachable(format!("cannot connect to MySQL/MariaDB: {e}"))) }
    };
    let mut locker = connect(url).await?;
    let mut counter = connect(url).await?;
    let server_version: String =
        sqlx::query_scalar("SELECT VERSION()").fetch_one(&mut counter).await.map_err(|e| SourceError::Source(e.to_string()))?;
    sqlx::query("FLUSH TABLES WITH READ LOCK")
        .execute(&mut locker)
        .await
        .map_err(|e| SourceError::Source(format!("FLUSH TABLES WITH READ LOCK: {e}")))?;
    let snapshot = async {
        sqlx::query("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ").execute(&mut counter).await?;
        sqlx::query("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY").execute(&mut counter).await
    }
    .await;
    if let Err(e) = snapshot {
        let _ = sqlx::query("UNLOCK TABLES").execute(&mut locker).await;
        return Err(SourceError::Source(format!("starting a consistent snapshot: {e}")));
    }
    let tool = t
        .tool(&program(&["mariadb-dump", "mysqldump"]))
        .arg("--single-transaction")
        .arg("--routines")
        .arg("--triggers")
        .arg("--events")
        .arg("--hex-blob")
        .arg("--default-character-set=utf8mb4")
        .arg(t.database.clone());
    let (begun_tx, begun_rx) = oneshot::channel();
    let r = running.clone();
    cx.progress.set_phase("dumping");
    let dump = store_object(cx, "dump.sql", move |w| {
        let mut begun = Begun { inner: w, seen: Vec::new(), tx: Some(begun_tx) };
        let result = run_into(&tool, &mut begun, &r);
        begun.signal();
        result
    });
    let unlock = async {
        // Sent when the dump's snapshot has begun, or dropped when the dump ended.
        let _ = begun_rx.await;
        sqlx::query("UNLOCK TABLES").execute(&mut locker).await
    };
    let (dumped, unlocked) = tokio::join!(dump, unlock);
    let (object, _) = dumped?;
    unlocked.map_err(|e| SourceError::Source(format!("UNLOCK TABLES: {e}")))?;
    let counts = count_rows(&mut counter, &t.database).await.map_err(|e| SourceError::Source(format!("counting rows: {e}")))?;
    let _ = sqlx::query("COMMIT").execute(&mut counter).await;
    let _ = counter.close().await;
    let _ = locker.close().await;
    Ok(Produced {
        objects: vec![object],
        facts: json!({ "database": t.database, "server_version": server_version, "tables": counts }),
        tool: version(&program(&["mariadb-dump", "mysqldump"])),
    })
}

async fn load(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    t: &Target,
    database: &str,
    progress: &Arc<Progress>,
    running: &Running,
) -> Result<(), SourceError> {
    let object = manifest.object("dump.sql").ok_or_else(|| SourceError::Invalid("the manifest names no dump.sql object".into()))?;
    let tool = t.tool(&program(&["mariadb", "mysql"])).arg("--binary-mode").arg(database.to_string());
    let r = running.clone();
    Ok(read_object(repo, manifest, object, identity, progress, move |input| run_from(&tool, input, &r).map(|_| ())).await?)
}

/// Level 2: restore into a scratch database on the same server, compare, drop it.
pub async fn restore_test(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    url: &str,
    assertions: &[crate::config::backups::Assertion],
    progress: &Arc<Progress>,
    running: &Running,
) -> Result<(Comparison, Duration), SourceError> {
    let t = target(url)?;
    let scratch = format!("steward_restore_{}", manifest.id.replace('-', "_").to_lowercase());
    let mut admin =
        MySqlConnection::connect(url).await.map_err(|e| SourceError::Unreachable(format!("cannot connect to MySQL/MariaDB: {e}")))?;
    let create = format!("CREATE DATABASE {} CHARACTER SET utf8mb4", quote_ident(&scratch));
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {}", quote_ident(&scratch))))
        .execute(&mut admin)
        .await
        .map_err(|e| SourceError::Source(e.to_string()))?;
    sqlx::query(sqlx::AssertSqlSafe(create))
        .execute(&mut admin)
        .await
        .map_err(|e| SourceError::Source(format!("creating the scratch database: {e}")))?;
    progress.set_phase("restoring into a scratch database");
    let started = Instant::now();
    let result = async {
        load(repo, manifest, identity, &t, &scratch, progress, running).await?;
        let restore_time = started.elapsed();
        let mut conn = MySqlConnection::connect(&t.with_database(&scratch)).await.map_err(|e| SourceError::Unreachable(e.to_string()))?;
        let counts = count_rows(&mut conn, &scratch).await.map_err(|e| SourceError::Source(e.to_string()))?;
        let mut c = Comparison::default();
        compare_counts("rows", &manifest.facts["tables"], &counts, &mut c);
        for a in assertions {
            match sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(a.query.clone())).fetch_optional(&mut conn).await {
                Ok(Some(v)) if v != 0 => c.matched.push(format!("assertion `{}` holds", a.name)),
                Ok(Some(_)) => c.differences.push(format!("assertion `{}` is false", a.name)),
                Ok(None) => c.differences.push(format!("assertion `{}` returned no row", a.name)),
                Err(e) => c.differences.push(format!("assertion `{}` failed: {e}", a.name)),
            }
        }
        let _ = conn.close().await;
        Ok((c, restore_time))
    }
    .await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {}", quote_ident(&scratch)))).execute(&mut admin).await;
    let _ = admin.close().await;
    result
}

/// The target database's name and how many tables it has.
pub async fn inspect_target(url: &str) -> Result<(String, usize), SourceError> {
    let t = target(url)?;
    let mut conn =
        MySqlConnection::connect(url).await.map_err(|e| SourceError::Unreachable(format!("cannot connect to the target: {e}")))?;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = ?")
        .bind(&t.database)
        .fetch_one(&mut conn)
        .await
        .map_err(|e| SourceError::Source(e.to_string()))?;
    let _ = conn.close().await;
    Ok((t.database, n as usize))
}

/// Restores into the target database (the dump drops and recreates each table).
pub async fn restore_to(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    url: &str,
    progress: &Arc<Progress>,
    running: &Running,
) -> Result<serde_json::Value, SourceError> {
    let t = target(url)?;
    load(repo, manifest, identity, &t, &t.database, progress, running).await?;
    let mut conn = MySqlConnection::connect(url).await.map_err(|e| SourceError::Unreachable(e.to_string()))?;
    let counts = count_rows(&mut conn, &t.database).await.map_err(|e| SourceError::Source(e.to_string()))?;
    let _ = conn.close().await;
    let mut c = Comparison::default();
    compare_counts("rows", &manifest.facts["tables"], &counts, &mut c);
    Ok(json!({ "database": t.database, "tables": counts.len(), "comparison": c }))
}
