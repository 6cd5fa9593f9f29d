//! Helpers shared by the integration tests: real servers on loopback, private
//! instances of real components that a test may stop and restart, and the binary.
#![allow(dead_code)]

pub(crate) mod alerting;
pub(crate) mod browser;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub(crate) fn steward() -> Command {
    Command::new(env!("CARGO_BIN_EXE_steward"))
}

// Not every test binary that includes this module uses each of them.
#[allow(unused_imports)]
pub(crate) use steward_testkit::{PrivatePostgres, free_port, pg_tool};

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
        PrivatePrometheus::start_with_rules(targets, None)
    }

    /// [`PrivatePrometheus::start`], evaluating `rules` (a rule file's text) every second.
    pub(crate) fn start_with_rules(targets: &[String], rules: Option<&str>) -> PrivatePrometheus {
        PrivatePrometheus::start_with_history(targets, rules, None)
    }

    /// [`PrivatePrometheus::start_with_rules`], holding `history` (OpenMetrics text with
    /// timestamps, `# EOF`-terminated) written into its store by `promtool` before it starts.
    pub(crate) fn start_with_history(targets: &[String], rules: Option<&str>, history: Option<&str>) -> PrivatePrometheus {
        let dir = tempfile::tempdir().unwrap();
        if let Some(text) = history {
            let input = dir.path().join("history.om");
            std::fs::write(&input, text).unwrap();
            let out = Command::new("promtool")
                .args(["tsdb", "create-blocks-from", "openmetrics", "-q"])
                .arg(&input)
                .arg(dir.path().join("data"))
                .output()
                .expect("promtool comes with prometheus");
            assert!(out.status.success(), "promtool: {}", String::from_utf8_lossy(&out.stderr));
        }
        let list = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        let rule_files = match rules {
            Some(text) => {
                std::fs::write(dir.path().join("rules.yml"), text).unwrap();
                "rule_files: [rules.yml]\n"
            }
            None => "",
        };
        std::fs::write(
            dir.path().join("prometheus.yml"),
            format!("global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n{rule_files}scrape_configs:\n  - job_name: app\n    static_configs: [{{targets: [{list}]}}]\n"),
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
        Server::start_with(config, data, &[])
    }

    /// [`Server::start`] with more arguments (`--store postgres://…`).
    pub(crate) fn start_with(config: &Path, data: &Path, args: &[&str]) -> Server {
        Server::start_on(config, data, free_port(), args, &[])
    }

    /// [`Server::start_with`] on a given port (for a configuration that names its own
    /// URL) and with more environment variables (secrets, PATH).
    pub(crate) fn start_on(config: &Path, data: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(steward(), config, data, port, args, env)
    }

    /// [`Server::start`] from another copy of the binary (one the `postgres` user can
    /// run, for a recovery's `restore_command`, which names the running binary).
    #[allow(dead_code)]
    pub(crate) fn start_binary(binary: &Path, config: &Path, data: &Path) -> Server {
        Server::launch(Command::new(binary), config, data, free_port(), &[], &[])
    }

    fn launch(mut program: Command, config: &Path, data: &Path, port: u16, args: &[&str], env: &[(&str, &str)]) -> Server {
        let child = program
            .envs(env.iter().copied())
            .args(["serve", "-c"])
            .arg(config)
            .arg("--data")
            .arg(data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(args)
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
