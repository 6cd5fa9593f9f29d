//! The seeds' procedures under examples/<system>, run for real where they touch local
//! components (PostgreSQL backup and restore, a primary/standby failover, Redis
//! maintenance and backup) and planned with --dry-run where they need kubectl,
//! nodetool or aws.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::alerting::request;
use common::{PrivatePostgres, PrivateRedis, Server, create_token, steward, wait_for};
use serde_json::{Value, json};

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples").join(name)
}

/// The examples read the token for Steward's own API from this variable, and their
/// receivers', databases' and backups' secrets from the `${env:…}` references in their
/// files: each is set to a value of the shape its name says (values that reach nothing
/// here: the examples' production hosts do not resolve on this machine).
fn set_runbook_token(token: &str) {
    let reference = regex::Regex::new(r"\$\{env:([A-Z0-9_]+)\}").unwrap();
    let mut names = std::collections::BTreeSet::new();
    for system in ["chat-platform", "chat-rooms", "nexus-cos", "spoke", "tchat"] {
        for entry in std::fs::read_dir(example(system)).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            names.extend(reference.captures_iter(&text).map(|c| c[1].to_string()));
        }
    }
    // SAFETY: every test in this binary sets the same variables, to the same kind of
    // values, before starting a server; the servers read them once, at start.
    unsafe {
        std::env::set_var("STEWARD_RUNBOOK_TOKEN", token);
        for name in names.iter().filter(|n| *n != "STEWARD_RUNBOOK_TOKEN") {
            let value = if name.ends_with("_PAGERDUTY_KEY") {
                "0123456789abcdef0123456789abcdef"
            } else if name.ends_with("_WEBHOOK") {
                "http://127.0.0.1:9/slack"
            } else if name.ends_with("_BACKUP_KEY") {
                "AGE-SECRET-KEY-1EXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEEXAMPLEQ"
            } else {
                "example-secret-not-used-here-0123456789"
            };
            std::env::set_var(name, value);
        }
    }
}

fn run(base: &str, token: &str, runbook: &str, params: Value) -> i64 {
    let (code, v) = request("POST", &format!("{base}/api/v1/runbooks/{runbook}/runs"), token, Some(json!({ "params": params })));
    assert_eq!(code, 201, "{v}");
    v["run"]["id"].as_i64().unwrap()
}

fn wait_status(base: &str, token: &str, id: i64, status: &str, within: Duration) -> Value {
    wait_for(&format!("run {id} to be {status}"), within, || {
        let (_, v) = request("GET", &format!("{base}/api/v1/runs/{id}"), token, None);
        if v["run"]["status"] == status {
            return Some(v);
        }
        let s = v["run"]["status"].as_str().unwrap_or("");
        assert!(!["failed", "cancelled", "interrupted", "succeeded"].contains(&s) || s == status, "run {id} ended {s}: {v:#}");
        None
    })
}

fn psql(db: &str, sql: &str) -> String {
    let out = Command::new("psql").args(["-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-Atc", sql, db]).output().unwrap();
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every example validates on a machine without its secrets (the runbook token is not
/// set for this command), as a reviewer or CI would run it.
#[test]
fn every_example_validates() {
    for name in ["chat-platform", "chat-rooms", "nexus-cos", "spoke", "tchat"] {
        let out = steward().args(["validate", "-o", "json", "-c"]).arg(example(name)).env_remove("STEWARD_RUNBOOK_TOKEN").output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(out.status.success(), "{name}: {v:#}");
        assert!(v["runbooks"].as_u64().unwrap() >= 1, "{name}: {v}");
        for w in v["warnings"].as_array().unwrap() {
            let message = w["message"].as_str().unwrap();
            assert!(message.ends_with("is not set here") || message.ends_with("cannot be read here"), "{name}: {w}");
        }
    }
}

#[test]
fn spoke_backup_is_verified_by_a_restore_and_the_restore_runs_with_a_window_and_a_second_person() {
    let dir = tempfile::tempdir().unwrap();
    let pid = std::process::id();
    let (source, target) = (format!("spoke_ex_{pid}"), format!("spoke_ex_restored_{pid}"));
    for db in [&source, &target] {
        psql("postgres", &format!("drop database if exists {db}"));
    }
    psql("postgres", &format!("create database {source}"));
    psql(
        &source,
        "create table modules (id int primary key, name text); insert into modules select g, 'm' || g from generate_series(1, 42) g;",
    );
    psql(
        &source,
        "create table versions (id int primary key, module int references modules); insert into versions select g, 1 + g % 42 from generate_series(1, 100) g;",
    );
    let data = dir.path().join("data");
    let alice = create_token(&data, "alice", "operator");
    let bob = create_token(&data, "bob", "operator");
    set_runbook_token(&create_token(&data, "runbooks", "operator"));
    let server = Server::start(&example("spoke"), &data);
    let base = &server.base;
    let archives = dir.path().join("archives");

    let id = run(base, &alice, "postgres-backup", json!({"database": source, "dir": archives.display().to_string()}));
    let d = wait_status(base, &alice, id, "succeeded", Duration::from_secs(60));
    let archive = d["run"]["outputs"]["archive"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&archive).is_file(), "{archive}");
    assert_eq!(d["run"]["outputs"]["row_counts"], json!({"modules": 42, "versions": 100}));
    assert_eq!(
        psql("postgres", &format!("select count(*) from pg_database where datname like '{source}_verify_%'")),
        "0",
        "the scratch database is gone"
    );

    // A dump that cannot be taken fails the run, and the rollback leaves nothing behind.
    let failed = run(base, &alice, "postgres-backup", json!({"database": "no_such_db_x", "dir": archives.display().to_string()}));
    let d = wait_status(base, &alice, failed, "failed", Duration::from_secs(60));
    assert!(d["run"]["error"].as_str().unwrap().contains("source_counts"), "{}", d["run"]["error"]);
    assert!(d["run"]["error"].as_str().unwrap().contains("rolled back"), "{}", d["run"]["error"]);

    // Restore into a new database: waits for a second person, silences the service.
    let id = run(base, &alice, "postgres-restore", json!({"archive": archive, "database": target, "steward": base}));
    wait_status(base, &alice, id, "waiting", Duration::from_secs(30));
    let (code, v) = request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &alice, Some(json!({})));
    assert_eq!(code, 403, "the person who started the restore cannot approve it: {v}");
    let (code, v) =
        request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &bob, Some(json!({"comment": "backup from this morning, agreed"})));
    assert_eq!(code, 200, "{v}");
    let d = wait_status(base, &alice, id, "succeeded", Duration::from_secs(60));
    assert_eq!(d["run"]["outputs"]["tables"], 2);
    assert_eq!(psql(&target, "select count(*) from modules"), "42");
    assert_eq!(psql(&target, "select count(*) from versions"), "100");
    let (_, silences) = request("GET", &format!("{base}/api/v1/silences"), &alice, None);
    let window = silences["silences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["comment"].as_str().unwrap_or("").contains(&format!("by run {id}")))
        .cloned();
    let window = window.unwrap_or_else(|| panic!("no maintenance silence: {silences:#}"));
    assert_eq!(window["state"], "expired", "the window was ended after the restore: {window}");
    for db in [&source, &target] {
        psql("postgres", &format!("drop database if exists {db}"));
    }
}

#[test]
fn tchat_redis_maintenance_and_a_verified_rdb_backup_run_against_a_real_redis() {
    set_runbook_token("unused");
    let redis = PrivateRedis::start();
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_connection().unwrap();
    for i in 0..500 {
        let _: () = redis::cmd("SET").arg(format!("session:{i}")).arg("x".repeat(200)).query(&mut conn).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "operator");
    let server = Server::start(&example("tchat"), &data);
    let base = &server.base;

    // From the CLI, as an operator would: live progress and output, exit 0 on success.
    let out = steward()
        .args(["run", "redis-memory-maintenance", "-p", &format!("url={url}"), "--follow", "--server", base, "--token", &token])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for expected in [
        "[1/6] reachable: check redis-up",
        "[3/6] purge: MEMORY PURGE",
        "│ used memory: ",
        "✓ fragmentation_ok succeeded",
        "run 1 succeeded",
        "report = used memory:",
    ] {
        assert!(stdout.contains(expected), "expected {expected:?} in:\n{stdout}");
    }
    let id = 1;
    let d = wait_status(base, &token, id, "succeeded", Duration::from_secs(30));
    assert_eq!(d["steps"].as_array().unwrap().len(), 6, "every step is on record: {d:#}");
    let report = d["run"]["outputs"]["report"].as_str().unwrap();
    assert!(report.starts_with("used memory: ") && report.contains("fragmentation ratio"), "{report}");
    // The same run with an impossible limit fails at the gate, with the reason.
    let id = run(base, &token, "redis-memory-maintenance", json!({"url": url, "max_fragmentation": "0.001", "ignore_below_mb": 0}));
    let d = wait_status(base, &token, id, "failed", Duration::from_secs(30));
    assert!(d["run"]["error"].as_str().unwrap().contains("plan a restart"), "{}", d["run"]["error"]);

    let backups = dir.path().join("rdb");
    let id = run(base, &token, "redis-backup", json!({"port": redis.port, "dir": backups.display().to_string()}));
    let d = wait_status(base, &token, id, "succeeded", Duration::from_secs(60));
    let file = d["run"]["outputs"]["file"].as_str().unwrap();
    // 500 keys of 200 bytes each: LZF compresses the values, the key names remain.
    let size = std::fs::metadata(file).unwrap().len();
    assert!(size > 500 * 10, "the snapshot holds the data: {size} bytes");
    let verify = d["steps"].as_array().unwrap().iter().find(|s| s["path"] == "verify").unwrap();
    assert_eq!(verify["status"], "succeeded", "redis-check-rdb accepted it: {verify}");
    assert!(verify["output"].as_str().unwrap().contains("RDB looks OK"), "{verify}");
    assert_eq!(d["run"]["outputs"]["keys"], 500);
}

#[test]
fn nexus_region_failover_promotes_a_real_standby_after_the_lag_gate_and_an_approval() {
    let primary = PrivatePostgres::primary();
    primary
        .psql("create table messages (id int primary key, body text); insert into messages select g, 'hi' from generate_series(1, 250) g;");
    let standby = PrivatePostgres::standby_of(&primary);
    wait_for("the standby to replay", Duration::from_secs(20), || (standby.psql("select count(*) from messages") == "250").then_some(()));
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "t");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let operator = create_token(&data, "olga", "operator");
    let admin = create_token(&data, "ada", "admin");
    let server = Server::start(&example("nexus-cos"), &data);
    let base = &server.base;
    let id = run(base, &operator, "region-failover", json!({"replica_host": "127.0.0.1", "replica_port": standby.port}));
    let d = wait_status(base, &operator, id, "waiting", Duration::from_secs(30));
    assert_eq!(d["steps"][0]["status"], "succeeded", "the lag gate passed first: {d:#}");
    // The prompt carries the measured lag for the person deciding.
    let (_, evs) = request("GET", &format!("{base}/api/v1/runs/{id}/events"), &operator, None);
    let prompt = evs["events"].as_array().unwrap().iter().find(|e| e["kind"] == "approval_requested").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(prompt.contains("Continue with potential data loss?") && prompt.contains("caught up: yes"), "{prompt}");
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "t", "nothing is promoted before the approval");
    let (code, _) = request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &operator, Some(json!({})));
    assert_eq!(code, 403, "promotion needs an admin");
    let (code, v) = request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &admin, Some(json!({"comment": "eu-west is gone"})));
    assert_eq!(code, 200, "{v}");
    let d = wait_status(base, &operator, id, "succeeded", Duration::from_secs(60));
    assert_eq!(standby.psql("select pg_is_in_recovery()"), "f", "the standby is the primary now");
    standby.psql("insert into messages values (251, 'after failover')");
    assert_eq!(standby.psql("select count(*) from messages"), "251");
    let dns = d["steps"].as_array().unwrap().iter().find(|s| s["path"] == "switch_dns").unwrap();
    assert_eq!(dns["status"], "skipped", "no DNS zone given: {dns}");
    assert_eq!(d["run"]["outputs"]["new_primary"], format!("127.0.0.1:{}", standby.port));
}

#[test]
fn procedures_that_need_kubectl_nodetool_or_aws_are_shown_with_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "viewer");
    for (name, runbook, params, expected) in [
        (
            "chat-platform",
            "cassandra-rolling-repair",
            vec!["nodes=10.0.1.1,10.0.1.2"],
            vec![
                "repair[0].repair_node",
                "NODE=10.0.1.1",
                "repair[1].repair_finished",
                "NODE=10.0.1.2",
                "pause: 5m",
                "nodetool -h \"$NODE\" repair -pr \"$KEYSPACE\"",
            ],
        ),
        ("chat-rooms", "blue-green", vec!["version=v2.4.1"], vec!["VERSION=v2.4.1", "switch_back_to_blue", "on failure:", "sleep: 10m"]),
        (
            "chat-rooms",
            "canary",
            vec!["version=v2.4.1", "hold=1m"],
            vec![
                "ramp[0].set_weight",
                "WEIGHT=10",
                "ramp[3].set_weight",
                "WEIGHT=100",
                "query=sum%28rate%28http_requests_total",
                "sleep: 1m",
            ],
        ),
        (
            "nexus-cos",
            "region-failover",
            vec!["replica_host=10.9.8.7", "dns_zone=Z123"],
            vec!["needs approval by admin", "when params.dns_zone != \"\" → true: runs", "aws route53"],
        ),
    ] {
        set_runbook_token("unused");
        let server = Server::start(&example(name), &data);
        let mut cmd = steward();
        cmd.args(["run", runbook, "--dry-run", "--server", &server.base, "--token", &token]);
        for p in &params {
            cmd.args(["-p", p]);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{runbook}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        for e in expected {
            assert!(stdout.contains(e), "{runbook}: expected {e:?} in the plan:\n{stdout}");
        }
        let (_, runs) = request("GET", &format!("{}/api/v1/runs", server.base), &token, None);
        assert_eq!(runs["runs"].as_array().unwrap().len(), 0, "a dry run changes nothing");
    }
}

fn seed(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/seeds").join(format!("{name}.md"))
}

/// `steward runbook import` run as a user runs it: the YAML (stdout) and the report (stderr).
fn import(file: &Path) -> (i32, String, String) {
    let out = steward().args(["runbook", "import", "--report"]).arg(file).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The YAML validates as a configuration file of its own; returns it as JSON.
fn validates(yaml: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("imported.yaml");
    std::fs::write(&f, yaml).unwrap();
    let out = steward().args(["validate", "-o", "json", "-c"]).arg(&f).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert!(out.status.success(), "the import does not validate: {v:#}\n{yaml}");
    v
}

/// Each of the five seeds becomes runbooks `steward validate` accepts, with approvals
/// before their destructive blocks; the YAML and the report are snapshots a reviewer
/// reads in the diff (tests/snapshots/).
#[test]
fn every_seed_imports_into_runbooks_that_validate() {
    for name in ["chat-platform", "tchat", "nexus-cos", "chat-rooms", "spoke"] {
        let (code, yaml, report) = import(&seed(name));
        assert_eq!(code, 0, "{name}: {report}");
        let v = validates(&yaml);
        assert!(v["runbooks"].as_u64().unwrap() >= 3, "{name}: {v}");
        // Every shell block of the seed is a step or said not to be one.
        let text = std::fs::read_to_string(seed(name)).unwrap();
        let shell_blocks = text.lines().filter(|l| matches!(l.trim(), "```bash" | "```sh" | "```shell")).count();
        let steps = yaml.matches("        shell:\n").count();
        let empty = report.matches("a shell block with no command").count();
        assert_eq!(steps + empty, shell_blocks, "{name}: {shell_blocks} shell blocks, {steps} steps, {empty} without a command");
        insta::assert_snapshot!(format!("import_{name}_yaml"), yaml);
        insta::assert_snapshot!(format!("import_{name}_report"), report.replace(&seed(name).display().to_string(), name));
    }
    // The Nexus COS manual database failover promotes a replica: an approval comes first.
    let (_, yaml, report) = import(&seed("nexus-cos"));
    let failover = &yaml[yaml.find("  - name: database-primary-failure\n").expect("a runbook per section")..];
    let approve = failover.find("- name: approve-manual-failover").expect("an approval for the promotion");
    assert!(approve < failover.find("- name: manual-failover\n").unwrap(), "the approval comes before the step");
    assert!(report.contains("step `manual-failover` runs promote"), "{report}");
    // `<pod-name>` became a parameter and a quoted variable.
    assert!(yaml.contains("pod_name: { type: string") && yaml.contains("kubectl delete pod \"${POD_NAME}\" -n nexus-cos"), "{yaml}");
}

/// What a runbook file can get wrong — an unclosed fence, no headings, duplicate titles,
/// a title with no letters, tabs, blocks of other languages, a console transcript — and
/// the import still gives YAML that validates, saying what it did; a file that is not
/// text is refused.
#[test]
fn malformed_markdown_imports_what_it_can_and_says_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let md = dir.path().join("messy.md");
    std::fs::write(
        &md,
        "Some prose before any heading.\n\n```bash\necho before-any-heading\n```\n\n## Restart\n\n**Drain first**:\n\n```sh\nkubectl drain <node> --ignore-daemonsets\n```\n\n## Restart\n\n```bash\n\tsystemctl restart app # a tab\n```\n\n## !!!\n\n```yaml\nkey: value\n```\n\n```console\n$ redis-cli -p ${PORT:-6379} ping\nPONG\n```\n\n```\nan unlabelled block\n```\n\n## Broken\n\n```bash\necho never closed\n",
    )
    .unwrap();
    let (code, yaml, report) = import(&md);
    assert_eq!(code, 0, "{report}");
    let v = validates(&yaml);
    assert_eq!(v["runbooks"], 5, "{yaml}");
    insta::assert_snapshot!("import_malformed_yaml", yaml);
    insta::assert_snapshot!("import_malformed_report", report.replace(&md.display().to_string(), "messy.md"));

    let binary = dir.path().join("binary.md");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x41]).unwrap();
    let (code, out, err) = import(&binary);
    assert_eq!((code, out.as_str()), (1, ""), "{err}");
    assert!(err.contains("is not UTF-8"), "{err}");
    let (code, _, err) = import(&dir.path().join("missing.md"));
    assert_eq!(code, 1);
    assert!(err.contains("cannot read"), "{err}");
}

/// Export writes a runbook as Markdown a person reads, and import reads it back: the same
/// shell steps, by name and script, for every runbook of the examples.
#[test]
fn exported_runbooks_import_back_to_the_same_shell_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for name in ["chat-platform", "chat-rooms", "nexus-cos", "spoke", "tchat"] {
        let (config, _) = steward::config::load_deferring_secrets(&example(name)).unwrap_or_else(|d| panic!("{d}"));
        for rb in config.runbooks.iter().map(|r| r.name.clone()) {
            let out =
                steward().args(["runbook", "export", &rb, "-c"]).arg(example(name)).env("STEWARD_RUNBOOK_TOKEN", "t").output().unwrap();
            assert!(out.status.success(), "{name}/{rb}: {}", String::from_utf8_lossy(&out.stderr));
            let md = String::from_utf8(out.stdout).unwrap();
            assert!(md.starts_with(&format!("# {rb}\n")), "{md}");
            let file = dir.path().join(format!("{rb}.md"));
            std::fs::write(&file, &md).unwrap();
            let (code, yaml, report) = import(&file);
            assert_eq!(code, 0, "{report}");
            let original = shell_steps(&config, &rb);
            if original.is_empty() {
                continue;
            }
            // Read back in order; steps inside for_each and parallel come back flattened
            // between them, and destructive ones behind an approval.
            let imported = dir.path().join(format!("{rb}.yaml"));
            std::fs::write(&imported, &yaml).unwrap();
            let (back_config, _) = steward::config::load_deferring_secrets(&imported).unwrap_or_else(|d| panic!("{d}"));
            let back = shell_steps(&back_config, &rb);
            let mut rest = back.iter();
            for step in &original {
                assert!(rest.any(|b| b == step), "{name}/{rb}: {step:?} not read back in order from:\n{md}\n{yaml}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 5, "only {checked} runbooks with shell steps were exported and read back");
}

/// The `(step name, script)` of every top-level shell step of runbook `rb` (scripts as
/// the executor sees them, trailing blanks trimmed).
fn shell_steps(config: &steward::config::Config, rb: &str) -> Vec<(String, String)> {
    let Some(runbook) = config.runbooks.iter().find(|r| r.name == rb) else { return vec![] };
    runbook
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            steward::config::runbooks::StepKind::Shell(sh) => match &sh.program {
                steward::config::runbooks::ShellProgram::Script { text, .. } => {
                    Some((s.name.clone(), text.lines().map(str::trim_end).collect::<Vec<_>>().join("\n").trim().to_string()))
                }
                _ => None,
            },
            _ => None,
        })
        .collect()
}
