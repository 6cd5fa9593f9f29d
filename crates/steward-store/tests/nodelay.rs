//! Its own test binary, so its own process: it reads every socket of the process, and
//! in the store suite's process other tests open connections concurrently, one of
//! which can be caught between its TCP handshake and the hook that sets TCP_NODELAY.

/// Every connection to PostgreSQL has Nagle's algorithm off (sqlx 0.9.0 leaves it on,
/// and a statement larger than one segment then waits ≈ 40 ms for the server's delayed
/// acknowledgement; see `postgres/nodelay.rs`). Read from this process's own sockets.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn postgres_connections_have_nagles_algorithm_off() {
    use std::os::fd::{BorrowedFd, RawFd};
    use steward_store::RunStore;
    let url = steward_testkit::shared_database();
    let port = url::Url::parse(&url).unwrap().port().unwrap();
    let store = steward_store::PostgresStore::connect(&url).await.unwrap();
    let (a, b) = tokio::join!(store.run(1), store.run(2));
    a.unwrap();
    b.unwrap();
    let mut nodelay = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<RawFd>().ok()) else { continue };
        if !std::fs::read_link(entry.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:")) {
            continue;
        }
        // SAFETY: open while this single-threaded loop borrows it for two calls.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let socket = socket2::SockRef::from(&fd);
        if socket.peer_addr().ok().and_then(|a| a.as_socket()).is_some_and(|a| a.port() == port) {
            nodelay.push(socket.tcp_nodelay().unwrap());
        }
    }
    assert!(!nodelay.is_empty(), "no connection to PostgreSQL found among this process's sockets");
    assert!(nodelay.iter().all(|on| *on), "connections with Nagle's algorithm on: {nodelay:?}");
}
