//! A real browser for tests: Debian's headless Chromium driven through WebDriver
//! (chromedriver on a free port, the `fantoccini` client), with a phone's viewport.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A phone's CSS width: what the console and the status page must fit.
pub(crate) const PHONE_WIDTH: u32 = 390;

pub(crate) struct Browser {
    driver: Child,
    client: Option<fantoccini::Client>,
    rt: tokio::runtime::Runtime,
}

impl Browser {
    /// Headless Chromium emulating a 390 × 844 phone.
    pub(crate) fn phone() -> Browser {
        let port = super::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("this test needs chromedriver: apt-get install chromium-driver (the test command installs it)");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync"],
                "mobileEmulation": {"deviceMetrics": {"width": PHONE_WIDTH, "height": 844, "pixelRatio": 3.0}},
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let started = Instant::now();
        let client = rt.block_on(async {
            loop {
                match fantoccini::ClientBuilder::new(connector.clone())
                    .capabilities(caps.clone())
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await
                {
                    Ok(c) => break c,
                    Err(e) if started.elapsed() < Duration::from_secs(20) => {
                        let _ = e;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Err(e) => panic!("chromedriver did not start a browser: {e}"),
                }
            }
        });
        Browser { driver, client: Some(client), rt }
    }

    fn client(&self) -> &fantoccini::Client {
        self.client.as_ref().expect("open until dropped")
    }

    pub(crate) fn open(&self, url: &str) {
        self.rt.block_on(self.client().goto(url)).unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The page's DOM as the browser has it.
    pub(crate) fn html(&self) -> String {
        self.rt.block_on(self.client().source()).unwrap()
    }

    fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.rt
            .block_on(self.client().find(fantoccini::Locator::Css(css)))
            .unwrap_or_else(|e| panic!("no element `{css}` on {}: {e}", self.url()))
    }

    /// Types `text` into the field `css`.
    pub(crate) fn fill(&self, css: &str, text: &str) {
        let field = self.find(css);
        self.rt.block_on(field.clear()).unwrap();
        self.rt.block_on(field.send_keys(text)).unwrap();
    }

    /// Picks the option with `value` in the select `css`.
    pub(crate) fn select(&self, css: &str, value: &str) {
        self.rt.block_on(self.find(css).select_by_value(value)).unwrap_or_else(|e| panic!("{css} has no option {value}: {e}"));
    }

    /// Clicks the submit button `css` and waits for the page its form leads to: a mark
    /// left in the old document is gone and the new one has loaded (a click returns
    /// before the navigation it starts).
    pub(crate) fn submit(&self, css: &str) {
        self.eval("window.__before_submit = true; return true;");
        self.rt.block_on(self.find(css).click()).unwrap_or_else(|e| panic!("cannot click {css}: {e}"));
        self.wait_until(
            &format!("the page after submitting {css}"),
            Duration::from_secs(15),
            "return window.__before_submit === undefined && document.readyState === 'complete';",
        );
    }

    /// The visible text of `css`.
    pub(crate) fn text(&self, css: &str) -> String {
        self.rt.block_on(self.find(css).text()).unwrap()
    }

    pub(crate) fn url(&self) -> String {
        self.rt.block_on(self.client().current_url()).map(|u| u.to_string()).unwrap_or_default()
    }

    /// Waits until `script` returns true in the page.
    pub(crate) fn wait_until(&self, what: &str, timeout: Duration, script: &str) {
        let started = Instant::now();
        while started.elapsed() < timeout {
            if self.eval(script) == Value::Bool(true) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out after {timeout:?} waiting for {what} on {}", self.url());
    }

    /// True when the page is no wider than the screen (nothing scrolls sideways).
    pub(crate) fn fits_width(&self) -> bool {
        self.eval("return document.documentElement.scrollWidth <= window.innerWidth;") == Value::Bool(true)
    }

    /// Makes the page prefer a dark colour scheme (`prefers-color-scheme: dark`), through
    /// chromedriver's DevTools passthrough.
    pub(crate) fn prefer_dark(&self) {
        let cmd =
            Cdp(json!({"cmd": "Emulation.setEmulatedMedia", "params": {"features": [{"name": "prefers-color-scheme", "value": "dark"}]}}));
        self.rt.block_on(self.client().issue_cmd(cmd)).unwrap_or_else(|e| panic!("cannot emulate dark mode: {e}"));
    }

    /// Presses Tab in the page, as a keyboard user moves focus.
    pub(crate) fn tab(&self) {
        use fantoccini::actions::InputSource;
        let actions = fantoccini::actions::KeyActions::new("keyboard".into())
            .then(fantoccini::actions::KeyAction::Down { value: '\u{E004}' })
            .then(fantoccini::actions::KeyAction::Up { value: '\u{E004}' });
        self.rt.block_on(self.client().perform_actions(actions)).unwrap();
    }

    /// Runs `script` (a function body; `return` gives the value) in the page.
    pub(crate) fn eval(&self, script: &str) -> Value {
        self.rt.block_on(self.client().execute(script, vec![])).unwrap_or_else(|e| panic!("{script}: {e}"))
    }
}

/// A Chrome DevTools Protocol command sent through chromedriver (`goog/cdp/execute`).
#[derive(Debug)]
struct Cdp(Value);

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/goog/cdp/execute", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(self.0.to_string()))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self.rt.block_on(client.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
