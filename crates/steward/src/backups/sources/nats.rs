//! NATS JetStream: each stream through the server's own snapshot API
//! (`$JS.API.STREAM.SNAPSHOT`), with `jsck` so the server checks every message's
//! checksum before it sends anything. The snapshot (the server's S2-compressed tar of
//! the stream's store) streams through in chunks, each acknowledged for the server's
//! flow control; the stream's config and state (messages, bytes, first and last
//! sequence) come back with the snapshot and are what verification compares.
//!
//! A restore goes through `$JS.API.STREAM.RESTORE`: the chunks are sent back, each
//! acknowledged by the server, and the server rebuilds the stream. A restore test
//! does that into a scratch nats-server with JetStream in a temporary directory.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value as Json, json};

use super::{BackupCx, Comparison, Produced, Progress, SourceError, read_object, store_object};
use crate::backups::manifest::Manifest;
use crate::backups::repository::Repo;

/// How long the server may take to answer one API request or deliver one chunk.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const CHUNK: usize = 128 * 1024;

/// Connect options carrying the URL's user and password, decoded (a password by
/// reference may hold `@`, `/` or `:`, which the URL holds percent-encoded).
pub fn options(url: &str) -> async_nats::ConnectOptions {
    match crate::config::secret::split_credentials(url).1 {
        Some((user, password)) => async_nats::ConnectOptions::with_user_and_password(user, password),
        None => async_nats::ConnectOptions::new(),
    }
}

async fn connect(url: &str) -> Result<async_nats::Client, SourceError> {
    options(url)
        .name("steward-backup")
        .connection_timeout(Duration::from_secs(10))
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(crate::config::secret::split_credentials(url).0)
        .await
        .map_err(|e| SourceError::Unreachable(format!("cannot connect to NATS: {e}")))
}

/// A JetStream API call: the JSON answer, or its `error.description`.
async fn api(client: &async_nats::Client, subject: String, body: Json) -> Result<Json, SourceError> {
    let reply =
        client.request(subject.clone(), body.to_string().into()).await.map_err(|e| SourceError::Source(format!("{subject}: {e}")))?;
    let v: Json = serde_json::from_slice(&reply.payload).map_err(|e| SourceError::Source(format!("{subject}: not JSON: {e}")))?;
    if let Some(err) = v.get("error") {
        return Err(SourceError::Source(format!("{subject}: {}", err["description"].as_str().unwrap_or(&err.to_string()))));
    }
    Ok(v)
}

fn object_name(stream: &str) -> String {
    format!("stream-{stream}.tar.s2")
}

/// Stream names as the manifest lists them (in backup order).
fn streams_of(manifest: &Manifest) -> Vec<String> {
    manifest.facts["streams"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
}

fn state_facts(state: &Json) -> Json {
    json!({
        "messages": state["messages"].as_i64().unwrap_or(0),
        "bytes": state["bytes"].as_i64().unwrap_or(0),
        "first_seq": state["first_seq"].as_i64().unwrap_or(0),
        "last_seq": state["last_seq"].as_i64().unwrap_or(0),
    })
}

pub async fn backup(cx: &BackupCx, url: &str, streams: &[String]) -> Result<Produced, SourceError> {
    let client = connect(url).await?;
    let mut objects = Vec::new();
    let mut facts = serde_json::Map::new();
    for stream in streams {
        cx.progress.set_phase(format!("snapshot of stream {stream}"));
        let inbox = client.new_inbox();
        let mut sub = client.subscribe(inbox.clone()).await.map_err(|e| SourceError::Source(format!("subscribing to {inbox}: {e}")))?;
        let answer = api(
            &client,
            format!("$JS.API.STREAM.SNAPSHOT.{stream}"),
            json!({ "deliver_subject": inbox, "no_consumers": false, "chunk_size": CHUNK, "jsck": true }),
        )
        .await
        .map_err(|e| e.context(&format!("stream `{stream}`")))?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let (object, _) = {
            let (client, sub) = (&client, &mut sub);
            let receive = async move {
                // Owning the sender: when this ends, the channel closes and so does the object.
                let tx = tx;
                loop {
                    let msg = tokio::time::timeout(REQUEST_TIMEOUT, sub.next())
                        .await
                        .map_err(|_| {
                            SourceError::Source(format!("stream `{stream}`: no snapshot data for {}s", REQUEST_TIMEOUT.as_secs()))
                        })?
                        .ok_or_else(|| SourceError::Source(format!("stream `{stream}`: the snapshot subscription closed")))?;
                    if msg.payload.is_empty() {
                        // The end, or an error status (e.g. 408 when flow control stalled).
                        if let Some(status) = msg.status
                            && !status.is_success()
                        {
                            return Err(SourceError::Source(format!(
                                "stream `{stream}`: the server ended the snapshot with {status} {}",
                                msg.description.clone().unwrap_or_default()
                            )));
                        }
                        return Ok::<_, SourceError>(());
                    }
                    if tx.send(msg.payload.clone()).await.is_err() {
                        return Err(SourceError::Repository(format!("stream `{stream}`: the writer stopped")));
                    }
                    // The acknowledgement opens the server's flow-control window.
                    if let Some(reply) = msg.reply {
                        client
                            .publish(reply, Bytes::new())
                            .await
                            .map_err(|e| SourceError::Source(format!("acknowledging a chunk: {e}")))?;
                    }
                }
            };
            let name = object_name(stream);
            let write = store_object(cx, &name, move |w: &mut dyn Write| {
                let mut n = 0u64;
                while let Some(chunk) = rx.blocking_recv() {
                    w.write_all(&chunk)?;
                    n += chunk.len() as u64;
                }
                Ok(n)
            });
            let (received, written) = tokio::join!(receive, write);
            received?;
            written?
        };
        let _ = sub.unsubscribe().await;
        objects.push(object);
        facts.insert(stream.clone(), json!({ "state": state_facts(&answer["state"]), "config": answer["config"] }));
    }
    let info = client.server_info();
    Ok(Produced {
        objects,
        facts: json!({ "streams": facts, "server_version": info.version }),
        tool: Some(format!("nats-server {} (snapshot API)", info.version)),
    })
}

/// Restores every stream of the backup into the server at `url`. `replace` deletes a
/// stream of the same name first (the caller checked `--force`).
async fn restore_streams(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    url: &str,
    replace: bool,
    progress: &Arc<Progress>,
) -> Result<BTreeMap<String, Json>, SourceError> {
    let client = connect(url).await?;
    let mut restored = BTreeMap::new();
    for stream in streams_of(manifest) {
        let recorded = &manifest.facts["streams"][&stream];
        let object = manifest
            .object(&object_name(&stream))
            .ok_or_else(|| SourceError::Invalid(format!("the manifest names no object for stream `{stream}`")))?;
        if replace {
            let _ = api(&client, format!("$JS.API.STREAM.DELETE.{stream}"), Json::Null).await;
        }
        progress.set_phase(format!("restoring stream {stream}"));
        let mut config = recorded["config"].clone();
        // The snapshot carries the state; the config must name the stream it restores.
        config["name"] = Json::String(stream.clone());
        let answer = api(&client, format!("$JS.API.STREAM.RESTORE.{stream}"), json!({ "config": config, "state": recorded["state"] }))
            .await
            .map_err(|e| e.context(&format!("stream `{stream}`")))?;
        let deliver = answer["deliver_subject"]
            .as_str()
            .ok_or_else(|| SourceError::Source(format!("stream `{stream}`: the restore answer has no deliver_subject")))?
            .to_string();
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let read = read_object(repo, manifest, object, identity, progress, move |r: &mut dyn Read| {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                if tx.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                    return Err(std::io::Error::other("the NATS server stopped taking the restore"));
                }
            }
        });
        let send = async {
            while let Some(chunk) = rx.recv().await {
                let ack = client
                    .request(deliver.clone(), chunk)
                    .await
                    .map_err(|e| SourceError::Source(format!("stream `{stream}`: sending a chunk: {e}")))?;
                if !ack.payload.is_empty() {
                    let v: Json = serde_json::from_slice(&ack.payload).unwrap_or(Json::Null);
                    if let Some(err) = v.get("error") {
                        return Err(SourceError::Source(format!("stream `{stream}`: the server refused a chunk: {}", err["description"])));
                    }
                }
            }
            Ok::<_, SourceError>(())
        };
        let (read, sent) = tokio::join!(read, send);
        read?;
        sent?;
        // The empty message ends the restore; the answer is the rebuilt stream.
        let done = client
            .request(deliver.clone(), Bytes::new())
            .await
            .map_err(|e| SourceError::Source(format!("stream `{stream}`: finishing: {e}")))?;
        let v: Json =
            serde_json::from_slice(&done.payload).map_err(|e| SourceError::Source(format!("stream `{stream}`: finishing: {e}")))?;
        if let Some(err) = v.get("error") {
            return Err(SourceError::Source(format!("stream `{stream}`: the server could not rebuild it: {}", err["description"])));
        }
        let info = api(&client, format!("$JS.API.STREAM.INFO.{stream}"), Json::Null).await?;
        restored.insert(stream.clone(), state_facts(&info["state"]));
    }
    Ok(restored)
}

fn compare(manifest: &Manifest, restored: &BTreeMap<String, Json>) -> Comparison {
    let mut c = Comparison::default();
    for stream in streams_of(manifest) {
        let recorded = &manifest.facts["streams"][&stream]["state"];
        let Some(now) = restored.get(&stream) else {
            c.differences.push(format!("stream {stream}: not restored"));
            continue;
        };
        for field in ["messages", "first_seq", "last_seq", "bytes"] {
            if recorded[field] == now[field] {
                if field != "bytes" {
                    c.matched.push(format!("stream {stream}: {field} {}", now[field]));
                }
            } else {
                c.differences.push(format!("stream {stream}: {field} {} at backup, {} restored", recorded[field], now[field]));
            }
        }
    }
    c
}

/// The streams of the backup that already exist at `url`, with their message counts.
pub async fn inspect_target(manifest: &Manifest, url: &str) -> Result<Vec<(String, i64)>, SourceError> {
    let client = connect(url).await?;
    let mut present = Vec::new();
    for stream in streams_of(manifest) {
        if let Ok(info) = api(&client, format!("$JS.API.STREAM.INFO.{stream}"), Json::Null).await {
            present.push((stream, info["state"]["messages"].as_i64().unwrap_or(0)));
        }
    }
    Ok(present)
}

pub async fn restore_to(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    url: &str,
    replace: bool,
    progress: &Arc<Progress>,
) -> Result<Json, SourceError> {
    let restored = restore_streams(repo, manifest, identity, url, replace, progress).await?;
    Ok(json!({ "streams": restored.keys().collect::<Vec<_>>(), "comparison": compare(manifest, &restored) }))
}

/// A nats-server with JetStream of our own, in a temporary directory, killed on drop.
struct ScratchNats {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for ScratchNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ScratchNats {
    async fn start() -> Result<ScratchNats, SourceError> {
        let dir = tempfile::Builder::new().prefix("steward-scratch-nats-").tempdir().map_err(|e| SourceError::Local(e.to_string()))?;
        let port =
            std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| SourceError::Local(e.to_string()))?.port();
        let child = std::process::Command::new("nats-server")
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| SourceError::Tool(format!("cannot start a scratch nats-server (is it installed?): {e}")))?;
        let scratch = ScratchNats { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if Instant::now() > deadline {
                return Err(SourceError::Tool("the scratch nats-server did not start listening".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(scratch)
    }
}

/// Level 2: restore every stream into a scratch nats-server and compare.
pub async fn restore_test(
    repo: &Repo,
    manifest: &Manifest,
    identity: Option<&age::x25519::Identity>,
    progress: &Arc<Progress>,
) -> Result<(Comparison, Duration), SourceError> {
    progress.set_phase("starting a scratch nats-server");
    let scratch = ScratchNats::start().await?;
    let started = Instant::now();
    let restored = restore_streams(repo, manifest, identity, &format!("nats://127.0.0.1:{}", scratch.port), false, progress).await?;
    let took = started.elapsed();
    drop(scratch);
    Ok((compare(manifest, &restored), took))
}
