//! Which store a command opens, and `steward store copy`.
//!
//! The state lives in the data directory's SQLite file unless a PostgreSQL URL is given:
//! `--store` (or `STEWARD_STORE`) on the command line, else `store: {url: …}` in the
//! configuration. The URL names its password by reference (`${env:NAME}`,
//! `${file:/path}`), never inline, exactly as the configuration does, so it can sit in a
//! unit file or a process list without giving the password away.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;

use super::{Output, exit};
use crate::config::StoreSpec;
use crate::config::secret::{self, UrlError};
use crate::store::{ClusterStore, PostgresStore, SqliteStore, Store, copy};

/// A PostgreSQL URL as the user wrote it (references unresolved, safe to show) and
/// resolved (for the driver only).
pub struct PostgresUrl {
    pub written: String,
    resolved: String,
}

/// Parses and resolves a PostgreSQL store URL given on the command line.
pub fn postgres_url(written: &str) -> Result<PostgresUrl, String> {
    let mut secrets = Vec::new();
    match secret::resolve_url(written, &mut secrets) {
        Ok((u, resolved)) if matches!(u.scheme(), "postgres" | "postgresql") => Ok(PostgresUrl { written: written.to_string(), resolved }),
        Ok((u, _)) => Err(format!(
            "store `{written}` has scheme `{}`\n  hint: the shared store is PostgreSQL: postgres://USER@HOST:PORT/DB",
            u.scheme()
        )),
        Err(UrlError::InlinePassword) => Err(format!(
            "store `{}` contains an inline password\n  hint: name it by reference: postgres://USER:${{env:PGPASSWORD}}@HOST/DB",
            crate::store::redact_url(written)
        )),
        Err(UrlError::Reference(m, h)) => Err(format!("store `{written}`: {m}\n  hint: {h}")),
        Err(UrlError::Invalid(e)) => Err(format!("store `{written}` is not a URL: {e}")),
        // Only `steward validate` defers references; the command line never does.
        Err(UrlError::Deferred) => Err(format!("store `{written}`: the reference is not set")),
    }
}

/// Opens the store a command works on: PostgreSQL when `store` (the command line) or
/// `configured` (the configuration's `store:`) names one, else SQLite in `data`.
pub async fn open(data: &Path, store: Option<&str>, configured: Option<&StoreSpec>) -> Result<Arc<dyn Store>, String> {
    let url = match (store, configured) {
        (Some(written), _) => Some(postgres_url(written)?),
        (None, Some(spec)) => Some(PostgresUrl { written: spec.url.written().to_string(), resolved: spec.url.expose().to_string() }),
        (None, None) => None,
    };
    match url {
        Some(url) => PostgresStore::connect(&url.resolved)
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| format!("{e}\n  hint: is PostgreSQL up at {}, and may this user create tables there?", url.written)),
        None => SqliteStore::open(data)
            .await
            .map(|s| Arc::new(s) as Arc<dyn Store>)
            .map_err(|e| format!("{e}\n  hint: --data must be a directory steward can create and write")),
    }
}

/// `steward store copy --from sqlite:DIR --to postgres://…`: moves an installation whole,
/// in one transaction on the destination, and compares every table's row count.
pub async fn copy(from: &str, to: &str, output: Output) -> u8 {
    let Some(dir) = from.strip_prefix("sqlite:") else {
        eprintln!(
            "error: --from `{from}` is not a SQLite store\n  hint: write --from sqlite:/var/lib/steward (the server's --data directory)"
        );
        return exit::BAD_CONFIG;
    };
    let dir = Path::new(dir);
    if !dir.join("steward.db").is_file() {
        eprintln!("error: {} holds no steward.db\n  hint: --from names the data directory `steward serve --data` used", dir.display());
        return exit::FAILED;
    }
    let to = match postgres_url(to) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_CONFIG;
        }
    };
    let (source, destination) = match (SqliteStore::open(dir).await, PostgresStore::connect(&to.resolved).await) {
        (Ok(s), Ok(d)) => (s, d),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    eprintln!("copying {} to {} …", dir.display(), to.written);
    match copy::sqlite_to_postgres(&source, &destination, |table, rows| eprintln!("  {table}: {rows} rows")).await {
        Ok(report) => {
            match output {
                Output::Json => {
                    let tables: Vec<_> =
                        report.tables.iter().map(|t| json!({"table": t.table, "source": t.source, "copied": t.copied})).collect();
                    println!("{}", json!({"from": from, "to": to.written, "tables": tables, "rows": report.rows()}));
                }
                Output::Table => {
                    eprintln!(
                        "copied {} rows in {} tables; every table's count matches. Point the servers at the new store with --store {} (or `store:` in the configuration).",
                        report.rows(),
                        report.tables.len(),
                        to.written
                    );
                }
            }
            exit::OK
        }
        Err(e @ crate::store::StoreError::NotEmpty { .. }) => {
            eprintln!("error: {e}\n  hint: copy into a new, empty database; nothing was written");
            exit::REFUSED
        }
        Err(e) => {
            eprintln!("error: {e}\n  nothing was written: the copy is one transaction");
            exit::FAILED
        }
    }
}

/// `steward cluster status`: the replicas and the lease, as the store has them.
pub async fn cluster_status(store: &str, output: Output) -> u8 {
    let url = match postgres_url(store) {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::BAD_CONFIG;
        }
    };
    let store = match PostgresStore::connect(&url.resolved).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    let (replicas, lease) = match (store.replicas().await, store.leader().await) {
        (Ok(r), Ok(l)) => (r, l),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    let now = crate::clock::now();
    let live = |l: &crate::store::Lease| l.expires_at > now;
    let leads = |id: &str| lease.as_ref().is_some_and(|l| l.holder == id && live(l));
    match output {
        Output::Json => {
            let replicas: Vec<_> = replicas
                .iter()
                .map(|r| {
                    json!({
                        "id": r.id, "address": r.address, "version": r.version, "schema": r.schema,
                        "started_at": r.started_at, "heartbeat_at": r.heartbeat_at,
                        "heartbeat_age_seconds": (now - r.heartbeat_at).num_milliseconds() as f64 / 1000.0,
                        "leader": leads(&r.id),
                    })
                })
                .collect();
            println!("{}", json!({"lease": lease, "lease_live": lease.as_ref().is_some_and(live), "replicas": replicas}));
        }
        Output::Table => {
            let rows: Vec<Vec<String>> = replicas
                .iter()
                .map(|r| {
                    vec![
                        r.id.clone(),
                        r.address.clone(),
                        r.version.clone(),
                        r.schema.to_string(),
                        format!("{:.1}s ago", (now - r.heartbeat_at).num_milliseconds() as f64 / 1000.0),
                        if leads(&r.id) { format!("leader (term {})", lease.as_ref().map_or(0, |l| l.term)) } else { "follower".into() },
                    ]
                })
                .collect();
            super::print_table(&["REPLICA", "ADDRESS", "VERSION", "SCHEMA", "HEARTBEAT", "ROLE"], &rows);
            match &lease {
                Some(l) if live(l) => eprintln!(
                    "leader {} since {} (term {}), lease until {}",
                    l.holder,
                    l.acquired_at.to_rfc3339(),
                    l.term,
                    l.expires_at.to_rfc3339()
                ),
                Some(l) => eprintln!("no leader: the last lease (term {}, {}) expired at {}", l.term, l.holder, l.expires_at.to_rfc3339()),
                None => eprintln!("no replica has led yet"),
            }
        }
    }
    exit::OK
}
