//! `steward demo`: start the demo fleet, write its configuration, create an admin
//! token, and serve — then tell the user how to break and heal things.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::exit;
use super::serve::{self, ServeOptions};
use crate::auth::{Role, generate_secret, hash_secret};
use crate::demo::Fleet;
use crate::store::{SqliteStore, Store};

pub async fn run(data: Option<PathBuf>, listen: SocketAddr) -> u8 {
    // A directory the demo made for itself is removed when it stops; one the user named
    // is theirs and stays.
    let temporary = data.is_none();
    let data = data.unwrap_or_else(|| std::env::temp_dir().join(format!("steward-demo-{}", std::process::id())));
    let fleet = match Fleet::start().await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: cannot start the demo fleet on 127.0.0.1: {e}");
            return exit::FAILED;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&data) {
        eprintln!("error: cannot create {}: {e}", data.display());
        return exit::FAILED;
    }
    let config_path = data.join("steward.yaml");
    if let Err(e) = crate::demo::write_history(&data).and_then(|()| std::fs::write(&config_path, fleet.config_yaml(&data))) {
        eprintln!("error: cannot write the demo's files in {}: {e}", data.display());
        return exit::FAILED;
    }
    let token = generate_secret();
    let store = match SqliteStore::open(&data).await {
        Ok(store) => Arc::new(store),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::FAILED;
        }
    };
    let name = format!("demo-admin-{}", crate::clock::now().timestamp_millis());
    if let Err(e) = store.create_token(&name, Role::Admin, &hash_secret(&token)).await {
        eprintln!("error: {e}");
        return exit::FAILED;
    }
    // The first backup of the data set, restore-tested, before serving: the console's
    // Backups page and the freshness check have something to show from the start.
    let backup = match first_backup(&config_path, &data, store).await {
        Ok(id) => id,
        Err(e) => {
            eprintln!("error: the demo's first backup failed: {e}");
            return exit::FAILED;
        }
    };
    let control = fleet.control;
    let cfg = config_path.clone();
    let data_dir = data.clone();
    let announce = Box::new(move |addr: SocketAddr| {
        println!(
            r#"
Steward demo is running.

  Status page   http://{addr}/
  Console       http://{addr}/console   (sign in with the admin token below)
  API           curl -H 'Authorization: Bearer {token}' http://{addr}/api/v1/checks
  Metrics       http://{addr}/metrics
  Admin token   {token}
  Config        {cfg}   (edit, then: kill -HUP {pid})
  Data          {data}

Break and heal a demo service (checks run every 2s; 2 failures make a check unhealthy):
  curl -X POST http://{control}/demo/messaging/fail     # answer 503
  curl -X POST http://{control}/demo/messaging/slow     # answer after 3s (timeout)
  curl -X POST http://{control}/demo/messaging/heal     # back to 200
  (services: auth, payment, messaging, notification)

Each service has an alert; notifications go to the demo's own webhook receiver:
  curl http://{control}/demo/notifications
  steward alerts --server http://{addr} --token {token}     # state, and what mutes each alert
A service fails with what it depends on. Break `auth`: every check turns unhealthy,
but only AuthDown notifies; the others depend on auth, so their alerts are muted and
name the cause.

The storm opens one incident, which pages whoever is on call every minute until
someone acknowledges it; healing auth resolves it:
  steward incident list --server http://{addr} --token {token}         # IDs; the open one is the storm
  steward incident ack ID --server http://{addr} --token {token}        # ID from the list: stops the paging
  steward incident show ID --server http://{addr} --token {token}       # the timeline
  steward incident postmortem ID --server http://{addr} --token {token} # review draft
  steward oncall --server http://{addr} --token {token}

A runbook: MessagingDown names restart-messaging (its notification carries the
command). Break messaging, then run it; it waits for an operator's approval:
  curl -X POST http://{control}/demo/messaging/fail
  steward run restart-messaging --server http://{addr} --token {token} --follow
  steward runs approve ID --server http://{addr} --token {token}        # in another terminal, or the console's Runs page

Backups: the messages' history ({data}/messaging-history) is backed up every hour
and restore-tested; a check warns when the newest verified backup is older than 2h.
The first one was taken and restore-tested at start: {backup}
  steward backup list -c {cfg} --data {data}
  steward backup verify {backup} --restore-test -c {cfg} --data {data}
  steward backup restore {backup} --to /tmp/restored-history -c {cfg} --data {data}

Press Ctrl-C to stop.
"#,
            cfg = cfg.display(),
            data = data_dir.display(),
            pid = std::process::id(),
        );
    });
    let opts = ServeOptions {
        config: config_path,
        data: data.clone(),
        store: None,
        listen,
        max_concurrency: 64,
        raw_retention: Duration::from_secs(6 * 3600),
        run_retention: Duration::from_secs(7 * 86400),
        status_page: true,
        advertise_url: None,
        lease_ttl: Duration::from_secs(15),
        external_url: None,
        tls: None,
    };
    let code = serve::run(opts, Some(announce)).await;
    drop(fleet);
    if temporary && let Err(e) = std::fs::remove_dir_all(&data) {
        eprintln!("warning: could not remove the demo's data in {}: {e}", data.display());
    }
    code
}

/// Takes and restore-tests the first backup of the demo's data set; its id.
async fn first_backup(config_path: &std::path::Path, data: &std::path::Path, store: Arc<SqliteStore>) -> Result<String, String> {
    use crate::backups::service::Backups;
    use crate::backups::sources::Progress;
    let config = crate::config::load(config_path).map_err(|d| d.to_string())?;
    let backups = Backups::new(store, None, data.to_path_buf());
    let record = backups
        .run(&config, "messaging-history", "manual", "demo", None, Arc::new(Progress::default()))
        .await
        .map_err(|e| e.to_string())?;
    let verified =
        backups.verify(&config, &record.id, true, "manual", None, Arc::new(Progress::default())).await.map_err(|e| e.to_string())?;
    if verified.result != "passed" {
        return Err(format!("its restore test did not pass: {} ({})", verified.result, verified.detail));
    }
    Ok(record.id)
}
