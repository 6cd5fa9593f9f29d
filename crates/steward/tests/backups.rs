//! Backups through the binary, against real PostgreSQL, MariaDB, Redis and
//! directories: back up, prove it by restoring into a scratch instance, restore on
//! demand, catch corruption, survive a kill, prune by a readable plan.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::alerting::request;
use common::{PrivateNats, PrivateRedis, Server, create_token, free_port, port_open, steward, wait_for};
use serde_json::Value;

/// The output of one `steward backup …` run.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

/// A configuration and a data directory in a temporary directory.
struct Env {
    dir: tempfile::TempDir,
    /// Environment for every command (secrets the configuration references).
    vars: Vec<(String, String)>,
}

impl Env {
    fn new(config: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let config = config.replace("$DIR", dir.path().to_str().unwrap());
        std::fs::write(dir.path().join("steward.yaml"), config).unwrap();
        Env { dir, vars: Vec::new() }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn backup(&self, args: &[&str]) -> Out {
        self.backup_by(steward(), args)
    }

    /// `steward backup …` run with the copy of the binary `archiving` gave PostgreSQL:
    /// a restore's `restore_command` names the binary that runs it.
    fn backup_copied(&self, args: &[&str]) -> Out {
        self.backup_by(Command::new(self.path("steward")), args)
    }

    fn backup_by(&self, mut steward: Command, args: &[&str]) -> Out {
        let out = steward
            .arg("backup")
            .args(args)
            .arg("-c")
            .arg(self.path("steward.yaml"))
            .arg("-d")
            .arg(self.path("data"))
            .envs(self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into(),
            stderr: String::from_utf8_lossy(&out.stderr).into(),
        }
    }

    /// `backup run POLICY` that must succeed; returns the record.
    fn run(&self, policy: &str) -> Value {
        let out = self.backup(&["run", policy, "-o", "json"]);
        assert_eq!(out.code, 0, "backup run {policy} failed:\n{}\n{}", out.stdout, out.stderr);
        let v = out.json();
        assert_eq!(v["status"], "succeeded", "{v}");
        v
    }

    fn list(&self, policy: &str) -> Vec<Value> {
        let out = self.backup(&["list", policy, "-o", "json"]);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out.json()["backups"].as_array().unwrap().clone()
    }

    fn verify(&self, id: &str, restore_test: bool) -> (i32, Value) {
        let mut args = vec!["verify", id, "-o", "json"];
        if restore_test {
            args.push("--restore-test");
        }
        let out = self.backup(&args);
        assert!(out.code == 0 || out.code == 1, "verify crashed ({}): {}", out.code, out.stderr);
        (out.code, out.json()["verifications"][0].clone())
    }

    /// The repository folder of one backup.
    fn stored(&self, policy: &str, id: &str) -> PathBuf {
        self.path("repo").join(policy).join(id)
    }

    /// Flips one bit in the middle of the backup's first data object.
    fn corrupt(&self, policy: &str, id: &str) {
        let dir = self.stored(policy, id).join("data");
        let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let mut bytes = std::fs::read(&file).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&file, bytes).unwrap();
    }
}

mod reqwest {
    /// GET a text body (the metrics page needs no token).
    pub(crate) fn blocking_get(url: &str) -> String {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async { ::reqwest::get(url).await.unwrap().text().await.unwrap() })
    }
}

fn id_of(record: &Value) -> String {
    record["id"].as_str().unwrap().to_string()
}

fn psql(db: &str, sql: &str) -> String {
    let out =
        Command::new("psql").args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql]).output().unwrap();
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn mariadb(sql: &str) -> String {
    let out = Command::new("mariadb").args(["-h", "127.0.0.1", "-u", "root", "-N", "-B", "-e", sql]).output().unwrap();
    assert!(out.status.success(), "mariadb {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn unique(prefix: &str) -> String {
    format!("{prefix}_{}_{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos() % 100_000
}

fn keygen(path: &Path) {
    let out = steward().args(["backup", "keygen"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("age1"), "keygen tells the public recipient");
    std::fs::write(path, &out.stdout).unwrap();
}

#[test]
fn postgres_backups_are_proven_by_restore_tests_restore_safely_and_corruption_is_caught() {
    let db = unique("bk_pg");
    psql("postgres", &format!("CREATE DATABASE {db}"));
    psql(
        &db,
        "CREATE TABLE orders (id bigint PRIMARY KEY, note text); \
         INSERT INTO orders SELECT g, md5(g::text) FROM generate_series(1, 20000) g; \
         CREATE SCHEMA billing; CREATE TABLE billing.invoices (id int, total numeric); \
         INSERT INTO billing.invoices SELECT g, g * 1.5 FROM generate_series(1, 321) g;",
    );
    let env = Env::new(&format!(
        r#"
repositories:
  - name: local
    path: $DIR/repo
backups:
  - name: orders
    postgres: {{ url: "postgres://postgres@127.0.0.1:5432/{db}" }}
    schedule: "0 2 * * *"
    repository: local
    compression: 6
    encryption: {{ key: "${{file:$DIR/backup.key}}" }}
    verify:
      schedule: "0 6 * * *"
      restore_test: true
      assertions:
        - {{ name: orders present, query: "SELECT count(*) >= 20000 FROM orders" }}
  - name: orders-parallel
    postgres: {{ url: "postgres://postgres@127.0.0.1:5432/{db}", format: directory, jobs: 2 }}
    schedule: "0 3 * * *"
    repository: local
"#
    ));
    keygen(&env.path("backup.key"));

    // Back up: the record says what verification will compare.
    let record = env.run("orders");
    let id = id_of(&record);
    assert!(record["plain_bytes"].as_i64().unwrap() > 100_000, "{record}");
    assert!(record["stored_bytes"].as_i64().unwrap() < record["plain_bytes"].as_i64().unwrap(), "compressed: {record}");
    assert!(env.stored("orders", &id).join("manifest.json").exists());
    let manifest = std::fs::read_to_string(env.stored("orders", &id).join("manifest.json")).unwrap();
    assert!(manifest.contains("\"public.orders\"") && manifest.contains("20000"), "row counts recorded: {manifest}");
    assert!(manifest.contains("age-x25519"), "encrypted: {manifest}");

    // Level 2: restored into a scratch cluster, counts and the assertion compared.
    let (code, v) = env.verify(&id, true);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["result"], "passed", "{v}");
    assert_eq!(v["level"], 2);
    assert!(v["restore_ms"].as_i64().unwrap() > 0, "restore time recorded as RTO evidence: {v}");
    let matched = v["detail"]["matched"].to_string();
    assert!(matched.contains("public.orders: 20000 rows") && matched.contains("billing.invoices: 321 rows"), "{v}");
    assert!(matched.contains("assertion `orders present` holds"), "{v}");

    // The directory format with two jobs backs up and restore-tests the same way.
    let parallel = env.run("orders-parallel");
    let (code, v) = env.verify(&id_of(&parallel), true);
    assert_eq!(code, 0, "{v}");

    // Restore refuses a database that holds data, and changes nothing.
    let source_url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let refused = env.backup(&["restore", &id, "--to", &source_url, "--yes"]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(refused.stderr.contains("not empty") && refused.stderr.contains("--force"), "{}", refused.stderr);
    // Without a terminal and without --yes it refuses to go ahead.
    let copy = format!("{db}_copy");
    psql("postgres", &format!("CREATE DATABASE {copy}"));
    let copy_url = format!("postgres://postgres@127.0.0.1:5432/{copy}");
    let unconfirmed = env.backup(&["restore", &id, "--to", &copy_url]);
    assert_eq!(unconfirmed.code, 4, "{}", unconfirmed.stderr);
    let dry = env.backup(&["restore", &id, "--to", &copy_url, "--dry-run", "-o", "json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert_eq!(dry.json()["dry_run"], true);
    assert_eq!(psql(&copy, "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"), "0");
    // Into an empty database: data equal.
    let restored = env.backup(&["restore", &id, "--to", &copy_url, "--yes", "-o", "json"]);
    assert_eq!(restored.code, 0, "{}", restored.stderr);
    assert_eq!(restored.json()["result"]["comparison"]["differences"], Value::Array(vec![]), "{}", restored.stdout);
    assert_eq!(psql(&copy, "SELECT count(*), sum(id) FROM orders"), psql(&db, "SELECT count(*), sum(id) FROM orders"));
    assert_eq!(psql(&copy, "SELECT sum(total) FROM billing.invoices"), psql(&db, "SELECT sum(total) FROM billing.invoices"));
    // --force replaces what is there.
    psql(&copy, "DELETE FROM orders WHERE id > 10");
    let forced = env.backup(&["restore", &id, "--to", &copy_url, "--yes", "--force", "-o", "json"]);
    assert_eq!(forced.code, 0, "{}", forced.stderr);
    assert_eq!(psql(&copy, "SELECT count(*) FROM orders"), "20000");
    // Each restore is on the record: who, where, whether it replaced data, how it ended.
    let shown = env.backup(&["show", &id, "-o", "json"]).json();
    let restores = shown["restores"].as_array().unwrap();
    assert_eq!(restores.len(), 2, "dry runs and refusals are not restores: {shown}");
    assert_eq!((&restores[0]["result"], &restores[0]["replaced"]), (&Value::from("succeeded"), &Value::from(true)), "{shown}");
    assert_eq!((&restores[1]["result"], &restores[1]["replaced"]), (&Value::from("succeeded"), &Value::from(false)), "{shown}");
    assert!(restores[0]["actor"].as_str().is_some_and(|a| !a.is_empty()) && restores[0]["target"] == copy_url.as_str(), "{shown}");

    // One flipped bit in a stored object: verify says the backup is corrupt.
    env.corrupt("orders", &id);
    let (code, v) = env.verify(&id, false);
    assert_eq!(code, 1, "{v}");
    assert_eq!(v["result"], "failed");
    assert!(v["detail"].to_string().contains("corrupt"), "{v}");
    let (code, v) = env.verify(&id, true);
    assert_eq!(code, 1, "a restore test of a corrupt backup fails too: {v}");
    let listed = env.list("orders");
    assert_eq!(listed[0]["verify_result"], "failed", "the list shows the last verification: {}", listed[0]);
    // Restoring the corrupt backup over data is refused before the target is touched.
    psql(&copy, "DELETE FROM orders WHERE id > 10");
    let damaged = env.backup(&["restore", &id, "--to", &copy_url, "--yes", "--force"]);
    assert_eq!(damaged.code, 1, "{}", damaged.stderr);
    assert!(damaged.stderr.contains("is corrupt") && damaged.stderr.contains("was not changed"), "{}", damaged.stderr);
    assert_eq!(psql(&copy, "SELECT count(*) FROM orders"), "10", "the target is as it was");
    let shown = env.backup(&["show", &id, "-o", "json"]).json();
    assert_eq!(shown["restores"][0]["result"], "failed", "{shown}");
    assert_eq!(shown["restores"][0]["detail"]["result"]["target_touched"], false, "{shown}");
    assert_eq!(shown["restores"][0]["detail"]["result"]["error_kind"], "repository", "the record says where to look: {shown}");
    let table = env.backup(&["show", &id]);
    assert!(table.stdout.contains("RESTORED") && table.stdout.contains("(replaced)"), "{}", table.stdout);

    psql("postgres", &format!("DROP DATABASE {copy}"));
    psql("postgres", &format!("DROP DATABASE {db}"));
}

#[test]
fn mariadb_backups_restore_test_in_a_scratch_database_and_restore_into_another() {
    let db = unique("bk_my");
    mariadb(&format!(
        "CREATE DATABASE {db}; USE {db}; \
         CREATE TABLE {db}.customers (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB; \
         INSERT INTO {db}.customers SELECT seq, CONCAT('c', seq) FROM seq_1_to_5000; \
         CREATE TABLE {db}.events (id INT, kind VARCHAR(10)) ENGINE=InnoDB; \
         INSERT INTO {db}.events SELECT seq, 'login' FROM seq_1_to_777;"
    ));
    let env = Env::new(&format!(
        r#"
repositories:
  - name: local
    path: $DIR/repo
backups:
  - name: shop
    mysql: {{ url: "mysql://root@127.0.0.1:3306/{db}" }}
    schedule: "0 2 * * *"
    repository: local
    verify:
      schedule: "0 6 * * *"
      restore_test: true
      assertions:
        - {{ name: customers present, query: "SELECT COUNT(*) = 5000 FROM customers" }}
"#
    ));
    let id = id_of(&env.run("shop"));
    let (code, v) = env.verify(&id, true);
    assert_eq!(code, 0, "{v}");
    let matched = v["detail"]["matched"].to_string();
    assert!(matched.contains("customers: 5000 rows") && matched.contains("events: 777 rows"), "{v}");
    assert!(matched.contains("assertion `customers present` holds"), "{v}");
    // The scratch database is gone afterwards.
    assert_eq!(mariadb("SELECT COUNT(*) FROM information_schema.schemata WHERE schema_name LIKE 'steward_restore_%'"), "0");

    let target = format!("{db}_copy");
    mariadb(&format!("CREATE DATABASE {target}"));
    let out = env.backup(&["restore", &id, "--to", &format!("mysql://root@127.0.0.1:3306/{target}"), "--yes", "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        mariadb(&format!("SELECT COUNT(*), SUM(id) FROM {target}.customers")),
        mariadb(&format!("SELECT COUNT(*), SUM(id) FROM {db}.customers"))
    );
    let refused = env.backup(&["restore", &id, "--to", &format!("mysql://root@127.0.0.1:3306/{db}"), "--yes"]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);

    env.corrupt("shop", &id);
    let (code, v) = env.verify(&id, false);
    assert_eq!(code, 1, "{v}");
    assert!(v["detail"].to_string().contains("corrupt"), "{v}");
    mariadb(&format!("DROP DATABASE {db}; DROP DATABASE {target}"));
}

#[test]
fn redis_backups_are_checked_restored_into_a_scratch_server_and_as_a_loadable_rdb() {
    let redis = PrivateRedis::start();
    let mut load =
        Command::new("redis-cli").args(["-p", &redis.port.to_string()]).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    {
        use std::io::Write;
        let stdin = load.stdin.as_mut().unwrap();
        for i in 0..3000 {
            writeln!(stdin, "SET key:{i} value-{i}").unwrap();
        }
        writeln!(stdin, "SELECT 2").unwrap();
        for i in 0..40 {
            writeln!(stdin, "HSET h:{i} field {i}").unwrap();
        }
        // Sessions: keys that expire between the backup and its restore test.
        for i in 0..25 {
            writeln!(stdin, "SET session:{i} x PX 6000").unwrap();
        }
    }
    assert!(load.wait().unwrap().success());
    let loaded = std::time::Instant::now();
    let env = Env::new(&format!(
        r#"
repositories:
  - name: local
    path: $DIR/repo
backups:
  - name: cache
    redis: {{ url: "redis://127.0.0.1:{}" }}
    schedule: "0 * * * *"
    repository: local
"#,
        redis.port
    ));
    let record = env.run("cache");
    let id = id_of(&record);
    assert!(loaded.elapsed() < Duration::from_secs(6), "the backup took longer than the sessions' TTL");
    assert_eq!(record["facts"]["keys"]["all"], 3065, "{record}");
    // The sessions' TTL passes: a server loading the snapshot drops them, and that is
    // not a difference (fewer than the keys without a TTL would be).
    std::thread::sleep(Duration::from_secs(6).saturating_sub(loaded.elapsed()) + Duration::from_millis(200));
    let (code, v) = env.verify(&id, true);
    assert_eq!(code, 0, "{v}");
    let matched = v["detail"]["matched"].to_string();
    assert!(matched.contains("3040 keys loaded of 3065 at backup; the other 25 had a TTL"), "the snapshot's key count compared: {v}");

    // Restored as an RDB file that a real redis-server loads.
    let rdb = env.path("restored/dump.rdb");
    let out = env.backup(&["restore", &id, "--to", rdb.to_str().unwrap(), "--yes", "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let port = free_port();
    let mut server = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--appendonly", "no", "--dir"])
        .arg(env.path("restored"))
        .args(["--dbfilename", "dump.rdb"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the restored redis to listen", Duration::from_secs(10), || port_open(port).then_some(()));
    let dbsize = |db: &str| {
        let out = Command::new("redis-cli").args(["-p", &port.to_string(), "-n", db, "DBSIZE"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let sizes = wait_for("the restored redis to load the RDB", Duration::from_secs(10), || {
        let s = (dbsize("0"), dbsize("2"));
        (!s.0.contains("LOADING")).then_some(s)
    });
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(sizes, ("3000".to_string(), "40".to_string()), "the sessions expired; everything else is there");

    // A second restore to the same file is refused without --force.
    let refused = env.backup(&["restore", &id, "--to", rdb.to_str().unwrap(), "--yes"]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);

    env.corrupt("cache", &id);
    let (code, v) = env.verify(&id, false);
    assert_eq!(code, 1, "{v}");
}

fn write_tree(root: &Path) {
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("readme.txt"), "the plain text nobody may read in the repository").unwrap();
    std::fs::write(root.join("a/b/data.bin"), (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    std::fs::write(root.join("a/empty"), "").unwrap();
}

#[test]
fn encrypted_directory_backups_round_trip_and_a_wrong_key_is_named() {
    let env = Env::new(
        r#"
repositories:
  - name: local
    path: $DIR/repo
backups:
  - name: files
    directory: { path: $DIR/src }
    schedule: "0 2 * * *"
    repository: local
    compression: "zstd:9"
    encryption: { key: "${file:$DIR/backup.key}" }
"#,
    );
    write_tree(&env.path("src"));
    keygen(&env.path("backup.key"));
    let id = id_of(&env.run("files"));

    // Nothing readable in the repository.
    for entry in walk(&env.stored("files", &id).join("data")) {
        let bytes = std::fs::read(&entry).unwrap();
        assert!(!bytes.windows(14).any(|w| w == b"the plain text"), "{} holds plain text", entry.display());
    }
    let target = env.path("restored");
    let out = env.backup(&["restore", &id, "--to", target.to_str().unwrap(), "--yes", "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    for f in ["readme.txt", "a/b/data.bin", "a/empty"] {
        assert_eq!(std::fs::read(env.path("src").join(f)).unwrap(), std::fs::read(target.join(f)).unwrap(), "{f}");
    }
    let (code, v) = env.verify(&id, true);
    assert_eq!(code, 0, "{v}");

    // Another key: verification and restore say the key is wrong, and write nothing.
    keygen(&env.path("backup.key"));
    let (code, v) = env.verify(&id, false);
    assert_eq!(code, 1, "{v}");
    assert!(v["detail"].to_string().contains("key"), "{v}");
    let elsewhere = env.path("restored-2");
    let out = env.backup(&["restore", &id, "--to", elsewhere.to_str().unwrap(), "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("key"), "{}", out.stderr);
    assert!(!elsewhere.join("readme.txt").exists(), "nothing half-written");
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn a_backup_killed_midway_is_never_complete_its_lease_holds_until_expiry_and_the_next_run_succeeds() {
    let env = Env::new(
        r#"
repositories:
  - name: local
    path: $DIR/repo
backups:
  - name: big
    directory: { path: $DIR/src }
    schedule: "0 2 * * *"
    repository: local
    compression: 19
"#,
    );
    // Incompressible data at the slowest level: the backup takes long enough to be killed.
    std::fs::create_dir_all(env.path("src")).unwrap();
    let mut state = 0x9e3779b97f4a7c15u64;
    let noise: Vec<u8> = (0..64 * 1024 * 1024)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(env.path("src/noise.bin"), noise).unwrap();

    let mut child = steward()
        .args(["backup", "run", "big", "-c"])
        .arg(env.path("steward.yaml"))
        .arg("-d")
        .arg(env.path("data"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let killed = wait_for("the backup to be running", Duration::from_secs(30), || {
        env.list("big").into_iter().find(|b| b["status"] == "running").map(|b| id_of(&b))
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the backup finished before it could be killed; make it bigger");
    child.kill().unwrap(); // SIGKILL: no chance to clean up
    child.wait().unwrap();

    // Nothing complete: no manifest, not listed as succeeded.
    assert!(!env.stored("big", &killed).join("manifest.json").exists());
    assert!(env.list("big").iter().all(|b| b["status"] != "succeeded"));
    // Its lease is still live: another run is refused, naming the holder.
    let busy = env.backup(&["run", "big"]);
    assert_eq!(busy.code, 3, "{}\n{}", busy.stdout, busy.stderr);
    assert!(busy.stderr.contains(&killed), "{}", busy.stderr);

    // Once the lease expires the next run takes it over and succeeds; the killed
    // backup is settled as interrupted and its leftovers are removed.
    let record = wait_for("the lease to expire", Duration::from_secs(60), || {
        let out = env.backup(&["run", "big", "-o", "json"]);
        match out.code {
            3 => {
                std::thread::sleep(Duration::from_secs(2));
                None
            }
            0 => Some(out.json()),
            other => panic!("backup run exited {other}: {}", out.stderr),
        }
    });
    assert_eq!(record["status"], "succeeded");
    let all = env.list("big");
    let old = all.iter().find(|b| b["id"] == killed.as_str()).unwrap();
    assert_eq!(old["status"], "interrupted", "{old}");
    assert!(old["error"].as_str().unwrap().contains("stopped during the backup"), "{old}");
    assert!(!env.stored("big", &killed).exists(), "the interrupted backup's objects are removed");
    let (code, v) = env.verify(&id_of(&record), false);
    assert_eq!(code, 0, "{v}");
}

#[test]
fn prune_prints_a_plan_with_reasons_and_deletes_only_what_it_says() {
    let env = Env::new(
        r#"
repositories:
  - name: local
    path: $DIR/repo
backups:
  - name: files
    directory: { path: $DIR/src }
    schedule: "0 2 * * *"
    repository: local
    retention: { keep_last: 2, min_keep: 1 }
  - name: forever
    directory: { path: $DIR/src }
    schedule: "0 2 * * *"
    repository: local
"#,
    );
    write_tree(&env.path("src"));
    let ids: Vec<String> = (0..4).map(|_| id_of(&env.run("files"))).collect();

    let dry = env.backup(&["prune", "files", "--dry-run", "-o", "json"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let plan = dry.json()["plans"][0].clone();
    let items = plan["items"].as_array().unwrap();
    assert_eq!(items.len(), 4);
    let keep: Vec<&str> = items.iter().filter(|i| i["keep"] == true).map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(keep, vec![ids[3].as_str(), ids[2].as_str()], "{plan}");
    assert!(items[0]["reasons"].to_string().contains("newest successful backup"), "{plan}");
    assert!(items.iter().all(|i| !i["reasons"].as_array().unwrap().is_empty()), "every line says why: {plan}");
    for id in &ids {
        assert!(env.stored("files", id).join("manifest.json").exists(), "a dry run deletes nothing");
    }
    let table = env.backup(&["prune", "files", "--dry-run"]);
    assert!(table.stdout.contains("would delete 2") && table.stdout.contains("keep_last 2"), "{}", table.stdout);

    let applied = env.backup(&["prune", "files", "-o", "json"]);
    assert_eq!(applied.code, 0, "{}", applied.stderr);
    let mut deleted: Vec<String> =
        applied.json()["plans"][0]["deleted"].as_array().unwrap().iter().map(|d| d.as_str().unwrap().to_string()).collect();
    deleted.sort();
    let mut oldest = vec![ids[0].clone(), ids[1].clone()];
    oldest.sort();
    assert_eq!(deleted, oldest);
    assert!(!env.stored("files", &ids[0]).exists() && !env.stored("files", &ids[1]).exists());
    assert!(env.stored("files", &ids[2]).exists() && env.stored("files", &ids[3]).exists());
    let statuses: Vec<String> = env.list("files").iter().map(|b| b["status"].as_str().unwrap().to_string()).collect();
    assert_eq!(statuses, vec!["succeeded", "succeeded", "deleted", "deleted"]);

    // A policy without retention rules is never pruned.
    env.run("forever");
    let refused = env.backup(&["prune", "forever"]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("no retention rules"), "{}", refused.stderr);
    assert_eq!(env.list("forever").len(), 1);
}

#[test]
fn backup_commands_explain_mistakes_and_change_nothing() {
    let env = Env::new(
        r#"
repositories:
  - name: local
    path: $DIR/repo
backups:
  - name: files
    directory: { path: $DIR/src }
    schedule: "0 2 * * *"
    repository: local
"#,
    );
    let unknown = env.backup(&["run", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("no backup policy `nope`") && unknown.stderr.contains("files"), "{}", unknown.stderr);
    let bad_id = env.backup(&["verify", "../../etc/passwd"]);
    assert_eq!(bad_id.code, 1);
    assert!(bad_id.stderr.contains("not a backup id"), "{}", bad_id.stderr);
    let no_latest = env.backup(&["verify", "--latest"]);
    assert_eq!(no_latest.code, 1);
    assert!(no_latest.stderr.contains("no successful backup"), "{}", no_latest.stderr);
    // A source that does not exist fails the backup, recorded with the reason.
    let failed = env.backup(&["run", "files", "-o", "json"]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let v = failed.json();
    assert_eq!(v["status"], "failed");
    assert!(v["error"].as_str().unwrap().contains("src"), "{v}");
    assert!(!env.path("repo/files").exists() || walk(&env.path("repo/files")).is_empty(), "a failed backup leaves no objects");
}

#[test]
fn the_server_takes_scheduled_backups_serves_them_through_the_api_and_checks_freshness() {
    let env = Env::new(
        r#"
repositories:
  - name: local
    path: $DIR/repo
backups:
  - name: files
    directory: { path: $DIR/src }
    repository: local
    retention: { keep_last: 1, min_keep: 1 }
checks:
  - name: files-backup-verified
    interval: 1s
    backup: { policy: files, max_age: 1h }
  - name: files-backup-taken
    interval: 1s
    backup: { policy: files, max_age: 1h, verified: false, conditions: [ "backup.size_bytes > 1000" ] }
"#,
    );
    write_tree(&env.path("src"));
    let server = Server::start(&env.path("steward.yaml"), &env.path("data"));
    let admin = create_token(&env.path("data"), "admin", "admin");
    let viewer = create_token(&env.path("data"), "viewer", "viewer");
    let base = format!("{}/api/v1", server.base);
    let health =
        |check: &str| request("GET", &format!("{base}/checks/{check}"), &viewer, None).1["health"].as_str().unwrap_or("").to_string();
    wait_for("the freshness check to fail with no backup", Duration::from_secs(15), || {
        (health("files-backup-taken") == "unhealthy").then_some(())
    });
    let reason = request("GET", &format!("{base}/checks/files-backup-taken"), &viewer, None).1.to_string();
    assert!(reason.contains("has no successful backup"), "{reason}");

    // Through the API: roles first, then a backup that runs in the background.
    let (code, v) = request("POST", &format!("{base}/backups/run"), &viewer, Some(serde_json::json!({"policy": "files"})));
    assert_eq!((code, v["error"]["code"].as_str()), (403, Some("forbidden")), "{v}");
    let (code, v) = request("POST", &format!("{base}/backups/run"), &admin, Some(serde_json::json!({"policy": "nope"})));
    assert_eq!(code, 404, "{v}");
    let (code, v) = request("POST", &format!("{base}/backups/run"), &admin, Some(serde_json::json!({"policy": "files"})));
    assert_eq!(code, 202, "{v}");
    let id = v["backup"]["id"].as_str().unwrap().to_string();
    assert_eq!(v["backup"]["status"], "running");
    wait_for("the API backup to succeed", Duration::from_secs(30), || {
        let b = request("GET", &format!("{base}/backups/{id}"), &viewer, None).1;
        (b["backup"]["status"] == "succeeded").then_some(())
    });
    wait_for("the taken-backup check to pass", Duration::from_secs(15), || (health("files-backup-taken") == "healthy").then_some(()));
    assert_eq!(health("files-backup-verified"), "unhealthy", "not verified yet");
    let (code, _) = request("POST", &format!("{base}/backups/{id}/verify"), &admin, Some(serde_json::json!({"restore_test": true})));
    assert_eq!(code, 202);
    wait_for("the verification to pass", Duration::from_secs(30), || {
        let b = request("GET", &format!("{base}/backups/{id}"), &viewer, None).1;
        (b["verifications"][0]["result"] == "passed").then_some(())
    });
    wait_for("the verified-backup check to pass", Duration::from_secs(15), || (health("files-backup-verified") == "healthy").then_some(()));

    // Restore: operators may only dry-run; a non-empty target is a 409 that changes nothing.
    let target = env.path("restored");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep.txt"), "mine").unwrap();
    let body = serde_json::json!({"to": target.to_str().unwrap()});
    let (code, v) = request("POST", &format!("{base}/backups/{id}/restore"), &admin, Some(body));
    assert_eq!(code, 409, "{v}");
    assert_eq!(std::fs::read_to_string(target.join("keep.txt")).unwrap(), "mine");
    let fresh = env.path("restored-fresh");
    let (code, v) =
        request("POST", &format!("{base}/backups/{id}/restore"), &admin, Some(serde_json::json!({"to": fresh.to_str().unwrap()})));
    assert_eq!(code, 200, "{v}");
    assert_eq!(std::fs::read(fresh.join("a/b/data.bin")).unwrap(), std::fs::read(env.path("src/a/b/data.bin")).unwrap());
    // The restore is on the backup's record, as the token that asked for it.
    let shown = request("GET", &format!("{base}/backups/{id}"), &viewer, None).1;
    assert_eq!(shown["restores"].as_array().map(Vec::len), Some(1), "the refused restore is not one: {shown}");
    assert_eq!((&shown["restores"][0]["actor"], &shown["restores"][0]["result"]), (&"admin".into(), &"succeeded".into()), "{shown}");

    // A schedule added by a reload fires within a minute; retention (keep_last 1) runs
    // after it. (Scheduled from the start, a backup at a minute boundary could land
    // before the "no backup" check failed, or delete the API backup mid-test.)
    let config = std::fs::read_to_string(env.path("steward.yaml")).unwrap();
    let scheduled = config.replace("    repository: local\n", "    schedule: \"* * * * *\"\n    repository: local\n");
    assert_ne!(scheduled, config);
    std::fs::write(env.path("steward.yaml"), scheduled).unwrap();
    let (code, v) = request("POST", &format!("{base}/config/reload"), &admin, None);
    assert_eq!(code, 200, "{v}");
    let scheduled = wait_for("a scheduled backup", Duration::from_secs(75), || {
        let list = request("GET", &format!("{base}/backups?policy=files"), &viewer, None).1;
        list["backups"].as_array().unwrap().iter().find(|b| b["trigger"] == "schedule" && b["status"] == "succeeded").cloned()
    });
    wait_for("retention to delete the API backup", Duration::from_secs(15), || {
        let b = request("GET", &format!("{base}/backups/{id}"), &viewer, None).1;
        (b["backup"]["status"] == "deleted").then_some(())
    });
    assert!(env.stored("files", scheduled["id"].as_str().unwrap()).join("manifest.json").exists());

    let metrics = reqwest::blocking_get(&format!("{}/metrics", server.base));
    assert!(metrics.contains("steward_backup_last_success_timestamp_seconds{policy=\"files\"}"), "{metrics}");
    assert!(metrics.contains("steward_backup_last_verification_success{policy=\"files\"} 1"), "{metrics}");
}

/// A local S3-compatible server (s3s-fs: buckets are directories under `root`) that
/// checks every request's SigV4 signature against one access key.
struct LocalS3 {
    port: u16,
    root: tempfile::TempDir,
    _thread: std::thread::JoinHandle<()>,
}

impl LocalS3 {
    const KEY: &str = "steward-test-key";
    const SECRET: &str = "steward-test-secret-0123456789";

    fn start(bucket: &str) -> LocalS3 {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join(bucket)).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let dir = root.path().to_path_buf();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let mut b = s3s::service::S3ServiceBuilder::new(s3s_fs::FileSystem::new(dir).unwrap());
                b.set_auth(s3s::auth::SimpleAuth::from_single(Self::KEY, Self::SECRET));
                let service = b.build();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                loop {
                    let (socket, _) = listener.accept().await.unwrap();
                    let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone()).into_owned();
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                }
            });
        });
        LocalS3 { port, root, _thread: thread }
    }
}

#[test]
fn backups_land_in_an_s3_compatible_repository_are_verified_restored_and_pruned_there() {
    let s3 = LocalS3::start("backups");
    let mut env = Env::new(&format!(
        r#"
repositories:
  - name: cloud
    s3:
      bucket: backups
      prefix: prod/steward
      endpoint: http://127.0.0.1:{}
      allow_http: true
      access_key_id: ${{env:TEST_S3_KEY}}
      secret_access_key: ${{env:TEST_S3_SECRET}}
backups:
  - name: files
    directory: {{ path: $DIR/src }}
    schedule: "0 2 * * *"
    repository: cloud
    encryption: {{ key: "${{file:$DIR/backup.key}}" }}
    retention: {{ keep_last: 1 }}
"#,
        s3.port
    ));
    env.vars = vec![("TEST_S3_KEY".into(), LocalS3::KEY.into()), ("TEST_S3_SECRET".into(), LocalS3::SECRET.into())];
    write_tree(&env.path("src"));
    keygen(&env.path("backup.key"));
    let first = id_of(&env.run("files"));
    let in_bucket = s3.root.path().join("backups/prod/steward/files").join(&first);
    assert!(in_bucket.join("manifest.json").exists(), "the manifest is in the bucket under the prefix");
    let (code, v) = env.verify(&first, true);
    assert_eq!(code, 0, "{v}");
    let target = env.path("restored");
    let out = env.backup(&["restore", &first, "--to", target.to_str().unwrap(), "--yes"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(std::fs::read(target.join("a/b/data.bin")).unwrap(), std::fs::read(env.path("src/a/b/data.bin")).unwrap());

    // A flipped bit in the bucket is caught.
    let object = std::fs::read_dir(in_bucket.join("data")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&object).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x80;
    std::fs::write(&object, bytes).unwrap();
    let (code, v) = env.verify(&first, false);
    assert_eq!(code, 1, "{v}");
    assert!(v["detail"].to_string().contains("corrupt"), "{v}");

    // Retention deletes in the bucket too.
    let second = id_of(&env.run("files"));
    let out = env.backup(&["prune", "files", "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!in_bucket.join("manifest.json").exists(), "pruned from the bucket");
    assert!(s3.root.path().join("backups/prod/steward/files").join(&second).join("manifest.json").exists());

    // A wrong secret: a clear error that never shows the secret, and no backup.
    env.vars[1].1 = "not-the-secret-at-all".into();
    let out = env.backup(&["run", "files", "-o", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(!all.contains("not-the-secret-at-all") && !all.contains(LocalS3::SECRET), "{all}");
    assert_eq!(out.json()["status"], "failed", "{}", out.stdout);
}

/// Creates stream `name` on subjects `name.>` and publishes `count` messages, some of
/// them then deleted (gaps in the sequence survive a restore too).
fn fill_stream(port: u16, name: &str, count: usize) -> (u64, u64) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(format!("nats://127.0.0.1:{port}")).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: name.to_string(),
                subjects: vec![format!("{name}.>")],
                ..Default::default()
            })
            .await
            .unwrap();
        for i in 0..count {
            js.publish(format!("{name}.event.{}", i % 7), format!("payload {i} {}", "x".repeat(i % 300)).into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        stream.delete_message(3).await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        (state.messages, state.last_sequence)
    })
}

fn stream_state(port: u16, name: &str) -> Option<(u64, u64, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(format!("nats://127.0.0.1:{port}")).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream(name).await.ok()?;
        let s = stream.info().await.ok()?.state.clone();
        Some((s.messages, s.first_sequence, s.last_sequence))
    })
}

#[test]
fn nats_jetstream_streams_are_snapshotted_restore_tested_in_a_scratch_server_and_restored() {
    let nats = PrivateNats::start();
    let (orders, last) = fill_stream(nats.port, "ORDERS", 2500);
    assert_eq!((orders, last), (2499, 2500));
    fill_stream(nats.port, "AUDIT", 40);
    let env = Env::new(&format!(
        r#"
repositories:
  - name: local
    path: $DIR/repo
backups:
  - name: events
    nats: {{ url: "nats://127.0.0.1:{}", streams: [ORDERS, AUDIT] }}
    schedule: "0 * * * *"
    repository: local
"#,
        nats.port
    ));
    let record = env.run("events");
    let id = id_of(&record);
    let manifest = std::fs::read_to_string(env.stored("events", &id).join("manifest.json")).unwrap();
    assert!(manifest.contains("stream-ORDERS.tar.s2") && manifest.contains("stream-AUDIT.tar.s2"), "{manifest}");
    let (code, v) = env.verify(&id, true);
    assert_eq!(code, 0, "{v}");
    let matched = v["detail"]["matched"].to_string();
    assert!(matched.contains("stream ORDERS: messages 2499") && matched.contains("stream ORDERS: last_seq 2500"), "{v}");
    assert!(matched.contains("stream AUDIT: messages 39"), "{v}");

    // Into another server: equal; into the source: refused without --force.
    let other = PrivateNats::start();
    let out = env.backup(&["restore", &id, "--to", &format!("nats://127.0.0.1:{}", other.port), "--yes", "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.json()["result"]["comparison"]["differences"], Value::Array(vec![]), "{}", out.stdout);
    assert_eq!(stream_state(other.port, "ORDERS"), stream_state(nats.port, "ORDERS"));
    assert_eq!(stream_state(other.port, "AUDIT").map(|s| s.0), Some(39));
    let refused = env.backup(&["restore", &id, "--to", &format!("nats://127.0.0.1:{}", nats.port), "--yes"]);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    assert!(refused.stderr.contains("ORDERS (2499 messages)"), "{}", refused.stderr);

    env.corrupt("events", &id);
    let (code, v) = env.verify(&id, false);
    assert_eq!(code, 1, "{v}");
    assert!(v["detail"].to_string().contains("corrupt"), "{v}");
}

#[test]
fn the_server_verifies_the_newest_backup_on_the_verify_schedule_by_restore_test() {
    let env = Env::new(
        r#"
repositories:
  - name: local
    path: $DIR/repo
backups:
  - name: files
    directory: { path: $DIR/src }
    repository: local
    verify: { schedule: "* * * * *", restore_test: true }
"#,
    );
    write_tree(&env.path("src"));
    let old = id_of(&env.run("files"));
    let newest = id_of(&env.run("files"));
    let server = Server::start(&env.path("steward.yaml"), &env.path("data"));
    let viewer = create_token(&env.path("data"), "viewer", "viewer");
    let base = format!("{}/api/v1", server.base);
    let v = wait_for("a scheduled verification", Duration::from_secs(75), || {
        let b = request("GET", &format!("{base}/backups/{newest}"), &viewer, None).1;
        b["verifications"].as_array().and_then(|v| v.iter().find(|v| v["trigger"] == "schedule" && v["result"] != "running").cloned())
    });
    assert_eq!(v["result"], "passed", "{v}");
    assert_eq!(v["level"], 2, "restore_test: true makes it a restore test: {v}");
    let older = request("GET", &format!("{base}/backups/{old}"), &viewer, None).1;
    assert_eq!(older["verifications"], Value::Array(vec![]), "only the newest is verified: {older}");
}

/// Hands `dir` to the `postgres` user when we are root: PostgreSQL runs
/// `archive_command` as itself, and it must reach the binary, the configuration and
/// the repository.
fn give_to_postgres(dir: &Path) {
    if Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n")) {
        let ok = Command::new("chown").args(["-R", "postgres:"]).arg(dir).status().unwrap().success();
        assert!(ok, "chown {}", dir.display());
    }
}

/// `steward wal push|fetch` run by hand, as PostgreSQL would: exit code and stderr.
fn wal(env: &Env, args: &[&str]) -> (i32, String) {
    let out = steward().arg("wal").args(args).args(["--policy", "pg", "-c"]).arg(env.path("steward.yaml")).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `steward wal verify -o json`: exit code and report.
fn wal_verify(env: &Env) -> (i32, Value) {
    let out = steward().args(["wal", "verify", "--policy", "pg", "-o", "json", "-c"]).arg(env.path("steward.yaml")).output().unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), report)
}

/// A cluster whose `archive_command` is `steward wal push` into policy `pg` of `env`.
fn archiving(pg: &common::PrivatePostgres, env: &Env) {
    std::fs::copy(env!("CARGO_BIN_EXE_steward"), env.path("steward")).unwrap();
    std::fs::create_dir_all(env.path("repo/_wal/pg")).unwrap();
    give_to_postgres(env.dir.path());
    let command = format!("{} wal push %p --policy pg -c {}", env.path("steward").display(), env.path("steward.yaml").display());
    pg.psql("ALTER SYSTEM SET archive_mode = on");
    pg.psql(&format!("ALTER SYSTEM SET archive_command = '{command}'"));
    pg.stop();
    pg.start();
}

/// WAL archiving against a real PostgreSQL whose `archive_command` is `steward wal
/// push`: segments land in the repository compressed, encrypted and recorded with
/// their cluster and checksum; `wal fetch` gives back the very bytes, verified; an
/// identical re-push succeeds without writing, different bytes under an archived name
/// and another cluster's segment are refused (exit 4); a repository that refuses
/// writes for a while makes PostgreSQL keep its WAL and retry — the `wal` check fails
/// at once and the server's alert on it fires, then resolves — and leaves no hole;
/// a segment damaged in the repository is never handed to recovery.
#[test]
fn postgres_archives_its_wal_through_steward_and_gets_it_back_verified() {
    let pg = common::PrivatePostgres::primary();
    let env = Env::new(&format!(
        r#"
repositories:
  - name: local
    path: $DIR/repo
backups:
  - name: pg
    postgres: {{ url: "{}" }}
    repository: local
    encryption: {{ key: "${{file:$DIR/backup.key}}" }}
checks:
  - name: wal-archive
    interval: 1s
    wal: {{ policy: pg, max_age: 10m }}
alerts:
  - name: WalArchiveFailing
    when: check wal-archive unhealthy
    severity: critical
"#,
        pg.url("postgres")
    ));
    keygen(&env.path("backup.key"));
    archiving(&pg, &env);
    let server = Server::start(&env.path("steward.yaml"), &env.path("data"));
    let token = create_token(&env.path("data"), "viewer", "viewer");
    let alert_state = || {
        let (_, v) = request("GET", &format!("{}/api/v1/alerts", server.base), &token, None);
        let alerts = v["alerts"].as_array().cloned().unwrap_or_default();
        alerts.iter().find(|a| a["rule"] == "WalArchiveFailing").map(|a| a["state"].as_str().unwrap_or_default().to_string())
    };
    let check = || {
        let out = steward().args(["check", "-o", "json", "-c"]).arg(env.path("steward.yaml")).arg("wal-archive").output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), v["checks"][0]["reason"].as_str().unwrap_or_default().to_string())
    };
    let archiver = || {
        let row = pg.psql("SELECT archived_count, coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver");
        let f: Vec<String> = row.split('|').map(str::to_string).collect();
        (f[0].parse::<u64>().unwrap(), f[1].clone(), f[2].parse::<u64>().unwrap())
    };
    let switch = || {
        pg.psql("CREATE TABLE IF NOT EXISTS t (g int, h text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
        pg.psql("SELECT pg_switch_wal()");
    };

    switch();
    let (_, first, _) = wait_for("the first segment archived", Duration::from_secs(30), || {
        let a = archiver();
        (a.0 >= 1).then_some(a)
    });
    let record: Value = serde_json::from_str(&std::fs::read_to_string(env.path(&format!("repo/_wal/pg/{first}.json"))).unwrap()).unwrap();
    assert_eq!(record["content"]["bytes"], 16 << 20, "{record}");
    assert!(record["stored"]["bytes"].as_u64().unwrap() < 4 << 20, "compressed: {record}");
    assert_eq!(record["encrypted"], true);
    assert_eq!(record["system_identifier"].as_str().unwrap(), pg.psql("SELECT system_identifier FROM pg_control_system()"));
    assert_eq!(record["timeline"], 1);
    let stored = std::fs::read(env.path(&format!("repo/_wal/pg/{first}"))).unwrap();
    let original = std::fs::read(Path::new(&pg.psql("SHOW data_directory")).join("pg_wal").join(&first)).unwrap();
    assert!(!stored.windows(40).any(|w| w == &original[..40]), "the segment's header is not readable in the repository");

    // Fetched back: the very bytes PostgreSQL wrote.
    std::fs::create_dir_all(env.path("restore")).unwrap();
    let (code, err) = wal(&env, &["fetch", &first, env.path("restore/got").to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(std::fs::read(env.path("restore/got")).unwrap() == original, "fetched bytes differ");

    // The same bytes again: success, nothing written. Different bytes: refused, the
    // archived one untouched.
    std::fs::create_dir_all(env.path("again")).unwrap();
    std::fs::write(env.path(&format!("again/{first}")), &original).unwrap();
    let (code, err) = wal(&env, &["push", env.path(&format!("again/{first}")).to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already archived with the same content"), "{err}");
    let mut changed = original.clone();
    changed[100_000] ^= 0xff;
    std::fs::write(env.path(&format!("again/{first}")), &changed).unwrap();
    let (code, err) = wal(&env, &["push", env.path(&format!("again/{first}")).to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("already archived with different content"), "{err}");
    assert_eq!(std::fs::read(env.path(&format!("repo/_wal/pg/{first}"))).unwrap(), stored, "the archived segment is untouched");
    // Another cluster's segment (its system identifier changed) is refused.
    let mut foreign = original.clone();
    foreign[24] ^= 0x01;
    std::fs::write(env.path("again/0000000100000000000000F0"), &foreign).unwrap();
    let (code, err) = wal(&env, &["push", env.path("again/0000000100000000000000F0").to_str().unwrap()]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("archives cluster"), "{err}");
    // Not a WAL file, and a file that is not archived.
    std::fs::write(env.path("again/notes.txt"), b"x").unwrap();
    assert_eq!(wal(&env, &["push", env.path("again/notes.txt").to_str().unwrap()]).0, 2);
    let (code, err) = wal(&env, &["fetch", "0000000100000000000000F1", env.path("restore/none").to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("not in the archive") && !env.path("restore/none").exists(), "{err}");

    // The repository refuses writes for a while: pushes fail, PostgreSQL keeps the
    // segments and retries; once it accepts them again everything is archived, in order.
    let wal_dir = env.path("repo/_wal/pg");
    let mode = |m: u32| std::os::unix::fs::PermissionsExt::from_mode(m);
    std::fs::set_permissions(&wal_dir, mode(0o555)).unwrap();
    let (archived_before, _, failed_before) = archiver();
    switch();
    switch();
    wait_for("pushes failing while the repository refuses writes", Duration::from_secs(30), || {
        (archiver().2 > failed_before).then_some(())
    });
    assert_eq!(archiver().0, archived_before, "nothing reported archived while nothing could be stored");
    // The `wal` check says so at once, long before the lag reaches max_age.
    let (code, reason) = check();
    assert_eq!(code, 1, "{reason}");
    assert!(reason.contains("pushes into the WAL archive of `pg` are failing"), "{reason}");
    // And the server's alert on it fires.
    wait_for("the WAL alert to fire", Duration::from_secs(30), || (alert_state().as_deref() == Some("firing")).then_some(()));
    std::fs::set_permissions(&wal_dir, mode(0o755)).unwrap();
    let (_, last, _) = wait_for("the held segments archived once the repository accepts writes", Duration::from_secs(90), || {
        let a = archiver();
        (a.0 >= archived_before + 2).then_some(a)
    });
    let segment_number = |name: &str| u64::from_str_radix(&name[8..24], 16).unwrap();
    for n in segment_number(&first)..=segment_number(&last) {
        let name = format!("{}{:016X}", &first[..8], n);
        assert!(wal_dir.join(format!("{name}.json")).exists(), "a hole at {name} (archived {first}..{last})");
    }
    let (code, out) = wal_verify(&env);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (out["first"].as_str(), out["last"].as_str(), out["continuous"].as_bool()),
        (Some(first.as_str()), Some(last.as_str()), Some(true))
    );
    assert_eq!(check(), (0, String::new()), "healthy again once a push succeeded");
    wait_for("the WAL alert to resolve", Duration::from_secs(30), || (alert_state().as_deref() != Some("firing")).then_some(()));

    // A segment damaged in the repository is reported, and nothing is written for recovery.
    let mut damaged = std::fs::read(wal_dir.join(&last)).unwrap();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0xff;
    std::fs::write(wal_dir.join(&last), damaged).unwrap();
    let (code, err) = wal(&env, &["fetch", &last, env.path("restore/bad").to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("damaged in the archive"), "{err}");
    assert!(!env.path("restore/bad").exists(), "nothing handed to recovery");
}

/// A failover: the primary stops, its streaming standby is promoted onto timeline 2 and
/// archives through the same policy (its configuration came with the base backup).
/// A restore from the timeline 1 base backup crosses the promotion: both timelines'
/// marker rows are there, and it promotes onto timeline 3.
/// `steward wal verify` follows timeline 2's history across the branch point — the old
/// timeline's segments before it, the new one's from it on — and names the hole when
/// the new timeline's copy of the branch segment is gone.
#[test]
fn wal_continuity_is_followed_across_a_promotion() {
    let primary = common::PrivatePostgres::primary();
    let env = Env::new(&format!(
        "repositories: [{{name: local, path: $DIR/repo}}]\nbackups: [{{name: pg, postgres: {{url: \"{}\", mode: physical}}, repository: local}}]\n\
         checks: [{{name: wal-archive, wal: {{policy: pg, max_age: 10m}}}}, {{name: wal-lag, wal: {{policy: pg, max_age: 1s}}}}]\n",
        primary.url("postgres")
    ));
    archiving(&primary, &env);
    let write_and_switch = |pg: &common::PrivatePostgres| {
        pg.psql("CREATE TABLE IF NOT EXISTS t (g int, h text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 5000) g");
        pg.psql("SELECT pg_switch_wal()");
    };
    let archived_up_to = |pg: &common::PrivatePostgres, what: &str| {
        // Everything before the segment being written is archived.
        wait_for(what, Duration::from_secs(60), || {
            let row = pg.psql("SELECT coalesce(last_archived_wal, ''), pg_walfile_name(pg_current_wal_lsn()) FROM pg_stat_archiver");
            let (archived, current) = row.split_once('|').unwrap();
            (archived.len() == 24
                && u64::from_str_radix(&archived[8..], 16).unwrap() + 1 == u64::from_str_radix(&current[8..], 16).unwrap())
            .then(|| archived.to_string())
        })
    };
    write_and_switch(&primary);
    write_and_switch(&primary);
    // A base backup on timeline 1, and a marker row on it.
    let out = env.backup_copied(&["run", "pg", "-o", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["facts"]["timeline"], 1);
    primary.psql("CREATE TABLE markers (id serial PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp())");
    marker(&primary, "on timeline 1");
    let standby = common::PrivatePostgres::standby_of(&primary);
    write_and_switch(&primary);
    archived_up_to(&primary, "the primary's segments archived");
    let target = primary.psql("SELECT pg_current_wal_lsn()");
    wait_for("the standby to replay everything", Duration::from_secs(30), || {
        (standby.psql(&format!("SELECT pg_last_wal_replay_lsn() >= '{target}'")) == "t").then_some(())
    });
    primary.stop();
    standby.psql("SELECT pg_promote()");
    wait_for("the standby to lead", Duration::from_secs(30), || (standby.psql("SELECT pg_is_in_recovery()") == "f").then_some(()));
    // Two segments of timeline 2 archived, so that the first of them is inside the range.
    let timeline_2 = || {
        std::fs::read_dir(env.path("repo/_wal/pg"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".json").filter(|n| n.len() == 24 && n.starts_with("00000002")).map(str::to_string))
            .collect::<std::collections::BTreeSet<String>>()
    };
    let started = std::time::Instant::now();
    while timeline_2().len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(60), "timeline 2 not archived: {:?}", timeline_2());
        write_and_switch(&standby);
        std::thread::sleep(Duration::from_millis(500));
    }
    let last = timeline_2().into_iter().max().unwrap();

    // A restore across the promotion: the timeline 1 base backup, WAL of both timelines.
    marker(&standby, "on timeline 2");
    switch_and_archive(&standby, &env);
    let restored = env.path("restored");
    let out = env.backup_copied(&["restore", "pg", "--latest", "--to", restored.to_str().unwrap(), "--yes", "-o", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["recovery"]["new_timeline"], 3, "{}", out.stdout);
    assert_eq!(markers_in(&restored).1, "on timeline 1,on timeline 2");

    let (code, report) = wal_verify(&env);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["timeline"], 2, "{report:#}");
    assert_eq!(report["ancestors"][0]["timeline"], 1, "{report:#}");
    assert!(report["first"].as_str().unwrap().starts_with("00000001"), "{report:#}");
    // At least what PostgreSQL said it archived (it may have archived more since).
    let newest = report["last"].as_str().unwrap();
    assert!(newest.starts_with("00000002") && newest >= last.as_str(), "{report:#}");
    // The `wal` check kind: healthy now; a minute-old segment is lag for max_age 1s.
    let check = |name: &str| {
        let out = steward().args(["check", "-o", "json", "-c"]).arg(env.path("steward.yaml")).arg(name).output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), v["checks"][0]["reason"].as_str().unwrap_or_default().to_string())
    };
    assert_eq!(check("wal-archive"), (0, String::new()));
    std::thread::sleep(Duration::from_millis(2_100));
    let (code, reason) = check("wal-lag");
    assert_eq!(code, 1, "{reason}");
    assert!(reason.contains("old, more than max_age 1s: archiving is stalled or failing"), "{reason}");

    // The branch segment: the first of timeline 2 on the path.
    let branch = timeline_2().into_iter().min().unwrap();
    std::fs::remove_file(env.path(&format!("repo/_wal/pg/{branch}.json"))).unwrap();
    let (code, report) = wal_verify(&env);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(report["missing"], serde_json::json!([branch]), "{report:#}");
    let (code, reason) = check("wal-archive");
    assert_eq!(code, 1, "{reason}");
    assert!(reason.contains(&format!("1 WAL segment(s) missing in the archive of `pg`, the first {branch}")), "{reason}");
}

/// A push killed at any moment (SIGKILL, as a crash or the OOM killer would) leaves the
/// segment archived whole or not at all: when a record is there the segment fetches
/// back byte for byte, and pushed again — as PostgreSQL does after a failure — it is
/// archived (or found archived) and fetches back byte for byte. Kills land from before
/// the configuration is read to after the upload.
#[test]
fn a_wal_push_killed_at_any_moment_leaves_the_segment_whole_or_absent() {
    let env = Env::new(
        r#"
repositories: [{name: local, path: $DIR/repo}]
backups:
  - name: pg
    postgres: { url: "postgres://postgres@127.0.0.1:1/never" }
    repository: local
    encryption: { key: "${file:$DIR/backup.key}" }
"#,
    );
    keygen(&env.path("backup.key"));
    std::fs::create_dir_all(env.path("pg_wal")).unwrap();
    std::fs::create_dir_all(env.path("restore")).unwrap();
    // 16 MiB that compress poorly (so the push takes a while), with a segment's long
    // page header naming one cluster.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut segment: Vec<u8> = (0..(16 << 20) / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    segment[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    segment[24..32].copy_from_slice(&7_400_000_000_000_000_001u64.to_le_bytes());
    let fetched_equal = |name: &str| {
        let dest = env.path(&format!("restore/{name}"));
        let (code, err) = wal(&env, &["fetch", name, dest.to_str().unwrap()]);
        assert_eq!(code, 0, "{name}: {err}");
        std::fs::read(&dest).unwrap() == segment
    };
    let mut absent = 0;
    for (i, delay_ms) in [0u64, 3, 10, 25, 50, 100, 200, 400].into_iter().enumerate() {
        let name = format!("0000000100000000000000{:02X}", i + 1);
        let path = env.path(&format!("pg_wal/{name}"));
        std::fs::write(&path, &segment).unwrap();
        let mut push = steward()
            .args(["wal", "push"])
            .arg(&path)
            .args(["--policy", "pg", "-c"])
            .arg(env.path("steward.yaml"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = push.kill();
        let _ = push.wait();
        if env.path(&format!("repo/_wal/pg/{name}.json")).exists() {
            assert!(fetched_equal(&name), "{name}: a record names a segment that does not fetch back whole (killed after {delay_ms} ms)");
        } else {
            absent += 1;
        }
        let (code, err) = wal(&env, &["push", path.to_str().unwrap()]);
        assert_eq!(code, 0, "{name} pushed again after a kill at {delay_ms} ms: {err}");
        assert!(fetched_equal(&name), "{name}: fetched bytes differ after a kill at {delay_ms} ms");
    }
    assert!(absent > 0, "no kill landed before the record: the test did not exercise an interrupted push");
}

/// Closes the segment being written and waits until it is in policy `pg`'s archive;
/// returns its name.
fn switch_and_archive(pg: &common::PrivatePostgres, env: &Env) -> String {
    switch_and_archive_in(pg, &env.path("repo/_wal/pg"))
}

/// [`switch_and_archive`] into the archive kept in directory `archive`.
fn switch_and_archive_in(pg: &common::PrivatePostgres, archive: &Path) -> String {
    // pg_walfile_name names the segment holding the byte before the switch's end: the
    // one just closed.
    let closed = pg.psql("SELECT pg_walfile_name(pg_switch_wal())");
    wait_for(&format!("{closed} archived"), Duration::from_secs(60), || archive.join(format!("{closed}.json")).exists().then_some(()));
    closed
}

/// A marker row committed now; returns its id and the server's clock right after.
fn marker(pg: &common::PrivatePostgres, note: &str) -> String {
    pg.psql(&format!("INSERT INTO markers (note) VALUES ('{note}')"));
    pg.psql("SELECT clock_timestamp()")
}

/// The marker notes a restored cluster holds.
fn markers_in(dir: &Path) -> (common::PrivatePostgres, String) {
    let pg = common::PrivatePostgres::adopt(dir.to_path_buf(), "-c archive_mode=off");
    let notes = pg.psql("SELECT string_agg(note, ',' ORDER BY id) FROM markers");
    (pg, notes)
}

/// Physical backups and point-in-time restores against a real PostgreSQL 15 archiving
/// through `steward wal push` while pgbench writes: a base backup taken under load
/// (its WAL proven archived), restored to a time and to an LSN between two marker
/// rows (the first present, the second absent), and to the end of the archive (both);
/// a dry run plans without touching anything, a non-empty target is refused, a target
/// before the oldest backup is named, a hole in the WAL stops the restore short with
/// the target untouched; the restore test proves a random point by marker rows, run by
/// hand and then by the server on its verify schedule; retention removes exactly the
/// WAL no kept backup needs; a restore killed (SIGKILL) while unpacking or recovering
/// leaves no target and no server running, and the next one succeeds.
#[test]
fn physical_backups_restore_to_any_point_between_marker_rows() {
    let pg = common::PrivatePostgres::primary();
    let env = Env::new(&format!(
        r#"
repositories: [{{name: local, path: $DIR/repo}}]
backups:
  - name: pg
    postgres: {{ url: "{}", mode: physical }}
    repository: local
    encryption: {{ key: "${{file:$DIR/backup.key}}" }}
    retention: {{ keep_last: 1, min_keep: 1 }}
    verify: {{ schedule: "* * * * *", restore_test: true }}
"#,
        pg.url("postgres")
    ));
    keygen(&env.path("backup.key"));
    archiving(&pg, &env);
    let pgbench = |args: &[&str]| {
        let out = Command::new(common::pg_tool("pgbench"))
            .args(["-h", "127.0.0.1", "-p", &pg.port.to_string(), "-U", "postgres"])
            .args(args)
            .arg("postgres")
            .output()
            .unwrap();
        assert!(out.status.success(), "pgbench {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    pgbench(&["-i", "-s", "2", "-q"]);
    pg.psql("CREATE TABLE markers (id serial PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp())");

    // A base backup while pgbench writes.
    let load = {
        let port = pg.port.to_string();
        std::thread::spawn(move || {
            Command::new(common::pg_tool("pgbench"))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-c", "2", "-T", "8", "postgres"])
                .output()
                .unwrap()
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let out = env.backup_copied(&["run", "pg", "-o", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let first = out.json();
    assert_eq!(first["facts"]["mode"], "physical", "{first}");
    assert!(load.join().unwrap().status.success(), "pgbench ran through the backup");
    let accounts = pg.psql("SELECT sum(abalance) FROM pgbench_accounts");

    // Two marker rows with a point between them; then all of it archived.
    marker(&pg, "one");
    std::thread::sleep(Duration::from_millis(1_200));
    let between = pg.psql("SELECT clock_timestamp()");
    let between_lsn = pg.psql("SELECT pg_current_wal_lsn()");
    std::thread::sleep(Duration::from_millis(1_200));
    marker(&pg, "two");
    switch_and_archive(&pg, &env);

    // The plan: nothing touched.
    let plan =
        env.backup_copied(&["restore", "pg", "--to-time", &between, "--to", env.path("dry").to_str().unwrap(), "--dry-run", "-o", "json"]);
    assert_eq!(plan.code, 0, "{}", plan.stderr);
    let plan = plan.json();
    assert_eq!(plan["backup"], first["id"], "{plan:#}");
    assert_eq!(plan["wal"]["from"], first["facts"]["start_wal_file"], "{plan:#}");
    assert_eq!(plan["wal"]["missing"], serde_json::json!([]), "{plan:#}");
    assert!(!env.path("dry").exists());

    // To the time between the markers.
    let restored = env.path("at-time");
    let out = env.backup_copied(&["restore", "pg", "--to-time", &between, "--to", restored.to_str().unwrap(), "--yes", "-o", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let report = out.json();
    assert_eq!(report["recovery"]["reached"], true, "{report:#}");
    assert_eq!(report["recovery"]["new_timeline"], 2, "{report:#}");
    assert!(report["recovery"]["stopped"].as_str().unwrap().contains("recovery stopping before commit"), "{report:#}");
    {
        let (copy, notes) = markers_in(&restored);
        assert_eq!(notes, "one", "restored to {between}");
        assert_eq!(copy.psql("SELECT sum(abalance) FROM pgbench_accounts"), accounts, "pgbench's writes before the markers are all there");
    }
    let shown = env.backup(&["show", first["id"].as_str().unwrap(), "-o", "json"]).json();
    assert_eq!(shown["restores"][0]["result"], "succeeded", "{shown:#}");
    assert_eq!(shown["restores"][0]["target"], restored.to_str().unwrap(), "{shown:#}");

    // The same directory again: refused, untouched.
    let version = std::fs::read(restored.join("PG_VERSION")).unwrap();
    let out = env.backup_copied(&["restore", "pg", "--to-time", &between, "--to", restored.to_str().unwrap(), "--yes"]);
    assert_eq!(out.code, 4, "{}", out.stderr);
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
    assert_eq!(std::fs::read(restored.join("PG_VERSION")).unwrap(), version);

    // To the LSN between them, and to the end of the archive.
    let at_lsn = env.path("at-lsn");
    let out = env.backup_copied(&["restore", "pg", "--to-lsn", &between_lsn, "--to", at_lsn.to_str().unwrap(), "--yes", "-o", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(markers_in(&at_lsn).1, "one", "restored to {between_lsn}");
    let latest = env.path("latest");
    let out = env.backup_copied(&["restore", "pg", "--latest", "--to", latest.to_str().unwrap(), "--yes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("promoted to timeline"), "{}", out.stdout);
    assert_eq!(markers_in(&latest).1, "one,two");

    // Before the oldest backup ended: named, nothing written.
    let early = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let out = env.backup_copied(&["restore", "pg", "--to-time", &early, "--to", env.path("early").to_str().unwrap(), "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("no physical backup of `pg` ended before") && out.stderr.contains(first["id"].as_str().unwrap()),
        "{}",
        out.stderr
    );
    assert!(!env.path("early").exists());

    // The restore test, by hand: a random point between the backup and its markers.
    let (code, v) = {
        let out = env.backup_copied(&["verify", first["id"].as_str().unwrap(), "--restore-test", "-o", "json"]);
        (out.code, out.json()["verifications"][0].clone())
    };
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["result"], "passed", "{v:#}");
    let matched: Vec<String> = v["detail"]["matched"].as_array().unwrap().iter().map(|m| m.as_str().unwrap().to_string()).collect();
    assert!(matched[0].starts_with("recovered to time"), "{matched:?}");
    assert!(matched.iter().any(|m| m.ends_with("is present")) && matched.iter().any(|m| m.ends_with("is absent")), "{matched:?}");
    assert!(v["restore_ms"].as_i64().unwrap() > 0, "{v:#}");

    // A hole after the backup: the restore stops short, says where, leaves nothing.
    let second = env.backup_copied(&["run", "pg", "-o", "json"]).json();
    assert_eq!(second["status"], "succeeded", "{second}");
    marker(&pg, "three");
    let after = pg.psql("SELECT clock_timestamp()");
    let hole = switch_and_archive(&pg, &env);
    marker(&pg, "four");
    switch_and_archive(&pg, &env);
    let record = env.path(&format!("repo/_wal/pg/{hole}.json"));
    let kept = std::fs::read(&record).unwrap();
    std::fs::remove_file(&record).unwrap();
    let (code, report) = wal_verify(&env);
    assert_eq!(code, 1, "{report:#}");
    let reach = |report: &Value, id: &Value| report["base_backups"].as_array().unwrap().iter().find(|b| b["id"] == *id).cloned().unwrap();
    let second_reach = reach(&report, &second["id"]);
    assert_eq!(
        (second_reach["restorable_to_newest"].as_bool(), second_reach["first_missing"].as_str()),
        (Some(false), Some(hole.as_str()))
    );
    let out = env.backup_copied(&["restore", "pg", "--latest", "--to", env.path("holed").to_str().unwrap(), "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains(&hole) && out.stderr.contains("--to-lsn"), "--latest refuses to stop silently at a hole: {}", out.stderr);
    let out = env.backup_copied(&["restore", "pg", "--to-time", &after, "--to", env.path("holed").to_str().unwrap(), "--yes"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("did not reach") && out.stderr.contains("replay got to"), "{}", out.stderr);
    assert!(!env.path("holed").exists(), "the target is left as it was");
    let leftovers: Vec<_> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("steward-restoring"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::write(&record, kept).unwrap();

    // Retention: the first backup goes, and with it exactly the WAL before the second's start.
    let out = env.backup_copied(&["prune", "pg", "-o", "json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let pruned = out.json()["plans"][0].clone();
    assert_eq!(pruned["deleted"], serde_json::json!([first["id"]]), "{pruned:#}");
    let kept_from = second["facts"]["start_wal_file"].as_str().unwrap();
    assert_eq!(pruned["wal"]["kept_from"], kept_from, "{pruned:#}");
    let removed = pruned["wal"]["files"].as_array().unwrap();
    assert!(pruned["wal"]["removed"].as_u64().unwrap() > 0 && pruned["wal"]["removed"].as_u64().unwrap() == removed.len() as u64);
    assert!(removed.iter().all(|f| f.as_str().unwrap()[8..24] < kept_from[8..24]), "{pruned:#}");
    let (code, report) = wal_verify(&env);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["first"], kept_from, "{report:#}");
    assert_eq!(report["base_backups"].as_array().unwrap().len(), 1, "the pruned backup is gone: {report:#}");
    assert_eq!(reach(&report, &second["id"])["restorable_to_newest"], true, "{report:#}");
    assert_eq!(reach(&report, &second["id"])["from"], kept_from, "{report:#}");
    let latest2 = env.path("latest2");
    let out = env.backup_copied(&["restore", "pg", "--latest", "--to", latest2.to_str().unwrap(), "--yes"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(markers_in(&latest2).1, "one,two,three,four");

    // Killed (SIGKILL) while unpacking and while recovering: the target never appears,
    // the recovering server does not outlive steward, and the next restore succeeds.
    for moment in ["unpacking", "recovering"] {
        let target = env.path(&format!("killed-{moment}"));
        let mut child = Command::new(env.path("steward"))
            .args(["backup", "restore", "pg", "--latest", "--to", target.to_str().unwrap(), "--yes", "-c"])
            .arg(env.path("steward.yaml"))
            .arg("-d")
            .arg(env.path("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let prefix = format!("killed-{moment}.steward-restoring-");
        let restoring = || {
            std::fs::read_dir(env.dir.path())
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        };
        let started = std::time::Instant::now();
        let pid = loop {
            assert!(started.elapsed() < Duration::from_secs(60), "never reached {moment}");
            let dir = restoring();
            let pid = dir.as_ref().and_then(|d| std::fs::read_to_string(d.join("postmaster.pid")).ok());
            match (moment, dir, pid) {
                ("unpacking", Some(_), _) => break None,
                ("recovering", Some(_), Some(p)) if p.lines().count() > 1 => break p.lines().next().map(str::to_string),
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!target.exists(), "killed while {moment}: the target is not there");
        if let Some(pid) = pid {
            wait_for("the recovering server to stop with steward", Duration::from_secs(30), || {
                (!Command::new("kill").args(["-0", &pid]).status().unwrap().success()).then_some(())
            });
        }
        let out = env.backup_copied(&["restore", "pg", "--latest", "--to", target.to_str().unwrap(), "--yes"]);
        assert_eq!(out.code, 0, "after a kill while {moment}: {}\n{}", out.stdout, out.stderr);
        assert_eq!(markers_in(&target).1, "one,two,three,four");
        assert!(restoring().is_none(), "the killed restore's directory was cleared");
    }

    // The server's own schedule proves the newest backup by a restore to a random point.
    let server = Server::start_binary(&env.path("steward"), &env.path("steward.yaml"), &env.path("data"));
    let viewer = create_token(&env.path("data"), "viewer", "viewer");
    let newest = second["id"].as_str().unwrap();
    let v = wait_for("a scheduled restore test", Duration::from_secs(120), || {
        let b = request("GET", &format!("{}/api/v1/backups/{newest}", server.base), &viewer, None).1;
        b["verifications"].as_array().and_then(|v| v.iter().find(|v| v["trigger"] == "schedule" && v["result"] != "running").cloned())
    });
    assert_eq!((v["result"].as_str(), v["level"].as_i64()), (Some("passed"), Some(2)), "{v:#}\n{}", server.log());
    let matched = v["detail"]["matched"].to_string();
    assert!(matched.contains("recovered to time") && matched.contains("is present") && matched.contains("is absent"), "{v:#}");
}

/// Base backups and WAL in an S3-compatible repository (s3s, a local server speaking the
/// S3 protocol, standing in for S3): PostgreSQL's `archive_command` pushes there with
/// credentials by reference, a physical backup finds its WAL there, and a restore to a
/// time between two marker rows fetches its WAL back from there.
#[test]
fn physical_backups_and_wal_in_an_s3_repository_restore_to_a_point() {
    let s3 = LocalS3::start("pitr");
    let pg = common::PrivatePostgres::primary();
    let env = Env::new(&format!(
        r#"
repositories:
  - name: cloud
    s3:
      bucket: pitr
      prefix: prod
      endpoint: http://127.0.0.1:{}
      allow_http: true
      access_key_id: "${{file:$DIR/s3.key}}"
      secret_access_key: "${{file:$DIR/s3.secret}}"
backups:
  - name: pg
    postgres: {{ url: "{}", mode: physical }}
    repository: cloud
"#,
        s3.port,
        pg.url("postgres")
    ));
    std::fs::write(env.path("s3.key"), LocalS3::KEY).unwrap();
    std::fs::write(env.path("s3.secret"), LocalS3::SECRET).unwrap();
    archiving(&pg, &env);
    let archive = s3.root.path().join("pitr/prod/_wal/pg");
    pg.psql("CREATE TABLE markers (id serial PRIMARY KEY, note text, at timestamptz DEFAULT clock_timestamp())");
    switch_and_archive_in(&pg, &archive);
    let out = env.backup_copied(&["run", "pg", "-o", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let backup = out.json();
    assert!(s3.root.path().join("pitr/prod/pg").join(backup["id"].as_str().unwrap()).join("manifest.json").exists(), "{backup}");
    marker(&pg, "one");
    std::thread::sleep(Duration::from_millis(1_200));
    let between = pg.psql("SELECT clock_timestamp()");
    std::thread::sleep(Duration::from_millis(1_200));
    marker(&pg, "two");
    switch_and_archive_in(&pg, &archive);
    let restored = env.path("restored");
    let out = env.backup_copied(&["restore", "pg", "--to-time", &between, "--to", restored.to_str().unwrap(), "--yes", "-o", "json"]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.json()["recovery"]["reached"], true);
    assert_eq!(markers_in(&restored).1, "one");
    let (code, report) = wal_verify(&env);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["base_backups"][0]["restorable_to_newest"], true, "{report:#}");
}

/// `wal push --ahead 4`: while PostgreSQL archives a burst of segments one call at a
/// time, each call also pushes the next ready ones in parallel, and PostgreSQL's own
/// calls for those find them archived. The archive ends continuous, every file pushed
/// once per content, and no lock file is left once PostgreSQL has archived everything.
#[test]
fn wal_pushes_ahead_in_parallel_and_postgres_finds_its_segments_archived() {
    let pg = common::PrivatePostgres::primary();
    let env = Env::new(&format!(
        "repositories: [{{name: local, path: $DIR/repo}}]\nbackups: [{{name: pg, postgres: {{url: \"{}\"}}, repository: local}}]\n",
        pg.url("postgres")
    ));
    // Hold archiving back while the burst is written, so that it queues up.
    pg.psql("ALTER SYSTEM SET archive_mode = on");
    pg.psql("ALTER SYSTEM SET archive_command = 'false'");
    pg.stop();
    pg.start();
    pg.psql("CREATE TABLE t (g int, h text)");
    for _ in 0..12 {
        pg.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 2000) g; SELECT pg_switch_wal()");
    }
    let data = PathBuf::from(pg.psql("SHOW data_directory"));
    let ready = || {
        std::fs::read_dir(data.join("pg_wal/archive_status"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect::<Vec<_>>()
    };
    assert!(ready().iter().filter(|n| n.ends_with(".ready")).count() >= 12, "{:?}", ready());
    std::fs::copy(env!("CARGO_BIN_EXE_steward"), env.path("steward")).unwrap();
    std::fs::create_dir_all(env.path("repo/_wal/pg")).unwrap();
    give_to_postgres(env.dir.path());
    let command = format!("{} wal push %p --policy pg -c {} --ahead 4", env.path("steward").display(), env.path("steward.yaml").display());
    pg.psql(&format!("ALTER SYSTEM SET archive_command = '{command}'"));
    pg.psql("SELECT pg_reload_conf()");
    let last = switch_and_archive(&pg, &env);
    wait_for("PostgreSQL to archive everything itself", Duration::from_secs(60), || {
        (pg.psql(&format!("SELECT last_archived_wal >= '{last}' FROM pg_stat_archiver")) == "t").then_some(())
    });
    let (code, report) = wal_verify(&env);
    assert_eq!(code, 0, "{report:#}");
    assert!(report["expected"].as_u64().unwrap() >= 13, "{report:#}");
    let log = std::fs::read_to_string(data.parent().unwrap().join("log")).unwrap();
    assert!(log.contains("was already archived with the same content"), "PostgreSQL's calls found pushed-ahead segments archived");
    let locks: Vec<String> = ready().into_iter().filter(|n| n.ends_with(".steward-push")).collect();
    assert!(locks.is_empty(), "lock files left: {locks:?}");
}
