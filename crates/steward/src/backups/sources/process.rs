//! The dump and restore tools as child processes: stdout streamed into an object,
//! an object streamed into stdin, stderr kept (its tail) for the error message.
//! Credentials go in through the environment only. Each child leads its own process
//! group, so a cancelled backup stops `pg_dump -j` workers too.

use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

/// A tool that could not start or did not succeed. It travels inside an `io::Error`
/// (producers return `io::Result`), where [`super::SourceError`] tells it apart from a
/// local file's error.
#[derive(Debug)]
pub struct ToolFailed(pub String);

impl std::fmt::Display for ToolFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ToolFailed {}

/// A tool invocation.
#[derive(Debug, Clone, Default)]
pub struct Tool {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Run as this uid/gid (scratch servers refuse to run as root).
    pub user: Option<(u32, u32)>,
}

impl Tool {
    pub fn new(program: impl Into<String>) -> Tool {
        Tool { program: program.into(), ..Default::default() }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Tool {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Tool {
        self.env.push((k.to_string(), v.into()));
        self
    }

    pub fn user(mut self, user: Option<(u32, u32)>) -> Tool {
        self.user = user;
        self
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.program);
        c.args(&self.args).envs(self.env.iter().map(|(k, v)| (k, v))).process_group(0);
        if let Some((uid, gid)) = self.user {
            c.uid(uid).gid(gid);
        }
        c
    }

    fn spawn(&self, stdin: Stdio, stdout: Stdio, running: &Running) -> io::Result<std::process::Child> {
        let child = self.command().stdin(stdin).stdout(stdout).stderr(Stdio::piped()).spawn().map_err(|e| {
            io::Error::new(e.kind(), ToolFailed(format!("cannot start {}: {e} (is it installed and in PATH?)", self.program)))
        })?;
        running.add(child.id());
        Ok(child)
    }
}

/// The process groups of running tools, so a cancel or timeout can stop them.
#[derive(Debug, Clone, Default)]
pub struct Running(Arc<Mutex<Vec<u32>>>);

impl Running {
    fn add(&self, pid: u32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
    }

    fn remove(&self, pid: u32) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != pid);
    }

    /// SIGKILLs every running tool's process group.
    pub fn kill_all(&self) {
        for pid in self.0.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is touched.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}

/// Keeps the last bytes of a stream (a tool's stderr) for the error message.
fn tail_of(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut tail = Vec::new();
        let mut buf = [0u8; 8192];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 16 * 1024 {
                tail.drain(..tail.len() - 8 * 1024);
            }
        }
        String::from_utf8_lossy(&tail).trim().to_string()
    })
}

fn finish(
    tool: &Tool,
    mut child: std::process::Child,
    stderr: std::thread::JoinHandle<String>,
    running: &Running,
    io_error: Option<io::Error>,
) -> io::Result<String> {
    let status = child.wait()?;
    running.remove(child.id());
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").to_string();
        let how = match status.code() {
            Some(c) => format!("exited with {c}"),
            None => "was killed".to_string(),
        };
        return Err(io::Error::other(ToolFailed(format!(
            "{} {how}{}",
            tool.program,
            if last.is_empty() { String::new() } else { format!(": {last}") }
        ))));
    }
    if let Some(e) = io_error {
        return Err(e);
    }
    Ok(stderr)
}

/// Runs `tool`, streaming its stdout into `out`. Returns its stderr.
pub fn run_into(tool: &Tool, out: &mut dyn Write, running: &Running) -> io::Result<String> {
    let mut child = tool.spawn(Stdio::null(), Stdio::piped(), running)?;
    let stderr = tail_of(child.stderr.take().expect("stderr is piped"));
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let copied = io::copy(&mut stdout, out).err();
    if copied.is_some() {
        // The consumer failed (the upload stopped): do not leave the tool blocked.
        running.kill_all();
    }
    drop(stdout);
    finish(tool, child, stderr, running, copied)
}

/// Runs `tool`, streaming `input` into its stdin. Returns its stderr.
pub fn run_from(tool: &Tool, input: &mut dyn Read, running: &Running) -> io::Result<String> {
    let mut child = tool.spawn(Stdio::piped(), Stdio::null(), running)?;
    let stderr = tail_of(child.stderr.take().expect("stderr is piped"));
    let mut stdin = child.stdin.take().expect("stdin is piped");
    // A tool that exits early closes its stdin: its exit status and stderr explain why.
    let copied = io::copy(input, &mut stdin).err().filter(|e| e.kind() != io::ErrorKind::BrokenPipe);
    drop(stdin);
    finish(tool, child, stderr, running, copied)
}

/// Runs `tool` to the end and returns its stdout (small outputs only).
pub fn output(tool: &Tool) -> io::Result<String> {
    let out = tool
        .command()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), ToolFailed(format!("cannot start {}: {e}", tool.program))))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(io::Error::other(ToolFailed(format!("{} failed: {last}", tool.program))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// `program --version`, first line.
pub fn version(program: &str) -> Option<String> {
    output(&Tool::new(program).arg("--version")).ok().and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
}

/// When steward runs as root, scratch servers (which refuse root) run as this user:
/// `postgres` if it exists, else `nobody`.
pub fn unprivileged_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    for name in ["postgres", "nobody"] {
        let cname = std::ffi::CString::new(name).expect("no NUL");
        // SAFETY: getpwnam reads a static entry; we copy the ids out before any other call.
        let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
        if !pw.is_null() {
            // SAFETY: pw is non-null and points to a valid passwd entry.
            let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
            return Some((uid, gid));
        }
    }
    None
}

/// Gives a scratch directory to the user scratch servers run as.
pub fn hand_over(path: &std::path::Path, user: Option<(u32, u32)>) -> io::Result<()> {
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}
