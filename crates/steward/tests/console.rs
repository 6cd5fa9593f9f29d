//! The web console end to end: a real `steward serve`, tokens from the CLI, sessions,
//! CSRF and roles through plain HTTP, then people's work in a real browser (headless
//! Chromium at a phone's width): sign in, acknowledge, approve from a second session.

mod common;

use std::time::Duration;

use common::{Server, create_token, wait_for};
use serde_json::{Value, json};

/// What the console answers: status, the headers that matter, the body.
struct Page {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    body: String,
}

/// A blocking HTTP client that follows no redirects (the tests look at them).
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        Http {
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
            client: reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap(),
        }
    }

    fn send(&self, method: &str, url: &str, cookie: Option<&str>, form: Option<&[(&str, &str)]>, headers: &[(&str, &str)]) -> Page {
        self.rt.block_on(async {
            let mut r = self.client.request(method.parse().unwrap(), url);
            if let Some(c) = cookie {
                r = r.header("cookie", format!("steward_session={c}"));
            }
            for (k, v) in headers {
                r = r.header(*k, *v);
            }
            if let Some(f) = form {
                let body: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(f.iter()).finish();
                r = r.header("content-type", "application/x-www-form-urlencoded").body(body);
            }
            let resp = r.send().await.unwrap();
            let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
            let (status, location, set_cookie) = (resp.status().as_u16(), header("location"), header("set-cookie"));
            Page { status, location, set_cookie, body: resp.text().await.unwrap() }
        })
    }

    fn get(&self, url: &str, cookie: Option<&str>) -> Page {
        self.send("GET", url, cookie, None, &[])
    }

    fn post(&self, url: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> Page {
        self.send("POST", url, cookie, Some(form), &[])
    }

    fn api(&self, method: &str, url: &str, token: &str, body: Value) -> (u16, Value) {
        self.rt.block_on(async {
            let mut r = self.client.request(method.parse().unwrap(), url).bearer_auth(token);
            if !body.is_null() {
                r = r.json(&body);
            }
            let resp = r.send().await.unwrap();
            (resp.status().as_u16(), resp.json().await.unwrap_or(Value::Null))
        })
    }

    /// Signs in with `token` through the form; returns the session cookie's value.
    fn sign_in(&self, base: &str, token: &str) -> String {
        let p = self.post(&format!("{base}/console/sign-in"), None, &[("token", token), ("next", "/console/incidents")]);
        assert_eq!(p.status, 303, "{}", p.body);
        assert_eq!(p.location.as_deref(), Some("/console/incidents"));
        let cookie = p.set_cookie.expect("a session cookie");
        cookie.split(';').next().unwrap().strip_prefix("steward_session=").unwrap().to_string()
    }
}

/// The `_csrf` value a page's forms carry.
fn csrf_of(html: &str) -> String {
    let at = html.find("name=\"_csrf\" value=\"").expect("a form with a CSRF token") + 20;
    html[at..at + 64].to_string()
}

fn config(dir: &std::path::Path) -> std::path::PathBuf {
    let closed = common::free_port();
    let config = dir.join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            r#"services:
  - {{name: auth, tier: 1}}
  - {{name: payment, tier: 1, depends_on: [auth]}}
  - {{name: messaging, tier: 2, depends_on: [auth]}}
checks:
  - {{name: auth-port, service: auth, interval: 200ms, tcp: {{address: "127.0.0.1:{closed}"}}}}
  - {{name: payment-port, service: payment, interval: 200ms, tcp: {{address: "127.0.0.1:{closed}"}}}}
  - {{name: messaging-port, service: messaging, interval: 200ms, tcp: {{address: "127.0.0.1:{closed}"}}}}
slos:
  - {{name: auth-availability, service: auth, objective: 99.9, sli: {{check: auth-port}}, alerts: false}}
receivers:
  - {{name: pager, webhook: {{url: "http://127.0.0.1:9/"}}}}
incidents:
  schedules:
    - name: primary
      time_zone: UTC
      rotation: {{people: [olga, pete], shift: daily, handoff: "09:00", start: "2026-01-01"}}
  people:
    - {{name: olga, notify: [pager]}}
    - {{name: pete, notify: [pager]}}
    - {{name: dave, notify: [pager]}}
alerts:
  - {{name: AuthDown, when: check auth-port unhealthy, severity: critical, annotations: {{summary: "auth refuses connections"}}}}
  - {{name: PaymentDown, when: check payment-port unhealthy, severity: critical}}
runbooks:
  - name: failover
    description: Promote the standby.
    params:
      region: {{ type: enum, values: [eu, us] }}
      lines: {{ type: int, default: 3, min: 1, max: 5000 }}
      ticket: {{ type: string, default: "none" }}
    steps:
      - name: confirm
        approve: {{ prompt: "Promote {{{{ params.region }}}}?", role: operator, distinct_approver: true, timeout: 5m }}
      - name: promote
        shell: {{ script: 'i=0; while [ $i -lt "$LINES" ]; do i=$((i+1)); echo "promoted line $i in $REGION"; done' }}
"#
        ),
    )
    .unwrap();
    config
}

/// Sessions, CSRF and roles over plain HTTP, and every page rendered with real data.
#[test]
fn console_sessions_csrf_and_roles() {
    common::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let data = dir.path().join("data");
    let viewer = create_token(&data, "vic", "viewer");
    let operator = create_token(&data, "olga", "operator");
    let server = Server::start(&config, &data);
    let base = server.base.as_str();
    let http = Http::new();
    let (code, v) = http.api(
        "POST",
        &format!("{base}/api/v1/incidents"),
        &operator,
        json!({"title": "Checkout fails", "priority": "P2", "services": ["payment"]}),
    );
    assert_eq!(code, 201, "{v}");
    let incident = v["incident"]["id"].as_i64().unwrap();

    // Without a session a page sends you to sign in, and back afterwards.
    let p = http.get(&format!("{base}/console/incidents/{incident}"), None);
    assert_eq!(p.status, 303);
    assert_eq!(p.location.as_deref(), Some(format!("/console/sign-in?next=%2Fconsole%2Fincidents%2F{incident}").as_str()));
    // A wrong token opens nothing; a sign-in from another site is refused.
    let p = http.post(&format!("{base}/console/sign-in"), None, &[("token", "stw_wrong")]);
    assert_eq!((p.status, p.set_cookie.is_none()), (401, true));
    assert!(p.body.contains("unknown or revoked"), "{}", p.body);
    let p = http.send("POST", &format!("{base}/console/sign-in"), None, Some(&[("token", &viewer)]), &[("origin", "http://evil.example")]);
    assert_eq!((p.status, p.set_cookie.is_none()), (403, true));
    // The cookie is HttpOnly and SameSite=Strict (Secure only over https: this is http).
    let p = http.post(&format!("{base}/console/sign-in"), None, &[("token", &viewer)]);
    let cookie = p.set_cookie.unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains("Secure"), "{cookie}");
    assert_eq!(p.location.as_deref(), Some("/console"), "no `next`: the overview");
    let vic = http.sign_in(base, &viewer);

    // Every page renders for a viewer, with the state it should show and no buttons.
    // The cause in words, once all three checks have failed (each on its own schedule).
    wait_for("the overview to name the cause", Duration::from_secs(10), || {
        let body = http.get(&format!("{base}/console"), Some(&vic)).body;
        body.contains("auth is down; messaging and payment depend on it and are failing too").then_some(())
    });
    // The service's SLO, read with the uptime history (a reading lasts at least 5 s):
    // every run failed, so nothing delivered and the budget spent.
    wait_for("the overview to show the SLO's budget", Duration::from_secs(20), || {
        let body = http.get(&format!("{base}/console"), Some(&vic)).body;
        body.contains("auth-availability: 0.000% of 99.9% over 30d · <strong>error budget spent</strong>").then_some(())
    });
    for (path, expect) in [
        ("/console/incidents".to_string(), "Checkout fails"),
        (format!("/console/incidents/{incident}"), "Checkout fails"),
        ("/console/incidents?status=all&service=payment".to_string(), "Checkout fails"),
        ("/console/alerts".to_string(), "Silences"),
        ("/console/runbooks".to_string(), "Promote the standby."),
        ("/console/runbooks/failover".to_string(), "Plan (dry run)"),
        ("/console/runs".to_string(), "No runs match."),
    ] {
        let p = http.get(&format!("{base}{path}"), Some(&vic));
        let rendering = || server.log().lines().filter(|l| l.contains("template")).collect::<Vec<_>>().join("\n");
        assert_eq!(p.status, 200, "{path}: {}\n{}", p.body, rendering());
        assert!(p.body.contains(expect), "{path} lacks {expect:?}");
        for action in ["Acknowledge</button>", "Add note</button>", "Start</button>", "Create silence</button>"] {
            assert!(!p.body.contains(action), "a viewer sees {action} on {path}");
        }
    }
    // Checks: the list filters, a check's page draws its history and says its uptime.
    let list = http.get(&format!("{base}/console/checks?service=auth&health=unhealthy"), Some(&vic)).body;
    assert!(list.contains("data-check=\"auth-port\"") && !list.contains("data-check=\"payment-port\""), "{list}");
    assert!(http.get(&format!("{base}/console/checks?q=payment"), Some(&vic)).body.contains("data-check=\"payment-port\""));
    assert_eq!(http.get(&format!("{base}/console/checks?health=sad"), Some(&vic)).status, 400);
    for range in ["24h", "7d", "90d"] {
        let p = http.get(&format!("{base}/console/checks/auth-port?range={range}"), Some(&vic));
        assert_eq!(p.status, 200, "{range}: {}", p.body);
        assert!(p.body.contains("<svg class=\"chart\"") && p.body.contains("class=\"fail\""), "{range}: {}", p.body);
        assert!(p.body.contains("<strong id=\"uptime\">0%</strong>"), "every run failed: {}", p.body);
        assert!(p.body.contains("cannot connect to 127.0.0.1"), "the latest failure's reason");
    }
    assert_eq!(http.get(&format!("{base}/console/checks/auth-port?range=1y"), Some(&vic)).status, 400);
    assert_eq!(http.get(&format!("{base}/console/checks/nope"), Some(&vic)).status, 404);

    let page = http.get(&format!("{base}/console/incidents/{incident}"), Some(&vic));
    // A viewer's own session and token cannot act: the server refuses even a valid form.
    let csrf = csrf_of(&page.body);
    let p = http.post(&format!("{base}/console/incidents/{incident}/acknowledge"), Some(&vic), &[("_csrf", &csrf)]);
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(p.body.contains("needs the operator role"), "{}", p.body);
    // Bad input is a page that says what is wrong, and changes nothing.
    let p = http.get(&format!("{base}/console/incidents?status=sleeping"), Some(&vic));
    assert_eq!(p.status, 400);
    assert!(p.body.contains("`sleeping` is not an incident status"));
    assert_eq!(http.get(&format!("{base}/console/incidents/999"), Some(&vic)).status, 404);
    let p = http.get(&format!("{base}/console/runs?before=abc"), Some(&vic));
    assert!(
        p.status == 400 && p.body.contains("<html") && p.body.contains("before"),
        "a malformed query is a page that names it: {}",
        p.body
    );
    // The postmortem draft downloads as Markdown, the same text the page shows.
    let md = http.get(&format!("{base}/console/incidents/{incident}/postmortem"), Some(&vic));
    assert_eq!(md.status, 200);
    assert!(md.body.contains("Checkout fails") && md.body.starts_with('#'), "{}", md.body);

    // An operator: forged forms (no token, another session's token, another site) are
    // refused and change nothing; the real form acknowledges.
    let olga = http.sign_in(base, &operator);
    let page = http.get(&format!("{base}/console/incidents/{incident}"), Some(&olga));
    assert!(page.body.contains("Acknowledge</button>"));
    let olga_csrf = csrf_of(&page.body);
    assert_ne!(olga_csrf, csrf, "each session has its own CSRF token");
    let ack = format!("{base}/console/incidents/{incident}/acknowledge");
    for (form, headers, why) in [
        (vec![], vec![], "no CSRF token"),
        (vec![("_csrf", csrf.as_str())], vec![], "another session's token"),
        (vec![("_csrf", olga_csrf.as_str())], vec![("origin", "http://evil.example")], "another site's origin"),
        (vec![("_csrf", olga_csrf.as_str())], vec![("sec-fetch-site", "cross-site")], "a cross-site fetch"),
    ] {
        let p = http.send("POST", &ack, Some(&olga), Some(&form), &headers);
        assert_eq!(p.status, 403, "{why}: {}", p.body);
    }
    let status_of =
        || http.api("GET", &format!("{base}/api/v1/incidents/{incident}"), &operator, Value::Null).1["incident"]["status"].clone();
    assert_eq!(status_of(), "triggered", "no refused form changed the incident");
    let p = http.send("POST", &ack, Some(&olga), Some(&[("_csrf", &olga_csrf), ("note", "on it")]), &[("origin", base)]);
    assert_eq!((p.status, p.location.as_deref()), (303, Some(format!("/console/incidents/{incident}").as_str())), "{}", p.body);
    assert_eq!(status_of(), "acknowledged");
    let (_, v) = http.api("GET", &format!("{base}/api/v1/incidents/{incident}"), &operator, Value::Null);
    assert!(v["timeline"].as_array().unwrap().iter().any(|e| e["kind"] == "acknowledged" && e["actor"] == "olga"), "{v}");
    // A form field the action does not take is refused, not ignored.
    let p = http.post(
        &format!("{base}/console/incidents/{incident}/notes"),
        Some(&olga),
        &[("_csrf", &olga_csrf), ("text", "x"), ("publik", "on")],
    );
    assert_eq!(p.status, 422, "{}", p.body);

    // Alerts: the cause fires, the dependent is muted and says why; a silence made from
    // the alert's page carries its labels, mutes it, and can be expired early.
    let alerts = wait_for("AuthDown firing", Duration::from_secs(10), || {
        let body = http.get(&format!("{base}/console/alerts"), Some(&olga)).body;
        (body.contains("Firing (1)") && body.contains("Muted (1)")).then_some(body)
    });
    assert!(alerts.contains("data-alert=") && alerts.contains(">AuthDown</a>"), "the firing list by default: {alerts}");
    let muted = http.get(&format!("{base}/console/alerts?show=muted"), Some(&olga)).body;
    assert!(muted.contains("depends on auth, which is failing (alert AuthDown is firing)"), "{muted}");
    assert_eq!(http.get(&format!("{base}/console/alerts?show=loud"), Some(&olga)).status, 400);
    let (_, v) = http.api("GET", &format!("{base}/api/v1/alerts"), &operator, Value::Null);
    let fp = v["alerts"].as_array().unwrap().iter().find(|a| a["rule"] == "AuthDown").unwrap()["fingerprint"].as_str().unwrap().to_string();
    let detail = http.get(&format!("{base}/console/alerts/{fp}"), Some(&olga));
    assert!(detail.status == 200 && detail.body.contains("auth refuses connections"), "{}", detail.body);
    let form = http.get(&format!("{base}/console/alerts?silence={fp}"), Some(&olga)).body;
    assert!(form.contains("alertname=&quot;AuthDown&quot;"), "the silence form is pre-filled: {form}");
    let p = http.post(
        &format!("{base}/console/silences"),
        Some(&olga),
        &[
            ("_csrf", &olga_csrf),
            ("matchers", "alertname=\"AuthDown\"\nseverity=\"critical\""),
            ("duration", "1h"),
            ("comment", "failing over"),
        ],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let alerts = http.get(&format!("{base}/console/alerts?show=muted"), Some(&olga)).body;
    assert!(alerts.contains("Firing (0)") && alerts.contains("Muted (2)") && alerts.contains("failing over"), "{alerts}");
    let p = http.post(
        &format!("{base}/console/silences"),
        Some(&olga),
        &[("_csrf", &olga_csrf), ("matchers", ""), ("duration", "1h"), ("comment", "x")],
    );
    assert_eq!(p.status, 400);
    assert!(p.body.contains("at least one matcher"), "{}", p.body);
    let (_, v) = http.api("GET", &format!("{base}/api/v1/silences"), &operator, Value::Null);
    let silence = v["silences"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(v["silences"].as_array().unwrap().len(), 1, "the refused silence was not created");
    let p = http.post(&format!("{base}/console/silences/{silence}/expire"), Some(&olga), &[("_csrf", &olga_csrf)]);
    assert_eq!(p.status, 303);
    assert!(http.get(&format!("{base}/console/alerts"), Some(&olga)).body.contains("Firing (1)"));

    // On call: now and next, my shifts, a secret calendar feed per schedule and person.
    let mut oncall = http.get(&format!("{base}/console/oncall"), Some(&olga));
    assert_eq!(oncall.status, 200, "{}", oncall.body);
    oncall.body = oncall.body.replace("&#x2f;", "/");
    assert!(oncall.body.contains("My shifts") && oncall.body.contains("who-now"), "{}", oncall.body);
    assert!(oncall.body.contains(" 09:00 UTC</td>"), "shifts hand over at 09:00 in the schedule's zone: {}", oncall.body);
    let feed_url = |kind: &str, name: &str| {
        let marker = format!("/console/calendar/{kind}/{name}/");
        let at = oncall.body.find(&marker).unwrap_or_else(|| panic!("no {kind} feed for {name}"));
        let end = oncall.body[at..].find(".ics").unwrap() + at + 4;
        format!("{base}{}", &oncall.body[at..end])
    };
    let schedule_feed = feed_url("schedule", "primary");
    let ics = http.get(&schedule_feed, None);
    assert_eq!(ics.status, 200, "a calendar app needs no session");
    assert!(
        ics.body.starts_with("BEGIN:VCALENDAR")
            && ics.body.contains("SUMMARY:olga on call: primary")
            && ics.body.contains("SUMMARY:pete on call: primary"),
        "{}",
        ics.body
    );
    let olga_feed = http.get(&feed_url("person", "olga"), None).body;
    assert!(
        olga_feed.contains("SUMMARY:olga on call") && !olga_feed.contains("SUMMARY:pete"),
        "a person's feed holds their shifts only: {olga_feed}"
    );
    let forged = schedule_feed.replace("/primary/", "/primary/0");
    assert_eq!(http.get(&forged, None).status, 404);
    assert_eq!(
        http.get(&feed_url("person", "olga").replace("/person/olga/", "/person/pete/"), None).status,
        404,
        "one person's URL opens no other's feed"
    );
    // An override from the form: dave is on call now.
    let now = chrono::Utc::now();
    let (from, until) = (
        (now - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string(),
        (now + chrono::Duration::hours(2)).format("%Y-%m-%dT%H:%M").to_string(),
    );
    let p = http.post(
        &format!("{base}/console/oncall/primary/overrides"),
        Some(&olga),
        &[("_csrf", &olga_csrf), ("person", "zed"), ("from", &from), ("until", &until)],
    );
    assert_eq!(p.status, 400, "only people steward can reach");
    let p = http.post(
        &format!("{base}/console/oncall/primary/overrides"),
        Some(&olga),
        &[("_csrf", &olga_csrf), ("person", "dave"), ("from", &from), ("until", &until)],
    );
    assert_eq!(p.status, 303, "{}", p.body);
    let (_, v) = http.api("GET", &format!("{base}/api/v1/oncall"), &operator, Value::Null);
    assert_eq!(v["schedules"][0]["on_call"]["person"], "dave", "{v}");
    assert!(http.get(&schedule_feed, None).body.contains("SUMMARY:dave on call: primary (override)"));
    // Rotating the key revokes every feed URL.
    let out = common::steward().args(["keys", "rotate", "calendar-feeds", "--data"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(http.get(&schedule_feed, None).status, 404);

    // A runbook: the plan is shown, bad parameters are said, not started.
    let rb = format!("{base}/console/runbooks/failover");
    let p = http.post(&rb, Some(&olga), &[("_csrf", &olga_csrf), ("p.region", "mars"), ("mode", "plan")]);
    assert_eq!(p.status, 400);
    assert!(p.body.contains("`mars` is not one of: eu, us"), "{}", p.body);
    let p = http.post(&rb, Some(&olga), &[("_csrf", &olga_csrf), ("p.region", "eu"), ("mode", "plan")]);
    assert_eq!(p.status, 200);
    assert!(p.body.contains("promote") && p.body.contains("nothing was started"), "{}", p.body);
    let p = http.post(&rb, Some(&vic), &[("_csrf", &csrf), ("p.region", "eu"), ("mode", "start")]);
    assert_eq!(p.status, 403, "a viewer cannot start a run");
    let (_, runs) = http.api("GET", &format!("{base}/api/v1/runs"), &operator, Value::Null);
    assert_eq!(runs["runs"], json!([]), "neither a plan nor a refused start made a run");

    // Sign-out ends the session on the server: the old cookie no longer works.
    let p = http.post(&format!("{base}/console/sign-out"), Some(&olga), &[("_csrf", &olga_csrf)]);
    assert_eq!(p.status, 303);
    assert!(p.set_cookie.unwrap().contains("Max-Age=0"));
    assert_eq!(http.get(&format!("{base}/console"), Some(&olga)).status, 303);
    let p = http.post(&ack, Some(&olga), &[("_csrf", &olga_csrf)]);
    assert_eq!(p.status, 403);
    assert!(p.body.contains("session has ended"));
    // Revoking the token ends its sessions too.
    assert_eq!(http.get(&format!("{base}/console"), Some(&vic)).status, 200);
    let out = common::steward().args(["token", "revoke", "--name", "vic", "--data"]).arg(&data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(http.get(&format!("{base}/console"), Some(&vic)).status, 303, "a revoked token's session ended");
}

/// People's work in a real browser at a phone's width: sign in through the form, see
/// the cause, acknowledge, watch the timeline move by itself; start a run that needs a
/// second person, approve it from a second browser session, and follow its log live —
/// a bounded window, paused while the tab is hidden and resumed from where it stopped.
#[test]
fn console_in_a_real_browser() {
    use common::browser::Browser;
    common::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let data = dir.path().join("data");
    let olga = create_token(&data, "olga", "operator");
    let pete = create_token(&data, "pete", "operator");
    let vic = create_token(&data, "vic", "viewer");
    let server = Server::start(&config, &data);
    let base = server.base.as_str();
    let http = Http::new();
    let (_, v) = http.api("POST", &format!("{base}/api/v1/incidents"), &olga, json!({"title": "Checkout fails", "services": ["payment"]}));
    let incident = v["incident"]["id"].as_i64().unwrap();

    // Sign in: the console sends you to the form, and back to where you were going.
    let a = Browser::phone();
    a.open(&format!("{base}/console/incidents/{incident}"));
    assert!(a.url().contains("/console/sign-in?next="), "{}", a.url());
    a.fill("#token", &olga);
    a.submit("form button[type=submit]");
    assert!(a.url().ends_with(&format!("/console/incidents/{incident}")), "{}\n{}\n{}", a.url(), a.html(), server.log());
    assert!(a.fits_width(), "the incident page fits 390 px");

    // Acknowledge with the button; the page shows it.
    a.submit(&format!("form[action='/console/incidents/{incident}/acknowledge'] button"));
    assert_eq!(a.text("#incident-status"), "acknowledged");
    // The timeline follows changes made elsewhere without a reload.
    let (code, _) =
        http.api("POST", &format!("{base}/api/v1/incidents/{incident}/notes"), &pete, json!({"text": "rolled back the deploy"}));
    assert_eq!(code, 200);
    a.wait_until(
        "the note in the live timeline",
        Duration::from_secs(10),
        "return document.getElementById('timeline').textContent.includes('rolled back the deploy');",
    );

    // The overview names the cause, and every section fits the phone's width.
    a.open(&format!("{base}/console"));
    a.wait_until("the cause", Duration::from_secs(10), "return !!document.getElementById('root-causes');");
    // Keyboard: the first Tab reaches the skip link, and the focus is visible.
    a.tab();
    assert_eq!(a.eval("return document.activeElement.className;"), "skip");
    assert_eq!(a.eval("return getComputedStyle(document.activeElement).outlineStyle;"), "solid", "focus is visible");
    // Light by default here; dark when the system prefers it.
    let background = "return getComputedStyle(document.body).backgroundColor;";
    assert_eq!(a.eval(background), "rgb(246, 247, 249)");
    a.prefer_dark();
    assert_eq!(a.eval(background), "rgb(18, 21, 28)", "dark mode follows prefers-color-scheme");
    for path in [
        "/console",
        "/console/checks",
        "/console/checks/auth-port?range=7d",
        "/console/oncall",
        "/console/incidents",
        "/console/alerts",
        "/console/runbooks",
        "/console/runbooks/failover",
        "/console/runs",
    ] {
        a.open(&format!("{base}{path}"));
        assert!(a.fits_width(), "{path} scrolls sideways at 390 px");
    }

    // Start a run from the generated form: 3,000 log lines, more than the page keeps.
    a.open(&format!("{base}/console/runbooks/failover"));
    a.select("#p-region", "eu");
    a.fill("#p-lines", "3000");
    a.submit("button[value=start]");
    let run_url = a.url();
    assert!(run_url.contains("/console/runs/"), "{run_url}");
    let run: i64 = run_url.rsplit('/').next().unwrap().parse().unwrap();
    // The run reaches its approval step a moment after the page first loads.
    wait_for("the approval to be asked", Duration::from_secs(10), || {
        a.open(&run_url);
        (a.eval("return !!document.querySelector('.approval h2');") == Value::Bool(true)).then_some(())
    });
    assert!(a.text(".approval h2").contains("Waiting for approval: confirm"));
    assert!(a.fits_width(), "the run page fits 390 px");
    // The person who started it may not approve it (four eyes): the page says why.
    a.fill(".approval input[name=comment]", "me myself");
    a.submit(".approval button[formaction$='/approve']");
    assert!(a.text("#error-message").contains("started"), "{}", a.html());
    a.open(&run_url);
    a.wait_until("the log stream to open", Duration::from_secs(10), "return document.querySelectorAll('#log .ev').length > 0;");
    let before = a.eval("return document.querySelectorAll('#log .ev').length;");
    // The tab is hidden: the page closes its stream.
    a.eval("Object.defineProperty(document, 'hidden', {configurable: true, get: () => true}); document.dispatchEvent(new Event('visibilitychange')); return true;");

    // A second person approves from their own session.
    let b = Browser::phone();
    b.open(&format!("{base}/console/sign-in"));
    b.fill("#token", &pete);
    b.submit("form button[type=submit]");
    b.open(&run_url);
    b.fill(".approval input[name=comment]", "checked the replica lag");
    b.submit(".approval button[formaction$='/approve']");
    let (_, d) = wait_for("the run to succeed", Duration::from_secs(20), || {
        let r = http.api("GET", &format!("{base}/api/v1/runs/{run}"), &olga, Value::Null);
        (r.1["run"]["status"] == "succeeded").then_some(r)
    });
    assert_eq!(d["steps"].as_array().unwrap().len(), 2, "{d}");
    let (_, audit) = http.api("GET", &format!("{base}/api/v1/runs/{run}/events"), &olga, Value::Null);
    assert!(audit.to_string().contains("checked the replica lag"), "the decision and its comment are on the record: {audit}");

    // Hidden while the whole run happened: nothing arrived.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(a.eval("return document.querySelectorAll('#log .ev').length;"), before, "a hidden tab receives nothing");
    // Shown again: it resumes from its last line, keeps the last 2,000, no line twice.
    a.eval("Object.defineProperty(document, 'hidden', {configurable: true, get: () => false}); document.dispatchEvent(new Event('visibilitychange')); return true;");
    a.wait_until(
        "the last line",
        Duration::from_secs(20),
        "return document.getElementById('log').textContent.includes('promoted line 3000 in eu');",
    );
    let lines = a.eval("return Array.from(document.querySelectorAll('#log .ev')).map(e => Number(e.dataset.id));");
    let ids: Vec<i64> = lines.as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    assert_eq!(ids.len(), 2000, "the page keeps a bounded window of the log");
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "in order, none twice, none missing within the window");
    assert!(!a.text("#log").contains("promoted line 999 in eu"), "older lines left the window");
    // The status and steps follow the run without a reload (the page was loaded while
    // it waited for approval).
    a.wait_until(
        "the status to say succeeded",
        Duration::from_secs(10),
        "return document.getElementById('run-status').textContent === 'succeeded';",
    );
    assert_eq!(a.eval("return document.querySelectorAll('#steps tbody tr').length;"), 2, "both steps listed");
    assert_eq!(a.eval("return document.querySelectorAll('.approval').length;"), 0, "the approval is no longer asked");

    // A viewer sees no buttons.
    b.submit("header form.me button");
    b.open(&format!("{base}/console/sign-in"));
    b.fill("#token", &vic);
    b.submit("form button[type=submit]");
    for page in [
        format!("/console/incidents/{incident}"),
        format!("/console/runs/{run}"),
        "/console/alerts".into(),
        "/console/runbooks/failover".into(),
    ] {
        b.open(&format!("{base}{page}"));
        let buttons = b.eval("return Array.from(document.querySelectorAll('main button')).map(b => b.textContent.trim());");
        let allowed = ["Filter", "Plan (dry run)"];
        for label in buttons.as_array().unwrap() {
            assert!(allowed.contains(&label.as_str().unwrap()), "a viewer sees `{label}` on {page}");
        }
    }
}

/// Backups and the audit log in the console: a real directory backup listed with its
/// size and age, verified from the page (the result lands on it), a restore dry run
/// that says what a restore would do and changes nothing; the runs' audit trail.
#[test]
fn console_backups_and_audit() {
    common::install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::write(src.join("a/data.bin"), (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
    let config = dir.path().join("steward.yaml");
    std::fs::write(
        &config,
        format!(
            "repositories:\n  - name: local\n    path: {repo}\nbackups:\n  - name: files\n    directory: {{ path: {src} }}\n    repository: local\nrunbooks:\n  - name: hello\n    steps:\n      - {{name: say, shell: {{script: 'echo hello'}}}}\n",
            repo = dir.path().join("repo").display(),
            src = src.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let operator = create_token(&data, "olga", "operator");
    let server = Server::start(&config, &data);
    let base = server.base.as_str();
    let http = Http::new();
    let (code, v) = http.api("POST", &format!("{base}/api/v1/backups/run"), &operator, json!({"policy": "files"}));
    assert_eq!(code, 202, "{v}");
    let id = v["backup"]["id"].as_str().unwrap().to_string();
    wait_for("the backup", Duration::from_secs(20), || {
        (http.api("GET", &format!("{base}/api/v1/backups/{id}"), &operator, Value::Null).1["backup"]["status"] == "succeeded").then_some(())
    });
    let olga = http.sign_in(base, &operator);
    let list = http.get(&format!("{base}/console/backups"), Some(&olga));
    assert_eq!(list.status, 200, "{}", list.body);
    assert!(
        list.body.contains(&format!("data-backup=\"{id}\"")) && list.body.contains("succeeded") && list.body.contains("KiB"),
        "{}",
        list.body
    );
    assert!(list.body.contains("not verified"), "the policy tile says the latest is unverified");

    // Verify from the page: the verification runs and its result shows.
    let page = http.get(&format!("{base}/console/backups/{id}"), Some(&olga));
    let csrf = csrf_of(&page.body);
    let p = http.post(&format!("{base}/console/backups/{id}/verify"), Some(&olga), &[("_csrf", &csrf), ("restore_test", "on")]);
    assert_eq!(p.status, 303, "{}", p.body);
    let page = wait_for("the verification to pass", Duration::from_secs(20), || {
        let body = http.get(&format!("{base}/console/backups/{id}"), Some(&olga)).body;
        body.contains("badge passed").then_some(body)
    });
    assert!(!page.contains("Never verified."), "{page}");
    assert!(http.get(&format!("{base}/console/backups"), Some(&olga)).body.contains("verified passed"));

    // A restore dry run into a directory that holds data is refused and says why; into
    // an empty place it says what a restore would do. Neither writes anything.
    let target = dir.path().join("occupied");
    std::fs::create_dir_all(&target).unwrap();
    std::fs::write(target.join("keep.txt"), "mine").unwrap();
    let p =
        http.post(&format!("{base}/console/backups/{id}/restore-plan"), Some(&olga), &[("_csrf", &csrf), ("to", target.to_str().unwrap())]);
    assert_eq!(p.status, 409, "{}", p.body);
    assert!(p.body.contains("the target is not empty") && p.body.contains("nothing was changed"), "{}", p.body);
    let entries: Vec<_> = std::fs::read_dir(&target).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, ["keep.txt"], "a dry run changes nothing");
    let fresh = dir.path().join("fresh");
    let p =
        http.post(&format!("{base}/console/backups/{id}/restore-plan"), Some(&olga), &[("_csrf", &csrf), ("to", fresh.to_str().unwrap())]);
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("is empty or missing. A restore would write 1 object(s)"), "{}", p.body);
    assert!(!fresh.join("a/data.bin").exists(), "a dry run restores nothing");
    let (_, v) = http.api("GET", &format!("{base}/api/v1/backups/{id}"), &operator, Value::Null);
    assert_eq!(v["restores"].as_array().map_or(0, |r| r.len()), 0, "a dry run records no restore: {v}");

    // The audit log shows who started what.
    let (code, _) = http.api("POST", &format!("{base}/api/v1/runbooks/hello/runs"), &operator, json!({}));
    assert_eq!(code, 201);
    let audit = wait_for("the run in the audit log", Duration::from_secs(10), || {
        let body = http.get(&format!("{base}/console/audit?actor=olga"), Some(&olga)).body;
        body.contains("href=\"/console/runs/").then_some(body)
    });
    assert!(audit.contains("olga"), "{audit}");
    let none = http.get(&format!("{base}/console/audit?actor=nobody"), Some(&olga)).body;
    assert!(none.contains("Nothing recorded."), "the filter filters");
}
