//! Runbooks end to end with real processes: injection attempts, secrets, kill -9 of
//! steward mid-run and the operator's resume, automatic continuation of idempotent
//! steps, approvals (granted, denied, timed out, wrong role), locks, timeouts that
//! kill whole process groups, cancellation, and the CLI's live view.

mod common;

use std::path::Path;
use std::time::Duration;

use common::alerting::request;
use common::{Server, create_token, steward, wait_for};
use serde_json::{Value, json};

fn start(base: &str, token: &str, runbook: &str, params: Value) -> (u16, Value) {
    request("POST", &format!("{base}/api/v1/runbooks/{runbook}/runs"), token, Some(json!({ "params": params })))
}

fn started(base: &str, token: &str, runbook: &str, params: Value) -> i64 {
    let (code, v) = start(base, token, runbook, params);
    assert_eq!(code, 201, "{v}");
    v["run"]["id"].as_i64().unwrap()
}

fn detail(base: &str, token: &str, id: i64) -> Value {
    let (code, v) = request("GET", &format!("{base}/api/v1/runs/{id}"), token, None);
    assert_eq!(code, 200, "{v}");
    v
}

fn wait_status(base: &str, token: &str, id: i64, status: &str, within: Duration) -> Value {
    wait_for(&format!("run {id} to be {status}"), within, || {
        let v = detail(base, token, id);
        (v["run"]["status"] == status).then_some(v)
    })
}

fn events(base: &str, token: &str, id: i64) -> Vec<Value> {
    let (code, v) = request("GET", &format!("{base}/api/v1/runs/{id}/events"), token, None);
    assert_eq!(code, 200, "{v}");
    v["events"].as_array().cloned().unwrap_or_default()
}

fn step<'a>(d: &'a Value, path: &str) -> Vec<&'a Value> {
    d["steps"].as_array().unwrap().iter().filter(|s| s["path"] == path).collect()
}

fn pid_alive(pid: i32) -> bool {
    // A zombie is dead for our purpose; /proc/PID/stat's state field says Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
}

fn write(dir: &Path, config: &str) -> std::path::PathBuf {
    let path = dir.join("steward.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

#[test]
fn parameters_never_become_code_and_bad_parameters_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let out = dir.path().join("out");
    let config = write(
        dir.path(),
        &format!(
            r#"runbooks:
  - name: echo-target
    params:
      target: string
      count: {{ type: int, default: 1, min: 1, max: 5 }}
    steps:
      - name: script
        shell:
          script: 'printf "%s\n" "$TARGET" >> {out}'
      - name: argv
        shell:
          argv: [sh, -c, 'printf "%s\n" "$1" >> {out}', sh, "{{{{ params.target }}}}"]
      - name: env
        shell:
          script: 'printf "%s\n" "$VALUE" >> {out}'
          env: {{ VALUE: "{{{{ steps.script.exit_code }}}} {{{{ params.target }}}}" }}
      - name: sql
        sql:
          url: postgres://postgres@127.0.0.1:5432/postgres
          query: select $1::text as echoed
          args: ["{{{{ params.target }}}}"]
      - name: redis
        redis: {{ url: "redis://127.0.0.1:6379", command: [ECHO, "{{{{ params.target }}}}"] }}
      - name: mariadb
        sql:
          url: mysql://root@127.0.0.1:3306/mysql
          query: select ? as echoed
          args: ["{{{{ params.target }}}}"]
      - name: mariadb_statement
        sql:
          url: mysql://root@127.0.0.1:3306/mysql
          query: do sleep(0)
    outputs:
      mariadb: "{{{{ steps.mariadb.row.echoed }}}}"
      affected: "{{{{ steps.mariadb_statement.rows_affected }}}}"
      sql: "{{{{ steps.sql.row.echoed }}}}"
      redis: "{{{{ steps.redis.reply }}}}"
"#,
            out = out.display()
        ),
    );
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "operator");
    let server = Server::start(&config, &data);
    let evil = format!("$(touch {m}); `touch {m}`; touch {m} && echo \"'; DROP TABLE x; --", m = marker.display());
    let id = started(&server.base, &token, "echo-target", json!({ "target": evil }));
    let d = wait_status(&server.base, &token, id, "succeeded", Duration::from_secs(20));
    assert!(!marker.exists(), "a parameter was executed as code");
    let lines: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(String::from).collect();
    assert_eq!(lines, vec![evil.clone(), evil.clone(), format!("0 {evil}")], "each step saw the exact text");
    assert_eq!(d["run"]["outputs"]["sql"], evil.as_str());
    assert_eq!(d["run"]["outputs"]["redis"], evil.as_str());
    assert_eq!(d["run"]["outputs"]["mariadb"], evil.as_str());
    assert_eq!(d["run"]["outputs"]["affected"], 0);

    // Bad parameters: one clear error per problem, and no run is created.
    let (code, v) = start(&server.base, &token, "echo-target", json!({"count": 9, "targt": "x"}));
    assert_eq!(code, 400, "{v}");
    let problems: Vec<String> =
        v["error"]["details"]["params"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    assert!(problems.iter().any(|p| p.contains("unknown parameter `targt`") && p.contains("did you mean `target`")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("`count`") && p.contains("above the maximum 5")), "{problems:?}");
    assert!(problems.iter().any(|p| p.contains("`target`") && p.contains("required")), "{problems:?}");
    let (_, list) = request("GET", &format!("{}/api/v1/runs", server.base), &token, None);
    assert_eq!(list["runs"].as_array().unwrap().len(), 1, "the rejected request created no run");
    let (code, v) = start(&server.base, &token, "no-such", json!({}));
    assert_eq!((code, v["error"]["code"].as_str()), (404, Some("not_found")));
    // Viewers may read and plan, not run.
    let viewer = create_token(&data, "victor", "viewer");
    let (code, _) = start(&server.base, &viewer, "echo-target", json!({"target": "x"}));
    assert_eq!(code, 403);
}

#[test]
fn secrets_are_masked_in_everything_recorded_and_scripts_do_not_inherit_stewards_environment() {
    let secret = "hunter2-runbook-secret-7f3a";
    // SAFETY: set before the server starts; the name is unique to this test.
    unsafe {
        std::env::set_var("STEWARD_TEST_RB_SECRET", secret);
        std::env::set_var("STEWARD_TEST_RB_INHERITED", "inherited-value-91c2");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        r#"runbooks:
  - name: leaky
    steps:
      - name: print
        shell:
          script: |
            echo "password is $PGPASSWORD"
            echo "again: $PGPASSWORD" >&2
            echo "inherited: [${STEWARD_TEST_RB_INHERITED:-}]"
          env: { PGPASSWORD: "${env:STEWARD_TEST_RB_SECRET}" }
      - name: long_line
        shell:
          script: 'head -c 16380 /dev/zero | tr "\\0" a; echo "$PGPASSWORD and more"'
          env: { PGPASSWORD: "${env:STEWARD_TEST_RB_SECRET}" }
      - name: fail
        shell:
          script: 'echo "bad password $PGPASSWORD" >&2; exit 3'
          env: { PGPASSWORD: "${env:STEWARD_TEST_RB_SECRET}" }
"#,
    );
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "operator");
    let server = Server::start(&config, &data);
    let (code, plan) = request("POST", &format!("{}/api/v1/runbooks/leaky/runs", server.base), &token, Some(json!({"dry_run": true})));
    assert_eq!(code, 200, "{plan}");
    assert!(!plan.to_string().contains(secret), "the plan shows the secret: {plan}");
    assert!(plan.to_string().contains("***"), "{plan}");
    let id = started(&server.base, &token, "leaky", json!({}));
    let d = wait_status(&server.base, &token, id, "failed", Duration::from_secs(20));
    let evs = events(&server.base, &token, id);
    let all = format!("{d}{}{}", Value::Array(evs.clone()), server.log());
    assert!(!all.contains(secret), "the secret leaked into the record or the log");
    assert!(evs.iter().any(|e| e["message"] == "password is ***"), "output is recorded, masked");
    assert!(evs.iter().any(|e| e["message"] == "inherited: []"), "scripts do not inherit steward's environment");
    // A line cut at 16 KiB in the middle of the secret shows no piece of it.
    let cut = evs.iter().find(|e| e["message"].as_str().unwrap().ends_with("(line cut)")).expect("the long line is cut");
    assert!(cut["message"].as_str().unwrap().ends_with("aaaa*** …(line cut)"), "{}", &cut["message"].as_str().unwrap()[16_000..]);
    assert!(d["run"]["error"].as_str().unwrap().contains("exited with code 3: bad password ***"), "{}", d["run"]["error"]);
}

const DURABLE: &str = r#"runbooks:
  - name: two-phase
    lock: two-phase
    steps:
      - name: one
        shell: { script: 'echo one >> "$DIR/log"' }
      - name: two
        shell: { script: 'echo two-start >> "$DIR/log"; [ -f "$DIR/fast" ] || sleep 60; echo two-end >> "$DIR/log"' }
      - name: three
        shell: { script: 'echo three >> "$DIR/log"' }
    params:
      dir: string
  - name: patient
    params:
      dir: string
    steps:
      - name: wait
        sleep: 3s
      - name: after
        shell: { script: 'echo after >> "$DIR/patient"' }
"#;

#[test]
fn kill_9_mid_run_leaves_an_honest_state_and_only_an_operator_resumes_it() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let config = write(dir.path(), DURABLE);
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "operator");
    let mut server = Server::start(&config, &data);
    let log = work.join("log");
    let id = started(&server.base, &token, "two-phase", json!({"dir": work.display().to_string()}));
    let patient = started(&server.base, &token, "patient", json!({"dir": work.display().to_string()}));
    wait_for("step two to start", Duration::from_secs(20), || std::fs::read_to_string(&log).ok().filter(|l| l.contains("two-start")));
    wait_for("the patient run to sleep", Duration::from_secs(10), || {
        (step(&detail(&server.base, &token, patient), "wait").first()?["status"] == "running").then_some(())
    });
    server.signal(libc::SIGKILL);
    let _ = server.child.wait();

    let server = Server::start(&config, &data);
    let d = wait_status(&server.base, &token, id, "interrupted", Duration::from_secs(10));
    assert_eq!(step(&d, "one")[0]["status"], "succeeded");
    assert_eq!(step(&d, "two")[0]["status"], "unknown", "{d}");
    assert!(step(&d, "three").is_empty(), "nothing ran after the unknown step");
    assert!(d["run"]["error"].as_str().unwrap().contains("steward stopped while two ran"), "{}", d["run"]["error"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(std::fs::read_to_string(&log).unwrap().matches("two-start").count(), 1, "the unknown step was not re-executed on its own");
    // The interrupted run keeps its lock: its state is unknown.
    let (code, v) = start(&server.base, &token, "two-phase", json!({"dir": "/nonexistent"}));
    assert_eq!(code, 409, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(&format!("held by run {id}")), "{v}");

    // The sleep is idempotent: that run continued by itself after the restart.
    wait_status(&server.base, &token, patient, "succeeded", Duration::from_secs(15));
    let auto = events(&server.base, &token, patient);
    assert!(auto.iter().any(|e| e["kind"] == "resumed" && e["actor"] == "steward"), "{auto:?}");

    // The operator looks, decides it is safe, and resumes from the CLI with --follow.
    std::fs::write(work.join("fast"), "").unwrap();
    let out =
        steward().args(["runs", "resume", &id.to_string(), "--follow", "--server", &server.base, "--token", &token]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("alice resumed the run; runs again: two"), "{stdout}");
    assert!(stdout.contains(&format!("run {id} succeeded")), "{stdout}");
    let lines: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(String::from).collect();
    assert_eq!(lines, vec!["one", "two-start", "two-start", "two-end", "three"], "step one ran once; two again on the operator's word");
    let d = detail(&server.base, &token, id);
    let attempts: Vec<(String, String)> =
        step(&d, "two").iter().map(|s| (s["attempt"].to_string(), s["status"].as_str().unwrap().to_string())).collect();
    assert_eq!(attempts, vec![("1".into(), "unknown".into()), ("2".into(), "succeeded".into())]);
    // The lock is free again, and the audit trail says who did what.
    let id2 = started(&server.base, &token, "two-phase", json!({"dir": work.display().to_string()}));
    wait_status(&server.base, &token, id2, "succeeded", Duration::from_secs(20));
    let (_, audit) = request("GET", &format!("{}/api/v1/audit?runbook=two-phase", server.base), &token, None);
    let trail: Vec<(i64, String, String)> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["run_id"].as_i64().unwrap(), e["kind"].as_str().unwrap().into(), e["actor"].as_str().unwrap().into()))
        .collect();
    assert_eq!(
        trail,
        vec![
            (id2, "run_started".into(), "alice".into()),
            (id, "resumed".into(), "alice".into()),
            (id, "run_started".into(), "alice".into())
        ]
    );
}

#[test]
fn approvals_are_granted_denied_or_time_out_and_need_the_right_person() {
    let dir = tempfile::tempdir().unwrap();
    let hook = common::alerting::Receiver::start(0);
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let config = write(
        dir.path(),
        &format!(
            r#"receivers:
  - {{name: ops, webhook: {{url: "{hook}"}}}}
runbooks:
  - name: failover
    params:
      region: {{ type: enum, values: [eu, us] }}
      wait: {{ type: duration, default: 1h }}
    steps:
      - name: confirm
        approve:
          prompt: "Promote the replica in {{{{ params.region }}}}? Data written since the last sync may be lost."
          role: admin
          distinct_approver: true
          timeout: "2s"
          notify: [ops]
      - name: promote
        shell: {{ script: 'echo "promoted $REGION by the word of $APPROVER" >> {log}', env: {{ APPROVER: "{{{{ steps.confirm.by }}}}" }} }}
    on_failure:
      - name: rollback
        shell: {{ script: 'echo "rolled back: $WHY" >> {log}', env: {{ WHY: "{{{{ failure.error }}}}" }} }}
"#,
            log = work.join("log").display(),
            hook = hook.url
        ),
    );
    let data = dir.path().join("data");
    let alice = create_token(&data, "alice", "admin");
    let bob = create_token(&data, "bob", "admin");
    let olga = create_token(&data, "olga", "operator");
    let server = Server::start(&config, &data);
    let base = &server.base;

    // Granted: not by an operator (role), not by the starter (four eyes), by bob.
    let id = started(base, &alice, "failover", json!({"region": "eu"}));
    let d = wait_status(base, &alice, id, "waiting", Duration::from_secs(10));
    assert_eq!(d["waiting_for_approval"], json!(["confirm"]));
    // Whoever can decide is told, with the prompt and the command to answer.
    let told = wait_for("the approval request to be announced", Duration::from_secs(10), || hook.accepted().into_iter().next());
    let summary = told.1["commonAnnotations"]["summary"].as_str().unwrap().to_string();
    assert_eq!(told.1["alerts"][0]["generatorURL"], format!("{base}/console/runs/{id}"), "the message links to the run's console page");
    assert!(
        summary.contains("Promote the replica in eu?") && summary.contains(&format!("steward runs approve {id} --step confirm")),
        "{summary}"
    );
    let (code, v) = request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &olga, Some(json!({})));
    assert_eq!(code, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("needs the admin role"), "{v}");
    let (code, v) = request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &alice, Some(json!({})));
    assert_eq!(code, 403, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("alice started this run"), "{v}");
    let out = steward()
        .args(["runs", "approve", &id.to_string(), "--comment", "lag is 0.2s", "--server", base, "--token", &bob])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    wait_status(base, &alice, id, "succeeded", Duration::from_secs(10));
    let log = || std::fs::read_to_string(work.join("log")).unwrap_or_default();
    assert_eq!(log(), "promoted eu by the word of bob\n");
    let evs = events(base, &alice, id);
    assert!(evs.iter().any(|e| e["kind"] == "approved" && e["actor"] == "bob" && e["message"].as_str().unwrap().contains("lag is 0.2s")));

    // Denied: the step fails, the rollback runs, nothing is promoted.
    let id = started(base, &alice, "failover", json!({"region": "us"}));
    wait_status(base, &alice, id, "waiting", Duration::from_secs(10));
    let (code, v) = request("POST", &format!("{base}/api/v1/runs/{id}/deny"), &bob, Some(json!({"comment": "lag too high"})));
    assert_eq!(code, 200, "{v}");
    let d = wait_status(base, &alice, id, "failed", Duration::from_secs(10));
    assert!(d["run"]["error"].as_str().unwrap().contains("denied by bob: lag too high"), "{}", d["run"]["error"]);
    assert!(d["run"]["error"].as_str().unwrap().contains("rolled back"), "{}", d["run"]["error"]);
    assert!(log().contains("rolled back: step `confirm` failed: denied by bob: lag too high"), "{}", log());
    assert!(!log().contains("promoted us"));

    // Nobody answers: the approval times out and fails the run.
    let id = started(base, &alice, "failover", json!({"region": "us"}));
    let d = wait_status(base, &alice, id, "failed", Duration::from_secs(15));
    assert!(d["run"]["error"].as_str().unwrap().contains("no decision within 2s"), "{}", d["run"]["error"]);
    // Approving a run that waits for nothing is a conflict, not a silent success.
    let (code, _) = request("POST", &format!("{base}/api/v1/runs/{id}/approve"), &bob, Some(json!({})));
    assert_eq!(code, 409);
}

#[test]
fn locks_exclude_and_timeouts_and_cancellation_kill_whole_process_groups() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let config = write(
        dir.path(),
        r#"runbooks:
  - name: hang
    params:
      region: string
      dir: string
      step_timeout: { type: bool, default: true }
    lock: "failover-{{ params.region }}"
    steps:
      - name: slow
        when: params.step_timeout
        timeout: 1s
        shell: { script: 'sleep 300 & echo $! > "$DIR/$REGION.pid"; wait' }
      - name: forever
        when: not params.step_timeout
        shell: { script: 'sleep 300 & echo $! > "$DIR/$REGION.pid"; wait' }
  - name: budget
    timeout: 1s
    params:
      dir: string
    steps:
      - name: slow
        shell: { script: 'sleep 300 & echo $! > "$DIR/budget.pid"; wait' }
"#,
    );
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "operator");
    let server = Server::start(&config, &data);
    let base = &server.base;
    let dir_param = work.display().to_string();
    let pid_of = |name: &str| -> i32 {
        wait_for(&format!("{name}.pid"), Duration::from_secs(10), || {
            std::fs::read_to_string(work.join(format!("{name}.pid"))).ok()?.trim().parse().ok()
        })
    };

    // A step timeout kills the step's whole process group, background children too.
    let id = started(base, &token, "hang", json!({"region": "eu", "dir": dir_param}));
    let child = pid_of("eu");
    assert!(pid_alive(child));
    // Meanwhile the lock keeps a second failover of the same region out, not another region.
    let (code, v) = start(base, &token, "hang", json!({"region": "eu", "dir": dir_param}));
    assert_eq!(code, 409, "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("lock `failover-eu` is held by run"), "{v}");
    let other = started(base, &token, "hang", json!({"region": "us", "dir": dir_param}));
    let d = wait_status(base, &token, id, "failed", Duration::from_secs(10));
    assert!(step(&d, "slow")[0]["error"].as_str().unwrap().contains("timed out after 1s"), "{d}");
    wait_for("the timed-out step's children to die", Duration::from_secs(5), || (!pid_alive(child)).then_some(()));
    wait_status(base, &token, other, "failed", Duration::from_secs(10));

    // The whole-run budget does the same.
    let id = started(base, &token, "budget", json!({"dir": dir_param}));
    let child = pid_of("budget");
    let d = wait_status(base, &token, id, "failed", Duration::from_secs(10));
    assert!(d["run"]["error"].as_str().unwrap().contains("timed out after 1s"), "{}", d["run"]["error"]);
    assert_eq!(step(&d, "slow")[0]["status"], "failed");
    wait_for("the run's children to die", Duration::from_secs(5), || (!pid_alive(child)).then_some(()));

    // Cancelling from the CLI stops the running step and releases the lock.
    let _ = std::fs::remove_file(work.join("eu.pid"));
    let id = started(base, &token, "hang", json!({"region": "eu", "dir": dir_param, "step_timeout": false}));
    let child = pid_of("eu");
    let out = steward()
        .args(["runs", "cancel", &id.to_string(), "--reason", "wrong region", "--server", base, "--token", &token])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = wait_status(base, &token, id, "cancelled", Duration::from_secs(10));
    assert_eq!(step(&d, "forever")[0]["status"], "cancelled");
    assert_eq!(step(&d, "slow")[0]["status"], "skipped");
    wait_for("the cancelled step's children to die", Duration::from_secs(5), || (!pid_alive(child)).then_some(()));
    let again = started(base, &token, "hang", json!({"region": "eu", "dir": dir_param}));
    wait_status(base, &token, again, "failed", Duration::from_secs(10));
    let evs = events(base, &token, id);
    assert!(
        evs.iter().any(|e| e["kind"] == "cancelled" && e["actor"] == "alice" && e["message"].as_str().unwrap().contains("wrong region"))
    );
}

#[test]
fn an_alert_starts_its_runbook_and_the_run_lands_in_the_incident_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = dir.path().join("healthy");
    std::fs::write(&healthy, "").unwrap();
    let config = write(
        dir.path(),
        &format!(
            r#"services:
  - {{name: api, tier: 2}}
checks:
{check}
alerts:
  - name: ApiDown
    when: check api-file unhealthy
    severity: critical
    labels: {{service: api}}
    runbook:
      name: restore-file
      mode: run
      params: {{ service: "{{{{ labels.service }}}}" }}
  - name: ApiDownSuggest
    when: check api-file unhealthy
    severity: warning
    labels: {{service: api}}
    runbook: restore-file
incidents:
  policies:
    - {{name: all, auto_resolve: true}}
runbooks:
  - name: restore-file
    params:
      service: {{ type: string, default: unused }}
    steps:
      - name: touch
        shell: {{ script: 'echo "restoring $SERVICE"; touch {healthy}' }}
"#,
            check = common::alerting::file_check("api-file", Some("api"), &healthy),
            healthy = healthy.display()
        ),
    );
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "operator");
    let server = Server::start(&config, &data);
    let base = &server.base;
    std::thread::sleep(Duration::from_millis(600));
    std::fs::remove_file(&healthy).unwrap();
    // The alert fires, its runbook restores the file, the check recovers.
    let run = wait_for("the alert to start its runbook", Duration::from_secs(20), || {
        let (_, v) = request("GET", &format!("{base}/api/v1/runs"), &token, None);
        v["runs"].as_array().and_then(|r| r.first().cloned())
    });
    assert_eq!(run["trigger"], "alert");
    assert_eq!(run["started_by"], "alert ApiDown");
    assert_eq!(run["params"]["service"], "api");
    let id = run["id"].as_i64().unwrap();
    wait_status(base, &token, id, "succeeded", Duration::from_secs(20));
    wait_for("the file to be restored", Duration::from_secs(5), || healthy.exists().then_some(()));
    let incident = wait_for("the incident to resolve with the run in its timeline", Duration::from_secs(30), || {
        let (_, v) = request("GET", &format!("{base}/api/v1/incidents?status=all"), &token, None);
        let first = v["incidents"].as_array()?.first()?.clone();
        let (_, d) = request("GET", &format!("{base}/api/v1/incidents/{}", first["id"]), &token, None);
        let runbook_entries: Vec<String> = d["timeline"]
            .as_array()?
            .iter()
            .filter(|e| e["kind"] == "runbook")
            .map(|e| e["text"].as_str().unwrap_or("").to_string())
            .collect();
        (d["incident"]["status"] == "resolved" && runbook_entries.iter().any(|t| t.contains("succeeded"))).then_some((d, runbook_entries))
    });
    let (d, entries) = incident;
    assert!(entries.iter().any(|t| t == &format!("Runbook restore-file run {id} succeeded")), "{entries:?}");
    // One run per firing, not one per evaluation.
    let (_, v) = request("GET", &format!("{base}/api/v1/runs"), &token, None);
    assert_eq!(v["runs"].as_array().unwrap().len(), 1, "{v}");
    // The suggest-only rule put the command in its alert's annotations instead.
    let (_, alerts) = request("GET", &format!("{base}/api/v1/alerts"), &token, None);
    let suggest = alerts["alerts"].as_array().unwrap().iter().find(|a| a["rule"] == "ApiDownSuggest").unwrap();
    assert_eq!(suggest["annotations"]["runbook"], "steward run restore-file");
    let auto = alerts["alerts"].as_array().unwrap().iter().find(|a| a["rule"] == "ApiDown").unwrap();
    assert_eq!(auto["annotations"]["runbook"], "started automatically: steward run restore-file -p service=api");
    assert!(d["alerts"].as_array().map_or(0, Vec::len) >= 1, "{d}");
}

#[test]
fn a_cron_schedule_starts_one_run_per_fire_even_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        r#"runbooks:
  - name: every-minute
    params:
      label: string
    schedule: { cron: "* * * * *", timezone: America/New_York, params: { label: nightly } }
    steps:
      - name: say
        shell: { script: 'echo "scheduled $LABEL"' }
"#,
    );
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "viewer");
    let mut server = Server::start(&config, &data);
    let runs = |base: &str| -> Vec<Value> {
        let (_, v) = request("GET", &format!("{base}/api/v1/runs"), &token, None);
        v["runs"].as_array().cloned().unwrap_or_default()
    };
    let first = wait_for("the schedule to fire", Duration::from_secs(75), || runs(&server.base).first().cloned());
    assert_eq!((first["trigger"].as_str(), first["started_by"].as_str()), (Some("schedule"), Some("schedule")));
    assert_eq!(first["params"]["label"], "nightly");
    let fired_minute = first["created_at"].as_str().unwrap()[..16].to_string();
    let id = first["id"].as_i64().unwrap();
    wait_status(&server.base, &token, id, "succeeded", Duration::from_secs(10));
    // A restart within the same minute does not fire that minute again.
    server.stop();
    let server = Server::start(&config, &data);
    std::thread::sleep(Duration::from_secs(3));
    let now_minute = chrono::Utc::now().to_rfc3339()[..16].to_string();
    let all = runs(&server.base);
    let same_minute = all.iter().filter(|r| r["created_at"].as_str().unwrap().starts_with(&fired_minute)).count();
    assert_eq!(same_minute, 1, "one run for the fire at {fired_minute} (now {now_minute}): {all:#?}");
    assert!(events(&server.base, &token, id).iter().any(|e| e["message"] == "scheduled nightly"));
}

#[test]
fn every_step_kind_composes_loops_parallel_calls_retries_and_notifications() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let hook = common::alerting::Receiver::start(0);
    let healthy = work.join("healthy");
    std::fs::write(&healthy, "").unwrap();
    let config = write(
        dir.path(),
        &format!(
            r#"checks:
{check}
receivers:
  - {{name: chat, webhook: {{url: "{hook}"}}}}
runbooks:
  - name: child
    params:
      who: string
    steps:
      - name: greet
        shell: {{ argv: [echo, "hello {{{{ params.who }}}}"] }}
    outputs:
      greeting: "{{{{ steps.greet.stdout }}}}"
  - name: everything
    params:
      dir: string
      nodes: {{ type: list, default: [a, b, c, d] }}
    steps:
      - name: flaky
        retries: 3
        retry_delay: 100ms
        shell: {{ script: 'n=$(cat "$DIR/tries" 2>/dev/null || echo 0); echo $((n+1)) > "$DIR/tries"; [ $((n+1)) -ge 3 ]' }}
      - name: both
        parallel:
          - name: left
            shell: {{ script: 'sleep 1; echo left' }}
          - name: right
            shell: {{ script: 'sleep 1; echo right' }}
      - name: fan_out
        continue_on_error: true
        for_each:
          items: params.nodes
          as: node
          concurrency: 4
          fail_fast: false
          steps:
            - name: visit
              shell: {{ script: 'sleep 1; [ "$NODE" != c ] || {{ echo "c is broken" >&2; exit 7; }}; echo "$NODE" >> "$DIR/visited"' }}
      - name: call
        runbook: {{ name: child, params: {{ who: "{{{{ steps.left.stdout }}}}" }} }}
      - name: healthy
        wait_until: {{ check: file-ok, timeout: 10s, interval: 200ms }}
      - name: status
        http: {{ url: "{hook}", method: POST, body: {{ probe: true }}, expect_status: [418] }}
        continue_on_error: true
      - name: tell
        notify: {{ receivers: [chat], message: "fan-out: {{{{ steps.fan_out.status }}}}, child said {{{{ steps.call.outputs.greeting }}}}" }}
    outputs:
      tries: "{{{{ steps.flaky.exit_code }}}}"
      greeting: "{{{{ steps.call.outputs.greeting }}}}"
      http: "{{{{ steps.status.http_status }}}}"
"#,
            check = common::alerting::file_check("file-ok", None, &healthy),
            hook = hook.url
        ),
    );
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "operator");
    let server = Server::start(&config, &data);
    let base = &server.base;
    let clock = std::time::Instant::now();
    let id = started(base, &token, "everything", json!({"dir": work.display().to_string()}));
    let d = wait_status(base, &token, id, "succeeded", Duration::from_secs(30));
    let took = clock.elapsed();
    // Retries: two failed attempts, then success.
    let flaky: Vec<String> = step(&d, "flaky").iter().map(|s| s["status"].as_str().unwrap().to_string()).collect();
    assert_eq!(flaky, vec!["failed", "failed", "succeeded"]);
    // Parallel branches and the four loop items (concurrency 4) ran at the same time:
    // each started before any of its group finished.
    let overlap = |paths: &[&str]| {
        let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
        let spans: Vec<_> = paths.iter().map(|p| (at(&step(&d, p)[0]["started_at"]), at(&step(&d, p)[0]["finished_at"]))).collect();
        let last_start = spans.iter().map(|s| s.0).max().unwrap();
        let first_end = spans.iter().map(|s| s.1).min().unwrap();
        assert!(last_start < first_end, "{paths:?} did not overlap: {spans:?}");
    };
    overlap(&["left", "right"]);
    overlap(&["fan_out[0].visit", "fan_out[1].visit", "fan_out[2].visit", "fan_out[3].visit"]);
    assert!(took < Duration::from_secs(30));
    // The loop went on past the broken item (fail_fast false) and the run past the loop.
    let mut visited: Vec<String> = std::fs::read_to_string(work.join("visited")).unwrap().lines().map(String::from).collect();
    visited.sort();
    assert_eq!(visited, vec!["a", "b", "d"]);
    assert_eq!(step(&d, "fan_out[2].visit")[0]["status"], "failed");
    assert!(step(&d, "fan_out")[0]["error"].as_str().unwrap().contains("exited with code 7: c is broken"), "{d:#}");
    // The called runbook is a run of its own, linked to its caller.
    assert_eq!(d["run"]["outputs"]["greeting"], "hello left");
    let (_, runs) = request("GET", &format!("{base}/api/v1/runs?runbook=child"), &token, None);
    assert_eq!(runs["runs"][0]["parent_run"], id);
    assert_eq!(runs["runs"][0]["trigger"], "runbook");
    assert_eq!(d["run"]["outputs"]["http"], 200, "the unexpected status was recorded and the run went on");
    assert_eq!(step(&d, "status")[0]["status"], "failed");
    // The notification went through the receiver, with the rendered message.
    let sent = wait_for("the notification", Duration::from_secs(10), || {
        hook.accepted().into_iter().find(|(_, v)| v["commonLabels"]["alertname"] == "RunbookNotification")
    });
    assert_eq!(sent.1["commonAnnotations"]["summary"], "fan-out: failed, child said hello left");
    assert_eq!(sent.1["commonLabels"]["run"], id.to_string());
}

#[test]
fn retry_reruns_a_failed_run_from_its_failed_step_and_resume_from_goes_back_further() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let config = write(
        dir.path(),
        r#"runbooks:
  - name: deploy
    params:
      dir: string
    steps:
      - name: build
        shell: { script: 'echo build >> "$DIR/log"' }
      - name: ship
        shell: { script: 'echo ship >> "$DIR/log"; [ -f "$DIR/ok" ]' }
      - name: verify
        shell: { script: 'echo verify >> "$DIR/log"' }
    on_failure:
      - name: rollback
        shell: { script: 'echo rollback >> "$DIR/log"' }
"#,
    );
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "operator");
    let server = Server::start(&config, &data);
    let base = &server.base;
    let log = || std::fs::read_to_string(work.join("log")).unwrap_or_default().lines().map(String::from).collect::<Vec<_>>();
    let id = started(base, &token, "deploy", json!({"dir": work.display().to_string()}));
    wait_status(base, &token, id, "failed", Duration::from_secs(10));
    let (code, v) = request("POST", &format!("{base}/api/v1/runs/{id}/resume"), &token, Some(json!({})));
    assert_eq!(code, 409, "resume is for interrupted runs: {v}");
    // Retried too early: it fails again, and the rollback runs again.
    let (code, v) = request("POST", &format!("{base}/api/v1/runs/{id}/retry"), &token, Some(json!({})));
    assert_eq!(code, 200, "{v}");
    wait_for("the retry to fail", Duration::from_secs(10), || (log().len() == 5).then_some(()));
    wait_status(base, &token, id, "failed", Duration::from_secs(10));
    std::fs::write(work.join("ok"), "").unwrap();
    let (code, v) = request("POST", &format!("{base}/api/v1/runs/{id}/retry"), &token, Some(json!({})));
    assert_eq!(code, 200, "{v}");
    wait_status(base, &token, id, "succeeded", Duration::from_secs(10));
    assert_eq!(log(), vec!["build", "ship", "rollback", "ship", "rollback", "ship", "verify"], "build is not repeated");
    let (code, _) = request("POST", &format!("{base}/api/v1/runs/{id}/retry"), &token, Some(json!({})));
    assert_eq!(code, 409, "a succeeded run is not retried");
    // A failed run retried from an earlier step runs that step and what follows again.
    std::fs::remove_file(work.join("ok")).unwrap();
    let id = started(base, &token, "deploy", json!({"dir": work.display().to_string()}));
    wait_status(base, &token, id, "failed", Duration::from_secs(10));
    std::fs::write(work.join("ok"), "").unwrap();
    let (code, v) = request("POST", &format!("{base}/api/v1/runs/{id}/retry"), &token, Some(json!({"from": "nope"})));
    assert_eq!(code, 400, "{v}");
    let (code, _) = request("POST", &format!("{base}/api/v1/runs/{id}/retry"), &token, Some(json!({"from": "build"})));
    assert_eq!(code, 200);
    wait_status(base, &token, id, "succeeded", Duration::from_secs(10));
    assert_eq!(log()[7..], ["build", "ship", "rollback", "build", "ship", "verify"]);
    let (_, audit) = request("GET", &format!("{base}/api/v1/audit"), &token, None);
    assert_eq!(audit["events"][0]["kind"], "retried");
    assert!(audit["events"][0]["message"].as_str().unwrap().contains("from step build"), "{audit}");
}

#[test]
fn a_run_whose_heartbeat_stopped_is_interrupted_by_the_sweep() {
    // Another steward (a replica, later) wrote a run and died: its heartbeat is old and
    // no task here runs it. The sweep marks it interrupted, its step unknown.
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "runbooks:\n  - name: orphan\n    steps:\n      - name: act\n        shell: { script: 'true' }\n");
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "viewer");
    let server = Server::start(&config, &data);
    let old = chrono::Utc::now().timestamp_millis() - 10 * 60 * 1000;
    let sql = format!(
        "insert into runs (id, runbook, params, status, trigger, started_by, created_ms, heartbeat_ms) values (77, 'orphan', '{{}}', 'running', 'manual', 'bob', {old}, {old}); \
         insert into run_steps (run_id, path, attempt, name, kind, status, started_ms, detail, result, output, seq) values (77, 'act', 1, 'act', 'shell', 'running', {old}, 'null', 'null', '', 1);"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import sqlite3; c=sqlite3.connect('{}', timeout=10); c.executescript(\"{sql}\"); c.commit()",
            data.join("steward.db").display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let d = wait_status(&server.base, &token, 77, "interrupted", Duration::from_secs(50));
    assert_eq!(step(&d, "act")[0]["status"], "unknown");
    assert!(d["run"]["error"].as_str().unwrap().contains("heartbeat stopped"), "{}", d["run"]["error"]);
}

#[test]
fn cancelling_a_run_cancels_the_run_it_called_and_a_timeout_does_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        r#"runbooks:
  - name: inner
    steps:
      - name: wait
        shell: { script: 'sleep 300' }
  - name: outer
    steps:
      - name: call
        runbook: inner
  - name: outer-budget
    timeout: 1s
    steps:
      - name: call
        runbook: inner
"#,
    );
    let data = dir.path().join("data");
    let token = create_token(&data, "alice", "operator");
    let server = Server::start(&config, &data);
    let base = &server.base;
    let child_of = |parent: i64| {
        wait_for("the called run", Duration::from_secs(10), || {
            let (_, v) = request("GET", &format!("{base}/api/v1/runs?runbook=inner"), &token, None);
            v["runs"].as_array()?.iter().find(|r| r["parent_run"] == parent).and_then(|r| r["id"].as_i64())
        })
    };
    let id = started(base, &token, "outer", json!({}));
    let child = child_of(id);
    let (code, _) = request("POST", &format!("{base}/api/v1/runs/{id}/cancel"), &token, Some(json!({})));
    assert_eq!(code, 200);
    wait_status(base, &token, id, "cancelled", Duration::from_secs(10));
    wait_status(base, &token, child, "cancelled", Duration::from_secs(10));

    let id = started(base, &token, "outer-budget", json!({}));
    let child = child_of(id);
    let d = wait_status(base, &token, id, "failed", Duration::from_secs(10));
    assert!(d["run"]["error"].as_str().unwrap().contains("timed out after 1s"), "{}", d["run"]["error"]);
    wait_status(base, &token, child, "cancelled", Duration::from_secs(10));
}
