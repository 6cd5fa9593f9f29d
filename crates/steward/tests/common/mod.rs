//! Helpers shared by the integration tests: real servers on loopback, private
//! instances of real components that a test may stop and restart, and the binary.
#![allow(dead_code)]

pub(crate) mod alerting;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn steward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_steward"))
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub(crate) fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub(crate) fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// A redis-server of our own on a free port, killed on drop.
pub(crate) struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(crate) fn start() -> PrivateRedis {
        let mut r = PrivateRedis { port: free_port(), child: None };
        r.restart();
        r
    }

    pub(crate) fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (apt-get install redis-server)");
        self.child = Some(child);
        let port = self.port;
        wait_for("private redis to listen", Duration::from_secs(10), || port_open(port).then_some(()));
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A nats-server with JetStream of our own, killed on drop.
pub(crate) struct PrivateNats {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivateNats {
    pub(crate) fn start() -> PrivateNats {
        let mut n = PrivateNats { port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        n.restart();
        n
    }

    pub(crate) fn restart(&mut self) {
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server must be installed (apt-get install nats-server)");
        self.child = Some(child);
        let port = self.port;
        wait_for("private nats to listen", Duration::from_secs(10), || port_open(port).then_some(()));
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Prometheus server of our own scraping `targets` every second, killed on drop.
pub(crate) struct PrivatePrometheus {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl PrivatePrometheus {
    pub(crate) fn start(targets: &[String]) -> PrivatePrometheus {
        let dir = tempfile::tempdir().unwrap();
        let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!("global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n  - job_name: app\n    static_configs: [{{targets: [{list}]}}]\n"),
        )
        .unwrap();
        let mut p = PrivatePrometheus { port: free_port(), dir, child: None };
        p.restart();
        p
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn restart(&mut self) {
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", self.dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", self.dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus must be installed (apt-get install prometheus)");
        self.child = Some(child);
        let port = self.port;
        wait_for("private prometheus to be ready", Duration::from_secs(30), || {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
            use std::io::{Read, Write};
            s.write_all(b"GET /-/ready HTTP/1.0\r\n\r\n").ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            out.starts_with("HTTP/1.0 200").then_some(())
        });
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivatePrometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running `steward serve`, stopped (SIGTERM) on drop.
pub(crate) struct Server {
    pub child: Child,
    pub base: String,
    pub data: PathBuf,
}

impl Server {
    pub(crate) fn start(config: &Path, data: &Path) -> Server {
        let port = free_port();
        let child = steward()
            .args(["serve", "-c"])
            .arg(config)
            .arg("--data")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("STEWARD_LOG", "info")
            .stdout(Stdio::null())
            // A file, not a pipe: nobody drains a pipe, and a full one would block steward.
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(data.with_extension("log")).unwrap())
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut s = Server { child, base, data: data.to_path_buf() };
        wait_for("steward serve to listen", Duration::from_secs(15), || {
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("steward serve exited ({status}) before listening:\n{}", s.log());
            }
            port_open(port).then_some(())
        });
        s
    }

    /// Everything this data directory's servers logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.data.with_extension("log")).unwrap_or_default()
    }

    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// SIGTERM and wait; returns the exit code.
    pub(crate) fn stop(&mut self) -> Option<i32> {
        self.signal(libc::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                panic!("steward did not stop within 15s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

/// Creates a token in `data` through the CLI and returns its secret.
pub(crate) fn create_token(data: &Path, name: &str, role: &str) -> String {
    let out = steward().args(["token", "create", "--output", "json", "--name", name, "--role", role, "--data"]).arg(data).output().unwrap();
    assert!(out.status.success(), "token create failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// A PostgreSQL server tool: Debian keeps initdb, pg_ctl and friends under
/// /usr/lib/postgresql/VERSION/bin, outside PATH.
pub(crate) fn pg_tool(tool: &str) -> PathBuf {
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
pub(crate) struct PrivatePostgres {
    pub port: u16,
    data: PathBuf,
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

    pub(crate) fn primary() -> PrivatePostgres {
        let dir = Self::new_dir();
        let data = dir.path().join("data");
        run_ok(as_postgres("initdb").args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"]).arg(&data), "initdb");
        let pg = PrivatePostgres { port: free_port(), data, _dir: dir };
        pg.start();
        pg
    }

    /// A streaming standby of `primary`, from pg_basebackup.
    pub(crate) fn standby_of(primary: &PrivatePostgres) -> PrivatePostgres {
        let dir = Self::new_dir();
        let data = dir.path().join("data");
        run_ok(
            as_postgres("pg_basebackup")
                .args(["-h", "127.0.0.1", "-p", &primary.port.to_string(), "-U", "postgres", "-R", "-X", "stream", "-D"])
                .arg(&data),
            "pg_basebackup",
        );
        let pg = PrivatePostgres { port: free_port(), data, _dir: dir };
        pg.start();
        pg
    }

    fn start(&self) {
        let socket = self.data.parent().unwrap();
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off", self.port, socket.display());
        let mut c = as_postgres("pg_ctl");
        c.args(["-w", "-l"]).arg(socket.join("log")).args(["-o", &opts, "-D"]).arg(&self.data).arg("start");
        run_ok(&mut c, "pg_ctl start");
    }

    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL through psql and returns its unaligned output.
    pub(crate) fn psql(&self, sql: &str) -> String {
        let out = Command::new("psql")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-Atc", sql, "postgres"])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut c = as_postgres("pg_ctl");
        c.args(["-m", "immediate", "-D"]).arg(&self.data).arg("stop").stdout(Stdio::null()).stderr(Stdio::null());
        let _ = c.status();
    }
}
