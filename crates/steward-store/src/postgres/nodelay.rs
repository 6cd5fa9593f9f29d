//! Nagle's algorithm off on every connection to PostgreSQL.
//!
//! sqlx 0.9.0 no longer sets `TCP_NODELAY` on the sockets it opens (launchbadge/sqlx
//! #4335; fixed upstream by #4336, not yet released). With Nagle on, a message larger
//! than one segment — a batch of 100 alerts is — sends its last partial segment only
//! once the server acknowledges the first, and the server delays that acknowledgement
//! (40 ms on Linux): every such statement took ≈ 42 ms on loopback, which made alert
//! ingest on PostgreSQL 8× slower than on SQLite. sqlx gives no access to the socket,
//! so a new connection asks the server which port it sees the connection come from,
//! finds this process's socket with that local port and the server's port among its
//! open descriptors, and sets the option on it. Where that cannot be matched (the
//! server sees another port: a pooler, source NAT) the connection keeps Nagle, as
//! before, and works the same — only slower for large statements. Remove this once
//! sqlx releases the fix.

use sqlx::PgConnection;

/// Turns Nagle's algorithm off on the socket of `conn`, a TCP connection to `port`.
pub(super) async fn disable_nagle(conn: &mut PgConnection, port: u16) -> Result<(), sqlx::Error> {
    // NULL over a Unix socket, which has no Nagle to turn off.
    let (client_port,): (Option<i32>,) = sqlx::query_as("SELECT inet_client_port()").fetch_one(&mut *conn).await?;
    if let Some(local) = client_port.and_then(|p| u16::try_from(p).ok())
        && !set_nodelay(local, port)
    {
        tracing::debug!(local_port = local, "could not find this connection's socket to turn Nagle's algorithm off");
    }
    Ok(())
}

/// Sets `TCP_NODELAY` on this process's TCP socket from `local_port` to `peer_port`;
/// false when there is none.
#[cfg(target_os = "linux")]
fn set_nodelay(local_port: u16, peer_port: u16) -> bool {
    use std::os::fd::{BorrowedFd, RawFd};
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else { return false };
    for entry in fds.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else { continue };
        if !std::fs::read_link(entry.path()).is_ok_and(|target| target.to_string_lossy().starts_with("socket:")) {
            continue;
        }
        // SAFETY: the descriptor was open when listed and is only borrowed for the calls
        // below, which neither close nor keep it. Were it closed and reused meanwhile,
        // they would read another descriptor's addresses (and not match) or fail.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        let port = |a: std::io::Result<socket2::SockAddr>| a.ok().and_then(|a| a.as_socket()).map(|a| a.port());
        if port(socket.local_addr()) == Some(local_port) && port(socket.peer_addr()) == Some(peer_port) {
            return socket.set_tcp_nodelay(true).is_ok();
        }
    }
    false
}

#[cfg(not(target_os = "linux"))]
fn set_nodelay(_local_port: u16, _peer_port: u16) -> bool {
    false
}
