//! Test support shared by Steward's crates: private instances of real components, each
//! on a free loopback port and in a temporary directory of its own, so a test may stop,
//! kill, promote or corrupt them without touching the machine's services.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A PostgreSQL server tool: Debian keeps initdb, pg_ctl and friends under
/// /usr/lib/postgresql/VERSION/bin, outside PATH.
pub fn pg_tool(tool: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path().join("bin")).filter(|p| p.join(tool).exists()).collect())
        .unwrap_or_default();
    dirs.sort_by_key(|p| p.parent().and_then(|v| v.file_name()).and_then(|v| v.to_str()).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0));
    dirs.pop().map_or_else(|| PathBuf::from(tool), |d| d.join(tool))
}

/// Runs a PostgreSQL tool as the `postgres` user when we are root (initdb and the
/// server refuse to run as root).
fn as_postgres(tool: &str) -> Command {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(pg_tool(tool));
        c
    } else {
        Command::new(pg_tool(tool))
    }
}

fn run_ok(c: &mut Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A PostgreSQL cluster of our own (initdb) on a free port, stopped on drop; a
/// standby of another one with [`PrivatePostgres::standby_of`].
pub struct PrivatePostgres {
    pub port: u16,
    data: PathBuf,
    /// Server options beyond the port and sockets (`-c archive_mode=off`).
    options: String,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    fn new_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            run_ok(Command::new("chown").args(["-R", "postgres:"]).arg(dir.path()), "chown");
        }
        dir
    }

    pub fn primary() -> PrivatePostgres {
        let dir = Self::new_dir();
        let data = dir.path().join("data");
        run_ok(as_postgres("initdb").args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"]).arg(&data), "initdb");
        let pg = PrivatePostgres { port: free_port(), data, options: String::new(), _dir: dir };
        pg.start();
        pg
    }

    /// Starts a cluster already in `data` (a restored one) with extra server `options`.
    /// Its sockets and log go beside `data`, which the `postgres` user must own.
    pub fn adopt(data: PathBuf, options: &str) -> PrivatePostgres {
        let pg = PrivatePostgres { port: free_port(), data, options: options.to_string(), _dir: Self::new_dir() };
        pg.start();
        pg
    }

    /// A streaming standby of `primary`, from pg_basebackup.
    pub fn standby_of(primary: &PrivatePostgres) -> PrivatePostgres {
        let dir = Self::new_dir();
        let data = dir.path().join("data");
        run_ok(
            as_postgres("pg_basebackup")
                // A fast checkpoint: the default spreads it over minutes on a fresh cluster.
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres", "-R", "-X", "stream", "-c", "fast", "-D"])
                .arg(&data),
            "pg_basebackup",
        );
        let pg = PrivatePostgres { port: free_port(), data, options: String::new(), _dir: dir };
        pg.start();
        pg
    }

    /// Starts the server (again, after [`PrivatePostgres::stop`]) on the same port.
    pub fn start(&self) {
        let socket = self.data.parent().unwrap();
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {}", self.port, socket.display(), self.options);
        let mut c = as_postgres("pg_ctl");
        c.args(["-w", "-l"]).arg(socket.join("log")).args(["-o", &opts, "-D"]).arg(&self.data).arg("start");
        run_ok(&mut c, "pg_ctl start");
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL through psql and returns its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        self.psql_in("postgres", sql)
    }

    /// [`PrivatePostgres::psql`] in database `db`.
    pub fn psql_in(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-Atc", sql, db])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl PrivatePostgres {
    /// Stops the server as a crash would (`immediate`: no checkpoint, clients cut off);
    /// [`PrivatePostgres::start`] brings it back with its data.
    pub fn stop(&self) {
        run_ok(as_postgres("pg_ctl").args(["-m", "immediate", "-w", "-D"]).arg(&self.data).arg("stop"), "pg_ctl stop");
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut c = as_postgres("pg_ctl");
        c.args(["-m", "immediate", "-D"]).arg(&self.data).arg("stop").stdout(Stdio::null()).stderr(Stdio::null());
        let _ = c.status();
    }
}

/// One PostgreSQL cluster for the whole test process, for tests that each need only a
/// database of their own ([`shared_database`]): an initdb per test would cost more than
/// the test. It is stopped and removed when the process exits, however it exits: a
/// watchdog shell waits on a pipe that only this process holds open.
struct SharedCluster {
    port: u16,
    /// Holds the write end of the watchdog's stdin open for as long as we live.
    _watchdog: Mutex<Child>,
}

fn shared_cluster() -> &'static SharedCluster {
    static CLUSTER: OnceLock<SharedCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let pg = PrivatePostgres::primary();
        let port = pg.port;
        let dir = pg._dir.path().to_path_buf();
        let data = pg.data.clone();
        // The watchdog owns the cluster from here: it stops it when our end of its stdin
        // closes (this process exited), then removes its directory.
        std::mem::forget(pg);
        let stop = format!(
            "cat >/dev/null; {} -m immediate -D '{}' stop >/dev/null 2>&1; rm -rf '{}'",
            as_postgres_shell("pg_ctl"),
            data.display(),
            dir.display()
        );
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(stop)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the cluster's watchdog");
        SharedCluster { port, _watchdog: Mutex::new(watchdog) }
    })
}

/// The shell words that run a PostgreSQL tool as the `postgres` user when we are root.
fn as_postgres_shell(tool: &str) -> String {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tool = pg_tool(tool).display().to_string();
    if root { format!("runuser -u postgres -- '{tool}'") } else { format!("'{tool}'") }
}

/// A fresh, empty database on the process's shared private cluster; returns its URL.
pub fn shared_database() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let cluster = shared_cluster();
    let name = format!("t{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let out = Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &cluster.port.to_string(),
            "-U",
            "postgres",
            "-Atc",
            &format!("CREATE DATABASE {name}"),
            "postgres",
        ])
        .output()
        .expect("psql");
    assert!(out.status.success(), "CREATE DATABASE {name}: {}", String::from_utf8_lossy(&out.stderr));
    format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.port)
}
