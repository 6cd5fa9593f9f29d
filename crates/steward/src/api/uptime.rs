//! Ninety days of uptime per service, for the public status page and `/status.json`:
//! each UTC day's runs and failures summed over the service's checks, from raw results
//! and daily sums together, in one grouped query for every check (90 rows a service).
//! A server reads them at start and then again when a visitor finds the reading stale
//! (see [`fresh_for`]) or taken for another configuration, in the background: requests
//! are served the last reading meanwhile, and one reading runs at a time, so a burst of
//! visitors costs one reading, not one each.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::config::Config;
use crate::store::{CheckStore, Store, StoreError};

/// How many days the bars cover, today included.
pub const DAYS: usize = 90;
/// A reading serves at least this long before a visitor starts the next one ...
const FRESH_AT_LEAST: Duration = Duration::from_secs(5);
/// ... and this many times as long as it took, so the page spends at most a
/// twentieth of one store connection's time on its history however large the store
/// (2.5 s a reading at 20,000 checks: read again after 50 s) ...
const READING_SHARE: u32 = 20;
/// ... but never more than this, so the bars lag today's runs by minutes at worst.
const FRESH_AT_MOST: Duration = Duration::from_secs(300);

/// How long a reading that took `took` serves before the next one starts.
fn fresh_for(took: Duration) -> Duration {
    took.saturating_mul(READING_SHARE).clamp(FRESH_AT_LEAST, FRESH_AT_MOST)
}

/// One service's day: its checks' runs and failures summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Day {
    pub runs: u64,
    pub failures: u64,
}

impl Day {
    /// Share of passing runs in hundredths of a percent, rounded down in integers (a
    /// day with one failure in 100,000 runs is 99.99, never 100); `None` when nothing ran.
    pub fn hundredths(self) -> Option<u64> {
        let ok = u128::from(self.runs.saturating_sub(self.failures));
        (self.runs > 0).then(|| (ok * 10_000 / u128::from(self.runs)) as u64)
    }

    /// [`Day::hundredths`] as a percentage: what `/status.json` says.
    pub fn percent(self) -> Option<f64> {
        self.hundredths().map(|h| h as f64 / 100.0)
    }

    /// The bar's colour: `up` at 99.9 % or more (a blip is not an outage), `partial`
    /// down to 95 % (about an hour of a day), `down` below, `none` without data —
    /// never green for a day nobody checked.
    pub fn class(self) -> &'static str {
        match self.hundredths() {
            None => "none",
            Some(9_990..) => "up",
            Some(9_500..) => "partial",
            Some(_) => "down",
        }
    }
}

/// `100%`, `99.95%`, `87.5%` from hundredths of a percent (already rounded down, so a
/// day with a failure never reads 100%): how the status page and the console say it.
pub fn percent_text(hundredths: u64) -> String {
    let text = format!("{}.{:02}", hundredths / 100, hundredths % 100);
    format!("{}%", text.trim_end_matches('0').trim_end_matches('.'))
}

/// A service's last [`DAYS`] days, oldest first, the last one today (UTC), and its SLOs.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceUptime {
    pub first_day: NaiveDate,
    pub days: Vec<Day>,
    pub slos: Vec<SloFigure>,
}

/// One SLO of the service over its window, as read with the uptime history.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct SloFigure {
    pub name: String,
    pub objective_percent: f64,
    pub window: String,
    /// `None` without events: no data, not 100 %.
    pub sli_percent: Option<f64>,
    /// Shown in the console only: the public page and `/status.json` say what was
    /// promised and what was delivered, not how much slack is left.
    #[serde(skip)]
    pub budget_remaining_percent: Option<f64>,
}

impl ServiceUptime {
    /// The whole window as one day: runs and failures summed, so uptime is weighted by runs.
    pub fn total(&self) -> Day {
        self.days.iter().fold(Day::default(), |a, d| Day { runs: a.runs + d.runs, failures: a.failures + d.failures })
    }

    /// Each day with its date, oldest first.
    pub fn dated(&self) -> impl Iterator<Item = (NaiveDate, Day)> + '_ {
        self.first_day.iter_days().zip(self.days.iter().copied())
    }
}

/// `{"percent": 99.95, "days": [{"date": "2026-09-07", "percent": null}, …]}`.
impl Serialize for ServiceUptime {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Days<'a>(&'a ServiceUptime);
        impl Serialize for Days<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut seq = s.serialize_seq(Some(self.0.days.len()))?;
                #[derive(serde::Serialize)]
                struct Dated {
                    date: NaiveDate,
                    percent: Option<f64>,
                }
                for (date, day) in self.0.dated() {
                    seq.serialize_element(&Dated { date, percent: day.percent() })?;
                }
                seq.end()
            }
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("percent", &self.total().percent())?;
        m.serialize_entry("days", &Days(self))?;
        m.end()
    }
}

/// The first day of the window that ends today.
fn first_day(now: DateTime<Utc>) -> NaiveDate {
    now.date_naive() - TimeDelta::days(DAYS as i64 - 1)
}

/// Every configured service's last [`DAYS`] days, read from the store in one query,
/// and its SLOs' figures (each SLO's buckets over its window).
pub async fn read(config: &Config, store: &dyn CheckStore, now: DateTime<Utc>) -> Result<HashMap<String, ServiceUptime>, StoreError> {
    let first = first_day(now);
    let since = first.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let mut out: HashMap<String, ServiceUptime> = config
        .services
        .iter()
        .map(|s| (s.name.clone(), ServiceUptime { first_day: first, days: vec![Day::default(); DAYS], slos: vec![] }))
        .collect();
    for st in crate::slos::statuses(store, &config.slos, now).await {
        if let Some(service) = out.get_mut(&st.service) {
            service.slos.push(SloFigure {
                name: st.name,
                objective_percent: st.objective_percent,
                window: st.window,
                sli_percent: st.sli_percent,
                budget_remaining_percent: st.budget_remaining_percent,
            });
        }
    }
    let members: HashMap<String, String> = config
        .checks
        .iter()
        .filter_map(|c| c.service.as_ref().filter(|s| out.contains_key(*s)).map(|s| (c.name.clone(), s.clone())))
        .collect();
    for sum in store.daily_by_group(&members, since).await? {
        let Some(service) = out.get_mut(&sum.group) else { continue };
        let index = (sum.day - since).num_days();
        if let Some(day) = usize::try_from(index).ok().and_then(|i| service.days.get_mut(i)) {
            day.runs += sum.runs;
            day.failures += sum.failures;
        }
    }
    Ok(out)
}

pub type Uptimes = Arc<HashMap<String, ServiceUptime>>;

/// The last reading, served to every request; a stale reading (see [`fresh_for`]), one
/// for another configuration or for yesterday's window is served while a new one is
/// read in the background. The server [warms](UptimeCache::warm) it at start, so no
/// visitor waits for the store (one grouped query, seconds at 20,000 checks) unless
/// one comes before that first reading is done.
#[derive(Default)]
pub struct UptimeCache {
    last: std::sync::Mutex<Option<Reading>>,
    /// Held by the one task reading the store.
    reading: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Clone)]
struct Reading {
    taken: Instant,
    fresh_for: Duration,
    config: Arc<Config>,
    first_day: NaiveDate,
    uptimes: Uptimes,
}

impl Reading {
    /// Whether this reading needs no refresh: fresh, for this configuration and this
    /// window.
    fn current(&self, config: &Arc<Config>) -> bool {
        Arc::ptr_eq(&self.config, config) && self.first_day == first_day(crate::clock::now()) && self.taken.elapsed() < self.fresh_for
    }
}

impl UptimeCache {
    /// Starts the first reading, at server start, so the first visitor is served at once.
    pub fn warm(self: &Arc<Self>, config: &Arc<Config>, store: &Arc<dyn Store>) {
        self.refresh_in_background(config, store);
    }

    /// The uptimes to show for `config`: the last reading, refreshed in the background
    /// when it is not [current](Reading::current). Only when there is no reading yet
    /// does the request wait for one. When the store cannot answer, the last reading
    /// (or none): the page still shows each service's status.
    pub async fn get(self: &Arc<Self>, config: &Arc<Config>, store: &Arc<dyn Store>) -> Uptimes {
        match self.last() {
            Some(r) => {
                if !r.current(config) {
                    self.refresh_in_background(config, store);
                }
                r.uptimes
            }
            None => {
                self.refresh(config, store.as_ref()).await;
                self.last().map(|r| r.uptimes).unwrap_or_default()
            }
        }
    }

    /// Starts a reading in the background unless one is under way.
    fn refresh_in_background(self: &Arc<Self>, config: &Arc<Config>, store: &Arc<dyn Store>) {
        let Ok(guard) = self.reading.clone().try_lock_owned() else { return };
        let (cache, config, store) = (self.clone(), config.clone(), store.clone());
        tokio::spawn(async move {
            let _reading = guard;
            cache.read_now(&config, store.as_ref()).await;
        });
    }

    /// Reads the store unless the last reading is current, waiting for one under way
    /// first (it may be the one needed).
    pub async fn refresh(&self, config: &Arc<Config>, store: &dyn CheckStore) {
        let _reading = self.reading.lock().await;
        if !self.last().is_some_and(|r| r.current(config)) {
            self.read_now(config, store).await;
        }
    }

    fn last(&self) -> Option<Reading> {
        self.last.lock().expect("uptime cache lock").clone()
    }

    async fn read_now(&self, config: &Arc<Config>, store: &dyn CheckStore) {
        let (now, started) = (crate::clock::now(), Instant::now());
        match read(config, store, now).await {
            Ok(u) => {
                let took = started.elapsed();
                tracing::debug!(took_ms = took.as_millis() as u64, services = u.len(), "status page: read the uptime history");
                let (taken, fresh_for, config, uptimes) = (Instant::now(), fresh_for(took), config.clone(), Arc::new(u));
                let reading = Reading { taken, fresh_for, config, first_day: first_day(now), uptimes };
                *self.last.lock().expect("uptime cache lock") = Some(reading);
            }
            Err(e) => tracing::warn!(error = %e, "status page: cannot read uptime history"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_coloured_by_its_share_of_passing_runs() {
        let day = |runs, failures| Day { runs, failures };
        assert_eq!(day(0, 0).class(), "none", "a day nobody checked is not green");
        assert_eq!(day(10_000, 0).class(), "up");
        assert_eq!(day(10_000, 10).class(), "up", "99.9 % is up");
        assert_eq!(day(10_000, 11).class(), "partial");
        assert_eq!(day(1_440, 60).class(), "partial", "an hour of a day down");
        assert_eq!(day(1_440, 100).class(), "down");
        assert_eq!(day(4, 4).percent(), Some(0.0));
        assert_eq!(day(3, 5).percent(), Some(0.0), "never negative");
        assert_eq!(day(100_000, 1).hundredths(), Some(9_999), "one failure is never 100 %");
        assert_eq!(day(10_000, 1).percent(), Some(99.99), "integer hundredths: no float rounding down to 99.98");
        assert_eq!(day(3, 1).percent(), Some(66.66));
    }

    #[test]
    fn the_window_is_ninety_days_weighted_by_runs() {
        let first = NaiveDate::from_ymd_opt(2026, 9, 7).unwrap();
        let mut days = vec![Day::default(); DAYS];
        days[0] = Day { runs: 100, failures: 0 };
        days[89] = Day { runs: 300, failures: 100 };
        let u = ServiceUptime { first_day: first, days, slos: vec![] };
        assert_eq!(u.total().percent(), Some(75.0));
        assert_eq!(u.dated().last().unwrap().0, NaiveDate::from_ymd_opt(2026, 12, 5).unwrap());
        let json = serde_json::to_value(&u).unwrap();
        assert_eq!(json["percent"], 75.0);
        assert_eq!(json["days"].as_array().unwrap().len(), DAYS);
        assert_eq!(json["days"][0], serde_json::json!({"date": "2026-09-07", "percent": 100.0}));
        assert_eq!(json["days"][1]["percent"], serde_json::Value::Null);
        assert_eq!(json["days"][89]["percent"], 66.66, "rounded down, as on the page");
        let none = ServiceUptime { first_day: first, days: vec![Day::default(); DAYS], slos: vec![] };
        assert_eq!(none.total().percent(), None);
        assert_eq!(first_day(DateTime::parse_from_rfc3339("2026-12-05T23:59:59Z").unwrap().to_utc()), first);
    }

    #[test]
    fn a_reading_serves_twenty_times_as_long_as_it_took_within_bounds() {
        assert_eq!(fresh_for(Duration::from_millis(2)), Duration::from_secs(5), "a small store: near live");
        assert_eq!(fresh_for(Duration::from_millis(2_500)), Duration::from_secs(50), "20,000 checks");
        assert_eq!(fresh_for(Duration::from_secs(3_600)), Duration::from_secs(300), "never lags by more than five minutes");
        assert_eq!(fresh_for(Duration::MAX), Duration::from_secs(300), "no overflow");
    }

    /// Results on three days (one of them compacted into hourly rollups) of two checks
    /// of one service, and a check of another service, read back from a real store.
    #[tokio::test]
    async fn reads_each_services_days_from_raw_results_and_rollups() {
        use crate::checks::Outcome;
        use crate::checks::state::CheckState;
        use crate::store::{RecordedRun, SqliteStore};
        let config = crate::config::load_str(
            "t.yaml",
            "services:\n  - {name: api, tier: 1}\n  - {name: db, tier: 1}\n  - {name: idle, tier: 2}\nchecks:\n  - {name: api-http, service: api, interval: 1m, tcp: {address: '127.0.0.1:1'}}\n  - {name: api-tcp, service: api, interval: 1m, tcp: {address: '127.0.0.1:1'}}\n  - {name: db-tcp, service: db, interval: 1m, tcp: {address: '127.0.0.1:1'}}\n",
        )
        .unwrap();
        let now = DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z").unwrap().to_utc();
        let run = |check: &str, at: DateTime<Utc>, healthy: bool| RecordedRun {
            check: check.into(),
            outcome: Outcome { healthy, latency: std::time::Duration::from_millis(5), reason: None, at, values: Default::default() },
            state: CheckState::new(check, at),
            transition: None,
        };
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let mut runs = Vec::new();
        // 89 days ago (the window's first day): api-http 3 runs, 1 failed.
        let first = now - TimeDelta::days(89);
        runs.extend([run("api-http", first, true), run("api-http", first, true), run("api-http", first, false)]);
        // 91 days ago: outside the window.
        runs.push(run("api-http", now - TimeDelta::days(91), false));
        // Yesterday: both api checks, every run passing.
        let yesterday = now - TimeDelta::days(1);
        runs.extend([run("api-http", yesterday, true), run("api-tcp", yesterday, true)]);
        // Today: db down.
        runs.extend([run("db-tcp", now, false), run("db-tcp", now - TimeDelta::hours(1), false)]);
        store.record(&runs).await.unwrap();
        // Fold everything older than two days into hourly rollups: the first day's runs
        // now come from rollups, the rest from raw results.
        assert_eq!(store.compact(now - TimeDelta::days(2), now - TimeDelta::days(400)).await.unwrap(), 4);
        let got = read(&config, &store, now).await.unwrap();
        let api = &got["api"];
        assert_eq!(api.first_day, NaiveDate::from_ymd_opt(2026, 9, 7).unwrap());
        assert_eq!(api.days[0], Day { runs: 3, failures: 1 });
        assert_eq!(api.days[88], Day { runs: 2, failures: 0 });
        assert_eq!(api.days[89], Day::default());
        assert_eq!(api.days.iter().filter(|d| d.runs > 0).count(), 2, "{api:?}");
        assert_eq!(got["db"].days[89], Day { runs: 2, failures: 2 });
        assert_eq!(got["db"].days[89].class(), "down");
        assert_eq!(got["idle"].total().percent(), None, "a service without checks has no history");

        // The first request waits for a reading; the next ones while it is fresh are
        // served it (a new run is not seen). For a reloaded configuration the request
        // is served the last reading while a new one is read in the background.
        let config = Arc::new(config);
        let store: Arc<dyn Store> = Arc::new(store);
        let today = |u: &Uptimes| u["db"].days[DAYS - 1];
        let at = crate::clock::now();
        store.record(&[run("db-tcp", at, true)]).await.unwrap();
        // Warmed at start, without a visitor: the reading is there once the one
        // started (holding the reading lock before it is spawned) is done.
        let warmed = Arc::new(UptimeCache::default());
        warmed.warm(&config, &store);
        drop(warmed.reading.lock().await);
        assert!(warmed.last().is_some_and(|r| today(&r.uptimes).runs >= 1), "warm reads the history without a request");

        let cache = Arc::new(UptimeCache::default());
        let before = today(&cache.get(&config, &store).await);
        assert!(before.runs >= 1, "the first request waits for a reading: {before:?}");
        store.record(&[run("db-tcp", at, true)]).await.unwrap();
        assert_eq!(today(&cache.get(&config, &store).await), before, "not read again while fresh");
        let reloaded = Arc::new((*config).clone());
        assert_eq!(today(&cache.get(&reloaded, &store).await), before, "a reload is served the last reading, not kept waiting");
        cache.refresh(&reloaded, store.as_ref()).await; // waits for the background reading
        let after = today(&cache.get(&reloaded, &store).await);
        assert_eq!(after.runs, before.runs + 1, "the reloaded configuration was read afresh in the background");
    }
}
