//! The command line as a person and a script meet it: where the server and token come
//! from, what errors say, what is printed, and what ships beside the binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{Server, create_token, steward};

fn config_with_a_runbook(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("steward.yaml");
    std::fs::write(
        &config,
        "checks:\n  - {name: c, interval: 1h, tcp: {address: '127.0.0.1:1'}}\nrunbooks:\n  - name: restart\n    steps:\n      - name: go\n        shell: {argv: [sh, -c, 'sleep 1; echo restarted']}\n",
    )
    .unwrap();
    config
}

/// Was: tokens passed only by flag or environment (shell history, `ps`); errors did not
/// name the server; `--server host:port` without a scheme said "builder error"; a fresh
/// `serve` said nothing about creating the first token.
#[test]
fn the_server_and_token_come_from_flags_a_token_file_or_the_client_profile() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_a_runbook(dir.path());
    let data = dir.path().join("data");
    let server = Server::start(&config, &data);
    common::wait_for("the first-token hint", Duration::from_secs(10), || {
        server.log().contains("steward token create --data").then_some(())
    });
    let token = create_token(&data, "ops", "operator");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let profile = dir.path().join("client.yaml");
    let host_port = server.base.trim_start_matches("http://").to_string();
    std::fs::write(&profile, format!("server: {host_port}\ntoken_file: {}\n", token_file.display())).unwrap();
    let run = |args: &[&str], envs: &[(&str, &str)]| {
        let mut c = steward();
        c.args(args).env_remove("STEWARD_TOKEN").env_remove("STEWARD_SERVER").env("STEWARD_CLIENT_CONFIG", dir.path().join("none.yaml"));
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    // The profile alone: server (host:port, no scheme) and token file.
    let profile_env = [("STEWARD_CLIENT_CONFIG", profile.to_str().unwrap())];
    let out = run(&["runbooks"], &profile_env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("restart"));
    // Flags win over the profile.
    let out = run(&["runbooks", "--server", &host_port, "--token-file", token_file.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // No token anywhere: exit 2, and the error says how to give one.
    let out = run(&["runbooks", "--server", &host_port], &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--token-file") && err.contains(&host_port), "{err}");
    // A refused request names the server it went to.
    let out = run(&["runbooks", "--server", &host_port, "--token", "wrong"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&server.base), "{}", String::from_utf8_lossy(&out.stderr));
    // A server that is not a URL is said to be one thing, clearly.
    let out = run(&["runbooks", "--server", "ftp://x", "--token", "t"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http:// or https://"));
    // An unknown key in the profile is an error at its position.
    std::fs::write(&profile, format!("server: {host_port}\ntokn_file: x\n")).unwrap();
    let out = run(&["runbooks"], &profile_env);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("client.yaml:2:1") && err.contains("did you mean `token_file`"), "{err}");
    // `steward ready` answers for containers and scripts, without a token.
    let out = run(&["ready", "--server", &host_port], &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run(&["ready", "--server", &format!("127.0.0.1:{}", common::free_port())], &[]);
    assert_eq!(out.status.code(), Some(1));
}

/// Was: dry runs and `--follow` printed argv unquoted (`sh -c sleep 1; echo restarted`),
/// which reads as three commands.
#[test]
fn plans_show_argv_shell_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_a_runbook(dir.path());
    let data = dir.path().join("data");
    let token = create_token(&data, "ops", "operator");
    let server = Server::start(&config, &data);
    let out = steward().args(["run", "restart", "--dry-run", "--server", &server.base, "--token", &token]).output().unwrap();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{plan}{}", String::from_utf8_lossy(&out.stderr));
    assert!(plan.contains("$ sh -c 'sleep 1; echo restarted'"), "{plan}");
}

/// Completions and man pages come from the same definition as `--help`.
#[test]
fn completions_and_man_pages_are_generated_for_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = steward().args(["completions", shell]).output().unwrap();
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("steward") && script.contains("backup") && script.contains("--token-file"), "{shell}: {script}");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = steward().args(["man", "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for page in ["steward.1", "steward-serve.1", "steward-backup-restore.1", "steward-keys-rotate.1"] {
        let text = std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page} is not a man page");
    }
    // Every argument says what it is for.
    let help = String::from_utf8_lossy(&steward().args(["incident", "ack", "--help"]).output().unwrap().stdout).to_string();
    assert!(help.contains("Exit") || help.contains("--note"), "{help}");
}

/// The systemd units (single node, and one replica of several) pass `systemd-analyze
/// verify` (with the binary they would run), and the replica's command line parses.
#[test]
fn the_systemd_units_verify() {
    for name in ["steward.service", "steward-replica.service"] {
        verify_unit(name);
    }
    let unit = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/steward-replica.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).unwrap().replace("%H", "replica-1");
    let mut words = exec.split_whitespace().skip(1).collect::<Vec<_>>();
    words.push("--help");
    let out = steward().args(&words).output().unwrap();
    assert!(out.status.success(), "the replica's command line does not parse: {}", String::from_utf8_lossy(&out.stderr));
}

fn verify_unit(name: &str) {
    let unit = std::fs::read_to_string(format!("{}/../../packaging/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    for needed in ["ProtectSystem=strict", "NoNewPrivileges=true", "ReadWritePaths=/var/lib/steward", "ExecReload=", "UMask=0077"] {
        assert!(unit.contains(needed), "{name} lacks {needed}");
    }
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join(name);
    // The binary this build made, no user to look up, and no installed man page to find.
    let testable = unit
        .replace("/usr/local/bin/steward", env!("CARGO_BIN_EXE_steward"))
        .replace("User=steward\nGroup=steward\n", "")
        .replace("Documentation=man:steward-serve(1)\n", "");
    std::fs::write(&local, testable).unwrap();
    let out = std::process::Command::new("systemd-analyze").arg("verify").arg(&local).output();
    let Ok(out) = out else { panic!("systemd-analyze is needed (Debian: systemd)") };
    let stderr = String::from_utf8_lossy(&out.stderr);
    let problems: Vec<&str> = stderr.lines().filter(|l| l.contains(name)).collect();
    assert!(problems.is_empty(), "systemd-analyze verify: {stderr}");
}

/// A YAML document as JSON, through steward's own YAML reader.
fn yaml_file(path: &std::path::Path) -> serde_json::Value {
    use steward::config::yaml::{Node, Value as Y};
    fn json(n: &Node) -> serde_json::Value {
        match &n.value {
            Y::Null => serde_json::Value::Null,
            Y::Bool(b) => (*b).into(),
            Y::Int(i) => (*i).into(),
            Y::Float(f) => (*f).into(),
            Y::Str { text, .. } => text.clone().into(),
            Y::Seq(items) => items.iter().map(json).collect(),
            Y::Map(entries) => entries.iter().map(|(k, v)| (k.scalar_text().unwrap_or_default(), json(v))).collect(),
        }
    }
    let text = std::fs::read_to_string(path).unwrap();
    json(&steward::config::yaml::parse(&std::sync::Arc::from(path.display().to_string()), &text).unwrap())
}

/// The Kubernetes manifests: three replicas, ready on /health/ready, the password from
/// a Secret, a disruption budget over the same pods, and a configuration and command
/// line that steward itself accepts.
#[test]
fn the_kubernetes_manifests_run_three_replicas_on_a_secret_password() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/kubernetes"));
    let deployment = yaml_file(&dir.join("deployment.yaml"));
    let (pdb, service, config) =
        (yaml_file(&dir.join("pdb.yaml")), yaml_file(&dir.join("service.yaml")), yaml_file(&dir.join("configmap.yaml")));
    assert_eq!(deployment["spec"]["replicas"], 3);
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment["spec"]["selector"]["matchLabels"], labels);
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels, "the budget covers the replicas");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert_eq!(&service["spec"]["selector"], labels);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/health/ready");
    let password = container["env"].as_array().unwrap().iter().find(|e| e["name"] == "PGPASSWORD").expect("PGPASSWORD is set");
    assert_eq!(password["valueFrom"]["secretKeyRef"]["name"], "steward-db");
    // The command line parses as it is written (the pod IP filled in by Kubernetes).
    let args: Vec<String> =
        container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().replace("$(POD_IP)", "10.1.2.3")).collect();
    let out = steward().args(&args).arg("--help").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The configuration validates, with the password as the Secret would give it.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), config["data"]["steward.yaml"].as_str().unwrap()).unwrap();
    let out = steward().args(["validate", "-c"]).arg(file.path()).env("PGPASSWORD", "from-the-secret").output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Without the Secret (a reviewer's machine, CI) it still validates and names what is
    // missing; on the pod, --require-secrets refuses it, as serve would.
    let out = steward().args(["validate", "-c"]).arg(file.path()).env_remove("PGPASSWORD").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("warning: environment variable `PGPASSWORD` is not set here"), "{stdout}");
    let out = steward().args(["validate", "--require-secrets", "-c"]).arg(file.path()).env_remove("PGPASSWORD").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "without the Secret the store's password is missing, and validate says so");
    assert!(String::from_utf8_lossy(&out.stderr).contains("PGPASSWORD"), "{}", String::from_utf8_lossy(&out.stderr));
}
