//! Fuzzing, bounded in time so that it runs in every CI run.
//!
//! Each target feeds generated input to one parser or to the whole API and checks that
//! nothing panics, nothing hangs, and what is accepted is sane. Inputs come from
//! proptest strategies — random text, and structured text built from each language's
//! own tokens, and for configuration the repository's real configuration files
//! mutated. Every target first replays its `REGRESSIONS` (the inputs that once crashed
//! steward, from the outside probe and from fuzzing), then generates new cases until
//! its time is up: `STEWARD_FUZZ_SECONDS` per target, 30 by default. A longer run:
//!
//! ```text
//! STEWARD_FUZZ_SECONDS=1800 cargo test --release --test fuzz -- --test-threads 1 --nocapture
//! ```
//!
//! A failure prints the smallest failing input proptest could shrink to and the seed;
//! add the input to the target's `REGRESSIONS` with the fix. (cargo-fuzz's libFuzzer
//! needs a nightly toolchain for its sanitizer flags, which this project's machines do
//! not have; proptest runs on stable, and the same check functions would serve a
//! libFuzzer target unchanged.)

mod common;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestError, TestRng, TestRunner};
use serde_json::{Value, json};

fn budget() -> Duration {
    let secs = std::env::var("STEWARD_FUZZ_SECONDS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(30);
    Duration::from_secs(secs)
}

/// Replays `regressions`, then runs `check` on generated cases until the budget is spent.
fn fuzz<S>(target: &str, regressions: &[S::Value], strategy: S, check: impl Fn(S::Value))
where
    S: Strategy,
    S::Value: Debug + Clone,
{
    for r in regressions {
        check(r.clone());
    }
    let seed: [u8; 32] = rand_seed();
    let config = Config { cases: 64, failure_persistence: None, max_shrink_iters: 2_000, ..Config::default() };
    let mut rng = TestRng::from_seed(RngAlgorithm::ChaCha, &seed);
    let started = Instant::now();
    let mut cases = regressions.len();
    while started.elapsed() < budget() {
        // A runner counts its cases; a fresh one per batch, on the same random stream.
        let mut runner = TestRunner::new_with_rng(config.clone(), rng.clone());
        rng = runner.new_rng();
        match runner.run(&strategy, |v| {
            check(v);
            Ok(())
        }) {
            Ok(()) => cases += 64,
            Err(TestError::Fail(why, input)) => {
                panic!(
                    "fuzz target `{target}` failed: {why}\n  input: {input:?}\n  seed: {}\n  add the input to its REGRESSIONS",
                    hex(&seed)
                )
            }
            Err(TestError::Abort(why)) => panic!("fuzz target `{target}` aborted: {why}"),
        }
    }
    eprintln!("fuzz {target}: {cases} cases in {:.1?} (seed {}), no failure", started.elapsed(), hex(&seed));
    assert!(cases > regressions.len(), "fuzz target `{target}` ran no generated case");
}

fn rand_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    seed[..16].copy_from_slice(&nanos.to_le_bytes());
    seed[16..20].copy_from_slice(&std::process::id().to_le_bytes());
    seed
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A string made of `tokens` and random characters: structured enough to get past the
/// first check of a parser, random enough to find its corners.
fn tokens(tokens: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![4 => prop::sample::select(tokens).prop_map(str::to_string), 1 => "\\PC{0,3}"], 0..max)
        .prop_map(|parts| parts.concat())
}

const DURATION_TOKENS: &[&str] =
    &["0", "1", "9", ".", "5", "99999999999999999999", "1e9", "ms", "s", "m", "h", "d", "w", " ", "-", "36500", "18446744073709551616"];

#[test]
fn durations() {
    use steward::config::duration::{MAX_DURATION, format_duration, parse_duration};
    let regressions: Vec<String> =
        ["99999999999999999999d", "200000000d", "10000000000000000000s10000000000000000000s", "1.8446744073709552e19s"]
            .into_iter()
            .map(String::from)
            .collect();
    fuzz("durations", &regressions, prop_oneof![tokens(DURATION_TOKENS, 8), "\\PC{0,24}"], |text| {
        if let Ok(d) = parse_duration(&text) {
            assert!(d <= MAX_DURATION, "{text:?} parsed to {d:?}, past the maximum");
            let again = parse_duration(&format_duration(d)).unwrap();
            assert_eq!(again.as_millis(), d.as_millis(), "{text:?} does not round-trip through its formatting");
        }
    });
}

const MATCHER_TOKENS: &[&str] = &[
    "alertname",
    "severity",
    "=",
    "!=",
    "=~",
    "!~",
    "\"",
    "\\\"",
    "'",
    "critical",
    ".*",
    "(",
    ")",
    "[",
    "{",
    "}",
    "|",
    " ",
    "\\",
    "a",
    "é",
    "_",
];

#[test]
fn matchers() {
    use steward::alerting::Matcher;
    // A tab or an unusual character shown as `\t`/`\u{…}` did not read back the same.
    let regressions = ["a=~\"(\"", "=\"\"", "a=\"\\", "critical=\u{11c92}", "a=\"x\ty\"", "a=\"\\u{41}\""];
    let labels = prop::collection::btree_map("[a-z]{1,3}", "\\PC{0,4}", 0..4);
    fuzz(
        "matchers",
        &regressions.iter().map(|m| (m.to_string(), Default::default())).collect::<Vec<_>>(),
        (tokens(MATCHER_TOKENS, 10), labels),
        |(text, labels)| {
            if let Ok(m) = Matcher::parse(&text) {
                let shown = m.to_string();
                let again = Matcher::parse(&shown).unwrap_or_else(|e| panic!("{text:?} shows as {shown:?}, which does not parse: {e}"));
                assert_eq!(again.to_string(), shown, "{text:?}");
                let _ = m.matches(&labels);
            }
        },
    );
}

const CONDITION_TOKENS: &[&str] = &[
    "body",
    "status",
    "headers",
    "row",
    "rows",
    "[0]",
    "[99999999999]",
    ".",
    "a",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "=~",
    "!~",
    "contains ",
    " ",
    "\"ok\"",
    "500ms",
    "36500d",
    "99999999999999999999d",
    "1",
    "-1",
    "1e308",
    "true",
    "null",
    "\"(\"",
    "'",
    "response_time",
];

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn conditions() {
    use steward::checks::condition::Condition;
    let regressions = vec![
        ("response_time < 99999999999999999999d".to_string(), json!({"response_time": 1e308})),
        // Showing a huge number next to a duration panicked in from_secs_f64.
        ("body==500ms".to_string(), json!(7.78967462100476e107)),
    ];
    fuzz("conditions", &regressions, (tokens(CONDITION_TOKENS, 8), json_value()), |(text, observation)| {
        if let Ok(c) = Condition::parse(&text) {
            let _ = c.evaluate(&observation);
            let _ = c.evaluate(&json!({"body": observation, "row": {"a": 1}, "status": 200, "response_time": 12.5}));
        }
    });
}

const TEMPLATE_TOKENS: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{#",
    "#}",
    " params.",
    "p",
    "q",
    "steps.",
    "s.stdout",
    "|",
    "upper",
    "urlencode",
    " if ",
    " else ",
    " endif ",
    "for x in ",
    "endfor",
    "(",
    ")",
    "[",
    "]",
    "\"",
    "'",
    "${env:HOME}",
    "${env:",
    "${file:/nonexistent}",
    "http://",
    "h",
    "/",
    "?",
    "&",
    "=",
    "#",
    "@",
    ":",
    "\u{E000}",
    "\u{E001}",
    "x",
    " ",
    "==",
    "and",
    "not",
];

#[test]
fn templates() {
    use steward::runbooks::template::{Expr, Text};
    let regressions = vec![
        ("http://{{ params.p }}/x?{{ params.q }}".to_string(), "a\u{E001}b".to_string()),
        ("{{ params.p }}".to_string(), "\u{E000}".to_string()),
        // minijinja's expression lexer panicked on a stray `}}` ("empty lexer stack").
        ("}}{{".to_string(), String::new()),
    ];
    fuzz("templates", &regressions, (tokens(TEMPLATE_TOKENS, 12), "\\PC{0,12}"), |(source, value)| {
        let ctx = minijinja::context! {
            params => minijinja::context! { p => value.clone(), q => value.clone() },
            steps => minijinja::context! { s => minijinja::context! { stdout => value.clone() } },
        };
        if let Ok(t) = Text::parse(&source, &mut Vec::new()) {
            let _ = t.variables();
            let _ = t.render(&ctx);
            if let Ok(url) = t.render_url(&ctx)
                && source.starts_with("http://h/")
            {
                // Values after the authority never add a query parameter or a fragment.
                assert!(!url.contains('#') || source.contains('#'), "{source:?} with {value:?} rendered {url:?}");
            }
        }
        if let Ok(e) = Expr::parse(&source) {
            let _ = e.eval(&ctx);
            let _ = e.variables();
        }
    });
}

const YAML_TOKENS: &[&str] = &[
    "\n",
    "\n  ",
    "\n    ",
    "- ",
    ": ",
    "name",
    "checks",
    "alerts",
    "runbooks",
    "services",
    "interval",
    "99999999999999999999d",
    "36500d",
    "1s",
    "{",
    "}",
    "[",
    "]",
    "&a ",
    "*a",
    "<<: *a",
    "'",
    "\"",
    "#",
    "{{ params.x }}",
    "${env:NOPE}",
    "tcp: {address: '127.0.0.1:1'}",
    "sh",
    "-c",
    "argv",
    "---",
    "? ",
    "!!str ",
    "\t",
    "\u{0}",
];

/// The repository's real configuration files, mutated: cut, spliced with tokens.
fn configs() -> impl Strategy<Value = String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let mut corpus = Vec::new();
    let mut stack = vec![root];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml")) {
                corpus.push(std::fs::read_to_string(&p).unwrap());
            }
        }
    }
    assert!(corpus.len() >= 5, "the examples are the fuzzing corpus");
    let edit = (any::<prop::sample::Index>(), any::<prop::sample::Index>(), tokens(YAML_TOKENS, 4));
    prop_oneof![
        3 => (prop::sample::select(corpus), prop::collection::vec(edit, 0..6)).prop_map(|(mut text, edits)| {
            for (at, len, insert) in edits {
                let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).chain([text.len()]).collect();
                let start = boundaries[at.index(boundaries.len())];
                let end = boundaries[(boundaries.partition_point(|b| *b < start) + len.index(8)).min(boundaries.len() - 1)];
                text.replace_range(start..end.max(start), &insert);
            }
            text
        }),
        1 => tokens(YAML_TOKENS, 40),
    ]
}

#[test]
fn configuration() {
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let alias = format!("*a{}", i - 1);
        bomb.push_str(&format!("a{i}: &a{i} [{}]\n", [alias.as_str(); 10].join(", ")));
    }
    let regressions = vec![
        bomb,
        "checks:\n  - name: c\n    interval: 99999999999999999999d\n    tcp: {address: '127.0.0.1:1'}\n".to_string(),
        format!("a: {}{}", "[".repeat(300), "]".repeat(300)),
        "runbooks:\n  - name: r\n    params: {m: string}\n    steps: [{name: s, shell: {argv: [sh, -c, '{{ params.m }}']}}]\n".to_string(),
    ];
    fuzz("configuration", &regressions, configs(), |text| {
        let started = Instant::now();
        let _ = steward::config::load_str("fuzz.yaml", &text);
        assert!(started.elapsed() < Duration::from_secs(5), "loading took {:?}", started.elapsed());
    });
}

/// The whole API in one process: every documented operation with generated query
/// strings and JSON bodies (documented field names, misspellings, wrong types, junk).
/// Each answer must be JSON — an error in the documented shape — and nothing may panic
/// (a panic would be answered 500 by the guard and counted; the count must stay 0).
#[test]
fn api_requests() {
    common::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    let config = steward::config::load_str(
        "fuzz.yaml",
        &format!(
            r#"services: [{{name: api, tier: 1}}]
checks:
  - {{name: api-port, service: api, interval: 1h, tcp: {{address: '127.0.0.1:1'}}}}
receivers: [{{name: pager, webhook: {{url: 'http://127.0.0.1:9/'}}}}]
incidents:
  schedules:
    - {{name: primary, time_zone: UTC, rotation: {{people: [alice], shift: daily, handoff: "09:00", start: "2026-01-01"}}}}
  people: [{{name: alice, notify: [pager]}}]
runbooks:
  - name: wait
    params: {{for: {{type: duration, default: 0s}}, n: {{type: int, default: 1, min: 0, max: 9}}}}
    steps: [{{name: s, sleep: "0s"}}]
repositories: [{{name: local, path: {d}/repo}}]
backups: [{{name: files, directory: {{path: {d}/src}}, repository: local, retention: {{keep_last: 5}}}}]
"#
        ),
    )
    .expect("the fuzzing configuration is valid");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (base, token, engine) = rt.block_on(async {
        use steward::store::Store;
        let store = steward::store::SqliteStore::open(&dir.path().join("data")).await.unwrap();
        let secret = steward::auth::generate_secret();
        store.create_token("fuzz", steward::auth::Role::Operator, &steward::auth::hash_secret(&secret)).await.unwrap();
        let options = steward::engine::EngineOptions {
            max_concurrency: 4,
            config_path: None,
            external_url: "http://127.0.0.1".into(),
            run_retention: Duration::from_secs(3600),
            data_dir: dir.path().join("data"),
        };
        let (engine, _writer) = steward::engine::Engine::start(config, Arc::new(store), options).await.unwrap();
        let app = steward::api::router(Arc::new(steward::api::AppState {
            engine: engine.clone(),
            status_page: true,
            uptime: Default::default(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, secret, engine)
    });
    let doc: Value = serde_json::from_str(steward::api::OPENAPI).unwrap();
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let mut fields: Vec<String> = op["requestBody"]["content"]["application/json"]["schema"]["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            fields.extend(op["parameters"].as_array().into_iter().flatten().filter_map(|p| p["name"].as_str().map(String::from)));
            ops.push((method.to_uppercase(), path.clone(), fields));
        }
    }
    let client = reqwest::Client::new();
    let op = prop::sample::select(ops);
    let values = prop::collection::vec(json_value(), 1..4);
    let names = prop::collection::vec(prop_oneof![3 => Just(None), 1 => "[a-zA-Z_-]{1,10}".prop_map(Some)], 1..5);
    let ids = prop_oneof![
        Just("1".to_string()),
        Just("api-port".to_string()),
        Just("wait".to_string()),
        Just("primary".to_string()),
        "\\PC{0,12}"
    ];
    fuzz("api_requests", &[], (op, values, names, ids, any::<bool>()), |((method, path, fields), values, names, id, as_query)| {
        let path =
            path.split('/').map(|seg| if seg.starts_with('{') { url_escape(&id) } else { seg.to_string() }).collect::<Vec<_>>().join("/");
        // Documented names (or junk ones) with generated values.
        let mut body = serde_json::Map::new();
        for (i, name) in names.iter().enumerate() {
            let key = name.clone().unwrap_or_else(|| fields.get(i % fields.len().max(1)).cloned().unwrap_or_else(|| "x".into()));
            body.insert(key, values[i % values.len()].clone());
        }
        let query: String = body
            .iter()
            .map(|(k, v)| format!("{}={}", url_escape(k), url_escape(&v.as_str().map_or_else(|| v.to_string(), String::from))))
            .collect::<Vec<_>>()
            .join("&");
        let (status, ct, text) = rt.block_on(async {
            let url = if as_query || method == "GET" { format!("{base}{path}?{query}") } else { format!("{base}{path}") };
            let mut r = client.request(method.parse().unwrap(), &url).bearer_auth(&token);
            if !(as_query || method == "GET") {
                r = r.header("content-type", "application/json").body(Value::Object(body.clone()).to_string());
            }
            let resp = r.send().await.unwrap_or_else(|e| panic!("{method} {url}: no answer ({e})"));
            let status = resp.status().as_u16();
            let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            (status, ct, resp.text().await.unwrap_or_default())
        });
        if status >= 400 && ct.starts_with("application/json") {
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{method} {path}: invalid JSON ({e}): {text}"));
            assert!(v["error"]["code"].is_string() && v["error"]["message"].is_string(), "{method} {path}: {v}");
        } else if status >= 400 {
            // Only the HTML pages of people-facing links answer errors in HTML.
            assert!(ct.starts_with("text/html") && path.starts_with("/ack/"), "{method} {path} answered {status} {ct}: {text}");
        }
        let panics = engine.metrics.render().lines().filter(|l| l.starts_with("steward_panics_total")).count();
        assert_eq!(panics, 0, "{method} {path} made a handler panic ({status}: {text})");
    });
}

fn url_escape(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
