//! `command`: run a program (no shell unless the user writes one) and read its exit
//! code and output. On timeout the whole process group is killed, so a script that
//! forked children leaves nothing behind.

use std::process::Stdio;

use serde_json::{Map, Value as Json};
use tokio::process::Command;

use super::read_bounded;
use crate::config::{CheckSpec, CommandProbe};

const OUTPUT_LIMIT: usize = 64 * 1024;

pub(super) async fn observe(p: &CommandProbe, spec: &CheckSpec) -> Result<Map<String, Json>, String> {
    let program = p.argv[0].expose();
    let mut cmd = Command::new(program);
    cmd.args(p.argv[1..].iter().map(|a| a.expose()))
        .envs(p.env.iter().map(|(k, v)| (k, v.expose())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &p.workdir {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start `{}`: {e}", p.argv[0]))?;
    let guard = GroupKiller(child.id());
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (out, err, status) = tokio::join!(read_bounded(stdout, OUTPUT_LIMIT), read_bounded(stderr, OUTPUT_LIMIT), child.wait());
    std::mem::forget(guard);
    let status = status.map_err(|e| format!("waiting for `{}` failed: {e}", p.argv[0]))?;
    let text = |r: std::io::Result<(Vec<u8>, bool)>| r.map(|(b, _)| String::from_utf8_lossy(&b).trim().to_string()).unwrap_or_default();
    let (stdout, stderr) = (text(out), text(err));
    let code = match status.code() {
        Some(c) => c,
        None => return Err(format!("`{}` was killed by a signal", p.argv[0])),
    };
    // Without a condition on the exit code, success means exit code 0, as in shell.
    if code != 0 && !spec.reads("exit_code") {
        let detail = if stderr.is_empty() { &stdout } else { &stderr };
        let detail: String = detail.chars().take(300).collect();
        return Err(format!(
            "`{}` exited with code {code}{}",
            p.argv[0],
            if detail.is_empty() { String::new() } else { format!(": {detail}") }
        ));
    }
    let mut obs = Map::new();
    obs.insert("exit_code".into(), Json::from(code));
    obs.insert("stdout".into(), Json::from(stdout));
    obs.insert("stderr".into(), Json::from(stderr));
    Ok(obs)
}

/// Kills the child's process group when the run is abandoned (timeout, shutdown).
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            // SAFETY: kill(2) with a negative pid signals the process group we created
            // with process_group(0); it has no memory-safety preconditions.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
}
